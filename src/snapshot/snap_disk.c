/* Disks into snapshots (capture, layer files) and back out of them (restore configuration). */
#include "snapshot/snap_disk.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util/log.h"
#include "core/vm.h"
#include "devices/virtio_blk.h"
#include "snapshot/snapshot.h"
#include "x86/layout.h"

_Static_assert(SNAP_MAX_DISKS == VM_MAX_DISKS, "one disk section per VM disk");

void snap_disk_layer_name(uint32_t slot, int k, char *out, size_t len)
{
	snprintf(out, len, "disk%u-%d.ovl", slot, k);
}

static void fill_state(const struct virtio_blk *b, struct snap_disk_state *st)
{
	const struct disk *d = b->disk;

	memset(st, 0, sizeof(*st));
	st->slot = (uint32_t)b->mmio->slot;
	st->flags = d->has_top ? 0 : SNAP_DISK_RO;
	st->size = d->size;
	st->base_size = d->base.size;
	memcpy(st->base_sha256, d->base.sha256, SHA256_LEN);
	st->nlayers = (uint32_t)b->captured_layers;
	st->cluster_size = DISK_CLUSTER_SIZE;
	snprintf(st->serial, sizeof(st->serial), "%s", b->serial);
	snprintf(st->base_path, sizeof(st->base_path), "%s", d->base_path);
	for (int k = 0; k < b->captured_layers; k++)
		memcpy(st->layer_ids[k], d->layers[k]->id, DISK_ID_LEN);
}

int snap_disks_capture(struct vm *vm, struct snap_buf *buf)
{
	struct snap_disk_state st;
	struct virtio_mmio_regs regs;
	int err;

	for (int i = 0; i < vm->nblk; i++) {
		struct virtio_blk *b = vm->blk[i];

		/* The disk at this instant: what the guest wrote is flushed into a sealed layer. */
		err = virtio_blk_snapshot_seal(b);
		if (err)
			return log_errno(err, "sealing the disk in virtio slot %d for the snapshot",
					 b->mmio->slot);
		virtio_mmio_save(b->mmio, &regs);
		fill_state(b, &st);
		snap_buf_add(buf, SNAP_SEC_VIRTIO_MMIO, st.slot, &regs, sizeof(regs));
		snap_buf_add(buf, SNAP_SEC_BLK, st.slot, &st, sizeof(st));
	}
	return 0;
}

int snap_disks_export(struct vm *vm, int dirfd, const char *dirname)
{
	char name[64];
	int err;

	for (int i = 0; i < vm->nblk; i++) {
		struct virtio_blk *b = vm->blk[i];

		for (int k = 0; k < b->captured_layers; k++) {
			snap_disk_layer_name((uint32_t)b->mmio->slot, k, name, sizeof(name));
			err = disk_layer_export(b->disk, k, dirfd, dirname, name);
			if (err)
				return err;
		}
	}
	return 0;
}

int snap_disks_put(struct vm *vm, struct snap_writer *w)
{
	int err = snap_disks_export(vm, w->tmp_fd, w->tmp);

	if (err)
		return snap_writer_fail(w, err, "putting the disk layers into %s: %s", w->tmp,
					strerror(-err));
	return 0;
}

struct snap_disk_paths {
	char path[SNAP_MAX_DISKS][DISK_MAX_LAYERS][PATH_MAX];
	const char *ptr[SNAP_MAX_DISKS][DISK_MAX_LAYERS];
	struct disk_base_id base[SNAP_MAX_DISKS];
};

int snap_disks_config(const struct snap_machine *m, const char *dir, struct vm_config *cfg,
		      struct snap_disk_paths **paths)
{
	struct snap_disk_paths *p = NULL;

	cfg->ndisks = 0;
	*paths = NULL;
	if (m->ndisks == 0)
		return 0;
	p = calloc(1, sizeof(*p));
	if (!p)
		return log_errno(-ENOMEM, "paths of the snapshot's disks");
	for (int i = 0; i < m->ndisks; i++) {
		const struct snap_disk_state *st = &m->disks[i].st;
		char name[64];

		for (uint32_t k = 0; k < st->nlayers; k++) {
			snap_disk_layer_name(st->slot, (int)k, name, sizeof(name));
			snprintf(p->path[i][k], PATH_MAX, "%s/%s", dir, name);
			p->ptr[i][k] = p->path[i][k];
		}
		memcpy(p->base[i].sha256, st->base_sha256, SHA256_LEN);
		p->base[i].size = st->base_size;
		cfg->disks[i] = (struct vm_disk_config){
			.base = st->base_path, .read_only = st->flags & SNAP_DISK_RO,
			.slot = (int)st->slot, .serial = st->serial, .nlayers = (int)st->nlayers,
			.layers = p->ptr[i], .layer_ids = st->layer_ids, .base_id = &p->base[i] };
	}
	cfg->ndisks = m->ndisks;
	*paths = p;
	return 0;
}

void snap_disk_paths_free(struct snap_disk_paths *p)
{
	free(p);
}

void snap_disks_remove_leftovers(const char *socket)
{
	char path[PATH_MAX + 32];

	for (int slot = 0; slot < LAYOUT_VIRTIO_MMIO_SLOTS; slot++) {
		snprintf(path, sizeof(path), "%s.disk%d.ovl", socket, slot);
		unlink(path);
	}
}

int snap_disks_restore(struct vm *vm, const struct snap_machine *m)
{
	for (int i = 0; i < m->ndisks; i++) {
		uint32_t slot = m->disks[i].st.slot;
		struct virtio_blk *b = NULL;

		for (int j = 0; j < vm->nblk; j++)
			if ((uint32_t)vm->blk[j]->mmio->slot == slot)
				b = vm->blk[j];
		if (!b)
			return log_errno(-ENODEV, "restoring the disk of virtio slot %u: no such device",
					 slot);
		if (virtio_mmio_restore(b->mmio, &m->disks[i].mmio) || virtio_blk_restore(b))
			return -EINVAL;
	}
	return 0;
}
