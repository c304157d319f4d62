/* The CONFIG section: the machine a snapshot was taken from. */
#ifndef FORKVM_SNAP_CONFIG_H
#define FORKVM_SNAP_CONFIG_H

#include <stdint.h>

enum snap_guest_kind { SNAP_GUEST_PROBE = 1, SNAP_GUEST_LINUX = 2 };

#define SNAP_CONFIG_MAX_REGIONS 2

struct snap_config {
	uint64_t mem_size;
	uint32_t nvcpus;
	uint32_t guest_kind;	/* enum snap_guest_kind */
	uint32_t reserved0;	/* was the source backing: a process detail, in meta.json */
	uint32_t nregions;
	struct {
		uint64_t gpa, size, offset;
	} regions[SNAP_CONFIG_MAX_REGIONS];
	char cpu_features[256];	/* the source's CPUID policy, "-cx16,-xsave" */
	uint32_t ndevices;	/* virtio-mmio slots in use */
	uint32_t xsave_size;	/* bytes of each XSAVE section */
	uint64_t reserved[8];
};

#endif
