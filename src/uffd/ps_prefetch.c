/* Prefetch (hot set before the ack, then the access log or sequential), recording, settling. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/errmsg.h"
#include "util/log.h"
#include "snapshot/snap_layer.h"
#include "uffd/ps_server.h"

#define STEP_PAGES 256 /* per step: ~1 MiB, so a demand fault waits for at most one step */

/*
 * Cold page cache: ask for every data run of a list at once (readahead, asynchronous), so the
 * disk works on all of it while the copies proceed instead of one 4 KiB fault at a time.
 */
static void willneed(struct ps_vm *vm, const uint64_t *list, size_t n)
{
	const uint8_t *map = vm->snap->map;

	for (size_t i = 0; i < n;) {
		uint64_t start = list[i], len = 1;
		while (i + len < n && list[i + len] == start + len)
			len++;
		i += len;
		if (ps_bit(vm->snap->data, start) &&
		    madvise((void *)(map + start * 4096), len * 4096, MADV_WILLNEED) < 0) {
			log_debug("vm %d: MADV_WILLNEED on the memory file: %s", vm->id, strerror(errno));
			return;
		}
	}
}

#define LOAD_STEP (1u << 20) /* list bytes read per step: other VMs' faults wait at most this */

static const char *const list_names[2] = { HOTLIST_FILE, ACCESS_LOG_FILE };

/*
 * A list that cannot be used: refuse the restore (-errno, message in err) unless the user
 * allowed damaged lists; then note it and return 1. why names the file when named.
 */
static int list_failed(struct ps_vm *vm, int which, int ret, const char *why, bool named,
		       struct fvm_err *err)
{
	if (!vm->reg.allow_bad_hotpages) {
		if (named)
			errf(err, "%s (restore with --ignore-bad-hotpages to continue "
				 "without prefetch)", why);
		else
			errf(err, "%s/%s: %s (restore with --ignore-bad-hotpages to "
				 "continue without prefetch)", vm->reg.snapshot, list_names[which], why);
		return ret;
	}
	snprintf(vm->prefetch_note, sizeof(vm->prefetch_note), "%.40s ignored: %.140s",
		 list_names[which], why);
	log_warn("vm %s: %s", vm->reg.name, vm->prefetch_note);
	return 1;
}

/* Open list `which` and check its size, reading nothing: 0 (now loading), -ENOENT (absent),
 * 1 (damaged, allowed) or -errno (refused, message in err). */
static int list_open(struct ps_vm *vm, int which, struct fvm_err *err)
{
	uint64_t max = which == 0 ? HPL_MAX_BYTES(vm->npages) : ALOG_MAX_BYTES(vm->npages);
	char path[PATH_MAX + 32];
	struct fvm_err why = FVM_ERR_INIT;
	struct stat st;
	uint8_t *buf;
	int fd;

	snprintf(path, sizeof(path), "%s/%s", vm->reg.snapshot, list_names[which]);
	fd = file_open_regular(path, O_NOFOLLOW, &st, &why);
	if (fd == -ENOENT)
		return -ENOENT;
	if (fd < 0)
		return list_failed(vm, which, fd, why.msg, true, err);
	/* Bounded by the snapshot before a byte is read: a sparse file costs nothing to make. */
	if ((uint64_t)st.st_size > max) {
		close(fd);
		errf(&why, "%s is %llu bytes, above the limit of %llu for %llu pages",
			 path, (unsigned long long)st.st_size, (unsigned long long)max,
			 (unsigned long long)vm->npages);
		return list_failed(vm, which, -EFBIG, why.msg, true, err);
	}
	buf = malloc((size_t)st.st_size + 1);
	if (!buf) {
		close(fd);
		errf(&why, "%s: out of memory for %llu bytes", path,
			 (unsigned long long)st.st_size);
		return list_failed(vm, which, -ENOMEM, why.msg, true, err);
	}
	vm->load.fd = fd;
	vm->load.which = which;
	vm->load.buf = buf;
	vm->load.len = (size_t)st.st_size;
	vm->load.got = 0;
	return 0;
}

void ps_prefetch_unload(struct ps_vm *vm)
{
	if (vm->load.fd >= 0)
		close(vm->load.fd);
	free(vm->load.buf);
	vm->load.fd = -1;
	vm->load.buf = NULL;
}

