/* Files inside the snapshot's temp dir: small files whole, guest RAM as a sparse file. */
#include "snapshot/snap_format.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/fdio.h"
#include "util/log.h"
#include "util/clock.h"
#include "util/page.h"

/*
 * One pwrite per run of non-zero pages, at most 64 MiB (well under the kernel's 2 GiB cap).
 * Measured: io_uring batching and sync_file_range kicks were no faster than this.
 */
#define SNAP_RUN_MAX (64ULL << 20)

static int open_in_tmp(struct snap_writer *w, const char *name, int *fd)
{
	if (!w->tmp[0] || w->tmp_fd < 0)
		return snap_writer_fail(w, -EINVAL, "snapshot %s: write %s without a snapshot in "
					"progress", w->dir, name);
	if (!*name || strchr(name, '/') || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
		return snap_writer_fail(w, -EINVAL, "snapshot %s: bad file name '%s'", w->dir, name);
	*fd = openat(w->tmp_fd, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
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

/* Write each run of non-zero pages with one pwrite; the zero pages stay holes. */
static int write_runs(int fd, const uint8_t *mem, uint64_t size, uint64_t *written,
		      uint64_t *failed_at)
{
	uint64_t off = 0, start;
	int ret;

	while (off < size) {
		while (off < size && is_zero(mem + off, page_len(off, size)))
			off += page_len(off, size);
		start = off;
		while (off < size && off - start < SNAP_RUN_MAX &&
		       !is_zero(mem + off, page_len(off, size)))
			off += page_len(off, size);
		if (off == start)
			continue;
		ret = fd_pwrite_full(fd, mem + start, off - start, start);
		if (ret) {
			*failed_at = start;
			return ret;
		}
		*written += off - start;
	}
	return 0;
}

int snap_writer_put_memory(struct snap_writer *w, const uint8_t *mem, uint64_t size,
			   struct snap_mem_stats *stats)
{
	uint64_t t0 = monotonic_ns(), written = 0, failed_at = 0;
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
	ret = write_runs(fd, mem, size, &written, &failed_at);
	if (ret)
		snap_writer_fail(w, ret, "write %s/%s at offset %llu of %llu: %s", w->tmp,
				 SNAP_FILE_MEMORY, (unsigned long long)failed_at,
				 (unsigned long long)size, strerror(-ret));
out:
	ret = finish_file(w, SNAP_FILE_MEMORY, fd, ret);
	stats->bytes_total = size;
	stats->bytes_written = written;
	stats->ns = monotonic_ns() - t0;
	return ret;
}
