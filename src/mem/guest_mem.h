/* Guest RAM as one memory object whose backing is chosen at creation. */
#ifndef FORKVM_GUEST_MEM_H
#define FORKVM_GUEST_MEM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum guest_mem_backing {
	GUEST_MEM_ANON,		/* anonymous private, MADV_HUGEPAGE unless disabled */
	GUEST_MEM_MEMFD,	/* memfd mapped shared */
	GUEST_MEM_FILE_PRIVATE, /* a file (snapshot memory) mapped private, copy-on-write */
	GUEST_MEM_HUGETLB,	/* memfd with MFD_HUGETLB | MFD_HUGE_2MB, mapped shared */
	GUEST_MEM_UFFD,		/* registered with userfaultfd, filled lazily by a page server */
};

/* One contiguous piece of guest-physical space backed by [offset, offset+size) of the mapping. */
struct guest_mem_region {
	uint64_t gpa;
	uint64_t size;
	uint64_t offset;
};

#define GUEST_MEM_MAX_REGIONS 2

struct guest_mem_opts {
	enum guest_mem_backing backing;
	uint64_t size;		/* bytes of guest RAM, a multiple of 4 KiB */
	bool no_hugepage;	/* anon: skip MADV_HUGEPAGE */
	const char *path;	/* file-private: the file to map; memfd/hugetlb: content to copy in */
	uint64_t file_offset;	/* file-private: where guest RAM starts in the file */
	const char *name;	/* memfd name, for /proc/PID/maps */
};

struct guest_mem {
	enum guest_mem_backing backing;
	uint64_t size;		/* guest RAM as reported to the guest */
	uint64_t map_size;	/* bytes mapped (hugetlb rounds up to 2 MiB) */
	uint8_t *host;		/* host address of guest RAM offset 0 */
	int fd;			/* memfd, file, or the userfaultfd (uffd); -1 for anonymous */
	uint64_t page_size;	/* backing page size: 4 KiB or 2 MiB */
	bool dirty_log;		/* memslots registered with KVM_MEM_LOG_DIRTY_PAGES */
	bool huge_advised;	/* anon: MADV_HUGEPAGE took (mem/thp_repair.h) */
	uint64_t *host_dirty;	/* pages the VMM wrote, while dirty logging is on (dirty_log.c) */
	int nregions;
	struct guest_mem_region regions[GUEST_MEM_MAX_REGIONS];
};

const char *guest_mem_backing_name(enum guest_mem_backing backing);
int guest_mem_backing_parse(const char *name, enum guest_mem_backing *out);

/* Split [0, size) of RAM into guest-physical regions around the 3-4 GiB hole. */
int guest_mem_layout(uint64_t size, struct guest_mem_region *regions, int *nregions);

int guest_mem_create(struct guest_mem *mem, const struct guest_mem_opts *opts);
void guest_mem_destroy(struct guest_mem *mem);

/* Copy a sparse memory file into RAM through the mapping (works for hugetlb, unlike write()). */
int guest_mem_populate(struct guest_mem *mem, const char *path, uint64_t file_offset);

/* Register every region as a KVM memslot (slot = region index). */
int guest_mem_register(struct guest_mem *mem, int vm_fd, bool dirty_log);

/* Host pointer for [gpa, gpa+len) if it lies inside one region, else NULL. */
void *guest_mem_ptr(const struct guest_mem *mem, uint64_t gpa, uint64_t len);
/* Offset into the mapping for gpa, or -ERANGE. */
int64_t guest_mem_offset(const struct guest_mem *mem, uint64_t gpa);
/* Highest guest-physical address + 1 covered by RAM. */
uint64_t guest_mem_end(const struct guest_mem *mem);

#endif
