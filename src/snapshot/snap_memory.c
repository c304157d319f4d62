/* Files inside the snapshot's temp dir: small files whole, guest RAM as a sparse file. */
#include "snapshot/snap_format.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <linux/magic.h>
#include <unistd.h>

#include "util/fdio.h"
#include "util/guarded_copy.h"
#include "util/thread.h"
#include "util/log.h"
#include "util/clock.h"
#include "util/page.h"

static int open_in_tmp(struct snap_writer *w, const char *name, int *fd)
{
	if (!w->tmp[0] || w->tmp_fd < 0)
		return snap_writer_fail(w, -EINVAL, "snapshot %s: write %s without a snapshot in "
					"progress", w->dir, name);
	if (!*name || strchr(name, '/') || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
		return snap_writer_fail(w, -EINVAL, "snapshot %s: bad file name '%s'", w->dir, name);
	*fd = openat(w->tmp_fd, name, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600); /* RDWR: mmap */
	if (*fd < 0)
		return snap_writer_fail(w, -errno, "create %s/%s: %s", w->tmp, name,
					strerror(errno));
	return 0;
}

/* fsync and close; a file is only done when both succeed (close can report NFS errors). */
static int finish_file(struct snap_writer *w, const char *name, int fd, int ret)
{
	if (!ret && fsync(fd) < 0)
		ret = snap_writer_fail(w, -errno, "fsync %s/%s: %s", w->tmp, name, strerror(errno));
	if (close(fd) < 0 && !ret)
		ret = snap_writer_fail(w, -errno, "close %s/%s: %s", w->tmp, name, strerror(errno));
	return ret;
}

int snap_writer_put(struct snap_writer *w, const char *name, const void *data, size_t len)
{
	int fd, ret;

	ret = open_in_tmp(w, name, &fd);
	if (ret)
		return ret;
	ret = fd_pwrite_full(fd, data, len, 0);
	if (ret)
		snap_writer_fail(w, ret, "write %s/%s (%zu bytes): %s", w->tmp, name, len,
				 strerror(-ret));
	return finish_file(w, name, fd, ret);
}

/* Zero pages are the common case and must be read in full: OR 64 bytes per test. */
static bool is_zero(const uint8_t *p, size_t len)
{
	uint64_t v[8];
	size_t i = 0;

	for (; i + 64 <= len; i += 64) {
		memcpy(v, p + i, 64);
		if (v[0] | v[1] | v[2] | v[3] | v[4] | v[5] | v[6] | v[7])
			return false;
	}
	for (; i < len; i++) {
		if (p[i])
			return false;
	}
	return true;
}

static size_t page_len(uint64_t off, uint64_t size)
{
	return (size_t)(size - off < PAGE_4K ? size - off : PAGE_4K);
}

/*
 * Guest RAM is written by two threads, chunk by chunk: this one with pwrite, a helper by
 * copying into a shared mapping of the file. pwrite holds the file's inode lock while it
 * allocates and fills each page, so two pwrite threads only take turns; a page fault on the
 * mapping does not take it, so the helper allocates beside it (each of its pages costs about
 * twice a pwrite's: a fault, and a page cleared first). Measured, 1 GiB into /dev/shm on a
 * 2-core host: pwrite alone 377 ms, two pwrite threads 365 ms, pwrite and the helper 263 ms
 * (docs/PERFORMANCE.md, "Snapshots"). tmpfs only (helper_start). A chunk the helper cannot
 * copy (SIGBUS: the file system is full) is written again with pwrite, which says why.
 * Tried before, and no faster than one pwrite per run: io_uring batching, sync_file_range.
 */
#define SNAP_CHUNK (8ULL << 20)
#define SNAP_HELPER_MIN (64ULL << 20) /* below this a second thread costs more than it gives */
#define NO_CHUNK UINT64_MAX

/* Test hook (snap_format.h): every copy of the helper fails, as on a full file system. */
static bool helper_fails;

void snap_memory_test_helper_fails(bool fail)
{
	helper_fails = fail;
}

struct mem_write {
	int fd;
	const uint8_t *mem;
	uint8_t *map;			/* the file mapped shared for the helper; NULL: no helper */
	uint64_t size, nchunks;
	_Atomic uint64_t next;		/* the next chunk either thread takes, up to shared */
	uint64_t shared;		/* with a helper, the last chunk is its own: nchunks - 1 */
	atomic_bool stop;		/* pwrite failed: the helper takes no more chunks */
	uint64_t helper_written;	/* the helper's own: read after the join */
	uint64_t redo;			/* the chunk the helper gave back, or NO_CHUNK */
};

/* Write each run of non-zero pages of one chunk, by pwrite or into the mapping; the zero
 * pages stay holes. Adds to *written only when the whole chunk is done. */
static int write_chunk(struct mem_write *mw, uint64_t chunk, bool mapped, uint64_t *written,
		       uint64_t *failed_at)
{
	uint64_t off = chunk * SNAP_CHUNK, end = off + SNAP_CHUNK, start, done = 0;
	int ret;

	if (end > mw->size)
		end = mw->size;
	while (off < end) {
		while (off < end && is_zero(mw->mem + off, page_len(off, end)))
			off += page_len(off, end);
		start = off;
		while (off < end && !is_zero(mw->mem + off, page_len(off, end)))
			off += page_len(off, end);
		if (off == start)
			continue;
		if (!mapped)
			ret = fd_pwrite_full(mw->fd, mw->mem + start, off - start, start);
		else if (helper_fails)
			ret = -EIO;
		else
			ret = guarded_copy(mw->map + start, mw->mem + start, off - start);
		if (ret) {
			*failed_at = start;
			return ret;
		}
		done += off - start;
	}
	*written += done;
	return 0;
}

/* The last chunk first, its own (so it always has a share, whenever it starts), then the
 * shared ones. One it cannot copy it leaves for the writer to redo, and stops. */
static void *helper_main(void *arg)
{
	struct mem_write *mw = arg;
	uint64_t chunk = mw->nchunks - 1, failed_at;

	do {
		if (write_chunk(mw, chunk, true, &mw->helper_written, &failed_at)) {
			mw->redo = chunk;
			break;
		}
	} while (!atomic_load(&mw->stop) && (chunk = atomic_fetch_add(&mw->next, 1)) < mw->shared);
	return NULL;
}

/* The helper, when RAM is large enough, the file is on tmpfs and maps; without it this thread
 * writes everything (a failed mmap or thread start costs speed, not the snapshot). Only tmpfs:
 * on ext4 the helper made the snapshot slower (1 GiB to /var/tmp, fsync included: 491 ms by
 * pwrite alone, 730 ms with the helper, whose write faults reserve blocks page by page). */
static bool helper_start(struct mem_write *mw, pthread_t *thread)
{
	struct statfs fs;
	void *map;

	if (mw->size < SNAP_HELPER_MIN || fstatfs(mw->fd, &fs) < 0 || fs.f_type != TMPFS_MAGIC)
		return false;
	map = mmap(NULL, mw->size, PROT_READ | PROT_WRITE, MAP_SHARED, mw->fd, 0);
	if (map == MAP_FAILED) {
		log_debug("snapshot: one writer thread (mapping the memory file: %s)",
			  strerror(errno));
		return false;
	}
	if (guarded_copy_begin() == 0) {
		mw->map = map;
		mw->shared = mw->nchunks - 1;
		if (thread_start(thread, helper_main, mw) == 0)
			return true;
		guarded_copy_end();
		mw->map = NULL;
		mw->shared = mw->nchunks;
	}
	log_debug("snapshot: one writer thread (no helper thread)");
	munmap(map, mw->size);
	return false;
}

static int write_runs(int fd, const uint8_t *mem, uint64_t size, struct snap_mem_stats *st,
		      uint64_t *failed_at)
{
	uint64_t chunk, nchunks = (size + SNAP_CHUNK - 1) / SNAP_CHUNK;
	struct mem_write mw = { .fd = fd, .mem = mem, .size = size, .redo = NO_CHUNK,
				.nchunks = nchunks, .shared = nchunks };
	pthread_t helper;
	bool helped = helper_start(&mw, &helper);
	int ret = 0;

	while ((chunk = atomic_fetch_add(&mw.next, 1)) < mw.shared) {
		ret = write_chunk(&mw, chunk, false, &st->bytes_written, failed_at);
		if (ret) {
			atomic_store(&mw.stop, true);
			break;
		}
	}
	if (helped) {
		pthread_join(helper, NULL);
		guarded_copy_end();
		if (munmap(mw.map, size) < 0 && !ret)
			log_warn("snapshot: unmapping the memory file: %s", strerror(errno));
		st->bytes_by_helper = mw.helper_written;
		st->bytes_written += mw.helper_written;
	}
	if (!ret && mw.redo != NO_CHUNK)
		ret = write_chunk(&mw, mw.redo, false, &st->bytes_written, failed_at);
	return ret;
}

int snap_writer_put_memory(struct snap_writer *w, const uint8_t *mem, uint64_t size,
			   struct snap_mem_stats *stats)
{
	uint64_t t0 = monotonic_ns(), failed_at = 0;
	int fd, ret;

	memset(stats, 0, sizeof(*stats));
	if (size > (uint64_t)INT64_MAX)
		return snap_writer_fail(w, -EFBIG, "snapshot %s: guest RAM of %llu bytes is too "
					"large", w->dir, (unsigned long long)size);
	ret = open_in_tmp(w, SNAP_FILE_MEMORY, &fd);
	if (ret)
		return ret;
	/* The file gets its full size first: everything not written below reads as zero. */
	if (ftruncate(fd, (off_t)size) < 0) {
		ret = snap_writer_fail(w, -errno, "resize %s/%s to %llu bytes: %s", w->tmp,
				       SNAP_FILE_MEMORY, (unsigned long long)size, strerror(errno));
		goto out;
	}
	ret = write_runs(fd, mem, size, stats, &failed_at);
	if (ret)
		snap_writer_fail(w, ret, "write %s/%s at offset %llu of %llu: %s", w->tmp,
				 SNAP_FILE_MEMORY, (unsigned long long)failed_at,
				 (unsigned long long)size, strerror(-ret));
out:
	ret = finish_file(w, SNAP_FILE_MEMORY, fd, ret);
	stats->bytes_total = size;
	stats->ns = monotonic_ns() - t0;
	return ret;
}
