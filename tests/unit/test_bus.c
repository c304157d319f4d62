/* IO/MMIO bus: registration and overlap checks, dispatch offsets, unclaimed accesses. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <string.h>

#include "core/bus.h"

/* A device that records its last access; reads return 0xa0 + offset + i. */
struct recorder {
	int calls;
	void *vcpu;
	uint64_t offset;
	int len;
	bool is_write;
	uint8_t written[8];
	int ret;
};

static int record_access(void *opaque, struct vcpu *vcpu, uint64_t offset, void *data, int len,
			 bool is_write)
{
	struct recorder *r = opaque;

	r->calls++;
	r->vcpu = vcpu;
	r->offset = offset;
	r->len = len;
	r->is_write = is_write;
	if (is_write)
		memcpy(r->written, data, (size_t)len < sizeof(r->written) ? (size_t)len : sizeof(r->written));
	else
		for (int i = 0; i < len; i++)
			((uint8_t *)data)[i] = (uint8_t)(0xa0 + offset + (uint64_t)i);
	return r->ret;
}

static struct bus_dev dev(const char *name, uint64_t base, uint64_t len, struct recorder *r)
{
	return (struct bus_dev){ .name = name, .base = base, .len = len, .opaque = r,
				 .access = record_access };
}

static void test_register_disjoint_and_adjacent(void **state)
{
	struct io_bus bus = { .name = "pio" };
	struct recorder a = { 0 }, b = { 0 }, c = { 0 };
	struct bus_dev da = dev("a", 0x3f8, 8, &a), db = dev("b", 0x400, 0x10, &b),
		       dc = dev("c", 0x3f0, 8, &c);

	assert_int_equal(bus_register(&bus, &da), 0);
	assert_int_equal(bus_register(&bus, &db), 0); /* starts right where a ends */
	assert_int_equal(bus_register(&bus, &dc), 0); /* ends right where a starts */
	assert_int_equal(bus.ndevs, 3);
}

static void test_register_overlap_fails_with_ebusy(void **state)
{
	struct io_bus bus = { .name = "mmio" };
	struct recorder r = { 0 };
	struct bus_dev base = dev("base", 0x1000, 0x100, &r);
	const struct { uint64_t base, len; } clash[] = {
		{ 0x1000, 0x100 }, /* identical */
		{ 0x0f80, 0x81 },  /* overlaps the first byte */
		{ 0x10ff, 0x10 },  /* overlaps the last byte */
		{ 0x1040, 0x10 },  /* inside */
		{ 0x0800, 0x1000 },/* contains it */
		{ 0x1000, 1 },
	};

	assert_int_equal(bus_register(&bus, &base), 0);
	for (size_t i = 0; i < sizeof(clash) / sizeof(clash[0]); i++) {
		struct bus_dev d = dev("clash", clash[i].base, clash[i].len, &r);
		assert_int_equal(bus_register(&bus, &d), -EBUSY);
	}
	assert_int_equal(bus.ndevs, 1);
	/* Neighbours on both sides still fit. */
	struct bus_dev lo = dev("lo", 0x0f00, 0x100, &r), hi = dev("hi", 0x1100, 0x100, &r);
	assert_int_equal(bus_register(&bus, &lo), 0);
	assert_int_equal(bus_register(&bus, &hi), 0);
}

static void test_register_rejects_empty_or_wrapping(void **state)
{
	struct io_bus bus = { .name = "mmio" };
	struct recorder r = { 0 };
	struct bus_dev empty = dev("empty", 0x1000, 0, &r), wrap = dev("wrap", ~0ULL - 3, 8, &r);

	assert_int_equal(bus_register(&bus, &empty), -EINVAL);
	assert_int_equal(bus_register(&bus, &wrap), -EINVAL);
	assert_int_equal(bus.ndevs, 0);
}

