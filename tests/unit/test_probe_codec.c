/* Probe mailbox codec: request validation, encode/decode sequencing, fill pattern and RAM hash. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "devices/probe_dev.h"

#define PAGE 4096ULL
#define W0_START 0x400000ULL
#define W0_END 0x10000000ULL
#define W1_START 0x100000000ULL
#define W1_END 0x140000000ULL

static void init_mailbox(struct probe_mailbox *mb)
{
	memset(mb, 0, sizeof(*mb));
	mb->nregions = 2;
	mb->work[0].start = W0_START;
	mb->work[0].end = W0_END;
	mb->work[1].start = W1_START;
	mb->work[1].end = W1_END;
}

static int check(const struct probe_mailbox *mb, uint32_t cmd, uint64_t a0, uint64_t a1,
		 uint64_t a2)
{
	struct probe_request req = { .cmd = cmd, .arg = { a0, a1, a2, 0x5eed } };
	return probe_request_check(mb, &req);
}

/* ---- probe_request_check ---- */

static void test_check_commands_without_range(void **state)
{
	struct probe_mailbox mb;

	init_mailbox(&mb);
	mb.nregions = 0; /* no work area at all: these do not need one */
	assert_int_equal(check(&mb, PROBE_CMD_PING, 0xdead, 1, 1), 0);
	assert_int_equal(check(&mb, PROBE_CMD_COUNTER, 0, 0, 0), 0);
	assert_int_equal(check(&mb, PROBE_CMD_CRASH, 0, 0, 0), 0);
}

static void test_check_unknown_command(void **state)
{
	struct probe_mailbox mb;

	init_mailbox(&mb);
	assert_int_equal(check(&mb, PROBE_CMD_NONE, W0_START, PAGE, 0), -EINVAL);
	assert_int_equal(check(&mb, 99, W0_START, PAGE, 0), -EINVAL);
	assert_int_equal(check(&mb, 0xffffffffu, W0_START, PAGE, 0), -EINVAL);
}

static void test_check_range_inside_work_area(void **state)
{
	struct probe_mailbox mb;

	init_mailbox(&mb);
	for (uint32_t cmd = PROBE_CMD_FILL; cmd <= PROBE_CMD_CHECKSUM; cmd++) {
		assert_int_equal(check(&mb, cmd, W0_START, PAGE, 0), 0);
		assert_int_equal(check(&mb, cmd, W0_START, W0_END - W0_START, 0), 0);
		assert_int_equal(check(&mb, cmd, W0_END - PAGE, PAGE, 0), 0);
		assert_int_equal(check(&mb, cmd, W1_START, PAGE, 0), 0);
		assert_int_equal(check(&mb, cmd, W1_START + PAGE, W1_END - W1_START - PAGE, 0), 0);
	}
}

static void test_check_range_outside_work_area(void **state)
{
	struct probe_mailbox mb;

	init_mailbox(&mb);
	for (uint32_t cmd = PROBE_CMD_FILL; cmd <= PROBE_CMD_CHECKSUM; cmd++) {
		assert_int_equal(check(&mb, cmd, W0_START - PAGE, PAGE, 0), -ERANGE);
		assert_int_equal(check(&mb, cmd, W0_START - PAGE, 2 * PAGE, 0), -ERANGE);
		assert_int_equal(check(&mb, cmd, W0_END - PAGE, 2 * PAGE, 0), -ERANGE);
		assert_int_equal(check(&mb, cmd, W0_END, PAGE, 0), -ERANGE);
		assert_int_equal(check(&mb, cmd, 0, PAGE, 0), -ERANGE);
		/* Spanning both regions (and the gap between them) is not allowed. */
		assert_int_equal(check(&mb, cmd, W0_END - PAGE, W1_START - W0_END + 2 * PAGE, 0),
				 -ERANGE);
		assert_int_equal(check(&mb, cmd, W1_END, PAGE, 0), -ERANGE);
	}
}

static void test_check_range_unaligned_or_empty(void **state)
{
	struct probe_mailbox mb;

	init_mailbox(&mb);
	for (uint32_t cmd = PROBE_CMD_FILL; cmd <= PROBE_CMD_CHECKSUM; cmd++) {
		assert_int_equal(check(&mb, cmd, W0_START + 8, PAGE, 0), -ERANGE);
		assert_int_equal(check(&mb, cmd, W0_START, PAGE + 1, 0), -ERANGE);
		assert_int_equal(check(&mb, cmd, W0_START, 100, 0), -ERANGE);
		assert_int_equal(check(&mb, cmd, W0_START, 0, 0), -ERANGE);
	}
}

