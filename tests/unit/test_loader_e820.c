/* e820 maps for guest RAM below and above the 3 GiB hole, and the PVH start info page. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <string.h>

#include "loader/kernel.h"
#include "mem/guest_mem.h"
#include "x86/layout.h"

static void expect(const struct e820_entry *e, uint64_t addr, uint64_t end, uint32_t type)
{
	assert_int_equal(e->addr, addr);
	assert_int_equal(e->addr + e->size, end);
	assert_int_equal(e->type, type);
}

static void test_below_3g(void **state)
{
	struct guest_mem_region r[1] = { { 0, 512ULL << 20, 0 } };
	struct e820_entry e[8];
	int n;

	assert_int_equal(e820_build(r, 1, e, 8, &n), 0);
	assert_int_equal(n, 3);
	expect(&e[0], 0, LAYOUT_EBDA, E820_RAM);
	expect(&e[1], LAYOUT_EBDA, 0xa0000, E820_RESERVED);
	expect(&e[2], LAYOUT_HIGH_MEM, 512ULL << 20, E820_RAM);
}

static void test_above_3g(void **state)
{
	struct guest_mem_region r[2] = {
		{ 0, LAYOUT_RAM_LOW_MAX, 0 },
		{ LAYOUT_RAM_HIGH_START, 1ULL << 30, LAYOUT_RAM_LOW_MAX },
	};
	struct e820_entry e[8];
	int n;

	assert_int_equal(e820_build(r, 2, e, 8, &n), 0);
	assert_int_equal(n, 4);
	expect(&e[2], LAYOUT_HIGH_MEM, LAYOUT_RAM_LOW_MAX, E820_RAM);
	expect(&e[3], LAYOUT_RAM_HIGH_START, LAYOUT_RAM_HIGH_START + (1ULL << 30), E820_RAM);
	for (int i = 0; i < n; i++) /* nothing inside the MMIO hole */
		assert_true(e[i].addr + e[i].size <= LAYOUT_RAM_LOW_MAX ||
			    e[i].addr >= LAYOUT_RAM_HIGH_START);
}

static void test_table_full(void **state)
{
	struct guest_mem_region r[1] = { { 0, 512ULL << 20, 0 } };
	struct e820_entry e[2];
	int n;

	assert_int_equal(e820_build(r, 1, e, 2, &n), -ENOSPC);
}

static void test_pvh_page(void **state)
{
	struct e820_entry e[2] = { { 0, 0x9fc00, E820_RAM }, { 0x100000, 0x1000000, E820_RAM } };
	struct hvm_start_info si;
	struct hvm_memmap_table_entry mm;
	uint8_t page[4096];

	assert_int_equal(pvh_build(page, 0x6000, e, 2, 0x20000, 0, 0), 0);
	memcpy(&si, page, sizeof(si));
	assert_int_equal(si.magic, PVH_START_MAGIC);
	assert_int_equal(si.nr_modules, 0);
	assert_int_equal(si.modlist_paddr, 0);
	assert_int_equal(si.memmap_paddr, 0x6000 + PVH_MEMMAP_OFFSET);
	memcpy(&mm, page + PVH_MEMMAP_OFFSET + sizeof(mm), sizeof(mm));
	assert_int_equal(mm.addr, 0x100000);
	assert_int_equal(mm.size, 0x1000000);
	assert_int_equal(mm.type, E820_RAM);
	assert_int_equal(pvh_build(page, 0x6000, e, 1000, 0x20000, 0, 0), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_below_3g),
		cmocka_unit_test(test_above_3g),
		cmocka_unit_test(test_table_full),
		cmocka_unit_test(test_pvh_page),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
