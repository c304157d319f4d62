/* ACPI table builder: what Linux needs to find CPUs, the IOAPIC, virtio-mmio devices and the
 * VM generation ID. */
#include "x86/acpi.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "x86/aml.h"
#include "x86/layout.h"

#define MADT_LAPIC 0
#define MADT_IOAPIC 1
#define MADT_PCAT_COMPAT 1u /* there is a legacy 8259 pair (KVM's in-kernel PIC) */
/* IAPC_BOOT_ARCH: no VGA (bit 2), no CMOS RTC (bit 5); no 8042 bit so Linux does not probe it. */
#define FADT_BOOT_ARCH ((1u << 2) | (1u << 5))

uint8_t acpi_checksum(const uint8_t *p, size_t len)
{
	uint8_t sum = 0;

	for (size_t i = 0; i < len; i++)
		sum = (uint8_t)(sum + p[i]);
	return sum;
}

static void put16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }
static void put32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static void put64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }

/* The common 36-byte header; the checksum is fixed up by table_finish(). */
static void table_header(uint8_t *t, const char sig[4], uint32_t len, uint8_t rev)
{
	memset(t, 0, ACPI_HDR_SIZE);
	memcpy(t, sig, 4);
	put32(t + 4, len);
	t[8] = rev;
	memcpy(t + 10, ACPI_OEM_ID, 6);
	memcpy(t + 16, "FORKVMTB", 8);
	put32(t + 24, 1);	     /* OEM revision */
	memcpy(t + 28, "FKVM", 4); /* creator id */
	put32(t + 32, 1);
}

static void table_finish(uint8_t *t, uint32_t len)
{
	t[9] = 0;
	t[9] = (uint8_t)(0x100 - acpi_checksum(t, len));
}

/* Device(Vnnn) { _HID "LNRO0005", _UID n, _CRS { mmio, irq } }: one virtio-mmio slot. */
static void dsdt_virtio(struct aml *a, int i, const struct acpi_virtio *v)
{
	char name[5];
	size_t dev;

	snprintf(name, sizeof(name), "V%03d", i % 1000);
	dev = aml_device_begin(a, name);
	aml_name_decl(a, "_HID");
	aml_string(a, "LNRO0005"); /* the ACPI id Linux's virtio_mmio driver matches */
	aml_name_decl(a, "_UID");
	aml_integer(a, (uint64_t)i);
	aml_name_decl(a, "_CRS");
	aml_crs_mmio_irq(a, v->base, v->size, v->irq);
	aml_pkg_end(a, dev);
}

/* Device(VGEN) { _HID, _CID, _DDN, Name(ADDR, Package { low 32 bits, high 32 bits }) }:
 * Linux's vmgenid driver evaluates ADDR and maps the 16 bytes found there. */
static void dsdt_vmgenid(struct aml *a, uint64_t addr)
{
	const uint64_t halves[2] = { addr & 0xffffffffu, addr >> 32 };
	size_t dev = aml_device_begin(a, "VGEN");

	aml_name_decl(a, "_HID");
	aml_string(a, ACPI_VMGENID_HID);
	aml_name_decl(a, "_CID");
	aml_string(a, ACPI_VMGENID_CID);
	aml_name_decl(a, "_DDN");
	aml_string(a, ACPI_VMGENID_CID);
	aml_name_decl(a, "ADDR");
	aml_package_ints(a, halves, 2);
	aml_pkg_end(a, dev);
}

/*
 * Device(GED) { _HID "ACPI0013", _UID 0, _CRS { Interrupt { gsi } },
 *               Method(_EVT, 1) { If (LEqual(Arg0, gsi)) { Notify(\_SB.VGEN, 0x80) } } }
 * Linux's evged driver runs _EVT with the GSI as Arg0 when the interrupt fires.
 */
static void dsdt_ged(struct aml *a, uint32_t gsi)
{
	size_t dev = aml_device_begin(a, "GED"), method, cond;

	aml_name_decl(a, "_HID");
	aml_string(a, ACPI_GED_HID);
	aml_name_decl(a, "_UID");
	aml_integer(a, 0);
	aml_name_decl(a, "_CRS");
	aml_crs_irq(a, gsi);
	method = aml_method_begin(a, "_EVT", 1, false);
	cond = aml_if_begin(a);
	aml_lequal(a);
	aml_arg(a, 0);
	aml_integer(a, gsi);
	aml_notify(a, "\\_SB.VGEN", ACPI_VMGENID_NOTIFY);
	aml_pkg_end(a, cond);
	aml_pkg_end(a, method);
	aml_pkg_end(a, dev);
}

int acpi_dsdt_body(const struct acpi_config *cfg, uint8_t **out, size_t *len)
{
	static const uint64_t s5[2] = { LAYOUT_ACPI_S5_TYPE, LAYOUT_ACPI_S5_TYPE };
	struct aml a;
	size_t scope;

	aml_init(&a);
	/* Scope(\_SB) { Device(Vnnn) ... [Device(VGEN), Device(GED_)] } */
	scope = aml_scope_begin(&a, "\\_SB_");
	for (int i = 0; i < cfg->nvirtio; i++)
		dsdt_virtio(&a, i, &cfg->virtio[i]);
	if (cfg->vmgenid_addr) {
		dsdt_vmgenid(&a, cfg->vmgenid_addr);
		dsdt_ged(&a, cfg->ged_gsi);
	}
	aml_pkg_end(&a, scope);
	/* Name(\_S5_, Package(2) { 5, 5 }): the soft-off sleep type for the sleep control reg. */
	aml_name_decl(&a, "\\_S5_");
	aml_package_ints(&a, s5, 2);
	if (a.err) {
		int err = a.err;

		aml_free(&a);
		return err;
	}
	*out = a.data;
	*len = a.len;
	return 0;
}

