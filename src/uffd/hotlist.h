/* Hot-page list (HPL1) and access log (FKAL) codecs: pure, strict, and shared by server and tests. */
#ifndef FORKVM_UFFD_HOTLIST_H
#define FORKVM_UFFD_HOTLIST_H

#include <stddef.h>
#include <stdint.h>

#include "util/errmsg.h"

#define HOTLIST_FILE "hotpages"
#define ACCESS_LOG_FILE "access.log"
#define HOTLIST_MAX_REGIONS 2

/* The guest RAM regions a list is checked against: sizes in bytes, tiling the memory file. */
struct hot_layout {
	int nregions;
	uint64_t size[HOTLIST_MAX_REGIONS];
	uint64_t offset[HOTLIST_MAX_REGIONS]; /* where each region starts in the memory file */
};

/* One hot page: region index and page number within that region. */
struct hot_page {
	uint32_t region;
	uint64_t page;
};

/* Sort and de-duplicate in place; returns the new count. */
size_t hot_pages_normalize(struct hot_page *pages, size_t n);

/* HPL1: "HPL1", uvarint count, count × (uvarint region, uvarint page). Caller frees *out. */
int hpl_encode(const struct hot_page *pages, size_t n, uint8_t **out, size_t *len);
/*
 * Strict decode: bad magic, truncation, a varint over 10 bytes, a count larger than the
 * bytes can hold, entries not strictly ascending, entries outside the layout, trailing
 * bytes → -EINVAL with one message in err. *pages is malloc'd (NULL when n == 0).
 */
int hpl_decode(const uint8_t *buf, size_t len, const struct hot_layout *layout,
	       struct hot_page **pages, size_t *n, struct fvm_err *err);

/* FKAL: "FKAL", u32 version 1, u64 count, count × u64 file page index, u64 XXH64. */
int alog_encode(const uint64_t *pages, size_t n, uint8_t **out, size_t *len);
int alog_decode(const uint8_t *buf, size_t len, uint64_t total_pages, uint64_t **pages,
		size_t *n, struct fvm_err *err);

/* File-page index of a hot page, and the reverse (-ERANGE outside the layout). */
uint64_t hot_page_file_index(const struct hot_layout *layout, const struct hot_page *p);
int hot_page_from_file_index(const struct hot_layout *layout, uint64_t index, struct hot_page *p);

/*
 * The largest files a list over total_pages pages can be: an HPL1 list holds each page at
 * most once (magic, count, then per page a 1-byte region and a page number of at most 10
 * bytes); an FKAL log at most one entry per page (the recorder stops there).
 */
#define HPL_MAX_BYTES(total_pages) (4ULL + 10 + (uint64_t)(total_pages) * 11)
#define ALOG_MAX_BYTES(total_pages) (16ULL + (uint64_t)(total_pages) * 8 + 8)


#endif
