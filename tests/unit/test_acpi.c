/* ACPI tables: checksums, pointers, MADT entries, the DSDT's AML byte for byte (virtio-mmio,
 * generation ID and Generic Event Devices), and where the generation ID lives. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <errno.h>
#include <string.h>

#include "devices/acpi_pm.h"
#include "loader/kernel.h"
#include "mem/guest_mem.h"
#include "x86/acpi.h"
#include "x86/aml.h"
#include "x86/layout.h"

static uint32_t u32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static uint64_t u64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }

static void test_pkglen(void **state)
{
	uint8_t b[4];

	assert_int_equal(aml_pkglen_encode(10, b), 1);
	assert_int_equal(b[0], 11);
	assert_int_equal(aml_pkglen_encode(62, b), 1);
	assert_int_equal(b[0], 63);
	/* 63 body bytes + 2 length bytes = 65: lead 0x40 | low nibble, then bits 4-11. */
	assert_int_equal(aml_pkglen_encode(63, b), 2);
	assert_int_equal(b[0], 0x41);
	assert_int_equal(b[1], 0x04);
	/* 4094 + 2 = 4096 does not fit 12 bits: three bytes, total 4097. */
	assert_int_equal(aml_pkglen_encode(4094, b), 3);
	assert_int_equal(b[0], 0x81);
	assert_int_equal(b[1], 0x00);
	assert_int_equal(b[2], 0x01);
}

static void test_integers(void **state)
{
	struct aml a;
	static const uint8_t want[] = { 0x00, 0x01, 0x0a, 0x05, 0x0b, 0x34, 0x12,
					0x0c, 0x00, 0x00, 0x00, 0xd0, 0x0e, 1, 0, 0, 0, 1, 0, 0, 0 };

	aml_init(&a);
	aml_integer(&a, 0);
	aml_integer(&a, 1);
	aml_integer(&a, 5);
	aml_integer(&a, 0x1234);
	aml_integer(&a, 0xd0000000);
	aml_integer(&a, 0x100000001ULL);
	assert_int_equal(a.err, 0);
	assert_int_equal(a.len, sizeof(want));
	assert_memory_equal(a.data, want, sizeof(want));
	aml_free(&a);
}

/* One virtio-mmio slot, encoded by hand from the ACPI spec's grammar. */
static void test_dsdt_bytes(void **state)
{
	struct acpi_config cfg = { .ncpus = 1, .nvirtio = 1,
				   .virtio = { { 0xd0000000, 0x1000, 5 } } };
	static const uint8_t want[] = {
		0x10, 0x43, 0x04, '\\', '_', 'S', 'B', '_',		/* Scope, PkgLength 67 */
		0x5b, 0x82, 0x3a, 'V', '0', '0', '0',			/* Device, PkgLength 58 */
		0x08, '_', 'H', 'I', 'D', 0x0d, 'L', 'N', 'R', 'O', '0', '0', '0', '5', 0,
		0x08, '_', 'U', 'I', 'D', 0x00,
		0x08, '_', 'C', 'R', 'S', 0x11, 0x1a, 0x0a, 0x17,	/* Buffer(23) */
		0x86, 0x09, 0x00, 0x01, 0x00, 0x00, 0x00, 0xd0, 0x00, 0x10, 0x00, 0x00,
		0x89, 0x06, 0x00, 0x03, 0x01, 0x05, 0x00, 0x00, 0x00,
		0x79, 0x00,
		0x08, '\\', '_', 'S', '5', '_', 0x12, 0x06, 0x02, 0x0a, 0x05, 0x0a, 0x05, /* \\_S5 */
	};
	uint8_t *body;
	size_t len;

	assert_int_equal(acpi_dsdt_body(&cfg, &body, &len), 0);
	assert_int_equal(len, sizeof(want));
	assert_memory_equal(body, want, sizeof(want));
	free(body);
}

/* NameStrings: one segment, root + one, root + two (DualNamePath), three (MultiNamePath). */
static void test_names(void **state)
{
	struct aml a;
	static const uint8_t want[] = {
		'V', '0', '0', '0',
		'\\', '_', 'S', 'B', '_',
		'\\', 0x2e, '_', 'S', 'B', '_', 'V', 'G', 'E', 'N',
		0x2f, 0x03, 'A', '_', '_', '_', 'B', 'C', '_', '_', 'D', 'E', 'F', 'G',
		'G', 'E', 'D', '_',
	};

	aml_init(&a);
	aml_name(&a, "V000");
	aml_name(&a, "\\_SB_");
	aml_name(&a, "\\_SB.VGEN");
	aml_name(&a, "A.BC.DEFGH"); /* a segment longer than 4 is cut */
	aml_name(&a, "GED");
	assert_int_equal(a.err, 0);
	assert_int_equal(a.len, sizeof(want));
	assert_memory_equal(a.data, want, sizeof(want));
	aml_free(&a);
	/* More than 8 segments is refused (sticky error). */
	aml_init(&a);
	aml_name(&a, "A.B.C.D.E.F.G.H.I");
	assert_int_equal(a.err, -EINVAL);
	aml_free(&a);
}

