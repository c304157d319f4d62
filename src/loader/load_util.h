/* Loader internals shared by kernel.c and bootmem.c. */
#ifndef FORKVM_LOADER_LOAD_UTIL_H
#define FORKVM_LOADER_LOAD_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "loader/kernel.h"

/* What kernel_load decided before the boot structures are written. */
struct boot_layout {
	enum boot_mode mode;
	uint64_t kernel_start;
	uint64_t kernel_end;
};

/* pread exactly len bytes at off or fail naming path ("truncated" on a short file). */
int pread_full(int fd, void *dst, size_t len, uint64_t off, const char *path);
/* End of the RAM region that starts at guest-physical 0. */
uint64_t guest_mem_low_end(const struct guest_mem *mem);
/* Command line, initrd, e820 and the zero page or PVH start info; fills boot. */
int boot_structs_place(struct guest_mem *mem, const struct kernel_info *info,
		       const struct kernel_load_opts *opts, const struct boot_layout *bl,
		       struct boot_info *boot);

#endif
