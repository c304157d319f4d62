/* Guest RAM for the device-side harnesses (fuzz_virtq, fuzz_blk): two regions of REGION bytes
 * at GPA 0 and 0x10000 over one static buffer, with a host dirty bitmap (header only). */
#ifndef FORKVM_FUZZ_MEM_H
#define FORKVM_FUZZ_MEM_H
#include "mem/guest_mem.h"

#define FZ_MEM_REGION (8 * 1024)

static inline void fz_guest_mem(struct guest_mem *mem, uint8_t *ram, uint64_t *dirty)
{
	*mem = (struct guest_mem){ 0 };
	mem->backing = GUEST_MEM_ANON;
	mem->size = mem->map_size = 2 * FZ_MEM_REGION;
	mem->host = ram;
	mem->fd = -1;
	mem->page_size = 4096;
	mem->dirty_log = true;
	mem->host_dirty = dirty;
	mem->nregions = 2;
	mem->regions[0] = (struct guest_mem_region){ .gpa = 0, .size = FZ_MEM_REGION, .offset = 0 };
	mem->regions[1] = (struct guest_mem_region){ .gpa = 0x10000, .size = FZ_MEM_REGION,
						     .offset = FZ_MEM_REGION };
}

#endif
