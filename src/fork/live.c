/* live strategy: write-protect the source's memfd RAM, copy each page to the frozen image
 * before its first write is let through, copy the untouched rest in the background. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/errmsg.h"
#include "util/log.h"
#include "core/vm.h"
#include "fork/branch.h"
#include "mem/uffd_api.h"
#include "snapshot/snapshot.h"
#include "util/clock.h"
#include "util/page.h"
#include "util/thread.h"

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23 /* Linux 5.14 */
#endif

#define CHUNK_PAGES 256 /* background copy and unprotect granularity: 1 MiB */

struct live_copy {
	struct vm *vm;
	int uffd, image_fd;
	uint8_t *copied;	/* one byte per page: already in the image */
	uint64_t npages, wp_faults, bytes;
	int err;
};

static int wp_range(int uffd, uint8_t *addr, uint64_t len, bool protect)
{
	struct uffdio_writeprotect wp = { .range = { (uint64_t)(uintptr_t)addr, len },
					  .mode = protect ? UFFDIO_WRITEPROTECT_MODE_WP : 0 };

	return ioctl(uffd, UFFDIO_WRITEPROTECT, &wp) < 0 ? -errno : 0;
}

static bool page_zero(const uint8_t *p)
{
	const uint64_t *w = (const uint64_t *)p;
	for (int i = 0; i < 512; i++)
		if (w[i])
			return false;
	return true;
}

/* Copy before unprotect: the image gets the page while writes to it are still blocked. */
static int copy_page(struct live_copy *lc, uint64_t p)
{
	const uint8_t *src = lc->vm->mem.host + p * PAGE_4K;

	if (lc->copied[p])
		return 0;
	if (!page_zero(src)) {
		if (pwrite(lc->image_fd, src, PAGE_4K, (off_t)(p * PAGE_4K)) != (ssize_t)PAGE_4K)
			return errno ? -errno : -EIO;
		lc->bytes += PAGE_4K;
	}
	lc->copied[p] = 1;
	return 0;
}

static int serve_faults(struct live_copy *lc, int timeout_ms)
{
	struct pollfd pfd = { .fd = lc->uffd, .events = POLLIN };
	struct uffd_msg msg;

	while (poll(&pfd, 1, timeout_ms) > 0) {
		if (read(lc->uffd, &msg, sizeof(msg)) != sizeof(msg))
			return errno == EAGAIN ? 0 : -errno;
		if (msg.event != UFFD_EVENT_PAGEFAULT)
			continue;
		uint64_t p = (msg.arg.pagefault.address - (uint64_t)(uintptr_t)lc->vm->mem.host) / PAGE_4K;
		int ret = p < lc->npages ? copy_page(lc, p) : -EFAULT;
		if (ret)
			return ret;
		lc->wp_faults++;
		ret = wp_range(lc->uffd, lc->vm->mem.host + p * PAGE_4K, PAGE_4K, false);
		if (ret && ret != -ENOENT)
			return ret;
		timeout_ms = 0;
	}
	return 0;
}

static void *copier(void *arg)
{
	struct live_copy *lc = arg;
	int ret = 0;

	for (uint64_t c = 0; !ret && c < lc->npages; c += CHUNK_PAGES) {
		uint64_t n = lc->npages - c < CHUNK_PAGES ? lc->npages - c : CHUNK_PAGES;
		ret = serve_faults(lc, 0); /* demand faults first: a vCPU is waiting on them */
		for (uint64_t p = c; !ret && p < c + n; p++)
			ret = copy_page(lc, p);
		if (!ret)
			ret = wp_range(lc->uffd, lc->vm->mem.host + c * PAGE_4K, n * PAGE_4K, false);
	}
	lc->err = ret;
	return NULL;
}

/*
 * Before the pause: the userfaultfd, asking for unpopulated write-protect where the kernel has
 * it (Linux 6.4+). Without it, a page never touched before the branch has no page-table entry
 * to protect, so every page of guest RAM is made present first (populate_ram).
 */
static int open_uffd(struct live_copy *lc, bool *unpopulated, struct fvm_err *err)
{
	uint64_t enabled = 0;

	lc->uffd = uffd_open(UFFD_NEED_LIVE, UFFD_WANT_LIVE, &enabled,
			     "live branch write-protect of memfd guest RAM", err);
	if (lc->uffd < 0)
		return lc->uffd;
	*unpopulated = enabled & UFFD_FEATURE_WP_UNPOPULATED;
	return 0;
}

