/* Dirty-page tracking for diff snapshots: KVM's log (manual protect) plus the VMM's own writes. */
#ifndef FORKVM_DIRTY_LOG_H
#define FORKVM_DIRTY_LOG_H

#include <stdint.h>

struct guest_mem;

/* Turn on KVM dirty logging (manual protect, initially all set) for every memslot. */
int dirty_log_enable(struct guest_mem *mem, int vm_fd);
/*
 * Collect pages dirtied since the last collect into `bitmap` (one bit per 4 KiB page of the
 * mapping, caller-allocated, zeroed by this call), then re-protect exactly those pages.
 * KVM's log and the VMM's own writes (guest_mem_mark_dirty) are merged. The VM must be paused.
 */
int dirty_log_collect(struct guest_mem *mem, int vm_fd, uint64_t *bitmap);
/* Record that the VMM itself wrote [gpa, gpa+len) (KVM does not see host writes). */
void guest_mem_mark_dirty(const struct guest_mem *mem, uint64_t gpa, uint64_t len);

#endif
