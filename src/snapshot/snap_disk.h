/* Disks in snapshots: the `blk` section and the sealed layer files next to vmstate. */
#ifndef FORKVM_SNAP_DISK_H
#define FORKVM_SNAP_DISK_H

#include <stddef.h>
#include <stdint.h>

#include "devices/virtio_mmio.h"
#include "disk/disk.h"
#include "util/errmsg.h"

struct vm;
struct vm_config;
struct snap_buf;
struct snap_state;
struct snap_config;
struct snap_writer;
struct snapshot;
struct snap_machine;

#define SNAP_MAX_DISKS 4
#define SNAP_DISK_RO 1u	/* the disk had no writable top */
#define SNAP_DISK_SERIAL 24

/*
 * Section SNAP_SEC_BLK, instance = virtio-mmio slot (its transport is SNAP_SEC_VIRTIO_MMIO at
 * the same instance). The chain's files are DIR/disk<slot>-<k>.ovl, k = 0 oldest; the base
 * stays where it is and is identified by size + sha256.
 */
struct snap_disk_state {
	uint32_t slot;
	uint32_t flags;			/* SNAP_DISK_RO */
	uint64_t size;			/* bytes the guest sees */
	uint64_t base_size;
	uint8_t base_sha256[SHA256_LEN];
	uint32_t nlayers;		/* sealed layers in the snapshot */
	uint32_t cluster_size;		/* DISK_CLUSTER_SIZE */
	char serial[SNAP_DISK_SERIAL];	/* NUL-terminated */
	char base_path[4096];		/* absolute, NUL-terminated */
	uint8_t layer_ids[DISK_MAX_LAYERS][DISK_ID_LEN];
	uint64_t reserved[8];
};

/* One decoded disk of a snap_machine. */
struct snap_disk {
	struct snap_disk_state st;
	struct virtio_mmio_regs mmio;
};

/* "disk<slot>-<k>.ovl" */
void snap_disk_layer_name(uint32_t slot, int k, char *out, size_t len);

/* Capture (VM paused): seal every disk's written top, add its transport and blk sections. */
int snap_disks_capture(struct vm *vm, struct snap_buf *buf);
/* Give the captured chains names in a directory: the snapshot writer's, the cow template's. */
int snap_disks_export(struct vm *vm, int dirfd, const char *dirname);
int snap_disks_put(struct vm *vm, struct snap_writer *w);

/* A blk section's own fields (the slot it claims, sizes, names, counts); one message. */
int snap_disk_state_check(const struct snap_disk_state *st, uint32_t instance, struct fvm_err *err);
/* snap_decode: every disk (blk + its virtio_mmio section) into m->disks. */
int snap_disks_decode(const struct snap_state *state, struct snap_machine *m, struct fvm_err *err);
/* snap_open: every disk's chain in DIR opens as a restore would open it (ids, base, seals). */
int snap_disks_check(const char *dir, const struct snap_state *state, struct fvm_err *err);
/* snapshot compact: the tip's disk files (checked as they are opened) into the writer. */
int snap_disks_copy(const char *dir, const struct snap_state *state, struct snap_writer *w,
		    struct fvm_err *err);

/* Restore: cfg->disks from the decoded disks, layers in dir; paths lives until vm_create ends. */
struct snap_disk_paths;
int snap_disks_config(const struct snap_machine *m, const char *dir, struct vm_config *cfg,
		      struct snap_disk_paths **paths);
void snap_disk_paths_free(struct snap_disk_paths *p);
/* A VMM killed before it could clean up leaves its tops: SOCKET.disk<slot>.ovl. */
void snap_disks_remove_leftovers(const char *socket);
/* After the transport registers: each disk's device restored (its queued requests run). */
int snap_disks_restore(struct vm *vm, const struct snap_machine *m);

#endif
