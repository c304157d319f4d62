/* Boot structures in guest RAM: e820 map, initrd placement, command line, PVH start info. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/log.h"
#include "loader/load_util.h"
#include "mem/guest_mem.h"
#include "x86/layout.h"

#define ISA_HOLE_START 0xa0000ULL /* VGA window and BIOS area up to 1 MiB */

int pread_full(int fd, void *dst, size_t len, uint64_t off, const char *path)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = pread(fd, (uint8_t *)dst + done, len - done, (off_t)(off + done));

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return log_errno(-errno, "read %s", path);
		if (n == 0) {
			log_err("read %s: file ends at %llu, expected %zu bytes at %llu (truncated)",
				path, (unsigned long long)(off + done), len, (unsigned long long)off);
			return -EIO;
		}
		done += (size_t)n;
	}
	return 0;
}

uint64_t guest_mem_low_end(const struct guest_mem *mem)
{
	for (int i = 0; i < mem->nregions; i++)
		if (mem->regions[i].gpa == 0)
			return mem->regions[i].size;
	return 0;
}

static int e820_add(struct e820_entry *out, int max, int *count, uint64_t start, uint64_t end,
		    uint32_t type)
{
	if (end <= start)
		return 0;
	if (*count == max)
		return -ENOSPC;
	out[*count] = (struct e820_entry){ .addr = start, .size = end - start, .type = type };
	(*count)++;
	return 0;
}

int e820_build(const struct guest_mem_region *regions, int nregions, struct e820_entry *out,
	       int max, int *count)
{
	int ret = 0;

	*count = 0;
	for (int i = 0; i < nregions && !ret; i++) {
		uint64_t start = regions[i].gpa, end = start + regions[i].size;

		/* Low memory is usable up to the EBDA; the EBDA itself is reserved; the
		 * VGA/BIOS window up to 1 MiB is left out, as on real hardware. */
		ret = e820_add(out, max, count, start, end < LAYOUT_EBDA ? end : LAYOUT_EBDA, E820_RAM);
		if (!ret && start < ISA_HOLE_START && end > LAYOUT_EBDA)
			ret = e820_add(out, max, count, start > LAYOUT_EBDA ? start : LAYOUT_EBDA,
				       end < ISA_HOLE_START ? end : ISA_HOLE_START, E820_RESERVED);
		if (!ret)
			ret = e820_add(out, max, count, start > LAYOUT_HIGH_MEM ? start : LAYOUT_HIGH_MEM,
				       end, E820_RAM);
	}
	return ret;
}

int initrd_place(uint64_t size, uint64_t lo, uint64_t hi, uint64_t *addr)
{
	uint64_t at;

	lo = (lo + LAYOUT_PAGE_SIZE - 1) & ~(LAYOUT_PAGE_SIZE - 1);
	if (size == 0) {
		*addr = 0;
		return 0;
	}
	if (hi < size || hi <= lo)
		return -ENOSPC;
	at = (hi - size) & ~(LAYOUT_PAGE_SIZE - 1);
	if (at < lo)
		return -ENOSPC;
	*addr = at;
	return 0;
}

int pvh_build(uint8_t *page, uint64_t base, const struct e820_entry *e820, int ne820,
	      uint64_t cmdline_addr, uint64_t initrd_addr, uint64_t initrd_size)
{
	struct hvm_start_info si = { .magic = PVH_START_MAGIC, .version = 1 };
	struct hvm_modlist_entry mod = { .paddr = initrd_addr, .size = initrd_size };

	if (ne820 < 0 || (size_t)ne820 > PVH_MEMMAP_MAX)
		return -EINVAL;
	memset(page, 0, LAYOUT_PAGE_SIZE);
	si.cmdline_paddr = cmdline_addr;
	si.memmap_paddr = base + PVH_MEMMAP_OFFSET;
	si.memmap_entries = (uint32_t)ne820;
	if (initrd_size) {
		si.nr_modules = 1;
		si.modlist_paddr = base + PVH_MODLIST_OFFSET;
		memcpy(page + PVH_MODLIST_OFFSET, &mod, sizeof(mod));
	}
	memcpy(page, &si, sizeof(si));
	for (int i = 0; i < ne820; i++) {
		struct hvm_memmap_table_entry e = { e820[i].addr, e820[i].size, e820[i].type, 0 };

		memcpy(page + PVH_MEMMAP_OFFSET + (size_t)i * sizeof(e), &e, sizeof(e));
	}
	return 0;
}