/* Decode the list just read into vm->hot or vm->order. */
static int list_decode(struct ps_vm *vm, struct fvm_err *why)
{
	struct hot_page *pages = NULL;
	size_t n = 0;
	int ret;

	if (vm->load.which == 1)
		return alog_decode(vm->load.buf, vm->load.len, vm->npages, &vm->order, &vm->norder,
				   why);
	ret = hpl_decode(vm->load.buf, vm->load.len, &vm->snap->layout, &pages, &n, why);
	if (!ret && n && !(vm->hot = malloc(n * sizeof(*vm->hot))))
		ret = -ENOMEM;
	for (size_t i = 0; !ret && i < n; i++)
		vm->hot[i] = hot_page_file_index(&vm->snap->layout, &pages[i]);
	vm->nhot = ret ? 0 : n;
	free(pages);
	return ret;
}

/* Open the lists from `which` on until one is to be read, or set the phase when none is. */
static int load_next(struct ps_vm *vm, int which, struct fvm_err *err)
{
	int ret;

	for (; which < 2; which++) {
		ret = list_open(vm, which, err);
		if (ret == 0) {
			vm->phase = PS_LOAD;
			return 0;
		}
		if (ret == -ENOENT && which == 1)
			vm->sequential = true; /* no order to replay: the rest front to back */
		else if (ret == 1 && which == 0)
			break; /* damaged hot list, allowed: no prefetch at all */
		else if (ret < 0 && ret != -ENOENT)
			return ret;
	}
	vm->phase = vm->nhot ? PS_HOT : (vm->norder || vm->sequential) ? PS_BACKGROUND : PS_IDLE;
	/* The hot set is needed before the ack; the log's pages mostly repeat it. */
	willneed(vm, vm->hot, vm->nhot);
	return 0;
}

int ps_prefetch_load(struct ps_vm *vm, struct fvm_err *err)
{
	vm->sequential = false;
	return load_next(vm, 0, err);
}

/* One bounded read of the list being loaded; at its end, decode it and go on. */
static void load_step(struct ps_server *s, struct ps_vm *vm)
{
	struct fvm_err why = FVM_ERR_INIT, err = FVM_ERR_INIT;
	size_t budget = LOAD_STEP;
	int which = vm->load.which, ret = 0;
	bool named = false;
	ssize_t n = 1;

	/* One spare byte in buf tells a file that grew from one that did not. */
	while (budget && n > 0 && vm->load.got <= vm->load.len) {
		size_t want = vm->load.len + 1 - vm->load.got;
		n = read(vm->load.fd, vm->load.buf + vm->load.got, want < budget ? want : budget);
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			return;
		if (n > 0) {
			vm->load.got += (size_t)n;
			budget -= (size_t)n;
		}
	}
	if (n < 0) {
		ret = -errno;
		named = true;
		errf(&why, "read %s/%s: %s", vm->reg.snapshot, list_names[which],
			 strerror(errno));
	} else if (n > 0 && vm->load.got <= vm->load.len) {
		return; /* budget spent: more next step */
	} else if (vm->load.got != vm->load.len) {
		ret = -EIO;
		errf(&why, "changed size while being read (%zu bytes, then %s%zu)",
		     vm->load.len, vm->load.got > vm->load.len ? "more than " : "", vm->load.got);
	} else {
		ret = list_decode(vm, &why);
	}
	ps_prefetch_unload(vm);
	if (ret) {
		ret = list_failed(vm, which, ret, why.msg, named, &err);
		if (ret < 0) {
			log_warn("register from %s refused: %s", vm->reg.name, err.msg);
			ps_send_refusal(vm, err.msg);
			ps_vm_drop(s, vm, "refused: its hot-page list or access log is damaged");
			return;
		}
		/* Allowed: a damaged hot list means no prefetch at all, a damaged log no replay. */
		which = 2;
	} else {
		which++;
	}
	ret = load_next(vm, which, &err);
	if (ret < 0) {
		log_warn("register from %s refused: %s", vm->reg.name, err.msg);
		ps_send_refusal(vm, err.msg);
		ps_vm_drop(s, vm, "refused: its access log is damaged");
		return;
	}
	if (vm->phase != PS_HOT && vm->phase != PS_LOAD)
		ps_send_ack(vm);
}