static void test_check_range_overflow(void **state)
{
	struct probe_mailbox mb;

	init_mailbox(&mb);
	/* A region reaching the top of the address space: gpa + len must not wrap into it. */
	mb.work[1].end = 0xfffffffffffff000ULL;
	assert_int_equal(check(&mb, PROBE_CMD_FILL, 0xffffffffffffe000ULL, PAGE, 0), 0);
	assert_int_equal(check(&mb, PROBE_CMD_FILL, 0xffffffffffffe000ULL, 3 * PAGE, 0), -ERANGE);
	assert_int_equal(check(&mb, PROBE_CMD_CHECKSUM, W1_START, 0xfffffffffffff000ULL, 0),
			 -ERANGE);
	assert_int_equal(check(&mb, PROBE_CMD_CHECKSUM, 0xfffffffffffff000ULL, PAGE, 0), -ERANGE);
}

static void test_check_nregions_bounds(void **state)
{
	struct probe_mailbox mb;

	init_mailbox(&mb);
	mb.nregions = 1;
	assert_int_equal(check(&mb, PROBE_CMD_FILL, W0_START, PAGE, 0), 0);
	assert_int_equal(check(&mb, PROBE_CMD_FILL, W1_START, PAGE, 0), -ERANGE);
	mb.nregions = 1000; /* a corrupt count is clamped to the array */
	assert_int_equal(check(&mb, PROBE_CMD_FILL, W1_START, PAGE, 0), 0);
	mb.nregions = 0;
	assert_int_equal(check(&mb, PROBE_CMD_FILL, W0_START, PAGE, 0), -ERANGE);
}

static void test_check_dirty_span(void **state)
{
	struct probe_mailbox mb;

	init_mailbox(&mb);
	/* 4 pages every 2nd page touch 7 pages: [gpa, gpa + 7 pages). */
	assert_int_equal(probe_dirty_span(4, 2), 7 * PAGE);
	assert_int_equal(probe_dirty_span(1, 100), PAGE);
	assert_int_equal(check(&mb, PROBE_CMD_DIRTY, W0_END - 7 * PAGE, 4, 2), 0);
	assert_int_equal(check(&mb, PROBE_CMD_DIRTY, W0_END - 6 * PAGE, 4, 2), -ERANGE);
	assert_int_equal(check(&mb, PROBE_CMD_DIRTY, W0_START, 1, 1), 0);
	assert_int_equal(check(&mb, PROBE_CMD_DIRTY, W0_START + 1, 1, 1), -ERANGE);
	assert_int_equal(check(&mb, PROBE_CMD_DIRTY, W0_START - PAGE, 1, 1), -ERANGE);
}

static void test_check_dirty_stride_zero(void **state)
{
	struct probe_mailbox mb;

	init_mailbox(&mb);
	assert_int_equal(probe_dirty_span(4, 0), 0);
	assert_int_equal(check(&mb, PROBE_CMD_DIRTY, W0_START, 4, 0), -ERANGE);
}

static void test_check_dirty_huge_is_rejected(void **state)
{
	struct probe_mailbox mb;

	init_mailbox(&mb);
	mb.work[1].end = 0xfffffffffffff000ULL;
	assert_int_equal(probe_dirty_span(1ULL << 30, 1ULL << 20), 0);
	assert_int_equal(probe_dirty_span(~0ULL, ~0ULL), 0);
	assert_int_equal(check(&mb, PROBE_CMD_DIRTY, W1_START, 1ULL << 30, 1ULL << 20), -ERANGE);
	assert_int_equal(check(&mb, PROBE_CMD_DIRTY, W1_START, ~0ULL, 1), -ERANGE);
}

static void test_check_dirty_pages_zero_stops(void **state)
{
	struct probe_mailbox mb;

	init_mailbox(&mb);
	/* Stop needs no valid range: gpa and stride are ignored. */
	assert_int_equal(check(&mb, PROBE_CMD_DIRTY, 0, 0, 0), 0);
	assert_int_equal(check(&mb, PROBE_CMD_DIRTY, 0x123, 0, 7), 0);
	mb.nregions = 0;
	assert_int_equal(check(&mb, PROBE_CMD_DIRTY, W0_START, 0, 1), 0);
}

/* ---- encode / decode ---- */

