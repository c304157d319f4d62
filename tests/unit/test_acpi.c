/* ACPI tables: checksums, pointers, MADT entries, and the DSDT's AML byte for byte. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <errno.h>
#include <string.h>

#include "devices/acpi_pm.h"
#include "x86/acpi.h"
#include "x86/aml.h"

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
		cmocka_unit_test(test_tables),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
