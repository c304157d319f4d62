/* zstd and xz payload decoding (Debian 6.12's bzImage is zstd), with frames made here by
 * libzstd and liblzma in the kernel's layout: one frame/stream, then the le32 size. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <lzma.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#include "loader/payload.h"

/* Compressible but not trivial data. */
static uint8_t *make_data(size_t len)
{
	uint8_t *d = malloc(len);
	uint32_t x = 4242;

	assert_non_null(d);
	for (size_t i = 0; i < len; i++) {
		x = x * 1103515245 + 12345;
		d[i] = (uint8_t)((x >> 16) % 11 + 'A');
	}
	return d;
}

static void put32(uint8_t *p, uint32_t v)
{
	memcpy(p, &v, 4);
}

/* A zstd frame of src (+ the 4-byte size when trailer), with or without the content size in
 * its header (the kernel pipes into zstd, so its frame has none) and with a checksum. */
static uint8_t *zstd_frame(const uint8_t *src, size_t len, int content_size, int trailer,
			   size_t *out_len)
{
	size_t cap = ZSTD_compressBound(len) + 4, n;
	uint8_t *out = malloc(cap);
	ZSTD_CCtx *cctx = ZSTD_createCCtx();

	assert_non_null(out);
	assert_non_null(cctx);
	assert_false(ZSTD_isError(ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, 3)));
	assert_false(ZSTD_isError(ZSTD_CCtx_setParameter(cctx, ZSTD_c_contentSizeFlag, content_size)));
	assert_false(ZSTD_isError(ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 1)));
	n = ZSTD_compress2(cctx, out, cap, src, len);
	assert_false(ZSTD_isError(n));
	ZSTD_freeCCtx(cctx);
	if (trailer) {
		put32(out + n, (uint32_t)len);
		n += 4;
	}
	*out_len = n;
	return out;
}

/* An xz stream as the kernel's xz_wrap.sh makes it: x86 BCJ + LZMA2, CRC32. */
static uint8_t *xz_stream(const uint8_t *src, size_t len, int trailer, size_t *out_len)
{
	lzma_options_lzma opt;
	lzma_filter filters[] = {
		{ .id = LZMA_FILTER_X86, .options = NULL },
		{ .id = LZMA_FILTER_LZMA2, .options = &opt },
		{ .id = LZMA_VLI_UNKNOWN, .options = NULL },
	};
	size_t cap = lzma_stream_buffer_bound(len) + 4, n = 0;
	uint8_t *out = malloc(cap);

	assert_non_null(out);
	assert_false(lzma_lzma_preset(&opt, 1));
	assert_int_equal(lzma_stream_buffer_encode(filters, LZMA_CHECK_CRC32, NULL, src, len, out,
						   &n, cap), LZMA_OK);
	if (trailer) {
		put32(out + n, (uint32_t)len);
		n += 4;
	}
	*out_len = n;
	return out;
}

static void check_payload(uint8_t *c, size_t clen, const uint8_t *data, size_t len,
			  enum payload_format format)
{
	uint8_t *out = NULL;
	size_t olen = 0;

	assert_int_equal(payload_detect(c, clen), format);
	assert_int_equal(payload_decode(c, clen, &out, &olen), 0);
	assert_int_equal(olen, len);
	assert_memory_equal(out, data, len);
	free(out);
}

static void test_zstd_roundtrip(void **state)
{
	const size_t len = 6u << 20; /* several times the decoder's first 1 MiB buffer */
	uint8_t *data = make_data(len), *c;
	size_t clen;

	for (int content_size = 0; content_size <= 1; content_size++) {
		c = zstd_frame(data, len, content_size, 1, &clen);
		check_payload(c, clen, data, len, PAYLOAD_ZSTD);
		free(c);
	}
	c = zstd_frame(data, len, 0, 0, &clen); /* without the size: accepted */
	check_payload(c, clen, data, len, PAYLOAD_ZSTD);
	free(c);
	free(data);
}