static void test_encode_continues_sequence_and_copies_args(void **state)
{
	struct probe_mailbox mb;
	struct probe_request req = { .cmd = PROBE_CMD_FILL,
				     .arg = { 0x400000, 0x2000, 42, 4, 5, 0xffffffffffffffffULL } };

	init_mailbox(&mb);
	mb.cmd_seq = 41;
	mb.done_seq = 41;
	mb.result[0] = 0xabc;
	assert_int_equal(probe_request_encode(&mb, &req), 42);
	assert_int_equal(mb.cmd_seq, 42);
	assert_int_equal(mb.cmd, PROBE_CMD_FILL);
	for (int i = 0; i < 6; i++)
		assert_int_equal(mb.arg[i], req.arg[i]);
	/* The guest's side of the mailbox is not touched. */
	assert_int_equal(mb.done_seq, 41);
	assert_int_equal(mb.result[0], 0xabc);
	assert_int_equal(mb.work[0].start, W0_START);

	req.cmd = PROBE_CMD_PING;
	req.arg[0] = 7;
	assert_int_equal(probe_request_encode(&mb, &req), 43);
	assert_int_equal(mb.cmd, PROBE_CMD_PING);
	assert_int_equal(mb.arg[0], 7);
}

static void test_encode_from_fresh_mailbox_starts_at_1(void **state)
{
	struct probe_mailbox mb;
	struct probe_request req = { .cmd = PROBE_CMD_COUNTER };

	init_mailbox(&mb);
	assert_int_equal(probe_request_encode(&mb, &req), 1);
	assert_int_equal(mb.cmd_seq, 1);
}

static void test_decode_eagain_until_done_seq_matches(void **state)
{
	struct probe_mailbox mb;
	struct probe_request req = { .cmd = PROBE_CMD_PING, .arg = { 0x1234 } };
	struct probe_result res;
	uint64_t seq;

	init_mailbox(&mb);
	mb.cmd_seq = mb.done_seq = 9;
	seq = probe_request_encode(&mb, &req);
	memset(&res, 0x11, sizeof(res));
	assert_int_equal(probe_result_decode(&mb, seq, &res), -EAGAIN);
	assert_int_equal(res.status, 0x11111111u); /* untouched */

	/* The guest writes results first, then done_seq. */
	mb.status = PROBE_OK;
	mb.result[0] = PROBE_MAGIC ^ 0x1234;
	mb.result[1] = 5;
	mb.result[2] = 6;
	mb.result[3] = 7;
	assert_int_equal(probe_result_decode(&mb, seq, &res), -EAGAIN);
	mb.done_seq = seq;
	assert_int_equal(probe_result_decode(&mb, seq, &res), 0);
	assert_int_equal(res.status, PROBE_OK);
	assert_int_equal(res.result[0], PROBE_MAGIC ^ 0x1234);
	assert_int_equal(res.result[1], 5);
	assert_int_equal(res.result[2], 6);
	assert_int_equal(res.result[3], 7);
	/* An answer to a different sequence is not ours. */
	assert_int_equal(probe_result_decode(&mb, seq + 1, &res), -EAGAIN);
	assert_int_equal(probe_result_decode(&mb, seq - 1, &res), -EAGAIN);
}

static void test_decode_reports_guest_status(void **state)
{
	struct probe_mailbox mb;
	struct probe_result res;

	init_mailbox(&mb);
	mb.done_seq = 3;
	mb.status = PROBE_ERANGE;
	assert_int_equal(probe_result_decode(&mb, 3, &res), 0);
	assert_int_equal(res.status, PROBE_ERANGE);
	assert_string_equal(probe_status_name(res.status), "range outside the work area");
	assert_string_equal(probe_status_name(PROBE_OK), "ok");
	assert_string_equal(probe_status_name(PROBE_EINVAL), "unknown command");
	assert_string_equal(probe_status_name(77), "unknown status");
}

static void test_cmd_names(void **state)
{
	assert_string_equal(probe_cmd_name(PROBE_CMD_PING), "ping");
	assert_string_equal(probe_cmd_name(PROBE_CMD_FILL), "fill");
	assert_string_equal(probe_cmd_name(PROBE_CMD_CHECKSUM), "checksum");
	assert_string_equal(probe_cmd_name(PROBE_CMD_DIRTY), "dirty");
	assert_string_equal(probe_cmd_name(PROBE_CMD_COUNTER), "counter");
	assert_string_equal(probe_cmd_name(PROBE_CMD_CRASH), "crash");
	assert_string_equal(probe_cmd_name(PROBE_CMD_NONE), "unknown");
	assert_string_equal(probe_cmd_name(1000), "unknown");
}

/* ---- fill pattern and hash ---- */

/* Independent reference: murmur3's fmix64 and FNV-1a style 4-lane page hash, as documented. */
static uint64_t ref_fmix64(uint64_t k)
{
	k ^= k >> 33;
	k *= 0xff51afd7ed558ccdULL;
	k ^= k >> 33;
	k *= 0xc4ceb9fe1a85ec53ULL;
	k ^= k >> 33;
	return k;
}