/*
 * Kernels without UFFD_FEATURE_WP_UNPOPULATED: make every page of guest RAM present and
 * writable, so that write-protecting it (while paused) covers it and its first write after the
 * branch traps. Runs before the pause, with the guest running: a page populated now and written
 * before the pause is simply part of the branch-instant image. MADV_POPULATE_WRITE (Linux
 * 5.14) allocates the missing pages and leaves present ones alone; before 5.14 every page is
 * touched with an atomic add of 0, which faults it in writable without racing the vCPUs' writes.
 * res gets the time taken and the bytes the memfd grew by.
 */
static int populate_ram(struct vm *vm, struct branch_result *res, struct fvm_err *err)
{
	uint8_t *host = vm->mem.host;
	uint64_t len = vm->mem.map_size, t0 = monotonic_ns();
	struct stat before, after;
	int ret = 0;

	if (fstat(vm->mem.fd, &before) < 0) {
		ret = -errno;
		errf(err, "populating guest RAM: fstat of its memfd: %s", strerror(errno));
		goto out;
	}
	if (madvise(host, len, MADV_POPULATE_WRITE) < 0) {
		if (errno != EINVAL) {
			ret = -errno;
			errf(err, "populating guest RAM: MADV_POPULATE_WRITE over %llu "
				 "bytes: %s", (unsigned long long)len, strerror(errno));
			goto out;
		}
		for (uint64_t off = 0; off < len; off += PAGE_4K)
			__atomic_fetch_add((uint64_t *)(void *)(host + off), 0, __ATOMIC_RELAXED);
	}
	if (fstat(vm->mem.fd, &after) < 0) {
		ret = -errno;
		errf(err, "populating guest RAM: fstat of its memfd: %s", strerror(errno));
		goto out;
	}
	if (after.st_blocks > before.st_blocks)
		res->populated_bytes = (uint64_t)(after.st_blocks - before.st_blocks) * 512;
out:
	res->populate_ns = monotonic_ns() - t0;
	return ret;
}

/* While paused: register guest RAM for write-protect faults and protect all of it. */
static int arm(struct live_copy *lc)
{
	struct uffdio_register reg = { .range = { (uint64_t)(uintptr_t)lc->vm->mem.host,
						  lc->vm->mem.map_size },
				       .mode = UFFDIO_REGISTER_MODE_WP };

	if (ioctl(lc->uffd, UFFDIO_REGISTER, &reg) < 0)
		return log_errno(-errno, "UFFDIO_REGISTER write-protect over guest RAM");
	if (!(reg.ioctls & (1ULL << _UFFDIO_WRITEPROTECT)))
		return log_errno(-EOPNOTSUPP, "UFFDIO_WRITEPROTECT is not offered on memfd guest RAM "
				 "(ioctls 0x%llx)", (unsigned long long)reg.ioctls);
	return wp_range(lc->uffd, lc->vm->mem.host, lc->vm->mem.map_size, true);
}

static char *live_meta(struct vm *vm, const struct branch_opts *o, uint64_t written)
{
	json_t *j = json_pack("{s:i,s:n,s:s,s:s,s:I,s:I,s:i,s:s}", "format_version", SNAP_VERSION,
			      "parent", "strategy", "live", "source", o->prefix, "mem_bytes",
			      (json_int_t)vm->mem.size, "memory_bytes_written", (json_int_t)written,
			      "vcpus", vm->nvcpus, "guest", vm->probe_guest ? "probe" : "linux");
	char *text = j ? json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS) : NULL;

	json_decref(j);
	return text;
}

int branch_live(struct vm *vm, const struct branch_opts *o, struct branch_result *res,
		struct fvm_err *err)
{
	struct live_copy lc = { .vm = vm, .uffd = -1, .image_fd = -1 };
	struct snap_buf state;
	struct snap_writer w;
	struct fvm_err werr = FVM_ERR_INIT; /* the writer's failing step */
	struct branch_pause bp;
	bool writer = false, unpopulated = false;
	uint64_t t1;
	pthread_t thread;
	int ret;

