/* KVM dirty log with KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, merged with host-side writes. */
#include "mem/dirty_log.h"

#include <linux/kvm.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "util/log.h"
#include "mem/guest_mem.h"
#include "util/page.h"


static uint64_t bitmap_words(uint64_t bytes)
{
	return (bytes / PAGE_4K + 63) / 64;
}

int dirty_log_enable(struct guest_mem *mem, int vm_fd)
{
	struct kvm_enable_cap cap = { .cap = KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2,
				      .args[0] = KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE |
						 KVM_DIRTY_LOG_INITIALLY_SET };

	if (mem->dirty_log)
		return 0;
	/* Manual protect: reading the log does not re-protect; we clear exactly what we saved. */
	if (ioctl(vm_fd, KVM_ENABLE_CAP, &cap) < 0)
		return log_errno(-errno, "KVM_ENABLE_CAP MANUAL_DIRTY_LOG_PROTECT2");
	mem->host_dirty = calloc(bitmap_words(mem->map_size), sizeof(uint64_t));
	if (!mem->host_dirty)
		return log_errno(-ENOMEM, "allocating the host dirty bitmap");
	return guest_mem_register(mem, vm_fd, true);
}

void guest_mem_mark_dirty(const struct guest_mem *mem, uint64_t gpa, uint64_t len)
{
	int64_t off;

	if (!mem || !mem->host_dirty || len == 0 || (off = guest_mem_offset(mem, gpa)) < 0)
		return;
	for (uint64_t p = (uint64_t)off / PAGE_4K; p <= ((uint64_t)off + len - 1) / PAGE_4K; p++)
		__atomic_fetch_or(&mem->host_dirty[p / 64], 1ULL << (p % 64), __ATOMIC_RELAXED);
}

int dirty_log_collect(struct guest_mem *mem, int vm_fd, uint64_t *bitmap)
{
	uint64_t words = bitmap_words(mem->map_size);

	memset(bitmap, 0, words * sizeof(uint64_t));
	for (int i = 0; i < mem->nregions; i++) {
		const struct guest_mem_region *r = &mem->regions[i];
		uint64_t npages = r->size / PAGE_4K, first = r->offset / PAGE_4K;
		uint64_t *slot_bits = calloc((npages + 63) / 64, sizeof(uint64_t));
		struct kvm_dirty_log get = { .slot = (uint32_t)i, .dirty_bitmap = slot_bits };
		struct kvm_clear_dirty_log clear = { .slot = (uint32_t)i, .first_page = 0,
						     .num_pages = (uint32_t)npages,
						     .dirty_bitmap = slot_bits };

		if (!slot_bits)
			return log_errno(-ENOMEM, "dirty bitmap of slot %d", i);
		if (ioctl(vm_fd, KVM_GET_DIRTY_LOG, &get) < 0) {
			free(slot_bits);
			return log_errno(-errno, "KVM_GET_DIRTY_LOG slot %d", i);
		}
		/* Re-protect exactly the pages we are about to save (num_pages may be the slot tail). */
		if (ioctl(vm_fd, KVM_CLEAR_DIRTY_LOG, &clear) < 0) {
			free(slot_bits);
			return log_errno(-errno, "KVM_CLEAR_DIRTY_LOG slot %d", i);
		}
		for (uint64_t p = 0; p < npages; p++)
			if (slot_bits[p / 64] & (1ULL << (p % 64)))
				bitmap[(first + p) / 64] |= 1ULL << ((first + p) % 64);
		free(slot_bits);
	}
	for (uint64_t w = 0; w < words; w++)
		bitmap[w] |= __atomic_exchange_n(&mem->host_dirty[w], 0, __ATOMIC_RELAXED);
	return 0;
}
