/* vCPU register state for entering a loaded kernel (PVH 32-bit or Linux 64-bit protocol). */
#ifndef FORKVM_LOADER_BOOT_REGS_H
#define FORKVM_LOADER_BOOT_REGS_H

#include <linux/kvm.h>
#include <stdint.h>

#include "loader/kernel.h"

/* Selectors match x86/segments.h (0x10/0x18 kernel code/data, TSS at 0x20); the PVH
 * 32-bit code segment takes the free slot 1. */
#define BOOT_GDT_ENTRIES 8
#define BOOT_SEL_CODE32 0x08 /* flat 32-bit code for the PVH entry */
#define BOOT_SEL_CODE64 0x10 /* __BOOT_CS of the 64-bit boot protocol */
#define BOOT_SEL_DATA 0x18   /* __BOOT_DS */

/* Write descriptors 1-3 (code32, code64, data) into gdt; the other slots are untouched,
 * so this can be applied on top of gdt_build()'s table at LAYOUT_GDT. */
void boot_gdt_fill(uint64_t gdt[BOOT_GDT_ENTRIES]);
/* Overwrite the fields of regs/sregs that the entry mode defines (not TR/LDT); sregs should
 * come from KVM_GET_SREGS so the APIC base and the rest stay as KVM set them. Long mode
 * expects identity page tables at LAYOUT_PML4 covering the kernel and boot structures. */
int boot_regs_fill(const struct boot_info *boot, struct kvm_regs *regs, struct kvm_sregs *sregs);

#endif
