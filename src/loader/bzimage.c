/* bzImage setup-header validation and placement of its protected-mode kernel. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "util/log.h"
#include "loader/kernel.h"
#include "x86/layout.h"

static uint64_t align_up(uint64_t v, uint64_t a)
{
	return (v + a - 1) & ~(a - 1);
}

static int bad(const char *path, const char *what)
{
	log_err("%s: not a usable bzImage: %s", path, what);
	return -EINVAL;
}

/* Where the protected-mode kernel goes: its preferred address, else the first aligned
 * place above 1 MiB (relocatable kernels only). */
static uint64_t bzimage_load_addr(const struct setup_header *h)
{
	uint64_t align = h->kernel_alignment ? h->kernel_alignment : LAYOUT_HIGH_MEM;

	if (h->pref_address >= LAYOUT_HIGH_MEM)
		return h->pref_address;
	return align_up(LAYOUT_HIGH_MEM, align);
}

int bzimage_parse(const char *path, const uint8_t *buf, size_t len, struct kernel_info *info)
{
	const struct setup_header *h = &info->hdr;
	char msg[128];
	unsigned sects;

	if (len < BP_HDR + sizeof(*h))
		return bad(path, "file too short for a setup header (truncated)");
	memcpy(&info->hdr, buf + BP_HDR, sizeof(*h));
	if (h->boot_flag != SETUP_BOOT_FLAG)
		return bad(path, "no 0xAA55 boot sector signature");
	if (h->header != SETUP_HDRS_MAGIC)
		return bad(path, "no \"HdrS\" setup header magic");
	if (h->version < SETUP_MIN_VERSION) {
		snprintf(msg, sizeof(msg), "boot protocol %u.%02u is older than 2.12",
			 h->version >> 8, h->version & 0xff);
		return bad(path, msg);
	}
	if (!(h->xloadflags & SETUP_XLF_KERNEL_64))
		return bad(path, "no 64-bit entry point (XLF_KERNEL_64 clear)");
	if (!(h->loadflags & SETUP_LOADED_HIGH))
		return bad(path, "kernel is not loaded high (zImage)");
	sects = h->setup_sects ? h->setup_sects : 4; /* 0 means 4 for old loaders' sake */
	info->setup_size = (uint64_t)(sects + 1) * 512;
	if (info->setup_size >= len)
		return bad(path, "setup code runs past the end of the file (truncated)");
	info->pm_size = len - info->setup_size;
	if ((uint64_t)h->syssize * 16 > info->pm_size) {
		snprintf(msg, sizeof(msg), "syssize says %llu bytes of kernel, file has %llu (truncated)",
			 (unsigned long long)h->syssize * 16, (unsigned long long)info->pm_size);
		return bad(path, msg);
	}
	if (h->kernel_alignment & (h->kernel_alignment - 1))
		return bad(path, "kernel_alignment is not a power of two");
	if (h->init_size < info->pm_size)
		return bad(path, "init_size is smaller than the kernel itself");
	if ((uint64_t)h->payload_offset + h->payload_length > info->pm_size || !h->payload_length)
		return bad(path, "payload lies outside the protected-mode kernel");
	if (h->cmdline_size == 0)
		return bad(path, "cmdline_size is 0");
	/* The header length is encoded in the jump at 0x200: 0x202 + its displacement byte. */
	info->hdr_len = 0x202 + buf[0x201] - BP_HDR;
	if (info->hdr_len > sizeof(info->hdr_raw))
		info->hdr_len = sizeof(info->hdr_raw);
	if (info->hdr_len > len - BP_HDR)
		return bad(path, "setup header runs past the end of the file");
	memcpy(info->hdr_raw, buf + BP_HDR, info->hdr_len);
	info->payload = payload_detect(buf + info->setup_size + h->payload_offset,
				       h->payload_length);
	info->load_addr = bzimage_load_addr(h);
	info->mem_size = h->init_size;
	if (!h->relocatable_kernel && h->pref_address < LAYOUT_HIGH_MEM)
		return bad(path, "non-relocatable kernel without a preferred address");
	if (info->load_addr + info->mem_size > LAYOUT_RAM_LOW_MAX)
		return bad(path, "kernel does not fit below the 3 GiB PCI hole");
	info->format = KERNEL_BZIMAGE;
	info->has_pvh = false;
	return 0;
}

/* A relocatable kernel moves down to the first aligned place when its preferred one
 * does not fit in low RAM. */
int bzimage_place(const struct kernel_info *info, uint64_t low_end, uint64_t *addr)
{
	uint64_t align = info->hdr.kernel_alignment ? info->hdr.kernel_alignment : LAYOUT_HIGH_MEM;
	uint64_t at = info->load_addr;

	if (at + info->mem_size > low_end && info->hdr.relocatable_kernel)
		at = align_up(LAYOUT_HIGH_MEM, align);
	if (at + info->mem_size > low_end) {
		log_err("%s: kernel needs RAM up to 0x%llx, guest low RAM ends at 0x%llx",
			info->path, (unsigned long long)(at + info->mem_size),
			(unsigned long long)low_end);
		return -ENOSPC;
	}
	*addr = at;
	return 0;
}

int bootparams_build(uint8_t *zp, const struct kernel_info *info, const struct e820_entry *e820,
		     int ne820, uint64_t cmdline_addr, uint64_t cmdline_len, uint64_t initrd_addr,
		     uint64_t initrd_size)
{
	struct setup_header h;

	if (ne820 > BP_E820_MAX || cmdline_addr > UINT32_MAX || initrd_addr + initrd_size > UINT32_MAX)
		return -EINVAL;
	memset(zp, 0, BP_SIZE);
	if (info->format == KERNEL_BZIMAGE) {
		memcpy(zp + BP_HDR, info->hdr_raw, info->hdr_len);
	} else {
		/* A vmlinux has no header: synthesize the fields startup_64 and setup_arch read. */
		memset(&h, 0, sizeof(h));
		h.boot_flag = SETUP_BOOT_FLAG;
		h.header = SETUP_HDRS_MAGIC;
		h.version = 0x020f;
		h.loadflags = SETUP_LOADED_HIGH;
		h.kernel_alignment = 0x200000;
		h.cmdline_size = LAYOUT_CMDLINE_MAX - 1;
		h.initrd_addr_max = 0x7fffffff;
		memcpy(zp + BP_HDR, &h, sizeof(h));
	}
	memcpy(&h, zp + BP_HDR, sizeof(h));
	if (cmdline_len > h.cmdline_size)
		return -E2BIG;
	h.type_of_loader = SETUP_LOADER_UNDEFINED;
	h.loadflags |= SETUP_CAN_USE_HEAP;
	h.heap_end_ptr = 0xfe00; /* conventional; unused by the 64-bit entry */
	h.cmd_line_ptr = (uint32_t)cmdline_addr;
	h.ramdisk_image = (uint32_t)initrd_addr;
	h.ramdisk_size = (uint32_t)initrd_size;
	memcpy(zp + BP_HDR, &h, sizeof(h));
	zp[BP_E820_ENTRIES] = (uint8_t)ne820;
	memcpy(zp + BP_E820_TABLE, e820, (size_t)ne820 * sizeof(*e820));
	return 0;
}
