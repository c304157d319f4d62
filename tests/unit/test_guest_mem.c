/* Guest RAM object: layout around the 3-4 GiB hole, anon/memfd creation, address translation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "mem/guest_mem.h"
#include "x86/layout.h"

#define KIB (1ULL << 10)
#define MIB (1ULL << 20)
#define GIB (1ULL << 30)

/* ---- guest_mem_layout ---- */

static void test_layout_below_3g_is_one_region(void **state)
{
	struct guest_mem_region r[GUEST_MEM_MAX_REGIONS];
	int n = -1;

	assert_int_equal(guest_mem_layout(256 * MIB, r, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(r[0].gpa, 0);
	assert_int_equal(r[0].size, 256 * MIB);
	assert_int_equal(r[0].offset, 0);

	assert_int_equal(guest_mem_layout(4 * KIB, r, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(r[0].size, 4 * KIB);

	/* Exactly 3 GiB still fits below the hole. */
	assert_int_equal(guest_mem_layout(3 * GIB, r, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(r[0].size, LAYOUT_RAM_LOW_MAX);
}

static void test_layout_above_3g_splits_at_hole(void **state)
{
	struct guest_mem_region r[GUEST_MEM_MAX_REGIONS];
	int n = -1;

	assert_int_equal(guest_mem_layout(3 * GIB + 4 * KIB, r, &n), 0);
	assert_int_equal(n, 2);
	assert_int_equal(r[0].gpa, 0);
	assert_int_equal(r[0].size, 3 * GIB);
	assert_int_equal(r[0].offset, 0);
	assert_int_equal(r[1].gpa, LAYOUT_RAM_HIGH_START);
	assert_int_equal(r[1].size, 4 * KIB);
	assert_int_equal(r[1].offset, 3 * GIB);

	assert_int_equal(guest_mem_layout(8 * GIB, r, &n), 0);
	assert_int_equal(n, 2);
	assert_int_equal(r[1].gpa, 4 * GIB);
	assert_int_equal(r[1].size, 5 * GIB);
	assert_int_equal(r[1].offset, 3 * GIB);
	/* The regions together cover exactly the RAM, contiguous in the mapping. */
	assert_int_equal(r[0].size + r[1].size, 8 * GIB);
	assert_int_equal(r[0].offset + r[0].size, r[1].offset);
}

static void test_layout_rejects_zero_and_unaligned(void **state)
{
	struct guest_mem_region r[GUEST_MEM_MAX_REGIONS];
	int n;

	assert_int_equal(guest_mem_layout(0, r, &n), -EINVAL);
	assert_int_equal(guest_mem_layout(4095, r, &n), -EINVAL);
	assert_int_equal(guest_mem_layout(4097, r, &n), -EINVAL);
	assert_int_equal(guest_mem_layout(256 * MIB + 512, r, &n), -EINVAL);
	assert_int_equal(guest_mem_layout(4 * GIB + 1, r, &n), -EINVAL);
}

static void test_layout_rejects_too_big(void **state)
{
	struct guest_mem_region r[GUEST_MEM_MAX_REGIONS];
	/* RAM + the 1 GiB hole must fit the page tables' LAYOUT_PD_MAX GiB. */
	uint64_t max = LAYOUT_PD_MAX * GIB - (LAYOUT_RAM_HIGH_START - LAYOUT_RAM_LOW_MAX);
	int n;

	assert_int_equal(guest_mem_layout(max, r, &n), 0);
	assert_int_equal(n, 2);
	assert_int_equal(r[1].gpa + r[1].size, LAYOUT_PD_MAX * GIB);
	assert_int_equal(guest_mem_layout(max + 4 * KIB, r, &n), -E2BIG);
	assert_int_equal(guest_mem_layout(1ULL << 50, r, &n), -E2BIG);
	assert_int_equal(guest_mem_layout(~0ULL & ~4095ULL, r, &n), -E2BIG);
}

/* ---- guest_mem_create ---- */

static void test_create_anon(void **state)
{
	struct guest_mem mem;
	struct guest_mem_opts opts = { .backing = GUEST_MEM_ANON, .size = 16 * MIB };

	assert_int_equal(guest_mem_create(&mem, &opts), 0);
	assert_non_null(mem.host);
	assert_int_equal(mem.fd, -1);
	assert_int_equal(mem.backing, GUEST_MEM_ANON);
	assert_int_equal(mem.size, 16 * MIB);
	assert_int_equal(mem.map_size, 16 * MIB);
	assert_int_equal(mem.page_size, 4096);
	assert_int_equal(mem.nregions, 1);
	assert_int_equal(guest_mem_end(&mem), 16 * MIB);
	/* Zero filled and writable end to end. */
	assert_int_equal(mem.host[0], 0);
	assert_int_equal(mem.host[16 * MIB - 1], 0);
	mem.host[0] = 1;
	mem.host[16 * MIB - 1] = 2;
	assert_int_equal(*(uint8_t *)guest_mem_ptr(&mem, 16 * MIB - 1, 1), 2);
	guest_mem_destroy(&mem);
	assert_null(mem.host);
	assert_int_equal(mem.fd, -1);
	/* Destroying twice is harmless. */
	guest_mem_destroy(&mem);
}

static void test_create_anon_no_hugepage(void **state)
{
	struct guest_mem mem;
	struct guest_mem_opts opts = { .backing = GUEST_MEM_ANON, .size = 8 * MIB,
				       .no_hugepage = true };

	assert_int_equal(guest_mem_create(&mem, &opts), 0);
	memset(mem.host, 0x3c, 8 * MIB);
	assert_int_equal(mem.host[8 * MIB / 2], 0x3c);
	guest_mem_destroy(&mem);
}

static void test_create_memfd(void **state)
{
	struct guest_mem mem;
	struct guest_mem_opts opts = { .backing = GUEST_MEM_MEMFD, .size = 2 * MIB,
				       .name = "forkvm-unit-ram" };
	char link[64], target[128];
	ssize_t n;

	assert_int_equal(guest_mem_create(&mem, &opts), 0);
	assert_non_null(mem.host);
	assert_true(mem.fd >= 0);
	assert_int_equal(mem.backing, GUEST_MEM_MEMFD);
	assert_int_equal(mem.map_size, 2 * MIB);
	assert_int_equal(lseek(mem.fd, 0, SEEK_END), 2 * MIB);
	assert_true(fcntl(mem.fd, F_GETFD) & FD_CLOEXEC);
	snprintf(link, sizeof(link), "/proc/self/fd/%d", mem.fd);
	n = readlink(link, target, sizeof(target) - 1);
	assert_true(n > 0);
	target[n] = '\0';
	assert_non_null(strstr(target, "forkvm-unit-ram"));
	guest_mem_destroy(&mem);
	assert_int_equal(mem.fd, -1);
	assert_null(mem.host);
}

static void test_memfd_backing_really_shares(void **state)
{
	struct guest_mem mem;
	struct guest_mem_opts opts = { .backing = GUEST_MEM_MEMFD, .size = 1 * MIB };
	uint8_t *other, byte = 0;

	assert_int_equal(guest_mem_create(&mem, &opts), 0);
	other = mmap(NULL, mem.map_size, PROT_READ | PROT_WRITE, MAP_SHARED, mem.fd, 0);
	assert_true(other != MAP_FAILED);
	assert_ptr_not_equal(other, mem.host);

	/* VMM writes are seen by another mapping (a child, a page server) ... */
	mem.host[100] = 0x5a;
	assert_int_equal(other[100], 0x5a);
	/* ... and writes from there land in guest RAM. */
	other[MIB - 1] = 0xa5;
	assert_int_equal(*(uint8_t *)guest_mem_ptr(&mem, MIB - 1, 1), 0xa5);
	/* The file itself holds the bytes too. */
	assert_int_equal(pread(mem.fd, &byte, 1, 100), 1);
	assert_int_equal(byte, 0x5a);
	munmap(other, mem.map_size);
	guest_mem_destroy(&mem);
}

static void test_anon_backing_is_private(void **state)
{
	struct guest_mem a, b;
	struct guest_mem_opts opts = { .backing = GUEST_MEM_ANON, .size = 1 * MIB };

	assert_int_equal(guest_mem_create(&a, &opts), 0);
	assert_int_equal(guest_mem_create(&b, &opts), 0);
	a.host[0] = 7;
	assert_int_equal(b.host[0], 0);
	guest_mem_destroy(&a);
	guest_mem_destroy(&b);
}

static void test_create_rejects_bad_sizes(void **state)
{
	struct guest_mem mem;
	struct guest_mem_opts opts = { .backing = GUEST_MEM_ANON, .size = 0 };

	assert_int_equal(guest_mem_create(&mem, &opts), -EINVAL);
	assert_null(mem.host);
	assert_int_equal(mem.fd, -1);
	opts.size = 4096 + 1;
	assert_int_equal(guest_mem_create(&mem, &opts), -EINVAL);
	opts.backing = GUEST_MEM_MEMFD;
	opts.size = 1ULL << 50;
	assert_int_equal(guest_mem_create(&mem, &opts), -E2BIG);
	assert_null(mem.host);
	assert_int_equal(mem.fd, -1);
}

static void test_create_rejects_unknown_backing(void **state)
{
	struct guest_mem mem;
	struct guest_mem_opts opts = { .backing = (enum guest_mem_backing)99, .size = 1 * MIB };

	assert_int_equal(guest_mem_create(&mem, &opts), -EOPNOTSUPP);
	assert_null(mem.host);
	assert_int_equal(mem.fd, -1);
}

/* ---- guest_mem_ptr / guest_mem_offset ---- */

static void test_ptr_and_offset_at_region_edges(void **state)
{
	struct guest_mem mem;
	struct guest_mem_opts opts = { .backing = GUEST_MEM_ANON, .size = 16 * MIB };

	assert_int_equal(guest_mem_create(&mem, &opts), 0);
	assert_ptr_equal(guest_mem_ptr(&mem, 0, 1), mem.host);
	assert_ptr_equal(guest_mem_ptr(&mem, 0, 16 * MIB), mem.host);
	assert_null(guest_mem_ptr(&mem, 0, 16 * MIB + 1));
	assert_ptr_equal(guest_mem_ptr(&mem, 16 * MIB - 4096, 4096), mem.host + 16 * MIB - 4096);
	assert_null(guest_mem_ptr(&mem, 16 * MIB - 4096, 4097));
	assert_null(guest_mem_ptr(&mem, 16 * MIB, 1));
	assert_null(guest_mem_ptr(&mem, 4096, ~0ULL));
	assert_null(guest_mem_ptr(&mem, ~0ULL, 2));
	assert_int_equal(guest_mem_offset(&mem, 0), 0);
	assert_int_equal(guest_mem_offset(&mem, 16 * MIB - 1), 16 * MIB - 1);
	assert_int_equal(guest_mem_offset(&mem, 16 * MIB), -ERANGE);
	assert_int_equal(guest_mem_offset(&mem, ~0ULL), -ERANGE);
	guest_mem_destroy(&mem);
}

/* 4 GiB of RAM (3 GiB low + 1 GiB high) over a PROT_NONE reservation: addresses only. */
static int hole_setup(void **state)
{
	static struct guest_mem mem;
	void *p = mmap(NULL, 4 * GIB, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

	if (p == MAP_FAILED)
		return -1;
	mem = (struct guest_mem){ .backing = GUEST_MEM_ANON, .size = 4 * GIB, .map_size = 4 * GIB,
				  .host = p, .fd = -1 };
	if (guest_mem_layout(mem.size, mem.regions, &mem.nregions))
		return -1;
	*state = &mem;
	return 0;
}

static int hole_teardown(void **state)
{
	struct guest_mem *mem = *state;

	munmap(mem->host, mem->map_size);
	return 0;
}

static void test_ptr_across_the_hole(void **state)
{
	struct guest_mem *mem = *state;
	uint8_t *h = mem->host;

	assert_int_equal(mem->nregions, 2);
	assert_int_equal(guest_mem_end(mem), 5 * GIB);
	assert_ptr_equal(guest_mem_ptr(mem, 3 * GIB - 4096, 4096), h + 3 * GIB - 4096);
	/* A range may not run from low RAM into the hole, nor from the hole into high RAM. */
	assert_null(guest_mem_ptr(mem, 3 * GIB - 4096, 4097));
	assert_null(guest_mem_ptr(mem, 3 * GIB - 4096, GIB + 8192));
	assert_null(guest_mem_ptr(mem, 3 * GIB, 1));
	assert_null(guest_mem_ptr(mem, LAYOUT_IOAPIC, 4));
	assert_null(guest_mem_ptr(mem, 4 * GIB - 1, 2));
	/* High RAM starts at 4 GiB and continues right after low RAM in the mapping. */
	assert_ptr_equal(guest_mem_ptr(mem, 4 * GIB, 1), h + 3 * GIB);
	assert_ptr_equal(guest_mem_ptr(mem, 4 * GIB, GIB), h + 3 * GIB);
	assert_ptr_equal(guest_mem_ptr(mem, 5 * GIB - 1, 1), h + 4 * GIB - 1);
	assert_null(guest_mem_ptr(mem, 5 * GIB - 1, 2));
	assert_null(guest_mem_ptr(mem, 5 * GIB, 1));
	assert_null(guest_mem_ptr(mem, 4 * GIB, ~0ULL));
}

static void test_offset_across_the_hole(void **state)
{
	struct guest_mem *mem = *state;

	assert_int_equal(guest_mem_offset(mem, 0), 0);
	assert_int_equal(guest_mem_offset(mem, 3 * GIB - 1), 3 * GIB - 1);
	assert_int_equal(guest_mem_offset(mem, 3 * GIB), -ERANGE);
	assert_int_equal(guest_mem_offset(mem, LAYOUT_LAPIC), -ERANGE);
	assert_int_equal(guest_mem_offset(mem, 4 * GIB - 1), -ERANGE);
	assert_int_equal(guest_mem_offset(mem, 4 * GIB), 3 * GIB);
	assert_int_equal(guest_mem_offset(mem, 4 * GIB + 0x1234), 3 * GIB + 0x1234);
	assert_int_equal(guest_mem_offset(mem, 5 * GIB - 1), 4 * GIB - 1);
	assert_int_equal(guest_mem_offset(mem, 5 * GIB), -ERANGE);
}

static void test_ptr_and_offset_agree(void **state)
{
	struct guest_mem *mem = *state;
	const uint64_t gpas[] = { 0, 0x1000, 0x9fc00, 2 * GIB + 5, 3 * GIB - 1,
				  4 * GIB, 4 * GIB + 12345, 5 * GIB - 4096 };

	for (size_t i = 0; i < sizeof(gpas) / sizeof(gpas[0]); i++) {
		int64_t off = guest_mem_offset(mem, gpas[i]);
		assert_true(off >= 0);
		assert_ptr_equal(guest_mem_ptr(mem, gpas[i], 1), mem->host + off);
	}
}

/* ---- backing names ---- */

static void test_backing_parse_name_round_trip(void **state)
{
	const char *names[] = { "anon", "memfd", "file", "hugetlb", "uffd" };
	enum guest_mem_backing b;

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		assert_int_equal(guest_mem_backing_parse(names[i], &b), 0);
		assert_string_equal(guest_mem_backing_name(b), names[i]);
	}
	assert_int_equal(guest_mem_backing_parse("anon", &b), 0);
	assert_int_equal(b, GUEST_MEM_ANON);
	assert_int_equal(guest_mem_backing_parse("memfd", &b), 0);
	assert_int_equal(b, GUEST_MEM_MEMFD);
	/* Every named backing parses back to itself. */
	for (int i = 0; i < 16; i++) {
		const char *name = guest_mem_backing_name((enum guest_mem_backing)i);
		if (strcmp(name, "unknown") == 0)
			continue;
		assert_int_equal(guest_mem_backing_parse(name, &b), 0);
		assert_int_equal(b, i);
	}
}

static void test_backing_parse_rejects_unknown(void **state)
{
	enum guest_mem_backing b = GUEST_MEM_MEMFD;

	assert_int_equal(guest_mem_backing_parse("bogus", &b), -EINVAL);
	assert_int_equal(guest_mem_backing_parse("", &b), -EINVAL);
	assert_int_equal(guest_mem_backing_parse("ANON", &b), -EINVAL);
	assert_int_equal(guest_mem_backing_parse("anon ", &b), -EINVAL);
	assert_int_equal(b, GUEST_MEM_MEMFD);
	assert_string_equal(guest_mem_backing_name((enum guest_mem_backing)99), "unknown");
	assert_string_equal(guest_mem_backing_name((enum guest_mem_backing)-1), "unknown");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_layout_below_3g_is_one_region),
		cmocka_unit_test(test_layout_above_3g_splits_at_hole),
		cmocka_unit_test(test_layout_rejects_zero_and_unaligned),
		cmocka_unit_test(test_layout_rejects_too_big),
		cmocka_unit_test(test_create_anon),
		cmocka_unit_test(test_create_anon_no_hugepage),
		cmocka_unit_test(test_create_memfd),
		cmocka_unit_test(test_memfd_backing_really_shares),
		cmocka_unit_test(test_anon_backing_is_private),
		cmocka_unit_test(test_create_rejects_bad_sizes),
		cmocka_unit_test(test_create_rejects_unknown_backing),
		cmocka_unit_test(test_ptr_and_offset_at_region_edges),
		cmocka_unit_test_setup_teardown(test_ptr_across_the_hole, hole_setup, hole_teardown),
		cmocka_unit_test_setup_teardown(test_offset_across_the_hole, hole_setup, hole_teardown),
		cmocka_unit_test_setup_teardown(test_ptr_and_offset_agree, hole_setup, hole_teardown),
		cmocka_unit_test(test_backing_parse_name_round_trip),
		cmocka_unit_test(test_backing_parse_rejects_unknown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
