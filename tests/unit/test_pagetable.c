/* Identity page tables: build into a fake low 1 MiB and walk them like the MMU. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "x86/layout.h"
#include "x86/pagetable.h"

#define GIB (1ULL << 30)
#define MIB (1ULL << 20)
#define LOW_SIZE (1ULL << 20)

static int setup(void **state)
{
	*state = calloc(1, LOW_SIZE);
	return *state ? 0 : -1;
}

static int teardown(void **state)
{
	free(*state);
	return 0;
}

static void assert_identity(const uint8_t *low, uint64_t cr3, uint64_t addr, bool want_user)
{
	bool user = !want_user;

	assert_int_equal(pagetable_translate(low, cr3, addr, &user), (int64_t)addr);
	assert_int_equal(user, want_user);
}

static void test_build_returns_pml4_as_cr3(void **state)
{
	uint8_t *low = *state;

	assert_int_equal(pagetable_build_identity(low, 1 * GIB, false), LAYOUT_PML4);
}

static void test_identity_below_4g(void **state)
{
	uint8_t *low = *state;
	uint64_t map_end = 4 * GIB;
	uint64_t cr3 = pagetable_build_identity(low, map_end, false);
	const uint64_t addrs[] = { 0, 1, 0xfff, 0x1000, 0x1fffff, 0x200000, 0x12345678,
				   GIB - 1, GIB, 3 * GIB + 0xabcdef, map_end - 1 };

	assert_int_not_equal(cr3, 0);
	for (size_t i = 0; i < sizeof(addrs) / sizeof(addrs[0]); i++)
		assert_identity(low, cr3, addrs[i], false);
}

static void test_identity_above_4g(void **state)
{
	uint8_t *low = *state;
	uint64_t map_end = 6 * GIB + 0x1000;	/* rounds up to 7 GiB of directories */
	uint64_t cr3 = pagetable_build_identity(low, map_end, true);

	assert_int_not_equal(cr3, 0);
	assert_identity(low, cr3, 4 * GIB, true);
	assert_identity(low, cr3, 4 * GIB + 0x123456, true);
	assert_identity(low, cr3, 5 * GIB + 3 * MIB + 7, true);
	assert_identity(low, cr3, map_end - 1, true);
	assert_identity(low, cr3, 7 * GIB - 1, true);
	assert_int_equal(pagetable_translate(low, cr3, 7 * GIB, NULL), -1);
}

static void test_every_2m_page_of_a_gib_is_identity(void **state)
{
	uint8_t *low = *state;
	uint64_t cr3 = pagetable_build_identity(low, 2 * GIB, false);

	for (uint64_t a = 0; a < 2 * GIB; a += 2 * MIB) {
		assert_int_equal(pagetable_translate(low, cr3, a, NULL), (int64_t)a);
		assert_int_equal(pagetable_translate(low, cr3, a + 2 * MIB - 8, NULL),
				 (int64_t)(a + 2 * MIB - 8));
	}
}

static void test_user_bit_set_on_every_level(void **state)
{
	uint8_t *low = *state;
	uint64_t cr3 = pagetable_build_identity(low, 2 * GIB, true);
	const uint64_t *pml4 = (const uint64_t *)(low + LAYOUT_PML4);
	const uint64_t *pdpt = (const uint64_t *)(low + LAYOUT_PDPT);
	const uint64_t *pd1 = (const uint64_t *)(low + LAYOUT_PD_BASE + LAYOUT_PAGE_SIZE);

	assert_identity(low, cr3, 0x1000, true);
	assert_true(pml4[0] & PTE_USER);
	assert_true(pdpt[1] & PTE_USER);
	assert_true(pd1[511] & PTE_USER);
	assert_true(pd1[511] & PTE_LARGE);
	assert_true(pd1[511] & PTE_WRITE);
}

static void test_user_bit_unset(void **state)
{
	uint8_t *low = *state;
	uint64_t cr3 = pagetable_build_identity(low, 2 * GIB, false);
	const uint64_t *pml4 = (const uint64_t *)(low + LAYOUT_PML4);
	const uint64_t *pdpt = (const uint64_t *)(low + LAYOUT_PDPT);
	const uint64_t *pd0 = (const uint64_t *)(low + LAYOUT_PD_BASE);

	assert_identity(low, cr3, GIB + 0x1000, false);
	assert_false(pml4[0] & PTE_USER);
	assert_false(pdpt[0] & PTE_USER);
	assert_false(pd0[0] & PTE_USER);
	assert_true(pd0[0] & PTE_PRESENT);
}