static bool is_hole(const struct ps_vm *vm, uint64_t p)
{
	return !ps_bit(vm->snap->data, p) || ps_bit(vm->discarded, p);
}

/* Fill pages list[*pos..] as runs of consecutive pages of one kind; at most STEP_PAGES. */
static int fill_list(struct ps_server *s, struct ps_vm *vm, const uint64_t *list, size_t n,
		     size_t *pos)
{
	uint64_t budget = STEP_PAGES;

	while (*pos < n && budget && !vm->gone) {
		uint64_t start = list[(*pos)++], len = 1;
		if (ps_bit(vm->present, start))
			continue;
		while (*pos < n && len < budget && list[*pos] == start + len &&
		       !ps_bit(vm->present, start + len) && is_hole(vm, start + len) == is_hole(vm, start)) {
			len++;
			(*pos)++;
		}
		int ret = ps_vm_fill(s, vm, start, len, false);
		if (ret)
			return ret;
		vm->pages_prefetched += len;
		budget -= len;
	}
	return 0;
}

static int fill_sequential(struct ps_server *s, struct ps_vm *vm)
{
	uint64_t budget = STEP_PAGES;

	while (vm->seq_pos < vm->npages && budget && !vm->gone) {
		uint64_t start = vm->seq_pos++, len = 1;
		/* Holes are left to fault: zero pages cost nothing to map later, memory now. */
		if (ps_bit(vm->present, start) || is_hole(vm, start))
			continue;
		while (vm->seq_pos < vm->npages && len < budget && !ps_bit(vm->present, vm->seq_pos) &&
		       !is_hole(vm, vm->seq_pos)) {
			len++;
			vm->seq_pos++;
		}
		int ret = ps_vm_fill(s, vm, start, len, false);
		if (ret)
			return ret;
		vm->pages_prefetched += len;
		budget -= len;
	}
	return 0;
}

bool ps_prefetch_step(struct ps_server *s, struct ps_vm *vm)
{
	int ret = 0;

	if (vm->gone || vm->phase == PS_IDLE)
		return false;
	if (vm->phase == PS_LOAD) {
		load_step(s, vm);
	} else if (vm->phase == PS_HOT) {
		ret = fill_list(s, vm, vm->hot, vm->nhot, &vm->hot_pos);
		if (!ret && vm->hot_pos == vm->nhot) {
			vm->phase = vm->norder || vm->sequential ? PS_BACKGROUND : PS_IDLE;
			ps_send_ack(vm);
		}
	} else if (vm->norder) {
		ret = fill_list(s, vm, vm->order, vm->norder, &vm->order_pos);
		if (!ret && vm->order_pos == vm->norder)
			vm->phase = PS_IDLE;
	} else {
		ret = fill_sequential(s, vm);
		if (!ret && vm->seq_pos >= vm->npages)
			vm->phase = PS_IDLE;
	}
	if (ret && !vm->gone) {
		char why[96];
		snprintf(why, sizeof(why), "prefetch failed: %s (the VM is gone?)", strerror(-ret));
		ps_vm_drop(s, vm, why);
	}
	/* An EAGAIN retry may have read faults off the uffd: epoll will not report them again. */
	if (!vm->gone && vm->qlen)
		ps_vm_uffd_ready(s, vm);
	return !vm->gone && vm->phase != PS_IDLE;
}

void ps_record_page(struct ps_vm *vm, uint64_t page)
{
	/* A log longer than the RAM has pages would be refused on load (ALOG_MAX_BYTES). */
	if (vm->nrec == vm->npages) {
		ps_record_finish(vm, "the access log holds one entry per page of RAM");
		return;
	}
	if (vm->nrec == vm->caprec) {
		size_t cap = vm->caprec ? vm->caprec * 2 : 4096;
		uint64_t *rec = realloc(vm->rec, cap * sizeof(*rec));
		if (!rec) {
			ps_record_finish(vm, "out of memory while recording");
			return;
		}
		vm->rec = rec;
		vm->caprec = cap;
	}
	vm->rec[vm->nrec++] = page;
}

