/* Guest kernel loading: probe a vmlinux/bzImage without a VM, then place it in guest RAM. */
#ifndef FORKVM_LOADER_KERNEL_H
#define FORKVM_LOADER_KERNEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "loader/bootparam.h"
#include "loader/payload.h"

struct guest_mem;
struct guest_mem_region;

enum kernel_format { KERNEL_VMLINUX = 1, KERNEL_BZIMAGE };

#define KERNEL_MAX_SEGMENTS 16
#define KERNEL_MIN_PADDR 0x100000ULL /* nothing may land on the boot structures below 1 MiB */

struct kernel_segment {
	uint64_t paddr;
	uint64_t offset; /* in the file */
	uint64_t filesz;
	uint64_t memsz;
};

/* Everything learnt from the file; no guest memory involved. */
struct kernel_info {
	enum kernel_format format;
	char path[256];
	uint64_t file_size;
	/* vmlinux */
	uint64_t elf_entry; /* physical */
	bool has_pvh;
	uint32_t pvh_entry;
	int nsegments;
	struct kernel_segment segments[KERNEL_MAX_SEGMENTS];
	/* bzImage */
	struct setup_header hdr;
	uint8_t hdr_raw[BP_HDR_END - BP_HDR]; /* bytes copied into the zero page */
	size_t hdr_len;
	uint64_t setup_size;   /* real-mode part: (setup_sects + 1) * 512 */
	uint64_t pm_size;      /* protected-mode kernel bytes after it */
	enum payload_format payload;
	/* both: physical span the kernel needs while it boots */
	uint64_t load_addr;
	uint64_t mem_size;
};

enum boot_protocol { BOOT_PROTO_AUTO, BOOT_PROTO_PVH, BOOT_PROTO_LINUX64 };

struct kernel_load_opts {
	const char *cmdline;     /* NULL means "" */
	const char *initrd_path; /* NULL: no initrd */
	enum boot_protocol protocol;
};

enum boot_mode {
	BOOT_MODE_PVH32 = 1, /* 32-bit protected mode, paging off, EBX = start info */
	BOOT_MODE_LONG64,    /* long mode, identity paging, RSI = zero page */
};

/* How to start the boot vCPU and what was placed where. */
struct boot_info {
	enum boot_mode mode;
	uint64_t entry;
	uint64_t boot_params; /* hvm_start_info (PVH) or zero page (long mode) */
	uint64_t stack;
	uint64_t kernel_start, kernel_end;
	uint64_t cmdline_addr, cmdline_len;
	uint64_t initrd_addr, initrd_size;
	int e820_entries;
};

const char *kernel_format_name(enum kernel_format format);
const char *boot_mode_name(enum boot_mode mode);

/* Validate path as a vmlinux or bzImage and fill info; errors name the file and the problem. */
int kernel_probe(const char *path, struct kernel_info *info);
/* Parse an in-memory image (the probe's pure core; path is only used in messages). */
int kernel_parse(const char *path, const uint8_t *buf, size_t len, struct kernel_info *info);
int bzimage_parse(const char *path, const uint8_t *buf, size_t len, struct kernel_info *info);
int vmlinux_parse(const char *path, const uint8_t *buf, size_t len, struct kernel_info *info);

/* Check options against the image and a RAM size before any VM exists. */
int kernel_check(const struct kernel_info *info, const struct kernel_load_opts *opts,
		 uint64_t ram_size);
/* Copy the kernel, command line and initrd into mem and build the boot structures. */
int kernel_load(struct guest_mem *mem, const struct kernel_info *info,
		const struct kernel_load_opts *opts, struct boot_info *boot);

/* Pure helpers, exposed for tests. */
/* Load address of a bzImage's protected-mode kernel given where low RAM ends. */
int bzimage_place(const struct kernel_info *info, uint64_t low_end, uint64_t *addr);
int e820_build(const struct guest_mem_region *regions, int nregions, struct e820_entry *out,
	       int max, int *count);
/* Highest page-aligned start for size bytes in [lo, hi); -ENOSPC if it does not fit. */
int initrd_place(uint64_t size, uint64_t lo, uint64_t hi, uint64_t *addr);
/* Fill a zero page (BP_SIZE bytes) for the 64-bit boot protocol. */
int bootparams_build(uint8_t *zero_page, const struct kernel_info *info,
		     const struct e820_entry *e820, int ne820, uint64_t cmdline_addr,
		     uint64_t cmdline_len, uint64_t initrd_addr, uint64_t initrd_size);
/* Fill the PVH start info page (4 KiB at base) in buf. */
int pvh_build(uint8_t *page, uint64_t base, const struct e820_entry *e820, int ne820,
	      uint64_t cmdline_addr, uint64_t initrd_addr, uint64_t initrd_size);

#endif
