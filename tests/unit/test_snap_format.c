/* The vmstate container: round trip, and one clear error for every kind of damage. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "snapshot/snap_format.h"
#include "util/errmsg.h"

static uint8_t lapic[1024], regs0[144], regs1[144], serial[13];

static void fill(uint8_t *p, size_t len, uint8_t seed)
{
	for (size_t i = 0; i < len; i++)
		p[i] = (uint8_t)(seed + i * 7);
}

/* config(0) empty, regs(0), regs(1), lapic(0), serial(0x3f8) with padding, then end. */
static uint8_t *good_image(size_t *len)
{
	struct snap_buf b;
	uint8_t *data;

	fill(lapic, sizeof(lapic), 1);
	fill(regs0, sizeof(regs0), 2);
	fill(regs1, sizeof(regs1), 3);
	fill(serial, sizeof(serial), 4);
	snap_buf_init(&b);
	snap_buf_add(&b, SNAP_SEC_CONFIG, 0, NULL, 0);
	snap_buf_add(&b, SNAP_SEC_REGS, 0, regs0, sizeof(regs0));
	snap_buf_add(&b, SNAP_SEC_REGS, 1, regs1, sizeof(regs1));
	snap_buf_add(&b, SNAP_SEC_LAPIC, 0, lapic, sizeof(lapic));
	snap_buf_add(&b, SNAP_SEC_SERIAL, 0x3f8, serial, sizeof(serial));
	assert_int_equal(snap_buf_finish(&b), 0);
	data = b.data;
	*len = b.len;
	return data;
}

/* Parse a private copy of exactly len bytes (so ASan sees any overread); return the error. */
static int parse_copy(const uint8_t *img, size_t len, struct fvm_err *err)
{
	uint8_t *copy = malloc(len ? len : 1);
	struct snap_state st;

	int ret;

	memcpy(copy, img, len);
	ret = snap_state_parse(copy, len, &st, err);
	if (!ret)
		snap_state_free(&st);
	return ret;
}

static void expect_error(const uint8_t *img, size_t len, const char *want)
{
	struct fvm_err err = FVM_ERR_INIT;

	assert_int_equal(parse_copy(img, len, &err), -EINVAL);
	if (!strstr(err.msg, want))
		fail_msg("error '%s' does not contain '%s'", err.msg, want);
}

static void put64(uint8_t *p, uint64_t v)
{
	memcpy(p, &v, 8);
}

static void test_round_trip(void **state)
{
	size_t len;
	uint8_t *img = good_image(&len);
	const struct snap_section *s;
	struct snap_state st;
	struct fvm_err err = FVM_ERR_INIT;

	assert_int_equal(len % 8, 0);
	assert_int_equal(snap_state_parse(img, len, &st, &err), 0);
	assert_int_equal(st.version, SNAP_VERSION);
	assert_int_equal(st.nsections, 5);
	s = snap_state_find(&st, SNAP_SEC_REGS, 1);
	assert_non_null(s);
	assert_int_equal(s->len, sizeof(regs1));
	assert_memory_equal(s->data, regs1, sizeof(regs1));
	s = snap_state_find(&st, SNAP_SEC_LAPIC, 0);
	assert_non_null(s);
	assert_memory_equal(s->data, lapic, sizeof(lapic));
	s = snap_state_find(&st, SNAP_SEC_SERIAL, 0x3f8);
	assert_non_null(s);
	assert_int_equal(s->len, sizeof(serial));
	assert_memory_equal(s->data, serial, sizeof(serial));
	assert_int_equal(snap_state_find(&st, SNAP_SEC_CONFIG, 0)->len, 0);
	assert_null(snap_state_find(&st, SNAP_SEC_REGS, 2));
	assert_null(snap_state_find(&st, SNAP_SEC_END, 0));
	/* Payloads are 8-byte aligned in the image. */
	assert_int_equal((s->data - st.data) % 8, 0);
	snap_state_free(&st);
	assert_null(st.data);
}

static void test_empty_image(void **state)
{
	struct snap_buf b;
	struct snap_state st;
	struct fvm_err err = FVM_ERR_INIT;

	snap_buf_init(&b);
	assert_int_equal(snap_buf_finish(&b), 0);
	assert_int_equal(b.len, 16 + 24 + 8);
	assert_int_equal(snap_state_parse(b.data, b.len, &st, &err), 0);
	assert_int_equal(st.nsections, 0);
	snap_state_free(&st);
}

