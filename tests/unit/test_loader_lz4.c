/* LZ4 legacy and gzip payload decoding, with buffers compressed here by liblz4 and zlib. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <lz4.h>
#include <stdlib.h>
#include <string.h>

#include "image/cpio.h"
#include "loader/payload.h"

static void put32(uint8_t *p, uint32_t v)
{
	memcpy(p, &v, 4);
}

/* Compressible but not trivial data. */
static uint8_t *make_data(size_t len)
{
	uint8_t *d = malloc(len);
	uint32_t x = 12345;

	for (size_t i = 0; i < len; i++) {
		x = x * 1103515245 + 12345;
		d[i] = (uint8_t)((x >> 16) % 7 + 'a');
	}
	return d;
}

/* The kernel's format: magic, [le32 size + block] per 8 MiB, then le32 total (optional). */
static uint8_t *lz4_legacy(const uint8_t *src, size_t len, int trailer, size_t *out_len)
{
	size_t cap = 8 + (len / LZ4_LEGACY_BLOCK + 1) * (LZ4_compressBound(LZ4_LEGACY_BLOCK) + 4);
	uint8_t *out = malloc(cap);
	size_t pos = 4;

	put32(out, LZ4_LEGACY_MAGIC);
	for (size_t off = 0; off < len; off += LZ4_LEGACY_BLOCK) {
		int chunk = (int)(len - off < LZ4_LEGACY_BLOCK ? len - off : LZ4_LEGACY_BLOCK);
		int n = LZ4_compress_default((const char *)src + off, (char *)out + pos + 4, chunk,
					     (int)(cap - pos - 4));

		assert_true(n > 0);
		put32(out + pos, (uint32_t)n);
		pos += 4 + (size_t)n;
	}
	if (trailer) {
		put32(out + pos, (uint32_t)len);
		pos += 4;
	}
	*out_len = pos;
	return out;
}

static void roundtrip(size_t len, int trailer)
{
	uint8_t *data = make_data(len), *out = NULL;
	size_t clen, olen;
	uint8_t *c = lz4_legacy(data, len, trailer, &clen);

	assert_int_equal(payload_detect(c, clen), PAYLOAD_LZ4);
	assert_int_equal(payload_decode(c, clen, &out, &olen), 0);
	assert_int_equal(olen, len);
	assert_memory_equal(out, data, len);
	free(out);
	free(c);
	free(data);
}

static void test_single_block(void **state) { roundtrip(100000, 1); }
static void test_multi_block(void **state) { roundtrip(20u << 20, 1); }
static void test_no_trailer(void **state) { roundtrip(3u << 20, 0); }

static void test_corrupt(void **state)
{
	size_t len = 1u << 20, clen, olen;
	uint8_t *data = make_data(len), *out = NULL;
	uint8_t *c = lz4_legacy(data, len, 1, &clen);

	assert_int_equal(lz4_legacy_decode(c, clen - 100, &out, &olen), -EINVAL); /* truncated */
	put32(c + clen - 4, 77);
	assert_int_equal(lz4_legacy_decode(c, clen, &out, &olen), -EINVAL); /* size mismatch */
	assert_int_equal(lz4_legacy_decode(c, 4, &out, &olen), -EINVAL);   /* magic only */
	c[0] ^= 0xff;
	assert_int_equal(lz4_legacy_decode(c, clen, &out, &olen), -EINVAL); /* no magic */
	free(c);
	free(data);
}

static void test_detect(void **state)
{
	static const uint8_t xz[] = { 0xfd, '7', 'z', 'X', 'Z', 0 }, zstd[] = { 0x28, 0xb5, 0x2f, 0xfd },
			     bz[] = "BZh9", junk[] = "hello";
	uint8_t *out;
	size_t olen;

	assert_int_equal(payload_detect(xz, sizeof(xz)), PAYLOAD_XZ);
	assert_string_equal(payload_format_name(PAYLOAD_XZ), "xz");
	assert_int_equal(payload_detect(zstd, sizeof(zstd)), PAYLOAD_ZSTD);
	assert_int_equal(payload_detect(bz, 4), PAYLOAD_BZIP2);
	assert_int_equal(payload_detect(junk, 5), PAYLOAD_UNKNOWN);
	assert_int_equal(payload_decode(bz, 4, &out, &olen), -ENOTSUP);
	/* zstd is decoded (test_loader_zstd.c): a bare magic is a truncated frame. */
	assert_int_equal(payload_decode(zstd, sizeof(zstd), &out, &olen), -EINVAL);
}

static void test_gzip(void **state)
{
	size_t len = 5u << 20, glen, olen;
	uint8_t *data = make_data(len), *gz, *out;

	assert_int_equal(gzip_compress(data, len, &gz, &glen), 0);
	assert_int_equal(payload_detect(gz, glen), PAYLOAD_GZIP);
	assert_int_equal(payload_decode(gz, glen, &out, &olen), 0);
	assert_int_equal(olen, len);
	assert_memory_equal(out, data, len);
	free(out);
	assert_int_equal(gzip_decode(gz, glen / 2, &out, &olen), -EINVAL);
	free(gz);
	free(data);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_single_block), cmocka_unit_test(test_multi_block),
		cmocka_unit_test(test_no_trailer),   cmocka_unit_test(test_corrupt),
		cmocka_unit_test(test_detect),	     cmocka_unit_test(test_gzip),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