void ps_record_finish(struct ps_vm *vm, const char *reason)
{
	struct hot_page *pages = calloc(vm->nrec + 1, sizeof(*pages));
	char path[PATH_MAX + 32];
	struct fvm_err why = FVM_ERR_INIT;
	uint8_t *buf = NULL;
	size_t len, n = 0;
	int ret = -ENOMEM;

	vm->recording = false;
	if (!pages)
		goto out;
	for (size_t i = 0; i < vm->nrec; i++)
		if (hot_page_from_file_index(&vm->snap->layout, vm->rec[i], &pages[n]) == 0)
			n++;
	n = hot_pages_normalize(pages, n);
	ret = hpl_encode(pages, n, &buf, &len);
	snprintf(path, sizeof(path), "%s/%s", vm->reg.snapshot, HOTLIST_FILE);
	if (!ret)
		ret = file_write_atomic(path, buf, len, 0600, &why);
	free(buf);
	buf = NULL;
	if (!ret)
		ret = alog_encode(vm->rec, vm->nrec, &buf, &len);
	snprintf(path, sizeof(path), "%s/%s", vm->reg.snapshot, ACCESS_LOG_FILE);
	if (!ret)
		ret = file_write_atomic(path, buf, len, 0600, &why);
out:
	free(buf);
	free(pages);
	if (ret)
		snprintf(vm->record_result, sizeof(vm->record_result), "failed: %s (%s)",
			 why.msg[0] ? why.msg : strerror(-ret), reason);
	else
		snprintf(vm->record_result, sizeof(vm->record_result),
			 "saved %zu hot pages, %zu in the access log (%s)", n, vm->nrec, reason);
	log_info("vm %d (%s): recording %s", vm->id, vm->reg.name, vm->record_result);
}

void ps_settle_tick(struct ps_server *s, struct ps_vm *vm, uint64_t now)
{
	uint64_t interval = (uint64_t)vm->reg.settle_ms * 100000; /* settle window / 10, in ns */

	if (vm->recording && now - vm->t_register >= (uint64_t)vm->reg.record_max_ms * 1000000)
		ps_record_finish(vm, "maximum recording time reached");
	if (now < vm->next_sample)
		return;
	vm->next_sample = now + interval;
	if (vm->nsamples == 11)
		memmove(vm->samples, vm->samples + 1, 10 * sizeof(vm->samples[0]));
	else
		vm->nsamples++;
	vm->samples[vm->nsamples - 1] = vm->demand_faults;
	/* Converged: over the last window at most max(2, 1 % of all faults so far) new ones. */
	if (vm->nsamples == 11 && vm->demand_faults && !vm->t_settle) {
		uint64_t recent = vm->samples[10] - vm->samples[0];
		uint64_t limit = vm->demand_faults / 100 > 2 ? vm->demand_faults / 100 : 2;
		if (recent <= limit) {
			vm->t_settle = now;
			if (vm->recording)
				ps_record_finish(vm, "fault rate settled");
		}
	}
}

/*
 * Graceful stop (SIGTERM): put every missing page in, then tell the VMM it no longer needs
 * a server, so a server restart or upgrade does not stop the VMs it serves.
 */
void ps_vm_drain(struct ps_server *s, struct ps_vm *vm)
{
	static const char msg[] = "{\"event\":\"populated\"}\n";
	uint64_t p = 0;

	while (p < vm->npages && !vm->gone) {
		uint64_t n = 0;
		bool hole = is_hole(vm, p);
		while (p + n < vm->npages && n < STEP_PAGES && !ps_bit(vm->present, p + n) &&
		       is_hole(vm, p + n) == hole)
			n++;
		if (n && ps_vm_fill(s, vm, p, n, false) < 0) {
			if (!vm->gone)
				ps_vm_drop(s, vm, "draining failed (the VM is gone?)");
			return;
		}
		p += n ? n : 1;
	}
	if (!vm->gone && vm->conn &&
	    send(vm->conn->fd, msg, sizeof(msg) - 1, MSG_NOSIGNAL) != (ssize_t)sizeof(msg) - 1)
		log_warn("vm %d (%s): telling the VMM its RAM is complete: %s", vm->id, vm->reg.name,
			 strerror(errno));
}
