/* The VM generation ID writer: fresh random IDs into a buffer, and their hex form for status.
 * The guest side (two restored clones reseed and read different UUIDs) runs in tests/linux/. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "devices/vmgenid.h"

static bool all_zero(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i])
			return false;
	return true;
}

/* Each call writes exactly 16 new bytes where told, and hands the same bytes back. */
static void test_fresh(void **state)
{
	uint8_t guest[3 * VMGENID_SIZE], id1[VMGENID_SIZE], id2[VMGENID_SIZE];
	uint8_t *slot = guest + VMGENID_SIZE;

	memset(guest, 0xee, sizeof(guest));
	assert_int_equal(vmgenid_fresh(slot, id1), 0);
	assert_memory_equal(slot, id1, VMGENID_SIZE);
	assert_false(all_zero(slot, VMGENID_SIZE));
	for (int i = 0; i < VMGENID_SIZE; i++) { /* nothing around the slot is touched */
		assert_int_equal(guest[i], 0xee);
		assert_int_equal(guest[2 * VMGENID_SIZE + i], 0xee);
	}
	assert_int_equal(vmgenid_fresh(slot, id2), 0);
	assert_memory_equal(slot, id2, VMGENID_SIZE);
	assert_memory_not_equal(id1, id2, VMGENID_SIZE);
}

/* Many draws: never zero, never a repeat (a repeat would be a 2^-128 event or a broken RNG). */
static void test_many_distinct(void **state)
{
	enum { N = 64 };
	uint8_t ids[N][VMGENID_SIZE], buf[VMGENID_SIZE];

	for (int i = 0; i < N; i++) {
		assert_int_equal(vmgenid_fresh(buf, ids[i]), 0);
		assert_false(all_zero(ids[i], VMGENID_SIZE));
		for (int j = 0; j < i; j++)
			assert_memory_not_equal(ids[i], ids[j], VMGENID_SIZE);
	}
}

/* Hex in guest-memory byte order, 32 lower-case digits. */
static void test_hex(void **state)
{
	static const uint8_t id[VMGENID_SIZE] = { 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef,
						  0x00, 0x10, 0x20, 0x30, 0xf0, 0xe0, 0xd0, 0xff };
	char hex[VMGENID_HEX_LEN + 1];

	memset(hex, 'x', sizeof(hex));
	vmgenid_hex(id, hex);
	assert_string_equal(hex, "0123456789abcdef00102030f0e0d0ff");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fresh),
		cmocka_unit_test(test_many_distinct),
		cmocka_unit_test(test_hex),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