/* Method(_EVT, 1, NotSerialized) { If (LEqual(Arg0, 23)) { Notify(\_SB.VGEN, 0x80) } },
 * a Package of two integers, and the Interrupt-only resource template. */
static void test_method_package_irq(void **state)
{
	static const uint8_t want[] = {
		0x14, 0x19, '_', 'E', 'V', 'T', 0x01,			/* Method, PkgLength 25 */
		0xa0, 0x12,						/* If, PkgLength 18 */
		0x93, 0x68, 0x0a, 0x17,					/* LEqual(Arg0, 23) */
		0x86, '\\', 0x2e, '_', 'S', 'B', '_', 'V', 'G', 'E', 'N', 0x0a, 0x80, /* Notify */
		0x12, 0x08, 0x02, 0x0c, 0x00, 0xf0, 0x0e, 0x00, 0x00,	/* Package { 0xef000, 0 } */
		0x11, 0x0e, 0x0a, 0x0b,					/* Buffer(11) */
		0x89, 0x06, 0x00, 0x03, 0x01, 0x17, 0x00, 0x00, 0x00, 0x79, 0x00,
	};
	const uint64_t halves[2] = { 0xef000, 0 };
	struct aml a;
	size_t method, cond;

	aml_init(&a);
	method = aml_method_begin(&a, "_EVT", 1, false);
	cond = aml_if_begin(&a);
	aml_lequal(&a);
	aml_arg(&a, 0);
	aml_integer(&a, 23);
	aml_notify(&a, "\\_SB.VGEN", 0x80);
	aml_pkg_end(&a, cond);
	aml_pkg_end(&a, method);
	aml_package_ints(&a, halves, 2);
	aml_crs_irq(&a, 23);
	assert_int_equal(a.err, 0);
	assert_int_equal(a.len, sizeof(want));
	assert_memory_equal(a.data, want, sizeof(want));
	aml_free(&a);
	/* Serialized methods set bit 3 of MethodFlags; Arg7 and 8 arguments do not exist. */
	aml_init(&a);
	method = aml_method_begin(&a, "M", 2, true);
	aml_pkg_end(&a, method);
	assert_int_equal(a.data[a.len - 1], 0x0a);
	aml_arg(&a, 7);
	assert_int_equal(a.err, -EINVAL);
	aml_free(&a);
	aml_init(&a);
	aml_method_begin(&a, "M", 8, false);
	assert_int_equal(a.err, -EINVAL);
	aml_free(&a);
}

/*
 * The generation ID device and its Generic Event Device, hand-assembled (what iasl -oa makes of
 *   Scope(\_SB) { Device(VGEN) { Name(_HID, "VMGENCTR") Name(_CID, "VM_Gen_Counter")
 *                  Name(_DDN, "VM_Gen_Counter") Name(ADDR, Package() { 0xef000, 0 }) }
 *                Device(GED) { Name(_HID, "ACPI0013") Name(_UID, 0)
 *                  Name(_CRS, ResourceTemplate() { Interrupt(ResourceConsumer, Edge, ActiveHigh,
 *                                                            Exclusive) { 23 } })
 *                  Method(_EVT, 1) { If (LEqual(Arg0, 23)) { Notify(\_SB.VGEN, 0x80) } } } }
 * modulo iasl's rule that an _HID suffix be hex, which Linux does not apply).
 */