static uint64_t ref_page_hash(const uint8_t *page)
{
	uint64_t lane[4] = { 1, 2, 3, 4 };

	for (size_t word = 0; word < 512; word++) {
		uint64_t w;
		memcpy(&w, page + word * 8, 8);
		lane[word % 4] = (lane[word % 4] ^ w) * 0x100000001b3ULL;
	}
	return ref_fmix64(lane[0] ^ ref_fmix64(lane[1] ^ ref_fmix64(lane[2] ^ ref_fmix64(lane[3]))));
}

static uint64_t ref_range_hash(const uint8_t *buf, size_t pages)
{
	uint64_t h = 0x6a09e667f3bcc908ULL;

	for (size_t p = 0; p < pages; p++)
		h = ref_fmix64(h ^ ref_page_hash(buf + p * PAGE)) + 0x9e3779b97f4a7c15ULL;
	return h;
}

/* What the guest's fill command writes at guest-physical gpa (host view buf). */
static void guest_fill(uint8_t *buf, uint64_t gpa, uint64_t len, uint64_t seed)
{
	for (uint64_t off = 0; off < len; off += 8) {
		uint64_t w = probe_fill_word(seed, gpa + off);
		memcpy(buf + off, &w, 8);
	}
}

static uint8_t *alloc_pages(size_t pages)
{
	uint8_t *b = aligned_alloc(PAGE, pages * PAGE);

	assert_non_null(b);
	return b;
}

static void test_fill_word_matches_documented_formula(void **state)
{
	const uint64_t seeds[] = { 0, 1, 42, 0xffffffffffffffffULL };
	const uint64_t gpas[] = { 0, 8, 0x400000, 0x100000ff8ULL };

	for (size_t s = 0; s < 4; s++)
		for (size_t g = 0; g < 4; g++) {
			uint64_t want = (gpas[g] ^ seeds[s]) * 0x9e3779b97f4a7c15ULL + seeds[s];
			assert_int_equal(probe_fill_word(seeds[s], gpas[g]), want);
		}
}

static void test_fill_pattern_depends_on_seed_and_address(void **state)
{
	uint8_t *a = alloc_pages(4), *b = alloc_pages(4), *c = alloc_pages(4);

	guest_fill(a, W0_START, 4 * PAGE, 1);
	guest_fill(b, W0_START, 4 * PAGE, 2);
	guest_fill(c, W0_START + PAGE, 4 * PAGE, 1);
	assert_memory_not_equal(a, b, 4 * PAGE);
	assert_memory_not_equal(a, c, 4 * PAGE);
	/* Same address, same seed: same words (a shifted by one page equals c). */
	assert_memory_equal(a + PAGE, c, 3 * PAGE);
	/* Every word within a page differs from its neighbour. */
	for (size_t i = 1; i < 512; i++)
		assert_memory_not_equal(a + (i - 1) * 8, a + i * 8, 8);
	free(a);
	free(b);
	free(c);
}

static void test_page_hash_equals_reference(void **state)
{
	uint8_t *buf = alloc_pages(3);

	guest_fill(buf, W0_START, 3 * PAGE, 0x5eed);
	for (int p = 0; p < 3; p++)
		assert_int_equal(probe_page_hash((const uint64_t *)(buf + p * PAGE)),
				 ref_page_hash(buf + p * PAGE));
	memset(buf, 0, PAGE);
	assert_int_equal(probe_page_hash((const uint64_t *)buf), ref_page_hash(buf));
	free(buf);
}

static void test_hash_memory_equals_reference(void **state)
{
	uint8_t *buf = alloc_pages(8);

	guest_fill(buf, W1_START, 8 * PAGE, 99);
	for (size_t pages = 0; pages <= 8; pages++)
		assert_int_equal(probe_hash_memory(buf, pages * PAGE), ref_range_hash(buf, pages));
	free(buf);
}

static void test_hash_memory_equals_chained_page_hashes(void **state)
{
	uint8_t *buf = alloc_pages(5);
	uint64_t h = PROBE_HASH_INIT;

	guest_fill(buf, W0_START, 5 * PAGE, 7);
	for (int p = 0; p < 5; p++)
		h = probe_hash_chain(h, probe_page_hash((const uint64_t *)(buf + p * PAGE)));
	assert_int_equal(probe_hash_memory(buf, 5 * PAGE), h);
	assert_int_equal(probe_hash_memory(buf, 0), PROBE_HASH_INIT);
	free(buf);
}

