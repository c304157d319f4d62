/* Guest RAM object: create/destroy per backing, layout around the MMIO hole, KVM memslots. */
#include "mem/guest_mem.h"

#include <fcntl.h>
#include <stdlib.h>
#include <linux/kvm.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "util/log.h"
#include "mem/guest_mem_backend.h"
#include "x86/layout.h"

static const char *const backing_names[] = {
	[GUEST_MEM_ANON] = "anon",
	[GUEST_MEM_MEMFD] = "memfd",
	[GUEST_MEM_FILE_PRIVATE] = "file",
	[GUEST_MEM_HUGETLB] = "hugetlb",
	[GUEST_MEM_UFFD] = "uffd",
};

const char *guest_mem_backing_name(enum guest_mem_backing backing)
{
	if ((unsigned)backing >= sizeof(backing_names) / sizeof(backing_names[0]))
		return "unknown";
	return backing_names[backing];
}

int guest_mem_backing_parse(const char *name, enum guest_mem_backing *out)
{
	for (unsigned i = 0; i < sizeof(backing_names) / sizeof(backing_names[0]); i++) {
		if (backing_names[i] && strcmp(name, backing_names[i]) == 0) {
			*out = (enum guest_mem_backing)i;
			return 0;
		}
	}
	return -EINVAL;
}

int guest_mem_layout(uint64_t size, struct guest_mem_region *regions, int *nregions)
{
	uint64_t low = size < LAYOUT_RAM_LOW_MAX ? size : LAYOUT_RAM_LOW_MAX;

	if (size == 0 || size % LAYOUT_PAGE_SIZE)
		return -EINVAL;
	/* The page tables map 1 GiB per directory page; keep RAM + hole inside them. */
	if (size > LAYOUT_PD_MAX * (1ULL << 30) - (LAYOUT_RAM_HIGH_START - LAYOUT_RAM_LOW_MAX))
		return -E2BIG;
	regions[0] = (struct guest_mem_region){ .gpa = 0, .size = low, .offset = 0 };
	*nregions = 1;
	if (size > low) {
		regions[1] = (struct guest_mem_region){
			.gpa = LAYOUT_RAM_HIGH_START, .size = size - low, .offset = low
		};
		*nregions = 2;
	}
	return 0;
}

int guest_mem_create(struct guest_mem *mem, const struct guest_mem_opts *opts)
{
	int err;

	*mem = (struct guest_mem){ .backing = opts->backing, .size = opts->size, .fd = -1 };
	err = guest_mem_layout(opts->size, mem->regions, &mem->nregions);
	if (err == -E2BIG)
		return log_errno(err, "guest RAM of %llu bytes exceeds the supported maximum",
				 (unsigned long long)opts->size);
	if (err)
		return log_errno(err, "guest RAM size %llu is not a positive multiple of 4 KiB",
				 (unsigned long long)opts->size);

	switch (opts->backing) {
	case GUEST_MEM_ANON:
		err = guest_mem_create_anon(mem, opts);
		break;
	case GUEST_MEM_MEMFD:
		err = guest_mem_create_memfd(mem, opts);
		break;
	case GUEST_MEM_FILE_PRIVATE:
		err = guest_mem_create_file(mem, opts);
		break;
	case GUEST_MEM_HUGETLB:
		err = guest_mem_create_hugetlb(mem, opts);
		break;
	case GUEST_MEM_UFFD:
		err = guest_mem_create_uffd(mem, opts);
		break;
	default:
		err = -EOPNOTSUPP;
		log_err("guest RAM backing '%s' cannot be created here",
			guest_mem_backing_name(opts->backing));
		break;
	}
	/* memfd and hugetlb restores start from the snapshot's content. */
	if (!err && opts->path && opts->backing != GUEST_MEM_FILE_PRIVATE &&
	    opts->backing != GUEST_MEM_UFFD)
		err = guest_mem_populate(mem, opts->path, opts->file_offset);
	if (err)
		guest_mem_destroy(mem);
	return err;
}

void guest_mem_destroy(struct guest_mem *mem)
{
	/* uffd: unregister first, so munmap never waits for a page server to read UNMAP. */
	if (mem->backing == GUEST_MEM_UFFD && mem->fd >= 0)
		guest_mem_uffd_release(mem);
	if (mem->host && mem->host != MAP_FAILED)
		munmap(mem->host, mem->map_size);
	if (mem->fd >= 0)
		close(mem->fd);
	free(mem->host_dirty);
	mem->host_dirty = NULL;
	mem->host = NULL;
	mem->fd = -1;
}

int guest_mem_register(struct guest_mem *mem, int vm_fd, bool dirty_log)
{
	for (int i = 0; i < mem->nregions; i++) {
		struct kvm_userspace_memory_region slot = {
			.slot = (uint32_t)i,
			.flags = dirty_log ? KVM_MEM_LOG_DIRTY_PAGES : 0,
			.guest_phys_addr = mem->regions[i].gpa,
			.memory_size = mem->regions[i].size,
			.userspace_addr = (uint64_t)(uintptr_t)(mem->host + mem->regions[i].offset),
		};
		if (ioctl(vm_fd, KVM_SET_USER_MEMORY_REGION, &slot) < 0)
			return log_errno(-errno, "KVM_SET_USER_MEMORY_REGION slot %d (gpa 0x%llx, %llu bytes)",
					 i, (unsigned long long)slot.guest_phys_addr,
					 (unsigned long long)slot.memory_size);
	}
	mem->dirty_log = dirty_log;
	return 0;
}

int64_t guest_mem_offset(const struct guest_mem *mem, uint64_t gpa)
{
	for (int i = 0; i < mem->nregions; i++) {
		const struct guest_mem_region *r = &mem->regions[i];
		if (gpa >= r->gpa && gpa - r->gpa < r->size)
			return (int64_t)(r->offset + (gpa - r->gpa));
	}
	return -ERANGE;
}

void *guest_mem_ptr(const struct guest_mem *mem, uint64_t gpa, uint64_t len)
{
	for (int i = 0; i < mem->nregions; i++) {
		const struct guest_mem_region *r = &mem->regions[i];
		if (gpa >= r->gpa && gpa - r->gpa < r->size && len <= r->size - (gpa - r->gpa))
			return mem->host + r->offset + (gpa - r->gpa);
	}
	return NULL;
}

uint64_t guest_mem_end(const struct guest_mem *mem)
{
	const struct guest_mem_region *last = &mem->regions[mem->nregions - 1];
	return last->gpa + last->size;
}
