/* One VM on the page server: registration, fault service (COPY/ZEROPAGE), events, drop. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "core/log.h"
#include "uffd/ps_server.h"

#define PS_MAX_EAGAIN 64

/* Is fd really a userfaultfd? A wrong fd type must be an error, not a mystery later. */
static bool is_uffd(int fd)
{
	char link[64], target[64];
	ssize_t n;

	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	n = readlink(link, target, sizeof(target) - 1);
	if (n < 0)
		return false;
	target[n] = 0;
	return strcmp(target, "anon_inode:[userfaultfd]") == 0;
}

int ps_vm_register(struct ps_server *s, struct ps_conn *c, json_t *req, int uffd, char *err,
		   size_t errlen)
{
	struct ps_vm *vm = calloc(1, sizeof(*vm));
	char why[512];
	int ret;

	if (!vm)
		return -ENOMEM;
	vm->kind = PS_UFFD;
	vm->uffd = -1;
	ret = ps_register_from_json(req, &vm->reg, err, errlen);
	if (ret)
		goto err;
	ret = -EINVAL;
	if (uffd < 0 || !is_uffd(uffd)) {
		snprintf(err, errlen, "the register message must carry a userfaultfd (SCM_RIGHTS)");
		goto err;
	}
	ret = ps_snap_get(s, vm->reg.snapshot, &vm->snap, why, sizeof(why));
	if (ret) {
		snprintf(err, errlen, "%s", why);
		goto err;
	}
	ret = ps_layout_check(&vm->reg, &vm->snap->cfg, vm->snap->size, why, sizeof(why));
	if (ret) {
		snprintf(err, errlen, "layout refused: %s", why);
		goto err;
	}
	vm->npages = vm->reg.size / 4096;
	vm->present = calloc(1, vm->npages / 8 + 1);
	vm->discarded = calloc(1, vm->npages / 8 + 1);
	if (!vm->present || !vm->discarded) {
		ret = -ENOMEM;
		goto err;
	}
	vm->recording = vm->reg.record;
	if (vm->reg.prefetch && !vm->reg.record) {
		ret = ps_prefetch_load(vm, err, errlen);
		if (ret)
			goto err;
	}
	if (fcntl(uffd, F_SETFL, O_NONBLOCK) < 0) {
		ret = -errno;
		snprintf(err, errlen, "fcntl O_NONBLOCK on the uffd: %s", strerror(errno));
		goto err;
	}
	vm->uffd = uffd;
	if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, uffd,
		      &(struct epoll_event){ .events = EPOLLIN, .data.ptr = vm }) < 0) {
		ret = -errno;
		vm->uffd = -1;
		snprintf(err, errlen, "epoll_ctl add uffd: %s", strerror(errno));
		goto err;
	}
	vm->id = ++s->next_id;
	vm->t_register = ps_now_ns();
	vm->conn = c;
	c->vm = vm;
	vm->next = s->vms;
	s->vms = vm;
	vm->phase = vm->nhot ? PS_HOT : (vm->norder || vm->sequential) ? PS_BACKGROUND : PS_IDLE;
	log_info("vm %d (%s, pid %d): registered %s, %llu MiB%s%s", vm->id, vm->reg.name,
		 vm->reg.pid, vm->reg.snapshot, (unsigned long long)(vm->reg.size >> 20),
		 vm->recording ? ", recording" : "", vm->nhot ? ", prefetching the hot set" : "");
	/* The hot set goes in before the ack; otherwise the VMM may start its vCPUs now. */
	if (vm->phase != PS_HOT)
		ps_send_ack(vm);
	return 0;
err:
	ps_snap_put(s, vm->snap);
	free(vm->present);
	free(vm->discarded);
	free(vm->hot);
	free(vm->order);
	free(vm);
	return ret;
}

