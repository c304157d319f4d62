/* Binary layouts the guest kernel reads: Linux setup header, zero page, e820, PVH start info. */
#ifndef FORKVM_LOADER_BOOTPARAM_H
#define FORKVM_LOADER_BOOTPARAM_H

#include <stdint.h>

/* Linux x86 boot protocol (Documentation/arch/x86/boot.rst), offsets in the image/zero page. */
#define BP_SIZE 0x1000
#define BP_EXT_RAMDISK_IMAGE 0x0c0
#define BP_EXT_RAMDISK_SIZE 0x0c4
#define BP_EXT_CMD_LINE_PTR 0x0c8
#define BP_E820_ENTRIES 0x1e8
#define BP_HDR 0x1f1		/* struct setup_header starts here */
#define BP_HDR_END 0x290	/* first byte after the header area */
#define BP_E820_TABLE 0x2d0
#define BP_E820_MAX 128

#define SETUP_BOOT_FLAG 0xaa55
#define SETUP_HDRS_MAGIC 0x53726448u /* "HdrS" */
#define SETUP_MIN_VERSION 0x020c	 /* 2.12: xloadflags, 64-bit entry */
#define SETUP_LOADED_HIGH 0x01
#define SETUP_CAN_USE_HEAP 0x80
#define SETUP_XLF_KERNEL_64 0x0001
#define SETUP_LOADER_UNDEFINED 0xff
#define SETUP_ENTRY64_OFFSET 0x200 /* startup_64 relative to the protected-mode kernel */

struct setup_header {
	uint8_t setup_sects;
	uint16_t root_flags;
	uint32_t syssize;
	uint16_t ram_size;
	uint16_t vid_mode;
	uint16_t root_dev;
	uint16_t boot_flag;
	uint16_t jump;
	uint32_t header;
	uint16_t version;
	uint32_t realmode_swtch;
	uint16_t start_sys_seg;
	uint16_t kernel_version;
	uint8_t type_of_loader;
	uint8_t loadflags;
	uint16_t setup_move_size;
	uint32_t code32_start;
	uint32_t ramdisk_image;
	uint32_t ramdisk_size;
	uint32_t bootsect_kludge;
	uint16_t heap_end_ptr;
	uint8_t ext_loader_ver;
	uint8_t ext_loader_type;
	uint32_t cmd_line_ptr;
	uint32_t initrd_addr_max;
	uint32_t kernel_alignment;
	uint8_t relocatable_kernel;
	uint8_t min_alignment;
	uint16_t xloadflags;
	uint32_t cmdline_size;
	uint32_t hardware_subarch;
	uint64_t hardware_subarch_data;
	uint32_t payload_offset;
	uint32_t payload_length;
	uint64_t setup_data;
	uint64_t pref_address;
	uint32_t init_size;
	uint32_t handover_offset;
	uint32_t kernel_info_offset;
} __attribute__((packed));

_Static_assert(BP_HDR + __builtin_offsetof(struct setup_header, header) == 0x202, "HdrS");
_Static_assert(BP_HDR + __builtin_offsetof(struct setup_header, xloadflags) == 0x236, "xlf");
_Static_assert(BP_HDR + __builtin_offsetof(struct setup_header, pref_address) == 0x258, "pref");
_Static_assert(BP_HDR + sizeof(struct setup_header) == 0x26c, "setup_header size");

#define E820_RAM 1
#define E820_RESERVED 2

struct e820_entry {
	uint64_t addr;
	uint64_t size;
	uint32_t type;
} __attribute__((packed));

_Static_assert(sizeof(struct e820_entry) == 20, "e820 entry");

/* Xen PVH boot ABI (xen/include/public/arch-x86/hvm/start_info.h), version 1. */
#define PVH_START_MAGIC 0x336ec578u
#define XEN_ELFNOTE_PHYS32_ENTRY 18

struct hvm_start_info {
	uint32_t magic;
	uint32_t version;
	uint32_t flags;
	uint32_t nr_modules;
	uint64_t modlist_paddr;
	uint64_t cmdline_paddr;
	uint64_t rsdp_paddr;
	uint64_t memmap_paddr;
	uint32_t memmap_entries;
	uint32_t reserved;
};

struct hvm_modlist_entry {
	uint64_t paddr;
	uint64_t size;
	uint64_t cmdline_paddr;
	uint64_t reserved;
};

struct hvm_memmap_table_entry {
	uint64_t addr;
	uint64_t size;
	uint32_t type;
	uint32_t reserved;
};

_Static_assert(sizeof(struct hvm_start_info) == 56, "start info");
_Static_assert(sizeof(struct hvm_memmap_table_entry) == 24, "memmap entry");

/* Where the PVH pieces sit inside the LAYOUT_PVH_START_INFO page. */
#define PVH_MODLIST_OFFSET 0x40
#define PVH_MEMMAP_OFFSET 0x80
#define PVH_MEMMAP_MAX ((0x1000 - PVH_MEMMAP_OFFSET) / sizeof(struct hvm_memmap_table_entry))

#endif