static void test_register_full_bus(void **state)
{
	struct io_bus bus = { .name = "mmio" };
	struct recorder r = { 0 };

	for (int i = 0; i < BUS_MAX_DEVS; i++) {
		struct bus_dev d = dev("d", 0x10000 + (uint64_t)i * 0x1000, 0x1000, &r);
		assert_int_equal(bus_register(&bus, &d), 0);
	}
	struct bus_dev extra = dev("extra", 0x100000, 0x1000, &r);
	assert_int_equal(bus_register(&bus, &extra), -ENOSPC);
	assert_int_equal(bus.ndevs, BUS_MAX_DEVS);
}

static void test_register_copies_descriptor(void **state)
{
	struct io_bus bus = { .name = "pio" };
	struct recorder r = { 0 };
	struct bus_dev d = dev("serial", 0x3f8, 8, &r);

	assert_int_equal(bus_register(&bus, &d), 0);
	d.base = 0x2f8; /* the caller's struct may go away or change */
	assert_non_null(bus_find(&bus, 0x3f8, 1));
	assert_null(bus_find(&bus, 0x2f8, 1));
}

static void test_dispatch_routes_with_offset(void **state)
{
	struct io_bus bus = { .name = "pio" };
	struct recorder a = { 0 }, b = { 0 };
	struct bus_dev da = dev("a", 0x3f8, 8, &a), db = dev("b", 0xf00, 4, &b);
	int cpu_token;
	struct vcpu *vcpu = (struct vcpu *)&cpu_token;
	uint8_t data[4] = { 0 };

	assert_int_equal(bus_register(&bus, &da), 0);
	assert_int_equal(bus_register(&bus, &db), 0);

	assert_int_equal(bus_dispatch(&bus, vcpu, 0x3fd, data, 1, false), 0);
	assert_int_equal(a.calls, 1);
	assert_int_equal(b.calls, 0);
	assert_ptr_equal(a.vcpu, vcpu);
	assert_int_equal(a.offset, 5);
	assert_int_equal(a.len, 1);
	assert_false(a.is_write);
	assert_int_equal(data[0], 0xa5);

	data[0] = 0x11;
	data[1] = 0x22;
	assert_int_equal(bus_dispatch(&bus, vcpu, 0xf02, data, 2, true), 0);
	assert_int_equal(b.calls, 1);
	assert_int_equal(b.offset, 2);
	assert_int_equal(b.len, 2);
	assert_true(b.is_write);
	assert_int_equal(b.written[0], 0x11);
	assert_int_equal(b.written[1], 0x22);

	assert_int_equal(bus_dispatch(&bus, vcpu, 0x3f8, data, 1, true), 0);
	assert_int_equal(a.calls, 2);
	assert_int_equal(a.offset, 0);
	assert_int_equal(bus.unhandled, 0);
}

static void test_dispatch_returns_handler_result(void **state)
{
	struct io_bus bus = { .name = "pio" };
	struct recorder r = { .ret = BUS_WAIT };
	struct bus_dev d = dev("doorbell", 0xf00, 1, &r);
	uint32_t v = 0;

	assert_int_equal(bus_register(&bus, &d), 0);
	assert_int_equal(bus_dispatch(&bus, NULL, 0xf00, &v, 4, true), BUS_WAIT);
	r.ret = -EIO;
	assert_int_equal(bus_dispatch(&bus, NULL, 0xf00, &v, 4, false), -EIO);
}

static void test_unclaimed_read_returns_all_ones(void **state)
{
	struct io_bus bus = { .name = "pio" };
	struct recorder r = { 0 };
	struct bus_dev d = dev("a", 0x3f8, 8, &r);
	uint8_t data[8];

	assert_int_equal(bus_register(&bus, &d), 0);
	memset(data, 0x00, sizeof(data));
	assert_int_equal(bus_dispatch(&bus, NULL, 0x80, data, 4, false), 0);
	assert_int_equal(data[0], 0xff);
	assert_int_equal(data[3], 0xff);
	assert_int_equal(data[4], 0x00); /* only len bytes */
	assert_int_equal(r.calls, 0);
	assert_int_equal(bus.unhandled, 1);

	/* The byte right after the device is unclaimed too. */
	memset(data, 0, sizeof(data));
	assert_int_equal(bus_dispatch(&bus, NULL, 0x400, data, 1, false), 0);
	assert_int_equal(data[0], 0xff);
	assert_int_equal(bus.unhandled, 2);
	/* An empty bus: all-ones too. */
	struct io_bus empty = { .name = "mmio" };
	uint64_t q = 0;
	assert_int_equal(bus_dispatch(&empty, NULL, 0xd0000000, &q, 8, false), 0);
	assert_int_equal(q, ~0ULL);
}