void ps_vm_drop(struct ps_server *s, struct ps_vm *vm, const char *why)
{
	if (vm->gone)
		return;
	if (vm->recording)
		ps_record_finish(vm, why);
	log_info("vm %d (%s): dropped: %s", vm->id, vm->reg.name, why);
	snprintf(vm->why, sizeof(vm->why), "%s", why);
	vm->gone = true;
	s->ngone++;
	if (vm->uffd >= 0) {
		epoll_ctl(s->epfd, EPOLL_CTL_DEL, vm->uffd, NULL);
		close(vm->uffd);
		vm->uffd = -1;
	}
	if (vm->conn)
		vm->conn->vm = NULL;
	vm->conn = NULL;
	ps_snap_put(s, vm->snap);
	vm->snap = NULL;
	free(vm->present);
	free(vm->discarded);
	free(vm->hot);
	free(vm->order);
	free(vm->rec);
	vm->present = vm->discarded = NULL;
	vm->hot = vm->order = vm->rec = NULL;
	/* vm->q stays: the caller may be iterating over it; freed with the VM (ps_vm_free). */
}

void ps_vm_free(struct ps_vm *vm)
{
	free(vm->q);
	free(vm);
}

/* Read every pending event into the VM's queue; -errno when the uffd is unusable. */
static int read_events(struct ps_vm *vm)
{
	for (;;) {
		if (vm->qcap - vm->qlen < 64) {
			size_t cap = vm->qcap ? vm->qcap * 2 : 128;
			struct uffd_msg *q = realloc(vm->q, cap * sizeof(*q));
			if (!q)
				return -ENOMEM;
			vm->q = q;
			vm->qcap = cap;
		}
		ssize_t n = read(vm->uffd, vm->q + vm->qlen, 64 * sizeof(struct uffd_msg));
		if (n < 0)
			return errno == EAGAIN ? 0 : -errno;
		if (n == 0)
			return -EPIPE;
		vm->qlen += (size_t)n / sizeof(struct uffd_msg);
	}
}

/* Non-cooperative events change the mapping: handle them at once (EAGAIN waits for them). */
static void handle_noncoop(struct ps_server *s, struct ps_vm *vm, struct uffd_msg *m)
{
	uint64_t start, end;
	uint8_t event = m->event;

	m->event = 0; /* handled, whatever happens below */
	if (event == UFFD_EVENT_UNMAP) {
		vm->events_unmap++;
		ps_vm_drop(s, vm, "guest RAM unmapped by the VMM");
	} else if (event == UFFD_EVENT_REMOVE) {
		/* Discarded pages read as zeroes from now on, never as snapshot data again. */
		vm->events_remove++;
		start = m->arg.remove.start < vm->reg.base ? 0 : (m->arg.remove.start - vm->reg.base) / 4096;
		end = m->arg.remove.end <= vm->reg.base ? 0 : (m->arg.remove.end - vm->reg.base + 4095) / 4096;
		for (uint64_t p = start; p < end && p < vm->npages; p++) {
			ps_set_bit(vm->discarded, p);
			vm->present[p / 8] &= (uint8_t)~(1u << (p % 8));
		}
	}
}

static void mark_present(struct ps_vm *vm, uint64_t page, uint64_t n)
{
	for (uint64_t i = 0; i < n; i++)
		ps_set_bit(vm->present, page + i);
}

