/* Kernel probing (file only) and loading (into guest RAM) for vmlinux and bzImage. */
#include "loader/kernel.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/log.h"
#include "loader/load_util.h"
#include "mem/guest_mem.h"
#include "x86/layout.h"

const char *kernel_format_name(enum kernel_format format)
{
	return format == KERNEL_VMLINUX ? "vmlinux" : format == KERNEL_BZIMAGE ? "bzImage" : "unknown";
}

const char *boot_mode_name(enum boot_mode mode)
{
	return mode == BOOT_MODE_PVH32 ? "pvh" : mode == BOOT_MODE_LONG64 ? "linux64" : "unknown";
}

int kernel_parse(const char *path, const uint8_t *buf, size_t len, struct kernel_info *info)
{
	memset(info, 0, sizeof(*info));
	snprintf(info->path, sizeof(info->path), "%s", path);
	info->file_size = len;
	if (len >= 4 && !memcmp(buf, "\177ELF", 4))
		return vmlinux_parse(path, buf, len, info);
	if (len >= 0x206 && (!memcmp(buf + 0x202, "HdrS", 4) || (buf[0x1fe] == 0x55 && buf[0x1ff] == 0xaa)))
		return bzimage_parse(path, buf, len, info);
	if (len < 0x206 && len >= 0x200 && buf[0x1fe] == 0x55 && buf[0x1ff] == 0xaa)
		return bzimage_parse(path, buf, len, info); /* says "truncated" */
	log_err("%s: neither an ELF vmlinux nor a bzImage (%zu bytes, unknown format)", path, len);
	return -EINVAL;
}

int kernel_probe(const char *path, struct kernel_info *info)
{
	struct stat st;
	void *map = MAP_FAILED;
	int fd, ret;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return log_errno(-errno, "open kernel %s", path);
	if (fstat(fd, &st) < 0) {
		ret = log_errno(-errno, "stat kernel %s", path);
		goto out;
	}
	if (!S_ISREG(st.st_mode) || st.st_size == 0) {
		log_err("%s: kernel image is empty or not a regular file", path);
		ret = -EINVAL;
		goto out;
	}
	map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	if (map == MAP_FAILED) {
		ret = log_errno(-errno, "mmap kernel %s", path);
		goto out;
	}
	ret = kernel_parse(path, map, (size_t)st.st_size, info);
out:
	if (map != MAP_FAILED)
		munmap(map, (size_t)st.st_size);
	close(fd);
	return ret;
}

static enum boot_mode pick_mode(const struct kernel_info *info, enum boot_protocol proto)
{
	if (proto == BOOT_PROTO_PVH)
		return BOOT_MODE_PVH32;
	if (proto == BOOT_PROTO_LINUX64)
		return BOOT_MODE_LONG64;
	return info->has_pvh ? BOOT_MODE_PVH32 : BOOT_MODE_LONG64;
}

static uint64_t cmdline_max(const struct kernel_info *info)
{
	uint64_t max = LAYOUT_CMDLINE_MAX - 1;

	if (info->format == KERNEL_BZIMAGE && info->hdr.cmdline_size < max)
		max = info->hdr.cmdline_size;
	return max;
}

int kernel_check(const struct kernel_info *info, const struct kernel_load_opts *opts,
		 uint64_t ram_size)
{
	const char *cmdline = opts->cmdline ? opts->cmdline : "";
	uint64_t low_end = ram_size < LAYOUT_RAM_LOW_MAX ? ram_size : LAYOUT_RAM_LOW_MAX;
	uint64_t at = info->load_addr;
	struct stat st;

	if (pick_mode(info, opts->protocol) == BOOT_MODE_PVH32 && !info->has_pvh) {
		log_err("%s: %s has no PVH entry note; boot it with the linux64 protocol",
			info->path, kernel_format_name(info->format));
		return -EINVAL;
	}
	if (strlen(cmdline) > cmdline_max(info)) {
		log_err("%s: command line is %zu bytes, the kernel accepts at most %llu", info->path,
			strlen(cmdline), (unsigned long long)cmdline_max(info));
		return -E2BIG;
	}
	if (info->format == KERNEL_BZIMAGE && bzimage_place(info, low_end, &at))
		return -ENOSPC;
	if (at + info->mem_size > low_end) {
		log_err("%s: kernel needs RAM up to 0x%llx, guest low RAM ends at 0x%llx", info->path,
			(unsigned long long)(at + info->mem_size), (unsigned long long)low_end);
		return -ENOSPC;
	}
	if (opts->initrd_path) {
		if (stat(opts->initrd_path, &st) < 0)
			return log_errno(-errno, "initrd %s", opts->initrd_path);
		if (!S_ISREG(st.st_mode)) {
			log_err("initrd %s: not a regular file", opts->initrd_path);
			return -EINVAL;
		}
		if (access(opts->initrd_path, R_OK) < 0)
			return log_errno(-errno, "initrd %s", opts->initrd_path);
	}
	return 0;
}

/* Copy every PT_LOAD segment to its physical address and zero its bss tail. */
static int load_vmlinux(struct guest_mem *mem, const struct kernel_info *info, int fd)
{
	for (int i = 0; i < info->nsegments; i++) {
		const struct kernel_segment *s = &info->segments[i];
		uint8_t *dst = guest_mem_ptr(mem, s->paddr, s->memsz);
		int ret;

		if (!dst) {
			log_err("%s: segment at 0x%llx+0x%llx is outside guest RAM", info->path,
				(unsigned long long)s->paddr, (unsigned long long)s->memsz);
			return -ENOSPC;
		}
		ret = pread_full(fd, dst, s->filesz, s->offset, info->path);
		if (ret)
			return ret;
		memset(dst + s->filesz, 0, s->memsz - s->filesz);
	}
	return 0;
}

int kernel_load(struct guest_mem *mem, const struct kernel_info *info,
		const struct kernel_load_opts *opts, struct boot_info *boot)
{
	struct boot_layout bl = { .mode = pick_mode(info, opts->protocol) };
	int fd, ret;

	memset(boot, 0, sizeof(*boot));
	ret = kernel_check(info, opts, guest_mem_low_end(mem));
	if (ret)
		return ret;
	fd = open(info->path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return log_errno(-errno, "open kernel %s", info->path);
	bl.kernel_start = info->load_addr;
	if (info->format == KERNEL_BZIMAGE) {
		uint8_t *dst;

		ret = bzimage_place(info, guest_mem_low_end(mem), &bl.kernel_start);
		if (ret)
			goto out;
		dst = guest_mem_ptr(mem, bl.kernel_start, info->mem_size);
		if (!dst) {
			ret = -ENOSPC;
			log_err("%s: kernel at 0x%llx is outside guest RAM", info->path,
				(unsigned long long)bl.kernel_start);
			goto out;
		}
		ret = pread_full(fd, dst, info->pm_size, info->setup_size, info->path);
	} else {
		ret = load_vmlinux(mem, info, fd);
	}
	if (ret)
		goto out;
	bl.kernel_end = bl.kernel_start + info->mem_size;
	ret = boot_structs_place(mem, info, opts, &bl, boot);
out:
	close(fd);
	return ret;
}