static void test_beyond_mapped_gibs_unmapped(void **state)
{
	uint8_t *low = *state;
	uint64_t cr3 = pagetable_build_identity(low, 3 * GIB, false);
	bool user = true;

	assert_int_equal(pagetable_translate(low, cr3, 3 * GIB - 1, NULL), (int64_t)(3 * GIB - 1));
	assert_int_equal(pagetable_translate(low, cr3, 3 * GIB, &user), -1);
	assert_int_equal(pagetable_translate(low, cr3, 100 * GIB, NULL), -1);
	/* Other PML4 slots (>= 512 GiB) and the upper half are empty. */
	assert_int_equal(pagetable_translate(low, cr3, 512 * GIB, NULL), -1);
	assert_int_equal(pagetable_translate(low, cr3, 0xffffffff80000000ULL, NULL), -1);
}

static void test_rebuild_smaller_unmaps_old_gibs(void **state)
{
	uint8_t *low = *state;
	uint64_t cr3 = pagetable_build_identity(low, 8 * GIB, false);

	assert_int_equal(pagetable_translate(low, cr3, 6 * GIB, NULL), (int64_t)(6 * GIB));
	cr3 = pagetable_build_identity(low, 1 * GIB, false);
	assert_int_equal(pagetable_translate(low, cr3, 6 * GIB, NULL), -1);
	assert_int_equal(pagetable_translate(low, cr3, GIB - 1, NULL), (int64_t)(GIB - 1));
}

static void test_maximum_map_end(void **state)
{
	uint8_t *low = *state;
	uint64_t map_end = LAYOUT_PD_MAX * GIB;
	uint64_t cr3 = pagetable_build_identity(low, map_end, false);

	assert_int_equal(cr3, LAYOUT_PML4);
	assert_identity(low, cr3, map_end - 1, false);
	assert_int_equal(pagetable_translate(low, cr3, map_end, NULL), -1);
	/* The last directory still lies below the EBDA. */
	assert_true(LAYOUT_PD_BASE + LAYOUT_PD_MAX * LAYOUT_PAGE_SIZE <= LAYOUT_EBDA);
}

static void test_too_large_or_zero_map_end_returns_0(void **state)
{
	uint8_t *low = *state;

	assert_int_equal(pagetable_build_identity(low, LAYOUT_PD_MAX * GIB + 1, false), 0);
	assert_int_equal(pagetable_build_identity(low, 1ULL << 40, false), 0);
	assert_int_equal(pagetable_build_identity(low, 0, false), 0);
}

static void test_tables_stay_in_their_pages(void **state)
{
	uint8_t *low = *state;

	memset(low, 0xa5, LOW_SIZE);
	pagetable_build_identity(low, 2 * GIB, false);
	/* Nothing written below the PML4 or past the second page directory. */
	for (uint64_t i = 0; i < LAYOUT_PML4; i++)
		assert_int_equal(low[i], 0xa5);
	for (uint64_t i = LAYOUT_PD_BASE + 2 * LAYOUT_PAGE_SIZE; i < LOW_SIZE; i++)
		assert_int_equal(low[i], 0xa5);
	for (uint64_t i = LAYOUT_PDPT + LAYOUT_PAGE_SIZE; i < LAYOUT_PD_BASE; i++)
		assert_int_equal(low[i], 0xa5);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_build_returns_pml4_as_cr3, setup, teardown),
		cmocka_unit_test_setup_teardown(test_identity_below_4g, setup, teardown),
		cmocka_unit_test_setup_teardown(test_identity_above_4g, setup, teardown),
		cmocka_unit_test_setup_teardown(test_every_2m_page_of_a_gib_is_identity, setup, teardown),
		cmocka_unit_test_setup_teardown(test_user_bit_set_on_every_level, setup, teardown),
		cmocka_unit_test_setup_teardown(test_user_bit_unset, setup, teardown),
		cmocka_unit_test_setup_teardown(test_beyond_mapped_gibs_unmapped, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rebuild_smaller_unmaps_old_gibs, setup, teardown),
		cmocka_unit_test_setup_teardown(test_maximum_map_end, setup, teardown),
		cmocka_unit_test_setup_teardown(test_too_large_or_zero_map_end_returns_0, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tables_stay_in_their_pages, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
