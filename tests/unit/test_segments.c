/* GDT descriptors for the flat long-mode segments and the TSS with its I/O bitmap. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "x86/layout.h"
#include "x86/segments.h"

#define LOW_SIZE 0x10000
#define TSS_IOMAP_BASE 0x68
#define TSS_IOMAP_BYTES 8192

static uint64_t gdt_at(const uint8_t *low, int index)
{
	uint64_t v;

	memcpy(&v, low + LAYOUT_GDT + (size_t)index * 8, sizeof(v));
	return v;
}

static void test_encode_kernel_code64(void **state)
{
	struct kvm_segment s = seg_code64(0);

	assert_int_equal(gdt_encode(&s), 0x00af9b000000ffffULL);
	assert_int_equal(s.selector, SEL_KERNEL_CS);
}

static void test_encode_kernel_data(void **state)
{
	struct kvm_segment s = seg_data(0);

	assert_int_equal(gdt_encode(&s), 0x00cf93000000ffffULL);
	assert_int_equal(s.selector, SEL_KERNEL_DS);
}

static void test_encode_user_code64_dpl3(void **state)
{
	struct kvm_segment s = seg_code64(3);

	assert_int_equal(gdt_encode(&s), 0x00affb000000ffffULL);
	assert_int_equal(s.selector, SEL_USER_CS);
	assert_int_equal(s.selector & 3, 3);
}

static void test_encode_user_data_dpl3(void **state)
{
	struct kvm_segment s = seg_data(3);

	assert_int_equal(gdt_encode(&s), 0x00cff3000000ffffULL);
	assert_int_equal(s.selector, SEL_USER_DS);
	assert_int_equal(s.selector & 3, 3);
}

static void test_encode_tss_low_half(void **state)
{
	struct kvm_segment s = seg_tss();

	/* Byte granular limit 0x68 + 8 KiB bitmap, base LAYOUT_TSS, present busy 64-bit TSS. */
	assert_int_equal(s.limit, TSS_IOMAP_BASE + TSS_IOMAP_BYTES);
	assert_int_equal(gdt_encode(&s), 0x00008b0000000000ULL | (LAYOUT_TSS << 16) |
					   (TSS_IOMAP_BASE + TSS_IOMAP_BYTES));
}

static void test_encode_scatters_base_and_limit(void **state)
{
	struct kvm_segment s = { .base = 0x12345678, .limit = 0xfffff, .type = 3, .s = 1,
				 .present = 1, .db = 1, .dpl = 2, .avl = 1 };

	/* base[31:24]=12, G/DB/L/AVL=0101, limit[19:16]=f, P/DPL/S/type=d3, base[23:0], limit[15:0]. */
	assert_int_equal(gdt_encode(&s), 0x125fd3345678ffffULL);
	s.g = 1;
	s.limit = 0x12345fff; /* 4 KiB granular: 0x12345 pages */
	assert_int_equal(gdt_encode(&s), 0x12d1d33456782345ULL);
}

static void test_build_writes_descriptors_at_selectors(void **state)
{
	uint8_t *low = malloc(LOW_SIZE);
	struct kvm_segment kcs = seg_code64(0), kds = seg_data(0), ucs = seg_code64(3),
			   uds = seg_data(3), tss = seg_tss();

	assert_non_null(low);
	memset(low, 0xcc, LOW_SIZE);
	gdt_build(low);
	assert_int_equal(gdt_at(low, 0), 0);
	assert_int_equal(gdt_at(low, 1), 0);
	assert_int_equal(gdt_at(low, SEL_KERNEL_CS >> 3), gdt_encode(&kcs));
	assert_int_equal(gdt_at(low, SEL_KERNEL_DS >> 3), gdt_encode(&kds));
	assert_int_equal(gdt_at(low, SEL_TSS >> 3), gdt_encode(&tss));
	assert_int_equal(gdt_at(low, (SEL_TSS >> 3) + 1), 0); /* base[63:32] of the TSS */
	assert_int_equal(gdt_at(low, SEL_USER_DS >> 3), gdt_encode(&uds));
	assert_int_equal(gdt_at(low, SEL_USER_CS >> 3), gdt_encode(&ucs));
	assert_int_equal(gdt_at(low, SEL_KERNEL_CS >> 3), 0x00af9b000000ffffULL);
	assert_int_equal(gdt_at(low, SEL_USER_CS >> 3), 0x00affb000000ffffULL);
	/* Bytes right before and after the 8-entry GDT are untouched. */
	assert_int_equal(low[LAYOUT_GDT - 1], 0xcc);
	assert_int_equal(low[LAYOUT_GDT + GDT_ENTRIES * 8], 0xcc);
	free(low);
}

static void test_build_tss_io_bitmap_and_terminator(void **state)
{
	uint8_t *low = malloc(LOW_SIZE);
	uint16_t iomap_base;

	assert_non_null(low);
	memset(low, 0xcc, LOW_SIZE);
	gdt_build(low);
	memcpy(&iomap_base, low + LAYOUT_TSS + 0x66, sizeof(iomap_base));
	assert_int_equal(iomap_base, TSS_IOMAP_BASE);
	/* The 104-byte TSS (except the map base) and the bitmap are zero: every port allowed. */
	for (size_t i = 0; i < 0x66; i++)
		assert_int_equal(low[LAYOUT_TSS + i], 0);
	for (size_t i = 0; i < TSS_IOMAP_BYTES; i++)
		assert_int_equal(low[LAYOUT_TSS + iomap_base + i], 0);
	/* The terminating 0xff byte sits right after the bitmap, inside the TSS limit. */
	assert_int_equal(low[LAYOUT_TSS + iomap_base + TSS_IOMAP_BYTES], 0xff);
	assert_true((uint32_t)iomap_base + TSS_IOMAP_BYTES <= seg_tss().limit);
	/* And nothing past the limit is written. */
	assert_int_equal(low[LAYOUT_TSS + seg_tss().limit + 1], 0xcc);
	assert_true(LAYOUT_TSS + seg_tss().limit < LAYOUT_PVH_START_INFO);
	free(low);
}

static void test_build_is_idempotent(void **state)
{
	uint8_t *a = calloc(1, LOW_SIZE), *b = malloc(LOW_SIZE);

	assert_non_null(a);
	assert_non_null(b);
	memset(b, 0x5a, LOW_SIZE);
	memset(b + LAYOUT_GDT, 0x77, GDT_ENTRIES * 8);
	gdt_build(a);
	gdt_build(b);
	gdt_build(b);
	assert_memory_equal(a + LAYOUT_GDT, b + LAYOUT_GDT, GDT_ENTRIES * 8);
	assert_memory_equal(a + LAYOUT_TSS, b + LAYOUT_TSS, TSS_IOMAP_BASE + TSS_IOMAP_BYTES + 1);
	free(a);
	free(b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_encode_kernel_code64),
		cmocka_unit_test(test_encode_kernel_data),
		cmocka_unit_test(test_encode_user_code64_dpl3),
		cmocka_unit_test(test_encode_user_data_dpl3),
		cmocka_unit_test(test_encode_tss_low_half),
		cmocka_unit_test(test_encode_scatters_base_and_limit),
		cmocka_unit_test(test_build_writes_descriptors_at_selectors),
		cmocka_unit_test(test_build_tss_io_bitmap_and_terminator),
		cmocka_unit_test(test_build_is_idempotent),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