static void test_dsdt_vmgenid_bytes(void **state)
{
	struct acpi_config cfg = { .ncpus = 1, .vmgenid_addr = 0xef000, .ged_gsi = 23 };
	static const uint8_t want[] = {
		0x10, 0x41, 0x0a, '\\', '_', 'S', 'B', '_',		/* Scope, PkgLength 161 */
		0x5b, 0x82, 0x4d, 0x04, 'V', 'G', 'E', 'N',		/* Device, PkgLength 77 */
		0x08, '_', 'H', 'I', 'D', 0x0d, 'V', 'M', 'G', 'E', 'N', 'C', 'T', 'R', 0,
		0x08, '_', 'C', 'I', 'D', 0x0d, 'V', 'M', '_', 'G', 'e', 'n', '_',
		'C', 'o', 'u', 'n', 't', 'e', 'r', 0,
		0x08, '_', 'D', 'D', 'N', 0x0d, 'V', 'M', '_', 'G', 'e', 'n', '_',
		'C', 'o', 'u', 'n', 't', 'e', 'r', 0,
		0x08, 'A', 'D', 'D', 'R', 0x12, 0x08, 0x02, 0x0c, 0x00, 0xf0, 0x0e, 0x00, 0x00,
		0x5b, 0x82, 0x49, 0x04, 'G', 'E', 'D', '_',		/* Device, PkgLength 73 */
		0x08, '_', 'H', 'I', 'D', 0x0d, 'A', 'C', 'P', 'I', '0', '0', '1', '3', 0,
		0x08, '_', 'U', 'I', 'D', 0x00,
		0x08, '_', 'C', 'R', 'S', 0x11, 0x0e, 0x0a, 0x0b,
		0x89, 0x06, 0x00, 0x03, 0x01, 0x17, 0x00, 0x00, 0x00, 0x79, 0x00,
		0x14, 0x19, '_', 'E', 'V', 'T', 0x01,
		0xa0, 0x12, 0x93, 0x68, 0x0a, 0x17,
		0x86, '\\', 0x2e, '_', 'S', 'B', '_', 'V', 'G', 'E', 'N', 0x0a, 0x80,
		0x08, '\\', '_', 'S', '5', '_', 0x12, 0x06, 0x02, 0x0a, 0x05, 0x0a, 0x05, /* \\_S5 */
	};
	uint8_t *body;
	size_t len;

	assert_int_equal(acpi_dsdt_body(&cfg, &body, &len), 0);
	assert_int_equal(len, sizeof(want));
	assert_memory_equal(body, want, sizeof(want));
	free(body);
}

/* acpi_build writes only its own area: the generation-ID page after it stays as it was. */
static void test_tables_spare_vmgenid(void **state)
{
	struct acpi_config cfg = { .ncpus = 2, .lapic_addr = 0xfee00000, .ioapic_addr = 0xfec00000,
				   .nvirtio = 1, .virtio = { { 0xd0000000, 0x1000, 5 } },
				   .vmgenid_addr = LAYOUT_VMGENID, .ged_gsi = LAYOUT_GED_GSI };
	static uint8_t area[0x10000];
	const size_t page = LAYOUT_VMGENID - LAYOUT_ACPI;
	struct acpi_layout l;

	memset(area, 0xa5, sizeof(area));
	assert_int_equal(acpi_build(area, LAYOUT_ACPI_SIZE, LAYOUT_ACPI, &cfg, &l), 0);
	assert_true(l.total <= LAYOUT_ACPI_SIZE);
	for (size_t i = page; i < page + LAYOUT_PAGE_SIZE; i++)
		assert_int_equal(area[i], 0xa5);
	assert_non_null(memmem(area + (l.dsdt - LAYOUT_ACPI), l.total, "VMGENCTR", 8));
}

static bool overlaps(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
	return a < b + blen && b < a + alen;
}

/*
 * The generation ID sits alone on a page of low RAM that no e820 map lists as usable (so the
 * kernel never allocates it), after the ACPI tables, below 1 MiB; its GSI is an IOAPIC-only
 * pin that no other device uses.
 */
static void test_vmgenid_layout(void **state)
{
	static const uint64_t sizes[] = { 1ULL << 20, 2ULL << 20, 512ULL << 20, 3ULL << 30,
					  5ULL << 30 };

	assert_int_equal(LAYOUT_VMGENID % LAYOUT_PAGE_SIZE, 0);
	assert_true(LAYOUT_VMGENID_SIZE <= LAYOUT_PAGE_SIZE);
	assert_true(LAYOUT_ACPI + LAYOUT_ACPI_SIZE <= LAYOUT_VMGENID);
	assert_true(LAYOUT_VMGENID + LAYOUT_PAGE_SIZE <= LAYOUT_ACPI + 0x10000);
	assert_true(LAYOUT_VMGENID + LAYOUT_PAGE_SIZE <= LAYOUT_HIGH_MEM);
	for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
		struct guest_mem_region r[GUEST_MEM_MAX_REGIONS];
		struct e820_entry e[8];
		int nr, n;

		assert_int_equal(guest_mem_layout(sizes[s], r, &nr), 0);
		assert_int_equal(e820_build(r, nr, e, 8, &n), 0);
		assert_true(r[0].gpa == 0 && r[0].size >= LAYOUT_VMGENID + LAYOUT_PAGE_SIZE);
		for (int i = 0; i < n; i++)
			if (e[i].type == E820_RAM)
				assert_false(overlaps(e[i].addr, e[i].size, LAYOUT_VMGENID,
						      LAYOUT_PAGE_SIZE));
	}
	assert_true(LAYOUT_GED_GSI >= 16 && LAYOUT_GED_GSI < 24);
	assert_int_not_equal(LAYOUT_GED_GSI, LAYOUT_SERIAL_IRQ);
	assert_true(LAYOUT_GED_GSI < LAYOUT_VIRTIO_MMIO_IRQ ||
		    LAYOUT_GED_GSI >= LAYOUT_VIRTIO_MMIO_IRQ + LAYOUT_VIRTIO_MMIO_SLOTS);
}

