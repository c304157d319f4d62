/* HPL1 hot-page lists, FKAL access logs and the page-server layout check: strict decoding. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "uffd/hotlist.h"
#include "uffd/ps_proto.h"
#include "util/errmsg.h"

/* 64 MiB below the hole: region 0 only; or 3 GiB + 1 GiB: two regions. */
static const struct hot_layout one = { 1, { 64ULL << 20 }, { 0 } };
static const struct hot_layout two = { 2, { 3ULL << 30, 1ULL << 30 }, { 0, 3ULL << 30 } };

static void hpl_round_trip_sorts_and_dedups(void **state)
{
	struct hot_page in[] = { { 1, 5 }, { 0, 300 }, { 0, 7 }, { 1, 5 }, { 0, 7 }, { 0, 0 } };
	struct hot_page *out;
	size_t n = hot_pages_normalize(in, 6), len, got;
	uint8_t *buf;
	struct fvm_err err = FVM_ERR_INIT;

	assert_int_equal(n, 4);
	assert_int_equal(hpl_encode(in, n, &buf, &len), 0);
	assert_memory_equal(buf, "HPL1", 4);
	assert_int_equal(buf[4], 4); /* uvarint count */
	assert_int_equal(hpl_decode(buf, len, &two, &out, &got, &err), 0);
	assert_int_equal(got, 4);
	assert_true(out[0].region == 0 && out[0].page == 0);
	assert_true(out[1].region == 0 && out[1].page == 7);
	assert_true(out[2].region == 0 && out[2].page == 300);
	assert_true(out[3].region == 1 && out[3].page == 5);
	assert_int_equal(hot_page_file_index(&two, &out[3]), (3ULL << 30) / 4096 + 5);
	free(out);
	/* the same list is outside a 64 MiB layout (region 1 does not exist) */
	assert_int_equal(hpl_decode(buf, len, &one, &out, &got, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "outside guest RAM"));
	free(buf);
}

static void hpl_rejects_damage(void **state)
{
	struct hot_page in[64];
	struct hot_page *out;
	uint8_t *buf, *big;
	size_t len, got;
	struct fvm_err err = FVM_ERR_INIT;

	for (int i = 0; i < 64; i++)
		in[i] = (struct hot_page){ 0, (uint64_t)i * 200 };
	assert_int_equal(hpl_encode(in, 64, &buf, &len), 0);
	/* every truncation is an error, never a shorter list */
	for (size_t cut = 0; cut < len; cut++) {
		assert_int_equal(hpl_decode(buf, cut, &one, &out, &got, &err), -EINVAL);
		assert_null(out);
	}
	big = malloc(len + 1);
	memcpy(big, buf, len);
	big[len] = 0;
	assert_int_equal(hpl_decode(big, len + 1, &one, &out, &got, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "trailing bytes"));
	big[0] = 'X';
	assert_int_equal(hpl_decode(big, len, &one, &out, &got, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "bad magic"));
	free(big);
	free(buf);
	/* unsorted, duplicate, absurd count, varint over 64 bits */
	static const uint8_t unsorted[] = { 'H', 'P', 'L', '1', 2, 0, 9, 0, 3 };
	static const uint8_t dup[] = { 'H', 'P', 'L', '1', 2, 0, 9, 0, 9 };
	static const uint8_t huge[] = { 'H', 'P', 'L', '1', 0xff, 0xff, 0xff, 0xff, 0x0f, 0, 0 };
	static const uint8_t wide[] = { 'H', 'P', 'L', '1', 1, 0, 0xff, 0xff, 0xff, 0xff, 0xff,
					0xff, 0xff, 0xff, 0xff, 0x7f };
	assert_int_equal(hpl_decode(unsorted, sizeof(unsorted), &one, &out, &got, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "sorted"));
	assert_int_equal(hpl_decode(dup, sizeof(dup), &one, &out, &got, &err), -EINVAL);
	assert_int_equal(hpl_decode(huge, sizeof(huge), &one, &out, &got, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "truncated"));
	assert_int_equal(hpl_decode(wide, sizeof(wide), &one, &out, &got, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "64 bits"));
	/* the last page of the region is in, the next one is out */
	static const uint8_t last[] = { 'H', 'P', 'L', '1', 1, 0, 0xff, 0x7f };
	static const uint8_t past[] = { 'H', 'P', 'L', '1', 1, 0, 0x80, 0x80, 0x01 };
	assert_int_equal(hpl_decode(last, sizeof(last), &one, &out, &got, &err), 0);
	assert_int_equal(out[0].page, 16383);
	free(out);
	assert_int_equal(hpl_decode(past, sizeof(past), &one, &out, &got, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "outside guest RAM"));
	/* empty list is valid */
	assert_int_equal(hpl_decode((const uint8_t *)"HPL1\0", 5, &one, &out, &got, &err), 0);
	assert_int_equal(got, 0);
}