static void test_section_names(void **state)
{
	assert_string_equal(snap_section_name(SNAP_SEC_CONFIG), "config");
	assert_string_equal(snap_section_name(SNAP_SEC_LAPIC), "lapic");
	assert_string_equal(snap_section_name(SNAP_SEC_PROBE), "probe");
	assert_string_equal(snap_section_name(SNAP_SEC_END), "end");
	assert_string_equal(snap_section_name(0), "unknown");
	assert_string_equal(snap_section_name(999), "unknown");
	assert_string_equal(snap_section_name(UINT32_MAX), "unknown");
}

static void test_bad_magic_and_version(void **state)
{
	size_t len;
	uint8_t *img = good_image(&len);

	img[0] = 'X';
	expect_error(img, len, "vmstate: bad magic (not a forkvm snapshot)");
	expect_error(img, 3, "vmstate: truncated header");
	img[0] = 'F';
	img[8] = 7;
	expect_error(img, len, "vmstate: format version 7 is not supported (this forkvm reads "
			       "version 1)");
	img[8] = 1;
	img[12] = 32;
	expect_error(img, len, "vmstate: header size 32, expected 16");
	free(img);
}

static void test_payload_corruption_names_section(void **state)
{
	size_t len;
	uint8_t *img = good_image(&len);
	/* header 16; config 24; regs0 24+144; regs1 24+144; lapic header 24 */
	size_t lapic_payload = 16 + 24 + (24 + 144) * 2 + 24;

	img[lapic_payload + 100] ^= 0x40;
	expect_error(img, len, "vmstate: checksum mismatch in section 'lapic' instance 0");
	img[lapic_payload + 100] ^= 0x40;
	img[16 + 24 + 24 + 144 + 24 + 5] ^= 1;
	expect_error(img, len, "vmstate: checksum mismatch in section 'regs' instance 1");
	free(img);
}

static void test_end_checksums(void **state)
{
	size_t len;
	uint8_t *img = good_image(&len);

	img[len - 1] ^= 0xff; /* the whole-file checksum itself */
	expect_error(img, len, "vmstate: whole-file checksum mismatch");
	img[len - 1] ^= 0xff;
	img[len - 8 - 8] ^= 0xff; /* the end section's own payload checksum */
	expect_error(img, len, "vmstate: checksum mismatch in section 'end'");
	img[len - 8 - 8] ^= 0xff;
	img[len - 32 + 4] = 1; /* end instance */
	expect_error(img, len, "vmstate: malformed end section");
	img[len - 32 + 4] = 0;
	img[16 + 4] = 9; /* a section header byte: only the whole-file checksum covers it */
	expect_error(img, len, "vmstate: whole-file checksum mismatch");
	free(img);
}

/* Every single-bit flip anywhere in the image is detected. */
static void test_every_bit_flip_detected(void **state)
{
	size_t len;
	uint8_t *img = good_image(&len);
	struct fvm_err err = FVM_ERR_INIT;

	for (size_t i = 0; i < len; i++) {
		for (int bit = 0; bit < 8; bit += 3) {
			img[i] ^= (uint8_t)(1 << bit);
			if (parse_copy(img, len, &err) != -EINVAL)
				fail_msg("flip of bit %d at offset %zu was not detected", bit, i);
			img[i] ^= (uint8_t)(1 << bit);
		}
	}
	free(img);
}

/* Cut at every offset: always an error about truncation, never a crash or overread. */
static void test_truncated_everywhere(void **state)
{
	size_t len;
	uint8_t *img = good_image(&len);
	struct fvm_err err = FVM_ERR_INIT;

	for (size_t cut = 0; cut < len; cut++) {
		assert_int_equal(parse_copy(img, cut, &err), -EINVAL);
		if (!strstr(err.msg, "truncated") && !strstr(err.msg, "missing end section"))
			fail_msg("cut at %zu: unexpected error '%s'", cut, err.msg);
	}
	/* A cut inside the regs(1) payload names it. */
	expect_error(img, 16 + 24 + 168 + 24 + 10, "vmstate: truncated in section 'regs' instance 1");
	/* A cut exactly at a section boundary: no end section. */
	expect_error(img, 16 + 24, "vmstate: missing end section");
	free(img);
}

