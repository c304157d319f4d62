/* Identity page tables for long-mode entry, built by the VMM in guest RAM. */
#ifndef FORKVM_X86_PAGETABLE_H
#define FORKVM_X86_PAGETABLE_H

#include <stdbool.h>
#include <stdint.h>

#define PTE_PRESENT (1ULL << 0)
#define PTE_WRITE (1ULL << 1)
#define PTE_USER (1ULL << 2)
#define PTE_LARGE (1ULL << 7)
#define PTE_ADDR_MASK 0x000ffffffffff000ULL

/*
 * Map guest-physical [0, map_end) 1:1 with 2 MiB pages. `low` is the host view of
 * guest-physical [0, 1 MiB), where the tables live (LAYOUT_PML4, _PDPT, _PD_BASE).
 * `user` sets U/S on every level so CPL3 code can use the whole map.
 * Returns the CR3 value, or 0 if map_end needs more directories than the layout holds.
 */
uint64_t pagetable_build_identity(uint8_t *low, uint64_t map_end, bool user);

/* Walk the tables like the MMU does; returns the physical address or -1 if unmapped. */
int64_t pagetable_translate(const uint8_t *low, uint64_t cr3, uint64_t vaddr, bool *user);

#endif