static void test_hash_memory_ignores_partial_trailing_page(void **state)
{
	uint8_t *buf = alloc_pages(3);

	guest_fill(buf, W0_START, 3 * PAGE, 3);
	assert_int_equal(probe_hash_memory(buf, 2 * PAGE + 100), probe_hash_memory(buf, 2 * PAGE));
	assert_int_equal(probe_hash_memory(buf, PAGE - 1), PROBE_HASH_INIT);
	free(buf);
}

static void test_hash_is_deterministic_and_seed_sensitive(void **state)
{
	uint8_t *a = alloc_pages(4), *b = alloc_pages(4);

	guest_fill(a, W0_START, 4 * PAGE, 1234);
	guest_fill(b, W0_START, 4 * PAGE, 1234);
	assert_int_equal(probe_hash_memory(a, 4 * PAGE), probe_hash_memory(b, 4 * PAGE));
	guest_fill(b, W0_START, 4 * PAGE, 1235);
	assert_int_not_equal(probe_hash_memory(a, 4 * PAGE), probe_hash_memory(b, 4 * PAGE));
	free(a);
	free(b);
}

static void test_hash_order_matters(void **state)
{
	uint8_t *a = alloc_pages(2), *b = alloc_pages(2);

	guest_fill(a, W0_START, 2 * PAGE, 5);
	memcpy(b, a + PAGE, PAGE);
	memcpy(b + PAGE, a, PAGE);
	assert_int_not_equal(probe_hash_memory(a, 2 * PAGE), probe_hash_memory(b, 2 * PAGE));
	/* Same multiset of page hashes, different chain order. */
	assert_int_not_equal(probe_hash_chain(probe_hash_chain(PROBE_HASH_INIT, 1), 2),
			     probe_hash_chain(probe_hash_chain(PROBE_HASH_INIT, 2), 1));
	free(a);
	free(b);
}

static void test_hash_detects_single_bit_flips(void **state)
{
	uint8_t *buf = alloc_pages(2);
	uint64_t h;

	guest_fill(buf, W0_START, 2 * PAGE, 11);
	h = probe_hash_memory(buf, 2 * PAGE);
	for (size_t bit = 0; bit < 2 * PAGE * 8; bit += 997) {
		buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
		assert_int_not_equal(probe_hash_memory(buf, 2 * PAGE), h);
		buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
	}
	assert_int_equal(probe_hash_memory(buf, 2 * PAGE), h);
	free(buf);
}

static void test_word_lanes_are_not_interchangeable(void **state)
{
	uint8_t *buf = alloc_pages(1);
	uint64_t h, w0, w1;

	guest_fill(buf, W0_START, PAGE, 21);
	h = probe_page_hash((const uint64_t *)buf);
	memcpy(&w0, buf, 8);
	memcpy(&w1, buf + 8, 8);
	memcpy(buf, &w1, 8);
	memcpy(buf + 8, &w0, 8);
	assert_int_not_equal(probe_page_hash((const uint64_t *)buf), h);
	free(buf);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_check_commands_without_range),
		cmocka_unit_test(test_check_unknown_command),
		cmocka_unit_test(test_check_range_inside_work_area),
		cmocka_unit_test(test_check_range_outside_work_area),
		cmocka_unit_test(test_check_range_unaligned_or_empty),
		cmocka_unit_test(test_check_range_overflow),
		cmocka_unit_test(test_check_nregions_bounds),
		cmocka_unit_test(test_check_dirty_span),
		cmocka_unit_test(test_check_dirty_stride_zero),
		cmocka_unit_test(test_check_dirty_huge_is_rejected),
		cmocka_unit_test(test_check_dirty_pages_zero_stops),
		cmocka_unit_test(test_encode_continues_sequence_and_copies_args),
		cmocka_unit_test(test_encode_from_fresh_mailbox_starts_at_1),
		cmocka_unit_test(test_decode_eagain_until_done_seq_matches),
		cmocka_unit_test(test_decode_reports_guest_status),
		cmocka_unit_test(test_cmd_names),
		cmocka_unit_test(test_fill_word_matches_documented_formula),
		cmocka_unit_test(test_fill_pattern_depends_on_seed_and_address),
		cmocka_unit_test(test_page_hash_equals_reference),
		cmocka_unit_test(test_hash_memory_equals_reference),
		cmocka_unit_test(test_hash_memory_equals_chained_page_hashes),
		cmocka_unit_test(test_hash_memory_ignores_partial_trailing_page),
		cmocka_unit_test(test_hash_is_deterministic_and_seed_sensitive),
		cmocka_unit_test(test_hash_order_matters),
		cmocka_unit_test(test_hash_detects_single_bit_flips),
		cmocka_unit_test(test_word_lanes_are_not_interchangeable),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
