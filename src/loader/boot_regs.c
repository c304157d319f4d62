/* Register and segment setup for the two kernel entry modes the loader supports. */
#include "loader/boot_regs.h"

#include <errno.h>
#include <string.h>

#include "x86/layout.h"

#define CR0_PE 0x1ULL
#define CR0_ET 0x10ULL
#define CR0_PG 0x80000000ULL
#define CR4_PAE 0x20ULL
#define EFER_LME 0x100ULL
#define EFER_LMA 0x400ULL
#define RFLAGS_RESERVED 0x2ULL

void boot_gdt_fill(uint64_t gdt[BOOT_GDT_ENTRIES])
{
	gdt[BOOT_SEL_CODE64 >> 3] = 0x00af9b000000ffffULL; /* code, L=1, DPL0 */
	gdt[BOOT_SEL_DATA >> 3] = 0x00cf93000000ffffULL;   /* data, 4 GiB, writable */
	gdt[BOOT_SEL_CODE32 >> 3] = 0x00cf9b000000ffffULL; /* code, D=1, 4 GiB */
}

/* A flat 4 GiB segment as KVM wants it: byte limit with granularity set. */
static struct kvm_segment flat_seg(uint16_t selector, uint8_t type, int db, int l)
{
	return (struct kvm_segment){
		.base = 0, .limit = 0xffffffff, .selector = selector, .type = type,
		.present = 1, .dpl = 0, .db = (uint8_t)db, .s = 1, .l = (uint8_t)l, .g = 1,
	};
}

int boot_regs_fill(const struct boot_info *boot, struct kvm_regs *regs, struct kvm_sregs *sregs)
{
	struct kvm_segment data = flat_seg(BOOT_SEL_DATA, 0x3, 1, 0);

	memset(regs, 0, sizeof(*regs));
	regs->rflags = RFLAGS_RESERVED;
	regs->rip = boot->entry;
	regs->rsp = boot->stack;
	sregs->ds = sregs->es = sregs->fs = sregs->gs = sregs->ss = data;
	sregs->gdt.base = LAYOUT_GDT;
	sregs->gdt.limit = BOOT_GDT_ENTRIES * 8 - 1;
	sregs->idt.base = 0;
	sregs->idt.limit = 0;
	switch (boot->mode) {
	case BOOT_MODE_PVH32:
		/* PVH: protected mode, paging off, EBX = hvm_start_info. */
		regs->rbx = boot->boot_params;
		sregs->cs = flat_seg(BOOT_SEL_CODE32, 0xb, 1, 0);
		sregs->cr0 = CR0_PE | CR0_ET;
		sregs->cr3 = 0;
		sregs->cr4 = 0;
		sregs->efer = 0;
		return 0;
	case BOOT_MODE_LONG64:
		/* 64-bit boot protocol: long mode, CPL0, RSI = boot_params. */
		regs->rsi = boot->boot_params;
		sregs->cs = flat_seg(BOOT_SEL_CODE64, 0xb, 0, 1);
		sregs->cr0 = CR0_PE | CR0_ET | CR0_PG;
		sregs->cr3 = LAYOUT_PML4;
		sregs->cr4 = CR4_PAE;
		sregs->efer = EFER_LME | EFER_LMA;
		return 0;
	}
	return -EINVAL;
}