static void test_unclaimed_write_is_dropped(void **state)
{
	struct io_bus bus = { .name = "pio" };
	struct recorder r = { 0 };
	struct bus_dev d = dev("a", 0x3f8, 8, &r);
	uint8_t data[4] = { 1, 2, 3, 4 };

	assert_int_equal(bus_register(&bus, &d), 0);
	assert_int_equal(bus_dispatch(&bus, NULL, 0x80, data, 4, true), 0);
	assert_int_equal(r.calls, 0);
	assert_int_equal(data[0], 1);
	assert_int_equal(data[3], 4);
	assert_int_equal(bus.unhandled, 1);
}

static void test_many_unclaimed_accesses_are_counted(void **state)
{
	struct io_bus bus = { .name = "pio" };
	uint8_t b;

	for (int i = 0; i < 100; i++)
		assert_int_equal(bus_dispatch(&bus, NULL, 0x61, &b, 1, i & 1), 0);
	assert_int_equal(bus.unhandled, 100);
}

static void test_wide_access_starting_inside_device(void **state)
{
	struct io_bus bus = { .name = "pio" };
	struct recorder r = { 0 };
	struct bus_dev d = dev("uart", 0x3f8, 8, &r);
	uint8_t data[4];

	assert_int_equal(bus_register(&bus, &d), 0);
	/* A 4-byte read at the device's last bytes runs past it but still goes to it. */
	assert_int_equal(bus_dispatch(&bus, NULL, 0x3fe, data, 4, false), 0);
	assert_int_equal(r.calls, 1);
	assert_int_equal(r.offset, 6);
	assert_int_equal(r.len, 4);
	assert_ptr_equal(bus_find(&bus, 0x3ff, 4), &bus.devs[0]);
	/* One starting before the device does not. */
	memset(data, 0, sizeof(data));
	assert_int_equal(bus_dispatch(&bus, NULL, 0x3f6, data, 4, false), 0);
	assert_int_equal(r.calls, 1);
	assert_int_equal(data[0], 0xff);
	assert_null(bus_find(&bus, 0x3f7, 2));
}

static void test_find_picks_the_right_device(void **state)
{
	struct io_bus bus = { .name = "mmio" };
	struct recorder r = { 0 };

	for (int i = 0; i < 8; i++) {
		struct bus_dev d = dev("slot", 0xd0000000ULL + (uint64_t)i * 0x1000, 0x200, &r);
		assert_int_equal(bus_register(&bus, &d), 0);
	}
	for (int i = 0; i < 8; i++) {
		uint64_t base = 0xd0000000ULL + (uint64_t)i * 0x1000;
		assert_ptr_equal(bus_find(&bus, base, 4), &bus.devs[i]);
		assert_ptr_equal(bus_find(&bus, base + 0x1ff, 1), &bus.devs[i]);
		assert_null(bus_find(&bus, base + 0x200, 4));
	}
	assert_null(bus_find(&bus, 0xcffffffcULL, 4));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_register_disjoint_and_adjacent),
		cmocka_unit_test(test_register_overlap_fails_with_ebusy),
		cmocka_unit_test(test_register_rejects_empty_or_wrapping),
		cmocka_unit_test(test_register_full_bus),
		cmocka_unit_test(test_register_copies_descriptor),
		cmocka_unit_test(test_dispatch_routes_with_offset),
		cmocka_unit_test(test_dispatch_returns_handler_result),
		cmocka_unit_test(test_unclaimed_read_returns_all_ones),
		cmocka_unit_test(test_unclaimed_write_is_dropped),
		cmocka_unit_test(test_many_unclaimed_accesses_are_counted),
		cmocka_unit_test(test_wide_access_starting_inside_device),
		cmocka_unit_test(test_find_picks_the_right_device),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
