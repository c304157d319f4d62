/* Identity-mapped 4-level page tables with 2 MiB leaves. */
#include "x86/pagetable.h"

#include <string.h>

#include "x86/layout.h"

#define GIB (1ULL << 30)
#define MIB2 (2ULL << 20)

static uint64_t *table_at(uint8_t *low, uint64_t gpa)
{
	return (uint64_t *)(low + gpa);
}

uint64_t pagetable_build_identity(uint8_t *low, uint64_t map_end, bool user)
{
	uint64_t flags = PTE_PRESENT | PTE_WRITE | (user ? PTE_USER : 0);
	uint64_t npd = (map_end + GIB - 1) / GIB;
	uint64_t *pml4 = table_at(low, LAYOUT_PML4);
	uint64_t *pdpt = table_at(low, LAYOUT_PDPT);

	if (npd == 0 || npd > LAYOUT_PD_MAX)
		return 0;
	memset(pml4, 0, LAYOUT_PAGE_SIZE);
	memset(pdpt, 0, LAYOUT_PAGE_SIZE);
	pml4[0] = LAYOUT_PDPT | flags;
	for (uint64_t g = 0; g < npd; g++) {
		uint64_t pd_gpa = LAYOUT_PD_BASE + g * LAYOUT_PAGE_SIZE;
		uint64_t *pd = table_at(low, pd_gpa);
		pdpt[g] = pd_gpa | flags;
		for (uint64_t i = 0; i < 512; i++)
			pd[i] = (g * GIB + i * MIB2) | flags | PTE_LARGE;
	}
	return LAYOUT_PML4;
}

int64_t pagetable_translate(const uint8_t *low, uint64_t cr3, uint64_t vaddr, bool *user)
{
	const uint64_t *pml4 = (const uint64_t *)(low + (cr3 & PTE_ADDR_MASK));
	uint64_t e4 = pml4[(vaddr >> 39) & 511];
	uint64_t e3, e2;
	bool u;

	if (!(e4 & PTE_PRESENT))
		return -1;
	e3 = ((const uint64_t *)(low + (e4 & PTE_ADDR_MASK)))[(vaddr >> 30) & 511];
	if (!(e3 & PTE_PRESENT))
		return -1;
	e2 = ((const uint64_t *)(low + (e3 & PTE_ADDR_MASK)))[(vaddr >> 21) & 511];
	if (!(e2 & PTE_PRESENT) || !(e2 & PTE_LARGE))
		return -1;
	u = (e4 & PTE_USER) && (e3 & PTE_USER) && (e2 & PTE_USER);
	if (user)
		*user = u;
	return (int64_t)((e2 & PTE_ADDR_MASK & ~(MIB2 - 1)) | (vaddr & (MIB2 - 1)));
}
