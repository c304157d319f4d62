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
#include <sys/syscall.h>
#include <unistd.h>

#include "core/log.h"
#include "core/vm.h"
#include "fork/branch.h"
#include "snapshot/snapshot.h"

#ifndef UFFD_FEATURE_WP_UNPOPULATED
#define UFFD_FEATURE_WP_UNPOPULATED (1 << 13) /* Linux 6.4; Debian's headers are older */
#endif

#define PAGE 4096ULL
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
	const uint8_t *src = lc->vm->mem.host + p * PAGE;

	if (lc->copied[p])
		return 0;
	if (!page_zero(src)) {
		if (pwrite(lc->image_fd, src, PAGE, (off_t)(p * PAGE)) != (ssize_t)PAGE)
			return errno ? -errno : -EIO;
		lc->bytes += PAGE;
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
		uint64_t p = (msg.arg.pagefault.address - (uint64_t)(uintptr_t)lc->vm->mem.host) / PAGE;
		int ret = p < lc->npages ? copy_page(lc, p) : -EFAULT;
		if (ret)
			return ret;
		lc->wp_faults++;
		ret = wp_range(lc->uffd, lc->vm->mem.host + p * PAGE, PAGE, false);
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
			ret = wp_range(lc->uffd, lc->vm->mem.host + c * PAGE, n * PAGE, false);
	}
	lc->err = ret;
	return NULL;
}

static int arm(struct live_copy *lc)
{
	/* WP_UNPOPULATED: a page never touched before the branch must trap on its first write too. */
	struct uffdio_api api = { .api = UFFD_API,
				  .features = UFFD_FEATURE_WP_HUGETLBFS_SHMEM |
					      UFFD_FEATURE_WP_UNPOPULATED };
	struct uffdio_register reg = { .range = { (uint64_t)(uintptr_t)lc->vm->mem.host,
						  lc->vm->mem.map_size },
				       .mode = UFFDIO_REGISTER_MODE_WP };

	lc->uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (lc->uffd < 0)
		return log_errno(-errno, "userfaultfd");
	if (ioctl(lc->uffd, UFFDIO_API, &api) < 0)
		return log_errno(-errno, "UFFDIO_API with shmem and unpopulated write-protect "
				 "(needs Linux 6.4)");
	if (ioctl(lc->uffd, UFFDIO_REGISTER, &reg) < 0)
		return log_errno(-errno, "UFFDIO_REGISTER write-protect over guest RAM");
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

int branch_live(struct vm *vm, const struct branch_opts *o, struct branch_result *res, char *err,
		size_t errlen)
{
	struct live_copy lc = { .vm = vm, .uffd = -1, .image_fd = -1 };
	struct snap_buf state;
	struct snap_writer w;
	struct branch_pause bp;
	bool writer = false;
	uint64_t t1;
	pthread_t thread;
	int ret;

	snap_buf_init(&state);
	if (vm->mem.backing != GUEST_MEM_MEMFD) {
		snprintf(err, errlen, "live needs memfd guest RAM (--backing memfd; this VM uses %s)",
			 guest_mem_backing_name(vm->mem.backing));
		return -EINVAL;
	}
	if (!o->dir) {
		snprintf(err, errlen, "the live strategy needs a directory for the frozen image");
		return -EINVAL;
	}
	lc.npages = vm->mem.size / PAGE;
	lc.copied = calloc(lc.npages, 1);
	if (!lc.copied)
		return -ENOMEM;
	if ((ret = snap_writer_begin(&w, o->dir, true))) {
		snprintf(err, errlen, "creating %s: %s", o->dir, strerror(-ret));
		goto out;
	}
	writer = true;
	lc.image_fd = openat(w.tmp_fd, SNAP_FILE_MEMORY, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	if (lc.image_fd < 0 || ftruncate(lc.image_fd, (off_t)vm->mem.size) < 0) {
		ret = -errno;
		snprintf(err, errlen, "creating the image in %s: %s", w.tmp, strerror(errno));
		goto out;
	}
	if ((ret = branch_pause_source(vm, o, res, &bp, err, errlen)))
		goto out;
	ret = snap_capture(vm, &state);
	if (!ret)
		ret = snap_buf_finish(&state);
	t1 = monotonic_ns();
	if (!ret)
		ret = arm(&lc);
	res->arm_ns = monotonic_ns() - t1;
	branch_resume_source(vm, res, &bp);
	if (ret) {
		snprintf(err, errlen, "arming write-protect: %s", strerror(-ret));
		goto out;
	}
	if ((ret = -pthread_create(&thread, NULL, copier, &lc)) == 0) {
		pthread_join(thread, NULL);
		ret = lc.err;
	}
	res->complete_ns = monotonic_ns() - bp.t0;
	res->bytes_written = lc.bytes;
	if (!ret && fsync(lc.image_fd) < 0)
		ret = -errno;
	if (!ret)
		ret = snap_writer_put(&w, SNAP_FILE_VMSTATE, state.data, state.len);
	if (!ret) {
		char *meta = live_meta(vm, o, lc.bytes);
		ret = meta ? snap_writer_put(&w, SNAP_FILE_META, meta, strlen(meta)) : -ENOMEM;
		free(meta);
	}
	if (!ret)
		ret = snap_writer_commit(&w);
	if (ret) {
		snprintf(err, errlen, "live copy to %s: %s", o->dir, strerror(-ret));
		goto out;
	}
	writer = false;
	snprintf(res->snapshot, sizeof(res->snapshot), "%s", o->dir);
	log_info("live branch: %llu WP faults served during the copy",
		 (unsigned long long)lc.wp_faults);
	ret = branch_restore_children(o->dir, o, res, err, errlen);
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
