/* GDT/TSS layout in guest RAM and the matching kvm_segment values for long mode. */
#ifndef FORKVM_X86_SEGMENTS_H
#define FORKVM_X86_SEGMENTS_H

#include <linux/kvm.h>
#include <stdint.h>

/* Selectors: the Linux 64-bit boot protocol wants code 0x10, data 0x18. */
#define SEL_KERNEL_CS 0x10
#define SEL_KERNEL_DS 0x18
#define SEL_TSS 0x20 /* 16-byte system descriptor: slots 4 and 5 */
#define SEL_USER_DS 0x33
#define SEL_USER_CS 0x3b
#define GDT_ENTRIES 8

/* Write the GDT at LAYOUT_GDT and a zeroed TSS at LAYOUT_TSS into `low` (host view of GPA 0). */
void gdt_build(uint8_t *low);
/* Encode a kvm_segment as an 8-byte descriptor (the low half for system descriptors). */
uint64_t gdt_encode(const struct kvm_segment *seg);

struct kvm_segment seg_code64(int dpl);
struct kvm_segment seg_data(int dpl);
struct kvm_segment seg_tss(void);

#endif
