/* HPL1 hot-page lists: sort/dedup, uvarint encode, strict decode against the RAM layout. */
#include "uffd/hotlist.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/errmsg.h"

static int cmp_page(const void *a, const void *b)
{
	const struct hot_page *x = a, *y = b;

	if (x->region != y->region)
		return x->region < y->region ? -1 : 1;
	return x->page < y->page ? -1 : x->page > y->page;
}

size_t hot_pages_normalize(struct hot_page *pages, size_t n)
{
	size_t out = 0;

	if (n == 0)
		return 0;
	qsort(pages, n, sizeof(*pages), cmp_page);
	for (size_t i = 1; i < n; i++)
		if (cmp_page(&pages[out], &pages[i]) != 0)
			pages[++out] = pages[i];
	return out + 1;
}

static size_t put_uvarint(uint8_t *p, uint64_t v)
{
	size_t n = 0;

	while (v >= 0x80) {
		p[n++] = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	p[n++] = (uint8_t)v;
	return n;
}

/* 0 and the value, or -EINVAL (truncated) / -EOVERFLOW (more than 64 bits). */
static int get_uvarint(const uint8_t *buf, size_t len, size_t *pos, uint64_t *v)
{
	uint64_t x = 0;

	for (unsigned shift = 0; shift < 70; shift += 7) {
		if (*pos >= len)
			return -EINVAL;
		uint8_t b = buf[(*pos)++];
		if (shift == 63 && b > 1)
			return -EOVERFLOW;
		x |= (uint64_t)(b & 0x7f) << shift;
		if (!(b & 0x80)) {
			*v = x;
			return 0;
		}
	}
	return -EOVERFLOW;
}

int hpl_encode(const struct hot_page *pages, size_t n, uint8_t **out, size_t *len)
{
	uint8_t *buf = malloc(4 + 10 + n * 20);
	size_t pos = 4;

	if (!buf)
		return -ENOMEM;
	memcpy(buf, "HPL1", 4);
	pos += put_uvarint(buf + pos, n);
	for (size_t i = 0; i < n; i++) {
		pos += put_uvarint(buf + pos, pages[i].region);
		pos += put_uvarint(buf + pos, pages[i].page);
	}
	*out = buf;
	*len = pos;
	return 0;
}

static const char *varint_problem(int ret)
{
	return ret == -EOVERFLOW ? "a varint longer than 64 bits" : "truncated";
}

int hpl_decode(const uint8_t *buf, size_t len, const struct hot_layout *layout,
	       struct hot_page **pages, size_t *n, struct fvm_err *err)
{
	struct hot_page *out = NULL;
	uint64_t count, region, page;
	size_t pos = 4;
	int ret;

	*pages = NULL;
	*n = 0;
	if (len < 4 || memcmp(buf, "HPL1", 4) != 0)
		return errmsg(err, -EINVAL, "bad magic (not an HPL1 hot-page list)");
	ret = get_uvarint(buf, len, &pos, &count);
	if (ret)
		return errmsg(err, -EINVAL, "count: %s", varint_problem(ret));
	/* Every entry takes at least two bytes: bound the count before allocating. */
	if (count > (len - pos) / 2)
		return errmsg(err, -EINVAL,
			      "truncated: count %llu needs at least %llu bytes, %zu left",
			      (unsigned long long)count, (unsigned long long)count * 2, len - pos);
	if (count && !(out = calloc(count, sizeof(*out))))
		return -ENOMEM;
	for (uint64_t i = 0; i < count; i++) {
		ret = get_uvarint(buf, len, &pos, &region);
		if (!ret)
			ret = get_uvarint(buf, len, &pos, &page);
		if (ret) {
			ret = errmsg(err, -EINVAL, "entry %llu: %s", (unsigned long long)i,
				   varint_problem(ret));
			goto err;
		}
		if (region >= (uint64_t)layout->nregions || page >= layout->size[region] / 4096) {
			ret = errmsg(err, -EINVAL,
				     "entry %llu (region %llu, page %llu) is outside guest RAM",
				     (unsigned long long)i, (unsigned long long)region,
				     (unsigned long long)page);
			goto err;
		}
		out[i] = (struct hot_page){ .region = (uint32_t)region, .page = page };
		if (i && cmp_page(&out[i - 1], &out[i]) >= 0) {
			ret = errmsg(err, -EINVAL,
				     "entry %llu is not after entry %llu (the list must be "
				   "sorted and de-duplicated)", (unsigned long long)i,
				   (unsigned long long)i - 1);
			goto err;
		}
	}
	if (pos != len) {
		ret = errmsg(err, -EINVAL, "%zu trailing bytes after %llu entries", len - pos,
			   (unsigned long long)count);
		goto err;
	}
	*pages = out;
	*n = (size_t)count;
	return 0;
err:
	free(out);
	return ret;
}

uint64_t hot_page_file_index(const struct hot_layout *layout, const struct hot_page *p)
{
	return layout->offset[p->region] / 4096 + p->page;
}

int hot_page_from_file_index(const struct hot_layout *layout, uint64_t index, struct hot_page *p)
{
	for (int r = 0; r < layout->nregions; r++) {
		uint64_t first = layout->offset[r] / 4096, pages = layout->size[r] / 4096;
		if (index >= first && index - first < pages) {
			*p = (struct hot_page){ .region = (uint32_t)r, .page = index - first };
			return 0;
		}
	}
	return -ERANGE;
}
