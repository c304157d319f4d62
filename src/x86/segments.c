/* Flat long-mode segments and the GDT that backs them. */
#include "x86/segments.h"

#include <string.h>

#include "x86/layout.h"

#define TSS_BASE_SIZE 0x68
/* TSS + a full I/O permission bitmap (all ports allowed) + the terminating 0xff byte. */
#define TSS_IOMAP_BYTES (65536 / 8)
#define TSS_LIMIT (TSS_BASE_SIZE + TSS_IOMAP_BYTES)

struct kvm_segment seg_code64(int dpl)
{
	return (struct kvm_segment){
		.base = 0, .limit = 0xffffffff, .present = 1, .dpl = (uint8_t)dpl, .s = 1,
		.type = 0xb, /* execute/read, accessed */
		.l = 1, .g = 1,
		.selector = (uint16_t)(dpl ? SEL_USER_CS : SEL_KERNEL_CS),
	};
}

struct kvm_segment seg_data(int dpl)
{
	return (struct kvm_segment){
		.base = 0, .limit = 0xffffffff, .present = 1, .dpl = (uint8_t)dpl, .s = 1,
		.type = 0x3, /* read/write, accessed */
		.db = 1, .g = 1,
		.selector = (uint16_t)(dpl ? SEL_USER_DS : SEL_KERNEL_DS),
	};
}

struct kvm_segment seg_tss(void)
{
	return (struct kvm_segment){
		.base = LAYOUT_TSS, .limit = TSS_LIMIT, .present = 1, .type = 0xb, /* busy 64-bit TSS */
		.selector = SEL_TSS,
	};
}

uint64_t gdt_encode(const struct kvm_segment *s)
{
	uint64_t limit = s->limit;

	if (s->g)
		limit >>= 12;
	return (limit & 0xffffULL) | ((s->base & 0xffffffULL) << 16) |
	       ((uint64_t)(s->type & 0xf) << 40) | ((uint64_t)(s->s & 1) << 44) |
	       ((uint64_t)(s->dpl & 3) << 45) | ((uint64_t)(s->present & 1) << 47) |
	       (((limit >> 16) & 0xfULL) << 48) | ((uint64_t)(s->avl & 1) << 52) |
	       ((uint64_t)(s->l & 1) << 53) | ((uint64_t)(s->db & 1) << 54) |
	       ((uint64_t)(s->g & 1) << 55) | (((s->base >> 24) & 0xffULL) << 56);
}

void gdt_build(uint8_t *low)
{
	uint64_t *gdt = (uint64_t *)(low + LAYOUT_GDT);
	struct kvm_segment kcs = seg_code64(0), kds = seg_data(0);
	struct kvm_segment ucs = seg_code64(3), uds = seg_data(3), tss = seg_tss();

	memset(gdt, 0, GDT_ENTRIES * sizeof(*gdt));
	gdt[SEL_KERNEL_CS >> 3] = gdt_encode(&kcs);
	gdt[SEL_KERNEL_DS >> 3] = gdt_encode(&kds);
	gdt[SEL_TSS >> 3] = gdt_encode(&tss);
	gdt[(SEL_TSS >> 3) + 1] = tss.base >> 32; /* upper half of the 16-byte descriptor */
	gdt[SEL_USER_DS >> 3] = gdt_encode(&uds);
	gdt[SEL_USER_CS >> 3] = gdt_encode(&ucs);
	memset(low + LAYOUT_TSS, 0, TSS_LIMIT + 1);
	/*
	 * IOPL=3 should be enough for CPL3 port access, but some hypervisors (PVM) run guest
	 * user mode with the hardware IOPL cleared and consult the bitmap: allow every port.
	 */
	*(uint16_t *)(low + LAYOUT_TSS + 0x66) = TSS_BASE_SIZE;
	low[LAYOUT_TSS + TSS_LIMIT] = 0xff;
}
