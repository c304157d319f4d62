/* Guest-physical memory map shared by the VMM, the loaders and the probe guest. */
#ifndef FORKVM_X86_LAYOUT_H
#define FORKVM_X86_LAYOUT_H

#define LAYOUT_PAGE_SIZE 0x1000ULL

/* Boot structures built by the VMM in low memory. */
#define LAYOUT_GDT 0x500ULL		/* 8 descriptors */
#define LAYOUT_TSS 0x600ULL		/* 64-bit TSS + I/O bitmap, up to 0x2669 */
#define LAYOUT_PVH_START_INFO 0x6000ULL /* hvm_start_info + e820 table for PVH entry */
#define LAYOUT_ZERO_PAGE 0x7000ULL	/* Linux boot_params */
#define LAYOUT_BOOT_STACK 0x8ff0ULL	/* Linux boot stack top */
#define LAYOUT_PML4 0x9000ULL
#define LAYOUT_PDPT 0xa000ULL
#define LAYOUT_CMDLINE 0x20000ULL	/* Linux command line */
#define LAYOUT_CMDLINE_MAX 0x10000ULL
#define LAYOUT_PROBE_MAILBOX 0x30000ULL /* one page per vCPU */
#define LAYOUT_PD_BASE 0x40000ULL	/* page directories, one per GiB */
#define LAYOUT_PD_MAX 64ULL		/* so guest RAM + hole <= 64 GiB */
#define LAYOUT_EBDA 0x9fc00ULL		/* end of usable low memory */
#define LAYOUT_ACPI 0xe0000ULL		/* RSDP + ACPI tables (BIOS area, not RAM in e820) */
#define LAYOUT_ACPI_SIZE 0xf000ULL	/* tables end where the generation-ID page starts */
#define LAYOUT_VMGENID 0xef000ULL	/* VM generation ID: 16 bytes alone on the last page */
#define LAYOUT_VMGENID_SIZE 16ULL	/* of the 64 KiB ACPI area (docs/LINUX.md) */
#define LAYOUT_HIGH_MEM 0x100000ULL	/* 1 MiB */

/* Probe guest image, per-vCPU stacks and the area its commands work on. */
#define LAYOUT_PROBE_IMAGE 0x100000ULL
#define LAYOUT_PROBE_IMAGE_MAX 0x100000ULL
#define LAYOUT_PROBE_STACKS 0x200000ULL
#define LAYOUT_PROBE_STACK_SIZE 0x20000ULL
#define LAYOUT_PROBE_WORK 0x400000ULL	/* first byte the probe commands may touch */

#define LAYOUT_MAX_VCPUS 16

/* RAM above 3 GiB continues at 4 GiB; the hole holds MMIO devices and the APICs. */
#define LAYOUT_RAM_LOW_MAX 0xc0000000ULL
#define LAYOUT_RAM_HIGH_START 0x100000000ULL
#define LAYOUT_VIRTIO_MMIO_BASE 0xd0000000ULL /* virtio-mmio slot i at base + i * size */
#define LAYOUT_VIRTIO_MMIO_SIZE 0x1000ULL
#define LAYOUT_VIRTIO_MMIO_IRQ 5	/* slot i uses GSI base + i */
#define LAYOUT_VIRTIO_MMIO_SLOTS 8
#define LAYOUT_IOAPIC 0xfec00000ULL
#define LAYOUT_LAPIC 0xfee00000ULL
#define LAYOUT_KVM_IDENTITY_MAP 0xfffbc000ULL
#define LAYOUT_KVM_TSS 0xfffbd000ULL

#define LAYOUT_SERIAL_PORT 0x3f8
#define LAYOUT_SERIAL_IRQ 4
/* Generic Event Device: its edge tells the guest a new generation ID is in place. The last
 * IOAPIC pin (of 24): above the legacy 0-15 the PICs share, clear of growing virtio slots. */
#define LAYOUT_GED_GSI 23
/* ACPI hardware-reduced sleep registers (the FADT's SLEEP_CONTROL_REG and SLEEP_STATUS_REG,
 * one byte each, port I/O; devices/acpi_pm.c) and the \_S5 (soft off) sleep type the DSDT
 * announces. */
#define LAYOUT_ACPI_SLEEP_CONTROL_PORT 0x600
#define LAYOUT_ACPI_SLEEP_STATUS_PORT 0x601
#define LAYOUT_ACPI_S5_TYPE 5

#endif
