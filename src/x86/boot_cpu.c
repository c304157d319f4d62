/* Register state the VMM gives a vCPU so it starts directly in 64-bit mode. */
#include "x86/boot_cpu.h"

#include <string.h>

#include "x86/layout.h"
#include "x86/segments.h"

void boot_sregs_long_mode(struct kvm_sregs *s, uint64_t cr3, int cpl)
{
	struct kvm_segment cs = seg_code64(cpl), ds = seg_data(cpl);

	s->cs = cs;
	s->ds = s->es = s->fs = s->gs = s->ss = ds;
	s->tr = seg_tss();
	s->ldt = (struct kvm_segment){ .unusable = 1, .type = 2, .present = 0 };
	s->gdt.base = LAYOUT_GDT;
	s->gdt.limit = GDT_ENTRIES * 8 - 1;
	/* No IDT: the probe needs no interrupts, and an exception shows up as a shutdown exit. */
	s->idt.base = 0;
	s->idt.limit = 0;
	s->cr0 = X86_CR0_PE | X86_CR0_MP | X86_CR0_ET | X86_CR0_NE | X86_CR0_WP | X86_CR0_PG;
	s->cr3 = cr3;
	s->cr4 = X86_CR4_PAE | X86_CR4_OSFXSR | X86_CR4_OSXMMEXCPT;
	s->efer = X86_EFER_LME | X86_EFER_LMA | X86_EFER_NXE | X86_EFER_SCE;
}

void boot_fpu(struct kvm_fpu *fpu)
{
	memset(fpu, 0, sizeof(*fpu));
	fpu->fcw = 0x37f;
	fpu->mxcsr = 0x1f80;
}

static void msr_add(struct kvm_msrs *msrs, uint32_t index, uint64_t data)
{
	msrs->entries[msrs->nmsrs].index = index;
	msrs->entries[msrs->nmsrs].data = data;
	msrs->nmsrs++;
}

void boot_msrs(struct kvm_msrs *msrs)
{
	msrs->nmsrs = 0;
	msr_add(msrs, MSR_IA32_SYSENTER_CS, 0);
	msr_add(msrs, MSR_IA32_SYSENTER_ESP, 0);
	msr_add(msrs, MSR_IA32_SYSENTER_EIP, 0);
	msr_add(msrs, MSR_STAR, 0);
	msr_add(msrs, MSR_CSTAR, 0);
	msr_add(msrs, MSR_KERNEL_GS_BASE, 0);
	msr_add(msrs, MSR_SYSCALL_MASK, 0);
	msr_add(msrs, MSR_LSTAR, 0);
	msr_add(msrs, MSR_IA32_TSC, 0);
	msr_add(msrs, MSR_IA32_MISC_ENABLE, 1); /* fast string operations */
	msr_add(msrs, MSR_MTRR_DEF_TYPE, 0x806); /* MTRRs on, default write-back */
}