static void test_zstd_consumed_and_bound(void **state)
{
	const size_t len = 3u << 20;
	uint8_t *data = make_data(len), *out = NULL;
	size_t clen, olen, used;

	for (int content_size = 0; content_size <= 1; content_size++) {
		uint8_t *c = zstd_frame(data, len, content_size, 1, &clen);

		assert_int_equal(zstd_decode(c, clen, len, &out, &olen, &used), 0);
		assert_int_equal(olen, len);
		assert_int_equal(used, clen - 4); /* the frame, not the size after it */
		assert_memory_equal(out, data, len);
		free(out);
		out = NULL;
		/* One byte more than allowed. */
		assert_int_equal(zstd_decode(c, clen, len - 1, &out, &olen, &used), -EFBIG);
		assert_null(out);
		free(c);
	}
	free(data);
}

static void test_zstd_bad_input(void **state)
{
	const size_t len = 2u << 20;
	uint8_t *data = make_data(len), *out = NULL;
	size_t clen, olen;
	uint8_t *c = zstd_frame(data, len, 0, 1, &clen);

	/* Truncated: half the frame, and the frame less its last byte (no size field). */
	assert_int_equal(payload_decode(c, clen / 2, &out, &olen), -EINVAL);
	assert_int_equal(payload_decode(c, clen - 5, &out, &olen), -EINVAL);
	/* The appended size disagrees with the data. */
	put32(c + clen - 4, (uint32_t)len + 1);
	assert_int_equal(payload_decode(c, clen, &out, &olen), -EINVAL);
	put32(c + clen - 4, (uint32_t)len);
	/* Stray bytes after the frame that are not the 4-byte size. */
	assert_int_equal(payload_decode(c, clen - 1, &out, &olen), -EINVAL);
	/* Corrupt compressed data (the frame checksum catches what the entropy decoder does not). */
	c[clen / 2] ^= 0x5a;
	c[clen / 2 + 1] ^= 0xa5;
	assert_int_equal(payload_decode(c, clen, &out, &olen), -EINVAL);
	/* Only the magic, and garbage after the magic. */
	assert_int_equal(payload_decode(c, 4, &out, &olen), -EINVAL);
	memset(c + 4, 0xff, 64);
	assert_int_equal(payload_decode(c, 68, &out, &olen), -EINVAL);
	assert_null(out);
	free(c);
	free(data);
}

static void test_xz_roundtrip_and_errors(void **state)
{
	const size_t len = 3u << 20;
	uint8_t *data = make_data(len), *out = NULL;
	size_t clen, olen, used;
	uint8_t *c = xz_stream(data, len, 1, &clen);

	check_payload(c, clen, data, len, PAYLOAD_XZ);
	assert_int_equal(xz_decode(c, clen, len, &out, &olen, &used), 0);
	assert_int_equal(used, clen - 4);
	free(out);
	out = NULL;
	assert_int_equal(xz_decode(c, clen, len - 1, &out, &olen, &used), -EFBIG);
	assert_int_equal(payload_decode(c, clen / 2, &out, &olen), -EINVAL);
	assert_int_equal(payload_decode(c, clen - 5, &out, &olen), -EINVAL);
	put32(c + clen - 4, 1);
	assert_int_equal(payload_decode(c, clen, &out, &olen), -EINVAL);
	put32(c + clen - 4, (uint32_t)len);
	c[clen / 2] ^= 0x5a;
	assert_int_equal(payload_decode(c, clen, &out, &olen), -EINVAL);
	assert_null(out);
	free(c);
	free(data);
}

static void test_small_and_empty(void **state)
{
	static const uint8_t hello[] = "hello, kernel";
	uint8_t *out = NULL, *c;
	size_t clen, olen;

	c = zstd_frame(hello, sizeof(hello), 1, 1, &clen);
	check_payload(c, clen, hello, sizeof(hello), PAYLOAD_ZSTD);
	free(c);
	c = zstd_frame(hello, 0, 0, 1, &clen);
	assert_int_equal(payload_decode(c, clen, &out, &olen), 0);
	assert_int_equal(olen, 0);
	free(out);
	free(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_zstd_roundtrip),
		cmocka_unit_test(test_zstd_consumed_and_bound),
		cmocka_unit_test(test_zstd_bad_input),
		cmocka_unit_test(test_xz_roundtrip_and_errors),
		cmocka_unit_test(test_small_and_empty),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