int ps_vm_fill(struct ps_server *s, struct ps_vm *vm, uint64_t page, uint64_t n, bool demand)
{
	bool zero = !ps_bit(vm->snap->data, page) || ps_bit(vm->discarded, page);
	uint64_t dst = vm->reg.base + page * 4096, len = n * 4096;
	int tries = 0;

	for (;;) {
		int64_t done;
		int r;
		if (zero) {
			struct uffdio_zeropage z = { .range = { dst, len } };
			r = ioctl(vm->uffd, UFFDIO_ZEROPAGE, &z);
			done = z.zeropage;
		} else {
			struct uffdio_copy c = { .dst = dst, .src = (uint64_t)(uintptr_t)(vm->snap->map + page * 4096),
						 .len = len };
			r = ioctl(vm->uffd, UFFDIO_COPY, &c);
			done = c.copy;
		}
		if (r == 0) {
			mark_present(vm, page, n);
			vm->bytes_copied += zero ? 0 : len;
			return 0;
		}
		int e = errno;
		if (done > 0) { /* partial: keep what went in, retry the rest */
			mark_present(vm, page, (uint64_t)done / 4096);
			vm->bytes_copied += zero ? 0 : (uint64_t)done;
			page += (uint64_t)done / 4096;
			n -= (uint64_t)done / 4096;
			dst += (uint64_t)done;
			len -= (uint64_t)done;
		}
		if (e == EEXIST) {
			/* Someone else installed the first page: present is success; go on after it. */
			vm->eexist++;
			mark_present(vm, page, 1);
			if (demand)
				ioctl(vm->uffd, UFFDIO_WAKE, &(struct uffdio_range){ dst, 4096 });
			if (n <= 1)
				return 0;
			page++, n--, dst += 4096, len -= 4096;
			continue;
		}
		if (e == EAGAIN && ++tries < PS_MAX_EAGAIN) {
			/* The mapping is changing: read the pending events, then retry. */
			vm->eagain++;
			size_t from = vm->qlen;
			if (read_events(vm) < 0)
				return -EAGAIN;
			for (size_t i = from; i < vm->qlen && !vm->gone; i++)
				if (vm->q[i].event && vm->q[i].event != UFFD_EVENT_PAGEFAULT)
					handle_noncoop(s, vm, &vm->q[i]);
			if (vm->gone)
				return -ESRCH;
			zero = !ps_bit(vm->snap->data, page) || ps_bit(vm->discarded, page);
			continue;
		}
		return -e;
	}
}

/* A run for a demand fault: holes alone, data with up to fault_around missing neighbours. */
static uint64_t demand_run(struct ps_server *s, struct ps_vm *vm, uint64_t page)
{
	bool hole = !ps_bit(vm->snap->data, page) || ps_bit(vm->discarded, page);
	uint64_t n = 1, max = vm->recording ? 1 : s->fault_around;

	while (n < max && page + n < vm->npages && !ps_bit(vm->present, page + n) &&
	       !ps_bit(vm->discarded, page + n) && ps_bit(vm->snap->data, page + n) == !hole)
		n++;
	return n;
}

void ps_vm_uffd_ready(struct ps_server *s, struct ps_vm *vm)
{
	int ret = read_events(vm);

	for (size_t i = 0; i < vm->qlen && !vm->gone; i++) {
		struct uffd_msg *m = &vm->q[i];
		if (m->event == 0)
			continue; /* handled during an EAGAIN retry */
		if (m->event != UFFD_EVENT_PAGEFAULT) {
			handle_noncoop(s, vm, m);
			continue;
		}
		uint64_t addr = m->arg.pagefault.address & ~4095ULL;
		if (addr < vm->reg.base || addr - vm->reg.base >= vm->reg.size) {
			log_warn("vm %d: fault at 0x%llx outside guest RAM", vm->id,
				 (unsigned long long)addr);
			continue;
		}
		uint64_t page = (addr - vm->reg.base) / 4096;
		if (ps_bit(vm->present, page)) {
			/* Prefetch got there first; make sure the faulting thread runs again. */
			ioctl(vm->uffd, UFFDIO_WAKE, &(struct uffdio_range){ addr, 4096 });
			continue;
		}
		if (!vm->demand_faults++)
			vm->t_first_fault = ps_now_ns();
		if (!ps_bit(vm->snap->data, page))
			vm->zero_faults++;
		if (vm->recording)
			ps_record_page(vm, page);
		int r = ps_vm_fill(s, vm, page, demand_run(s, vm, page), true);
		if (r && !vm->gone) {
			char why[96];
			snprintf(why, sizeof(why), "serving page %llu failed: %s (the VM is gone?)",
				 (unsigned long long)page, strerror(-r));
			ps_vm_drop(s, vm, why);
		}
	}
	if (!vm->gone)
		vm->qlen = 0;
	if (ret < 0 && !vm->gone)
		ps_vm_drop(s, vm, ret == -EPIPE ? "uffd closed" : "reading the uffd failed");
}
