/* Initial vCPU state for long-mode entry: sregs, regs, FPU and boot MSRs. */
#ifndef FORKVM_X86_BOOT_CPU_H
#define FORKVM_X86_BOOT_CPU_H

#include <linux/kvm.h>
#include <stdint.h>

#define X86_CR0_PE (1ULL << 0)
#define X86_CR0_MP (1ULL << 1)
#define X86_CR0_ET (1ULL << 4)
#define X86_CR0_NE (1ULL << 5)
#define X86_CR0_WP (1ULL << 16)
#define X86_CR0_PG (1ULL << 31)
#define X86_CR4_PAE (1ULL << 5)
#define X86_CR4_OSFXSR (1ULL << 9)
#define X86_CR4_OSXMMEXCPT (1ULL << 10)
#define X86_EFER_SCE (1ULL << 0)
#define X86_EFER_LME (1ULL << 8)
#define X86_EFER_LMA (1ULL << 10)
#define X86_EFER_NXE (1ULL << 11)
#define X86_RFLAGS_RESERVED (1ULL << 1)
#define X86_RFLAGS_IOPL3 (3ULL << 12)

/* Long mode, paging with cr3, flat segments at privilege `cpl` (0 or 3), GDT/TSS from layout. */
void boot_sregs_long_mode(struct kvm_sregs *sregs, uint64_t cr3, int cpl);
/* FPU in its reset state with SSE usable. */
void boot_fpu(struct kvm_fpu *fpu);

#define BOOT_MSR_MAX 16
/* Fill `msrs` (capacity BOOT_MSR_MAX) with the MSRs a fresh vCPU starts with. */
void boot_msrs(struct kvm_msrs *msrs);

#define MSR_IA32_TSC 0x10
#define MSR_IA32_APICBASE 0x1b
#define MSR_IA32_SYSENTER_CS 0x174
#define MSR_IA32_SYSENTER_ESP 0x175
#define MSR_IA32_SYSENTER_EIP 0x176
#define MSR_IA32_MISC_ENABLE 0x1a0
#define MSR_MTRR_DEF_TYPE 0x2ff
#define MSR_IA32_TSC_DEADLINE 0x6e0
#define MSR_STAR 0xc0000081
#define MSR_LSTAR 0xc0000082
#define MSR_CSTAR 0xc0000083
#define MSR_SYSCALL_MASK 0xc0000084
#define MSR_KERNEL_GS_BASE 0xc0000102

#endif