static void test_tables(void **state)
{
	struct acpi_config cfg = { .ncpus = 3, .lapic_addr = 0xfee00000, .ioapic_addr = 0xfec00000,
				   .nvirtio = 2, .virtio = { { 0xd0000000, 0x1000, 5 },
							     { 0xd0001000, 0x1000, 6 } } };
	static uint8_t buf[0x10000];
	const uint64_t gpa = 0xe0000;
	struct acpi_layout l;
	const uint8_t *xsdt, *fadt, *madt, *dsdt;

	assert_int_equal(acpi_build(buf, sizeof(buf), gpa, &cfg, &l), 0);
	assert_memory_equal(buf, "RSD PTR ", 8);
	assert_int_equal(acpi_checksum(buf, 20), 0);
	assert_int_equal(acpi_checksum(buf, ACPI_RSDP_SIZE), 0);
	assert_int_equal(buf[15], 2);
	assert_int_equal(u64(buf + 24), l.xsdt);
	xsdt = buf + (l.xsdt - gpa);
	fadt = buf + (l.fadt - gpa);
	madt = buf + (l.madt - gpa);
	dsdt = buf + (l.dsdt - gpa);
	assert_memory_equal(xsdt, "XSDT", 4);
	assert_int_equal(acpi_checksum(xsdt, u32(xsdt + 4)), 0);
	assert_int_equal(u64(xsdt + 36), l.fadt);
	assert_int_equal(u64(xsdt + 44), l.madt);
	assert_memory_equal(fadt, "FACP", 4);
	assert_int_equal(u32(fadt + 4), ACPI_FADT_SIZE);
	assert_int_equal(acpi_checksum(fadt, ACPI_FADT_SIZE), 0);
	assert_true(u32(fadt + 112) & ACPI_FADT_HW_REDUCED);
	assert_int_equal(u64(fadt + 140), l.dsdt);
	assert_int_equal(u32(fadt + 40), l.dsdt);
	/* Sleep control/status registers: system I/O, 8 bits, byte access, at the PM ports. */
	assert_int_equal(fadt[244], 1);
	assert_int_equal(fadt[245], 8);
	assert_int_equal(fadt[247], 1);
	assert_int_equal(u64(fadt + 248), ACPI_PM_SLEEP_CONTROL_PORT);
	assert_int_equal(u64(fadt + 260), ACPI_PM_SLEEP_STATUS_PORT);
	assert_memory_equal(madt, "APIC", 4);
	assert_int_equal(acpi_checksum(madt, u32(madt + 4)), 0);
	assert_int_equal(u32(madt + 4), 44 + 3 * 8 + 12);
	assert_int_equal(u32(madt + 36), 0xfee00000);
	for (int i = 0; i < 3; i++) {
		const uint8_t *e = madt + 44 + 8 * i;
		assert_int_equal(e[0], 0); /* processor local APIC */
		assert_int_equal(e[3], i);
		assert_int_equal(u32(e + 4), 1);
	}
	assert_int_equal(madt[44 + 24], 1); /* IOAPIC */
	assert_int_equal(u32(madt + 44 + 24 + 4), 0xfec00000);
	assert_memory_equal(dsdt, "DSDT", 4);
	assert_int_equal(acpi_checksum(dsdt, u32(dsdt + 4)), 0);
	assert_non_null(memmem(dsdt, u32(dsdt + 4), "V001", 4));
	assert_int_equal(l.total, (size_t)(l.dsdt - gpa) + u32(dsdt + 4));
	/* Bad configurations and a buffer too small are refused. */
	cfg.ncpus = 0;
	assert_int_equal(acpi_build(buf, sizeof(buf), gpa, &cfg, &l), -EINVAL);
	cfg.ncpus = 1;
	assert_int_equal(acpi_build(buf, 200, gpa, &cfg, &l), -ENOSPC);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_pkglen),
		cmocka_unit_test(test_integers),
		cmocka_unit_test(test_dsdt_bytes),
		cmocka_unit_test(test_names),
		cmocka_unit_test(test_method_package_irq),
		cmocka_unit_test(test_dsdt_vmgenid_bytes),
		cmocka_unit_test(test_tables_spare_vmgenid),
		cmocka_unit_test(test_vmgenid_layout),
		cmocka_unit_test(test_tables),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
