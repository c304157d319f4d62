/* Guest I/O on a disk: reads top-down through the chain, writes to the top with copy-up. */
#include "disk/disk_impl.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "util/log.h"

#define CS DISK_CLUSTER_SIZE

static uint64_t min64(uint64_t a, uint64_t b)
{
	return a < b ? a : b;
}

/* Log an I/O failure once per kind (a guest retrying a full disk must not flood the log). */
static int io_fail(struct disk *d, int ret, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int io_fail(struct disk *d, int ret, const char *fmt, ...)
{
	unsigned kind = ret == -ENOSPC || ret == -EFBIG ? DISK_LOGGED_ENOSPC : DISK_LOGGED_EIO;
	char msg[768];
	va_list ap;

	if (d->logged & kind)
		return ret;
	d->logged |= kind;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	log_err("%s: %s (logged once; the guest gets an I/O error)", msg, strerror(-ret));
	return ret;
}

/* The part [skip, skip + len) of an iovec array; -EINVAL if the array is shorter. */
static int iov_slice(const struct iovec *iov, int cnt, uint64_t skip, uint64_t len,
		     struct iovec *out)
{
	int n = 0;

	for (int i = 0; i < cnt && len; i++) {
		uint64_t l = iov[i].iov_len, take;

		if (skip >= l) {
			skip -= l;
			continue;
		}
		take = min64(l - skip, len);
		out[n++] = (struct iovec){ (uint8_t *)iov[i].iov_base + skip, (size_t)take };
		len -= take;
		skip = 0;
	}
	return len ? -EINVAL : n;
}

static void iov_zero(const struct iovec *iov, int cnt, uint64_t skip)
{
	for (int i = 0; i < cnt; i++) {
		if (skip >= iov[i].iov_len) {
			skip -= iov[i].iov_len;
			continue;
		}
		memset((uint8_t *)iov[i].iov_base + skip, 0, iov[i].iov_len - skip);
		skip = 0;
	}
}

/* preadv/pwritev until len bytes moved (or end of file for reads): bytes moved or -errno. */
static int64_t rw_full(int fd, const struct iovec *in, int cnt, uint64_t off, uint64_t len,
		       bool write)
{
	struct iovec iov[DISK_MAX_IOV];
	struct iovec *p = iov;
	uint64_t done = 0;

	memcpy(iov, in, (size_t)cnt * sizeof(*iov));
	while (done < len && cnt > 0) {
		ssize_t n = write ? pwritev(fd, p, cnt, (off_t)(off + done))
				  : preadv(fd, p, cnt, (off_t)(off + done));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			break;
		done += (uint64_t)n;
		while (cnt > 0 && (size_t)n >= p->iov_len) {
			n -= (ssize_t)p->iov_len;
			p++;
			cnt--;
		}
		if (cnt > 0) {
			p->iov_base = (uint8_t *)p->iov_base + n;
			p->iov_len -= (size_t)n;
		}
	}
	return (int64_t)done;
}

/* Topmost layer below `limit` holding cluster c, or -1 for the base. */
static int owner(const struct disk *d, uint64_t c, int limit)
{
	for (int k = limit - 1; k >= 0; k--)
		if (disk_bit(d->layers[k]->bitmap, c))
			return k;
	return -1;
}

static int read_from(struct disk *d, int src, uint64_t pos, const struct iovec *iov, int cnt,
		     uint64_t len)
{
	uint64_t avail = src >= 0 ? len : pos >= d->base.size ? 0 : min64(len, d->base.size - pos);
	int fd = src >= 0 ? d->layers[src]->fd : d->base_fd;
	uint64_t foff = src >= 0 ? d->data_off + pos : pos;
	int64_t got = avail ? rw_full(fd, iov, cnt, foff, avail, false) : 0;

	if (got < 0)
		return io_fail(d, (int)got, "reading %s at offset %llu",
			       src >= 0 ? d->layers[src]->path : d->base_path, (unsigned long long)foff);
	if ((uint64_t)got < avail)
		return io_fail(d, -EIO, "reading %s at offset %llu: file ends early (truncated)",
			       src >= 0 ? d->layers[src]->path : d->base_path, (unsigned long long)foff);
	if (avail < len)
		iov_zero(iov, cnt, avail); /* past the end of the base: zeros */
	return 0;
}

/* [off, off + len) as stored below layer `limit`, run by run of clusters with one owner. */
static int read_below(struct disk *d, int limit, uint64_t off, const struct iovec *iov, int cnt,
		      uint64_t len)
{
	struct iovec part[DISK_MAX_IOV];
	uint64_t pos = off, end = off + len;

	while (pos < end) {
		int src = owner(d, pos / CS, limit), n, ret;
		uint64_t run = min64((pos / CS + 1) * CS, end);

		while (run < end && owner(d, run / CS, limit) == src)
			run = min64(run + CS, end);
		n = iov_slice(iov, cnt, pos - off, run - pos, part);
		if (n < 0)
			return io_fail(d, -EINVAL, "disk %s: buffers shorter than the request",
				       d->base_path);
		ret = read_from(d, src, pos, part, n, run - pos);
		if (ret)
			return ret;
		pos = run;
	}
	return 0;
}

static int check_range(struct disk *d, uint64_t off, int cnt, uint64_t len, const char *what)
{
	if (cnt < 0 || cnt > DISK_MAX_IOV)
		return io_fail(d, -EINVAL, "%s disk %s: %d buffers (at most %d)", what, d->base_path,
			       cnt, DISK_MAX_IOV);
	if (off > d->size || len > d->size - off)
		return io_fail(d, -EINVAL, "%s disk %s: %llu bytes at %llu are past its end (%llu)",
			       what, d->base_path, (unsigned long long)len, (unsigned long long)off,
			       (unsigned long long)d->size);
	return 0;
}

int disk_read(struct disk *d, uint64_t off, const struct iovec *iov, int iovcnt, uint64_t len)
{
	int ret = check_range(d, off, iovcnt, len, "reading");

	return ret ? ret : read_below(d, d->nlayers, off, iov, iovcnt, len);
}

static void mark_allocated(struct disk_layer *top, uint64_t first, uint64_t last)
{
	for (uint64_t c = first; c <= last; c++) {
		if (disk_bit(top->bitmap, c))
			continue;
		top->bitmap[c >> 3] |= (uint8_t)(1u << (c & 7));
		top->dirty[(c >> 3) / DISK_BITMAP_CHUNK] = 1;
		top->nalloc++;
		top->alloc_unsynced = true;
	}
}

/* Clusters the write covers whole, or that the top already holds: written in place. */
static int write_direct(struct disk *d, struct disk_layer *top, uint64_t pos, uint64_t len,
			const struct iovec *part, int n)
{
	int64_t put = rw_full(top->fd, part, n, d->data_off + pos, len, true);

	if (put >= 0 && (uint64_t)put < len)
		put = -ENOSPC;
	if (put < 0)
		return io_fail(d, (int)put, "writing overlay %s at offset %llu", top->path,
			       (unsigned long long)(d->data_off + pos));
	mark_allocated(top, pos / CS, (pos + len - 1) / CS);
	return 0;
}

/* A cluster the write covers only in part and the top lacks: copy it up, then write it whole. */
static int copy_up(struct disk *d, struct disk_layer *top, uint64_t pos, const struct iovec *part,
		   int n)
{
	uint64_t cstart = pos / CS * CS, clen = min64(cstart + CS, d->size) - cstart, at = pos - cstart;
	struct iovec b = { d->bounce, (size_t)clen };
	int ret = read_below(d, d->nlayers - 1, cstart, &b, 1, clen);

	if (ret)
		return ret;
	for (int i = 0; i < n; i++) {
		memcpy(d->bounce + at, part[i].iov_base, part[i].iov_len);
		at += part[i].iov_len;
	}
	ret = fd_pwrite_full(top->fd, d->bounce, (size_t)clen, d->data_off + cstart);
	if (ret)
		return io_fail(d, ret, "copying up cluster %llu into overlay %s",
			       (unsigned long long)(cstart / CS), top->path);
	mark_allocated(top, cstart / CS, cstart / CS);
	return 0;
}

/* Where a run of directly written clusters starting at pos ends (or 0 if pos needs copy-up). */
static uint64_t direct_run_end(const struct disk *d, const struct disk_layer *top, uint64_t pos,
			       uint64_t end)
{
	uint64_t run = pos;

	while (run < end) {
		uint64_t c = run / CS, cend = min64((c + 1) * CS, d->size), seg = min64(cend, end);
		bool whole = run == c * CS && seg == cend;

		if (!whole && !disk_bit(top->bitmap, c))
			break;
		run = seg;
	}
	return run;
}

int disk_write(struct disk *d, uint64_t off, const struct iovec *iov, int iovcnt, uint64_t len)
{
	struct iovec part[DISK_MAX_IOV];
	struct disk_layer *top;
	uint64_t pos = off, end = off + len;
	int ret = check_range(d, off, iovcnt, len, "writing");

	if (ret)
		return ret;
	if (!d->has_top)
		return io_fail(d, -EROFS, "writing disk %s: it is read-only (no writable top)",
			       d->base_path);
	top = d->layers[d->nlayers - 1];
	while (pos < end) {
		uint64_t run = direct_run_end(d, top, pos, end);
		bool direct = run > pos;
		int n;

		if (!direct)
			run = min64(min64((pos / CS + 1) * CS, d->size), end);
		n = iov_slice(iov, iovcnt, pos - off, run - pos, part);
		if (n < 0)
			return io_fail(d, -EINVAL, "disk %s: buffers shorter than the request",
				       d->base_path);
		ret = direct ? write_direct(d, top, pos, run - pos, part, n)
			     : copy_up(d, top, pos, part, n);
		if (ret)
			return ret;
		pos = run;
	}
	return 0;
}

int disk_flush(struct disk *d)
{
	return d->has_top ? disk_layer_flush(d, d->layers[d->nlayers - 1]) : 0;
}