static void test_trailing_bytes(void **state)
{
	size_t len;
	uint8_t *img = good_image(&len);

	img = realloc(img, len + 12);
	memset(img + len, 0, 12);
	expect_error(img, len + 12, "vmstate: 12 trailing bytes after the end section");
	free(img);
}

static void test_giant_length_field(void **state)
{
	static const uint64_t lens[] = { UINT64_MAX, UINT64_MAX - 7, 1ULL << 63, (64ULL << 20) + 1,
					 SIZE_MAX - 20 };
	size_t len;
	uint8_t *img = good_image(&len);
	struct fvm_err err = FVM_ERR_INIT;

	for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
		put64(img + 16 + 24 + 8, lens[i]); /* regs(0) length */
		assert_int_equal(parse_copy(img, len, &err), -EINVAL);
		assert_non_null(strstr(err.msg, "section 'regs' instance 0 claims"));
	}
	/* Under the cap but beyond the image. */
	put64(img + 16 + 24 + 8, 60 << 20);
	expect_error(img, len, "vmstate: truncated in section 'regs' instance 0");
	free(img);
}

static void test_duplicate_section(void **state)
{
	struct snap_buf b;
	uint64_t v = 1;

	snap_buf_init(&b);
	snap_buf_add(&b, SNAP_SEC_TSC_KHZ, 0, &v, 8);
	snap_buf_add(&b, SNAP_SEC_TSC_KHZ, 1, &v, 8);
	snap_buf_add(&b, SNAP_SEC_TSC_KHZ, 0, &v, 8);
	assert_int_equal(snap_buf_finish(&b), 0);
	expect_error(b.data, b.len, "vmstate: duplicate section 'tsc_khz' instance 0");
	snap_buf_free(&b);
}

static void test_buf_rejects_bad_sections(void **state)
{
	struct snap_buf b;
	uint64_t v = 0;

	snap_buf_init(&b);
	snap_buf_add(&b, SNAP_SEC_END, 0, &v, 8);
	snap_buf_add(&b, SNAP_SEC_REGS, 0, &v, 8); /* ignored: the error is sticky */
	assert_int_equal(snap_buf_finish(&b), -EINVAL);
	snap_buf_free(&b);
	snap_buf_init(&b);
	snap_buf_add(&b, SNAP_SEC_XSAVE, 0, &v, (64ULL << 20) + 1);
	assert_int_equal(snap_buf_finish(&b), -EFBIG);
	snap_buf_free(&b);
	assert_null(b.data);
}

/* A big image grows the buffer many times; every section still verifies. */
static void test_many_sections(void **state)
{
	static uint8_t payload[5000];
	struct snap_state st;
	struct snap_buf b;
	struct fvm_err err = FVM_ERR_INIT;

	fill(payload, sizeof(payload), 9);
	snap_buf_init(&b);
	for (uint32_t i = 0; i < 300; i++)
		snap_buf_add(&b, SNAP_SEC_MSRS, i, payload, i * 13 % sizeof(payload));
	assert_int_equal(snap_buf_finish(&b), 0);
	assert_int_equal(snap_state_parse(b.data, b.len, &st, &err), 0);
	assert_int_equal(st.nsections, 300);
	assert_int_equal(snap_state_find(&st, SNAP_SEC_MSRS, 299)->len, 299 * 13 % 5000);
	assert_memory_equal(snap_state_find(&st, SNAP_SEC_MSRS, 299)->data, payload, 299 * 13 % 5000);
	snap_state_free(&st);
}

static void test_no_err_buffer(void **state)
{
	size_t len;
	uint8_t *img = good_image(&len);

	img[0] = 0;
	assert_int_equal(parse_copy(img, len, NULL), -EINVAL);
	free(img);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_empty_image),
		cmocka_unit_test(test_section_names),
		cmocka_unit_test(test_bad_magic_and_version),
		cmocka_unit_test(test_payload_corruption_names_section),
		cmocka_unit_test(test_end_checksums),
		cmocka_unit_test(test_every_bit_flip_detected),
		cmocka_unit_test(test_truncated_everywhere),
		cmocka_unit_test(test_trailing_bytes),
		cmocka_unit_test(test_giant_length_field),
		cmocka_unit_test(test_duplicate_section),
		cmocka_unit_test(test_buf_rejects_bad_sections),
		cmocka_unit_test(test_many_sections),
		cmocka_unit_test(test_no_err_buffer),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
