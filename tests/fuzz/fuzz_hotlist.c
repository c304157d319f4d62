/* libFuzzer harness: HPL1 hot-page lists and FKAL access logs (src/uffd/hotlist.c, access_log.c).
 * Input: byte 0 picks the codec and whether to fix up the FKAL checksum, bytes 1..8 the guest
 * layout (region sizes in pages), the rest is the encoded file. A list that decodes must
 * survive an encode/decode round trip (FKAL: byte for byte; HPL1: same entries). */
#include "fuzz_util.h"
#include "uffd/hotlist.h"
#include "util/errmsg.h"

#include <xxhash.h>

static void fuzz_hpl(const uint8_t *buf, size_t len, const struct hot_layout *layout)
{
	struct hot_page *pages, *back;
	uint8_t *again;
	size_t n, again_len, back_n;
	struct fvm_err err = FVM_ERR_INIT;

	if (hpl_decode(buf, len, layout, &pages, &n, &err))
		return;
	for (size_t i = 0; i < n; i++) {
		struct hot_page rt;
		uint64_t idx = hot_page_file_index(layout, &pages[i]);

		if (hot_page_from_file_index(layout, idx, &rt) || rt.region != pages[i].region ||
		    rt.page != pages[i].page)
			abort(); /* a decoded entry must map to a file page and back */
	}
	if (hot_pages_normalize(pages, n) != n)
		abort(); /* decode already requires sorted, de-duplicated entries */
	if (hpl_encode(pages, n, &again, &again_len))
		abort();
	/* Varints may be over-long (0x80 0x00 is 0): not one encoding per list, but the minimal
	 * re-encoding must be no longer and decode to the same entries. */
	if (again_len > len || hpl_decode(again, again_len, layout, &back, &back_n, &err) ||
	    back_n != n)
		abort();
	for (size_t i = 0; i < n; i++)
		if (back[i].region != pages[i].region || back[i].page != pages[i].page)
			abort();
	free(back);
	free(again);
	free(pages);
}

static void fuzz_alog(uint8_t *buf, size_t len, uint64_t total_pages, int fixup)
{
	uint64_t *pages;
	uint8_t *again;
	size_t n, again_len;
	struct fvm_err err = FVM_ERR_INIT;

	if (fixup && len >= 8) {
		uint64_t sum = XXH64(buf, len - 8, 0);

		for (int i = 0; i < 8; i++)
			buf[len - 8 + i] = (uint8_t)(sum >> (8 * i));
	}
	if (alog_decode(buf, len, total_pages, &pages, &n, &err))
		return;
	if (alog_encode(pages, n, &again, &again_len))
		abort();
	if (again_len != len || memcmp(again, buf, len))
		abort();
	free(again);
	free(pages);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fz f = { data, size, 0 };
	struct hot_layout layout = { 0 };
	unsigned mode = (unsigned)fz_uint(&f, 1);
	uint64_t total = 0;
	size_t len;
	const uint8_t *body;
	uint8_t *copy;

	/* One or two regions of up to 2^32-1 pages each, tiling the memory file. */
	layout.nregions = 1 + (mode >> 7);
	for (int i = 0; i < layout.nregions; i++) {
		layout.size[i] = fz_uint(&f, 4) * 4096;
		layout.offset[i] = total;
		total += layout.size[i];
	}
	if (layout.nregions == 1)
		(void)fz_uint(&f, 4); /* keep the header a fixed 9 bytes */
	body = fz_bytes(&f, fz_left(&f), &len);
	copy = fz_dup(body, len);
	if (mode & 1)
		fuzz_alog(copy, len, total / 4096, mode & 2);
	else
		fuzz_hpl(copy, len, &layout);
	free(copy);
	return 0;
}