/* Read the initrd to the highest page-aligned place the kernel accepts. */
static int place_initrd(struct guest_mem *mem, const char *path, uint64_t lo, uint64_t hi,
			struct boot_info *boot)
{
	struct stat st;
	uint8_t *dst;
	int fd, ret;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return log_errno(-errno, "open initrd %s", path);
	if (fstat(fd, &st) < 0) {
		ret = log_errno(-errno, "stat initrd %s", path);
		goto out;
	}
	ret = initrd_place((uint64_t)st.st_size, lo, hi, &boot->initrd_addr);
	if (ret) {
		log_err("initrd %s: %lld bytes do not fit between 0x%llx and 0x%llx", path,
			(long long)st.st_size, (unsigned long long)lo, (unsigned long long)hi);
		goto out;
	}
	boot->initrd_size = (uint64_t)st.st_size;
	dst = guest_mem_ptr(mem, boot->initrd_addr, boot->initrd_size);
	ret = dst ? pread_full(fd, dst, boot->initrd_size, 0, path) : -ENOSPC;
out:
	close(fd);
	return ret;
}

int boot_structs_place(struct guest_mem *mem, const struct kernel_info *info,
		       const struct kernel_load_opts *opts, const struct boot_layout *bl,
		       struct boot_info *boot)
{
	const char *cmdline = opts->cmdline ? opts->cmdline : "";
	uint64_t hi = guest_mem_low_end(mem), max_addr;
	struct e820_entry e820[BP_E820_MAX];
	uint8_t *page, *cl;
	int ne820, ret;

	boot->mode = bl->mode;
	boot->kernel_start = bl->kernel_start;
	boot->kernel_end = bl->kernel_end;
	boot->cmdline_addr = LAYOUT_CMDLINE;
	boot->cmdline_len = strlen(cmdline);
	cl = guest_mem_ptr(mem, LAYOUT_CMDLINE, boot->cmdline_len + 1);
	if (!cl) {
		log_err("guest RAM too small for the command line");
		return -ENOSPC;
	}
	memcpy(cl, cmdline, boot->cmdline_len + 1);
	if (bl->mode == BOOT_MODE_LONG64) {
		max_addr = info->format == KERNEL_BZIMAGE ? info->hdr.initrd_addr_max : 0x7fffffff;
		if (max_addr == 0)
			max_addr = 0x37ffffff; /* protocol < 2.03 default */
		hi = hi < max_addr + 1 ? hi : max_addr + 1;
	}
	if (opts->initrd_path) {
		ret = place_initrd(mem, opts->initrd_path, bl->kernel_end, hi, boot);
		if (ret)
			return ret;
	}
	ret = e820_build(mem->regions, mem->nregions, e820, BP_E820_MAX, &ne820);
	if (ret)
		return log_errno(ret, "e820 map of guest RAM");
	boot->e820_entries = ne820;
	boot->stack = LAYOUT_BOOT_STACK;
	if (bl->mode == BOOT_MODE_PVH32) {
		page = guest_mem_ptr(mem, LAYOUT_PVH_START_INFO, LAYOUT_PAGE_SIZE);
		boot->entry = info->pvh_entry;
		boot->boot_params = LAYOUT_PVH_START_INFO;
		ret = page ? pvh_build(page, LAYOUT_PVH_START_INFO, e820, ne820, boot->cmdline_addr,
				       boot->initrd_addr, boot->initrd_size) : -ENOSPC;
	} else {
		page = guest_mem_ptr(mem, LAYOUT_ZERO_PAGE, BP_SIZE);
		boot->entry = info->format == KERNEL_BZIMAGE ? bl->kernel_start + SETUP_ENTRY64_OFFSET
							     : info->elf_entry;
		boot->boot_params = LAYOUT_ZERO_PAGE;
		ret = page ? bootparams_build(page, info, e820, ne820, boot->cmdline_addr,
					      boot->cmdline_len, boot->initrd_addr, boot->initrd_size)
			   : -ENOSPC;
	}
	if (ret)
		ret = log_errno(ret, "%s: build %s boot structures", info->path, boot_mode_name(bl->mode));
	return ret;
}