	snap_buf_init(&state);
	if (vm->mem.backing != GUEST_MEM_MEMFD) {
		return errmsg(err, -EINVAL,
			      "live needs memfd guest RAM (--backing memfd; this VM uses %s)",
			 guest_mem_backing_name(vm->mem.backing));
	}
	if (!o->dir) {
		return errmsg(err, -EINVAL,
			      "the live strategy needs a directory for the frozen image");
	}
	lc.npages = vm->mem.size / PAGE_4K;
	lc.copied = calloc(lc.npages, 1);
	if (!lc.copied) {
		return errmsg(err, -ENOMEM, "live branch: out of memory for a %llu-page copy map",
			 (unsigned long long)lc.npages);
	}
	if ((ret = snap_writer_begin(&w, o->dir, true, &werr))) {
		errmsg(err, ret, "creating %s: %s", o->dir, err_text(&werr));
		goto out;
	}
	writer = true;
	lc.image_fd = openat(w.tmp_fd, SNAP_FILE_MEMORY, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	if (lc.image_fd < 0 || ftruncate(lc.image_fd, (off_t)vm->mem.size) < 0) {
		ret = -errno;
		errf(err, "creating the image in %s: %s", w.tmp, strerror(errno));
		goto out;
	}
	if ((ret = open_uffd(&lc, &unpopulated, err)))
		goto out;
	res->wp_unpopulated = unpopulated;
	if (!unpopulated && (ret = populate_ram(vm, res, err)))
		goto out;
	if ((ret = branch_pause_source(vm, o, res, &bp, err)))
		goto out;
	ret = snap_capture(vm, &state);
	if (!ret)
		ret = snap_buf_finish(&state);
	if (ret)
		errf(err, "capturing the source state: %s", strerror(-ret));
	t1 = monotonic_ns();
	if (!ret && (ret = arm(&lc)))
		errf(err, "arming write-protect: %s", strerror(-ret));
	res->arm_ns = monotonic_ns() - t1;
	branch_resume_source(vm, res, &bp);
	if (ret)
		goto out;
	if ((ret = -thread_start(&thread, copier, &lc)) == 0) {
		pthread_join(thread, NULL);
		ret = lc.err;
	}
	res->complete_ns = monotonic_ns() - bp.t0;
	res->bytes_written = lc.bytes;
	res->wp_faults = lc.wp_faults;
	if (!ret && fsync(lc.image_fd) < 0)
		ret = -errno;
	if (!ret)
		ret = snap_writer_put(&w, SNAP_FILE_VMSTATE, state.data, state.len);
	if (!ret) /* the disk layers sealed at the branch instant */
		ret = snap_disks_put(vm, &w);
	if (!ret) {
		char *meta = live_meta(vm, o, lc.bytes);
		ret = meta ? snap_writer_put(&w, SNAP_FILE_META, meta, strlen(meta)) : -ENOMEM;
		free(meta);
	}
	if (!ret)
		ret = snap_writer_commit(&w);
	if (ret) {
		/* The writer names its failing step; the copier's own failures are an errno. */
		errmsg(err, ret, "live copy to %s: %s", o->dir,
		       errset(&werr) ? werr.msg : strerror(-ret));
		goto out;
	}
	writer = false;
	snprintf(res->snapshot, sizeof(res->snapshot), "%s", o->dir);
	if (unpopulated)
		log_info("live branch: %llu WP faults served during the copy",
			 (unsigned long long)lc.wp_faults);
	else
		log_info("live branch: %llu WP faults served during the copy; without "
			 "UFFD_FEATURE_WP_UNPOPULATED (Linux 6.4+) guest RAM was populated first: "
			 "%.1f ms, %llu bytes newly allocated", (unsigned long long)lc.wp_faults,
			 (double)res->populate_ns / 1e6, (unsigned long long)res->populated_bytes);
	ret = branch_restore_children(o->dir, o, res, err);
out:
	if (lc.uffd >= 0)
		close(lc.uffd); /* unregisters: any page still protected is released */
	if (lc.image_fd >= 0)
		close(lc.image_fd);
	if (writer)
		snap_writer_abort(&w);
	snap_buf_free(&state);
	free(lc.copied);
	return ret;
}
