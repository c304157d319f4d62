/* FKAL access logs (fault order, checksummed) and atomic small-file reads/writes. */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "util/errmsg.h"
#include "util/log.h"
#include "snapshot/snap_layer.h"
#include "uffd/hotlist.h"

#define ALOG_HEADER 16

static void put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 7; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

int alog_encode(const uint64_t *pages, size_t n, uint8_t **out, size_t *len)
{
	size_t size = ALOG_HEADER + n * 8 + 8;
	uint8_t *buf = malloc(size);

	if (!buf)
		return -ENOMEM;
	memcpy(buf, "FKAL", 4);
	buf[4] = 1, buf[5] = buf[6] = buf[7] = 0;
	put64(buf + 8, n);
	for (size_t i = 0; i < n; i++)
		put64(buf + ALOG_HEADER + i * 8, pages[i]);
	put64(buf + size - 8, XXH64(buf, size - 8, 0));
	*out = buf;
	*len = size;
	return 0;
}

int alog_decode(const uint8_t *buf, size_t len, uint64_t total_pages, uint64_t **pages,
		size_t *n, struct fvm_err *err)
{
	uint64_t count, *out = NULL;

	*pages = NULL;
	*n = 0;
	if (len < 4 || memcmp(buf, "FKAL", 4) != 0)
		return errmsg(err, -EINVAL, "bad magic (not a forkvm access log)");
	if (len < ALOG_HEADER + 8)
		return errmsg(err, -EINVAL, "truncated: %zu bytes, the header alone needs %d",
			    len, ALOG_HEADER + 8);
	if ((uint32_t)get64(buf + 4) != 1)
		return errmsg(err, -EINVAL, "format version %u is not supported (1 is)",
			    (unsigned)(uint32_t)get64(buf + 4));
	count = get64(buf + 8);
	if (count > (len - ALOG_HEADER - 8) / 8 || len != ALOG_HEADER + count * 8 + 8)
		return errmsg(err, -EINVAL, "size %zu does not match %llu entries (%s)", len,
			    (unsigned long long)count,
			    count > (len - ALOG_HEADER - 8) / 8 ? "truncated" : "trailing bytes");
	if (XXH64(buf, len - 8, 0) != get64(buf + len - 8))
		return errmsg(err, -EINVAL, "checksum mismatch");
	if (count && !(out = malloc(count * 8)))
		return -ENOMEM;
	for (uint64_t i = 0; i < count; i++) {
		out[i] = get64(buf + ALOG_HEADER + i * 8);
		if (out[i] >= total_pages) {
			int ret = errmsg(err, -EINVAL, "entry %llu (page %llu) is outside guest "
				       "RAM (%llu pages)", (unsigned long long)i,
				       (unsigned long long)out[i], (unsigned long long)total_pages);
			free(out);
			return ret;
		}
	}
	*pages = count ? out : NULL;
	*n = (size_t)count;
	return 0;
}
