/* ACPI tables for Linux guests: RSDP, XSDT, FADT (hardware-reduced), MADT, DSDT (virtio-mmio
 * devices, the VM generation ID device and its Generic Event Device, \_S5). */
#ifndef FORKVM_X86_ACPI_H
#define FORKVM_X86_ACPI_H

#include <stddef.h>
#include <stdint.h>

#define ACPI_MAX_VIRTIO 8
#define ACPI_OEM_ID "FORKVM"
#define ACPI_RSDP_SIZE 36
#define ACPI_HDR_SIZE 36
#define ACPI_FADT_SIZE 276 /* revision 6 */
#define ACPI_FADT_HW_REDUCED (1u << 20)
/* VM generation ID device: "VMGENCTR" is in Linux's vmgenid driver table as is; the _CID is
 * Microsoft's spec'd id (QEMU, Firecracker and Windows use it; ACPICA upper-cases it to
 * "VM_GEN_COUNTER", the driver's second id). Its notify comes through a Generic Event Device. */
#define ACPI_VMGENID_HID "VMGENCTR"
#define ACPI_VMGENID_CID "VM_Gen_Counter"
#define ACPI_GED_HID "ACPI0013"
#define ACPI_VMGENID_NOTIFY 0x80 /* device-specific notify: the driver re-reads the ID */

struct acpi_virtio {
	uint32_t base, size, irq;
};

struct acpi_config {
	int ncpus;
	uint32_t lapic_addr, ioapic_addr;
	int nvirtio;
	struct acpi_virtio virtio[ACPI_MAX_VIRTIO];
	uint64_t vmgenid_addr;	/* guest-physical 16-byte generation ID; 0 = no VGEN/GED devices */
	uint32_t ged_gsi;	/* the Generic Event Device's interrupt, edge, active high */
};

/* Where each table landed (guest-physical), for logs and tests. */
struct acpi_layout {
	uint64_t rsdp, xsdt, fadt, madt, dsdt;
	size_t total;
};

/* Sum of bytes: a valid table sums to 0 mod 256. */
uint8_t acpi_checksum(const uint8_t *p, size_t len);
/* Build the DSDT's AML body (after the header) into a malloc'ed buffer. */
int acpi_dsdt_body(const struct acpi_config *cfg, uint8_t **out, size_t *len);
/* Write all tables into buf (cap bytes), which the guest sees at gpa; RSDP first. */
int acpi_build(uint8_t *buf, size_t cap, uint64_t gpa, const struct acpi_config *cfg,
	       struct acpi_layout *out);

#endif