static size_t build_madt(uint8_t *t, const struct acpi_config *cfg)
{
	size_t off = ACPI_HDR_SIZE + 8;

	put32(t + 36, cfg->lapic_addr);
	put32(t + 40, MADT_PCAT_COMPAT);
	for (int i = 0; i < cfg->ncpus; i++) {
		t[off] = MADT_LAPIC;
		t[off + 1] = 8;
		t[off + 2] = (uint8_t)i; /* ACPI processor UID */
		t[off + 3] = (uint8_t)i; /* APIC id = vCPU id (cpuid.c sets the same) */
		put32(t + off + 4, 1);	 /* enabled */
		off += 8;
	}
	t[off] = MADT_IOAPIC;
	t[off + 1] = 12;
	t[off + 2] = 0; /* IOAPIC id */
	t[off + 3] = 0;
	put32(t + off + 4, cfg->ioapic_addr);
	put32(t + off + 8, 0); /* GSI base */
	off += 12;
	table_header(t, "APIC", (uint32_t)off, 5);
	table_finish(t, (uint32_t)off);
	return off;
}

static void build_fadt(uint8_t *t, uint64_t dsdt)
{
	table_header(t, "FACP", ACPI_FADT_SIZE, 6);
	put32(t + 40, (uint32_t)dsdt);
	put16(t + 109, FADT_BOOT_ARCH);
	/* Hardware-reduced: no PM timer, no SCI, no fixed event blocks; Linux then needs
	 * nothing but the tables below. */
	put32(t + 112, ACPI_FADT_HW_REDUCED);
	t[131] = 3;		     /* FADT minor version (6.3) */
	put64(t + 140, dsdt);	     /* X_DSDT */
	/* Sleep control and status registers (GAS: system I/O, 8 bits, byte access). */
	t[244] = 1, t[245] = 8, t[247] = 1;
	put64(t + 248, LAYOUT_ACPI_SLEEP_CONTROL_PORT);
	t[256] = 1, t[257] = 8, t[259] = 1;
	put64(t + 260, LAYOUT_ACPI_SLEEP_STATUS_PORT);
	memcpy(t + 268, "FORKVM  ", 8); /* hypervisor vendor identity */
	table_finish(t, ACPI_FADT_SIZE);
}

static size_t align16(size_t v)
{
	return (v + 15) & ~(size_t)15;
}

int acpi_build(uint8_t *buf, size_t cap, uint64_t gpa, const struct acpi_config *cfg,
	       struct acpi_layout *out)
{
	size_t xsdt = align16(ACPI_RSDP_SIZE), fadt = align16(xsdt + ACPI_HDR_SIZE + 16);
	size_t madt = align16(fadt + ACPI_FADT_SIZE), dsdt, body_len, end;
	uint8_t *body;
	int err;

	if (cfg->ncpus < 1 || cfg->ncpus > 255 || cfg->nvirtio < 0 || cfg->nvirtio > ACPI_MAX_VIRTIO)
		return -EINVAL;
	if (madt + ACPI_HDR_SIZE + 8 + 8 * (size_t)cfg->ncpus + 12 > cap)
		return -ENOSPC;
	memset(buf, 0, cap);
	dsdt = align16(madt + build_madt(buf + madt, cfg));
	err = acpi_dsdt_body(cfg, &body, &body_len);
	if (err)
		return err;
	end = dsdt + ACPI_HDR_SIZE + body_len;
	if (end > cap) {
		free(body);
		return -ENOSPC;
	}
	table_header(buf + dsdt, "DSDT", (uint32_t)(ACPI_HDR_SIZE + body_len), 2);
	memcpy(buf + dsdt + ACPI_HDR_SIZE, body, body_len);
	free(body);
	table_finish(buf + dsdt, (uint32_t)(ACPI_HDR_SIZE + body_len));
	build_fadt(buf + fadt, gpa + dsdt);
	/* XSDT: 64-bit pointers to FADT and MADT (the DSDT hangs off the FADT). */
	table_header(buf + xsdt, "XSDT", ACPI_HDR_SIZE + 16, 1);
	put64(buf + xsdt + ACPI_HDR_SIZE, gpa + fadt);
	put64(buf + xsdt + ACPI_HDR_SIZE + 8, gpa + madt);
	table_finish(buf + xsdt, ACPI_HDR_SIZE + 16);
	/* RSDP 2.0: checksum over the first 20 bytes, extended checksum over all 36. */
	memcpy(buf, "RSD PTR ", 8);
	memcpy(buf + 9, ACPI_OEM_ID, 6);
	buf[15] = 2;
	put32(buf + 20, ACPI_RSDP_SIZE);
	put64(buf + 24, gpa + xsdt);
	buf[8] = (uint8_t)(0x100 - acpi_checksum(buf, 20));
	buf[32] = (uint8_t)(0x100 - acpi_checksum(buf, ACPI_RSDP_SIZE));
	*out = (struct acpi_layout){ .rsdp = gpa, .xsdt = gpa + xsdt, .fadt = gpa + fadt,
				     .madt = gpa + madt, .dsdt = gpa + dsdt, .total = end };
	return 0;
}