static void alog_round_trip_and_every_damage(void **state)
{
	uint64_t in[] = { 1030, 1031, 5, 16383, 0 }, *out;
	uint8_t *buf;
	size_t len, n;
	struct fvm_err err = FVM_ERR_INIT;

	assert_int_equal(alog_encode(in, 5, &buf, &len), 0);
	assert_int_equal(len, 16 + 5 * 8 + 8);
	assert_int_equal(alog_decode(buf, len, 16384, &out, &n, &err), 0);
	assert_int_equal(n, 5);
	assert_memory_equal(out, in, sizeof(in));
	free(out);
	for (size_t bit = 0; bit < len * 8; bit++) {
		buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
		assert_int_equal(alog_decode(buf, len, 16384, &out, &n, &err), -EINVAL);
		buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
	}
	for (size_t cut = 0; cut < len; cut++)
		assert_int_equal(alog_decode(buf, cut, 16384, &out, &n, &err), -EINVAL);
	/* a valid checksum does not make an out-of-range page acceptable */
	assert_int_equal(alog_decode(buf, len, 16383, &out, &n, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "outside guest RAM"));
	free(buf);
}

static struct ps_register good_reg(void)
{
	struct ps_register r = { .pid = 1, .base = 1ULL << 32, .size = 64ULL << 20,
				 .page_size = 4096, .nregions = 1, .settle_ms = 1000,
				 .record_max_ms = 60000 };
	strcpy(r.snapshot, "/snap");
	strcpy(r.name, "vm");
	r.regions[0] = (struct ps_region){ 0, 64ULL << 20, 0 };
	return r;
}

static void layout_check(void **state)
{
	struct snap_config cfg = { .mem_size = 64ULL << 20, .nregions = 1 };
	struct ps_register r = good_reg();
	struct fvm_err err = FVM_ERR_INIT;

	cfg.regions[0].size = 64ULL << 20;
	assert_int_equal(ps_layout_check(&r, &cfg, 64ULL << 20, &err), 0);
	assert_int_equal(ps_layout_check(&r, &cfg, 32ULL << 20, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "memory file"));
	r.size = 32ULL << 20;
	assert_int_equal(ps_layout_check(&r, &cfg, 64ULL << 20, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "RAM size"));
	r = good_reg();
	r.page_size = 2 << 20;
	assert_int_equal(ps_layout_check(&r, &cfg, 64ULL << 20, &err), -EINVAL);
	r = good_reg();
	r.base += 100;
	assert_int_equal(ps_layout_check(&r, &cfg, 64ULL << 20, &err), -EINVAL);
	r = good_reg();
	r.regions[0].gpa = 4096;
	assert_int_equal(ps_layout_check(&r, &cfg, 64ULL << 20, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "region 0"));
	r = good_reg();
	r.nregions = 2;
	assert_int_equal(ps_layout_check(&r, &cfg, 64ULL << 20, &err), -EINVAL);
	r = good_reg();
	r.file_offset = 4096;
	assert_int_equal(ps_layout_check(&r, &cfg, 64ULL << 20, &err), -EINVAL);
}

static void register_json(void **state)
{
	struct ps_register r = good_reg(), back;
	json_t *j = ps_register_to_json(&r);
	struct fvm_err err = FVM_ERR_INIT;

	assert_int_equal(ps_register_from_json(j, &back, &err), 0);
	assert_memory_equal(&r, &back, sizeof(r));
	json_object_set_new(j, "extra", json_true());
	assert_int_equal(ps_register_from_json(j, &back, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "unknown field 'extra'"));
	json_object_del(j, "extra");
	json_object_set_new(j, "size", json_integer(-1));
	assert_int_equal(ps_register_from_json(j, &back, &err), -EINVAL);
	json_object_set_new(j, "size", json_integer(4096));
	json_object_set_new(j, "snapshot", json_string("relative/dir"));
	assert_int_equal(ps_register_from_json(j, &back, &err), -EINVAL);
	json_object_set_new(j, "snapshot", json_string("/snap"));
	json_object_set_new(j, "version", json_integer(2));
	assert_int_equal(ps_register_from_json(j, &back, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "version"));
	json_object_set_new(j, "version", json_integer(1));
	json_object_set_new(j, "regions", json_array());
	assert_int_equal(ps_register_from_json(j, &back, &err), -EINVAL);
	json_decref(j);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(hpl_round_trip_sorts_and_dedups),
		cmocka_unit_test(hpl_rejects_damage),
		cmocka_unit_test(alog_round_trip_and_every_damage),
		cmocka_unit_test(layout_check),
		cmocka_unit_test(register_json),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
