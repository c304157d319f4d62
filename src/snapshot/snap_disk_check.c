/* Reading disks back from a snapshot: the blk section's fields, its chain files, compaction. */
#include "snapshot/snap_disk.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/errmsg.h"
#include "snapshot/snapshot.h"
#include "x86/layout.h"

#define DISK_QUEUES 1

static bool terminated(const char *s, size_t len)
{
	return memchr(s, '\0', len) != NULL;
}

int snap_disk_state_check(const struct snap_disk_state *st, uint32_t instance, struct fvm_err *err)
{
	uint64_t want = (st->base_size + DISK_SECTOR - 1) / DISK_SECTOR * DISK_SECTOR;

	if (st->slot != instance || instance >= LAYOUT_VIRTIO_MMIO_SLOTS)
		return errmsg(err, -EINVAL, "vmstate: section 'blk' instance %u claims slot %u",
			      instance, st->slot);
	if (st->flags & ~SNAP_DISK_RO || st->cluster_size != DISK_CLUSTER_SIZE ||
	    st->nlayers > DISK_MAX_LAYERS)
		return errmsg(err, -EINVAL, "vmstate: section 'blk' instance %u: flags 0x%x, "
			      "cluster size %u, %u layers are not a disk this forkvm restores",
			      instance, st->flags, st->cluster_size, st->nlayers);
	if (st->base_size == 0 || st->size != want)
		return errmsg(err, -EINVAL, "vmstate: section 'blk' instance %u: size %llu does "
			      "not fit a base of %llu bytes", instance, (unsigned long long)st->size,
			      (unsigned long long)st->base_size);
	if (!terminated(st->base_path, sizeof(st->base_path)) || st->base_path[0] != '/' ||
	    !terminated(st->serial, sizeof(st->serial)))
		return errmsg(err, -EINVAL, "vmstate: section 'blk' instance %u: base path or "
			      "serial is not an absolute, terminated string", instance);
	return 0;
}

/* One blk section with its transport: exact sizes, sane fields, queues as restore will demand. */
static int decode_one(const struct snap_state *state, const struct snap_section *blk,
		      const struct snap_config *cfg, struct snap_disk *out, struct fvm_err *err)
{
	const struct snap_section *mm = snap_state_find(state, SNAP_SEC_VIRTIO_MMIO, blk->instance);
	char what[32];
	int ret;

	if (blk->len != sizeof(out->st))
		return errmsg(err, -EINVAL, "vmstate: section 'blk' instance %u has %llu bytes, "
			      "expected %zu", blk->instance, (unsigned long long)blk->len,
			      sizeof(out->st));
	if (!mm || mm->len != sizeof(out->mmio))
		return errmsg(err, -EINVAL, "vmstate: the disk in slot %u has %s transport "
			      "section 'virtio_mmio' (%zu bytes expected)", blk->instance,
			      mm ? "a wrong-sized" : "no", sizeof(out->mmio));
	memcpy(&out->st, blk->data, sizeof(out->st));
	memcpy(&out->mmio, mm->data, sizeof(out->mmio));
	ret = snap_disk_state_check(&out->st, blk->instance, err);
	if (ret)
		return ret;
	snprintf(what, sizeof(what), "disk %u", blk->instance);
	return snap_check_queues(cfg, &out->mmio, DISK_QUEUES, 256, what, err);
}

int snap_disks_decode(const struct snap_state *state, struct snap_machine *m, struct fvm_err *err)
{
	m->ndisks = 0;
	for (int i = 0; i < state->nsections; i++) {
		const struct snap_section *s = &state->sections[i];
		int ret;

		if (s->type != SNAP_SEC_BLK)
			continue;
		if (m->ndisks == SNAP_MAX_DISKS)
			return errmsg(err, -EINVAL, "vmstate: more than %d disks", SNAP_MAX_DISKS);
		ret = decode_one(state, s, &m->config, &m->disks[m->ndisks], err);
		if (ret)
			return ret;
		m->ndisks++;
	}
	return 0;
}

/* Open (and close) each disk's chain from dir; fn, if set, then gets the open disk. */
static int for_each_chain(const char *dir, const struct snap_state *state,
			  int (*fn)(struct disk *, const struct snap_disk_state *, void *), void *arg,
			  struct fvm_err *err)
{
	struct snap_disk_state *st = malloc(sizeof(*st));
	char (*paths)[PATH_MAX] = malloc(DISK_MAX_LAYERS * PATH_MAX), name[64];
	struct fvm_err msg = FVM_ERR_INIT;
	const char *ptr[DISK_MAX_LAYERS];
	int ret = st && paths ? 0 : -ENOMEM;

	for (int i = 0; !ret && i < state->nsections; i++) {
		const struct snap_section *s = &state->sections[i];
		struct disk_base_id base;
		struct disk *d;

		if (s->type != SNAP_SEC_BLK)
			continue;
		if (s->len != sizeof(*st)) {
			ret = errmsg(err, -EINVAL, "vmstate: section 'blk' instance %u has %llu "
				     "bytes, expected %zu", s->instance, (unsigned long long)s->len,
				     sizeof(*st));
			break;
		}
		memcpy(st, s->data, sizeof(*st));
		if ((ret = snap_disk_state_check(st, s->instance, err)))
			break;
		for (uint32_t k = 0; k < st->nlayers; k++) {
			snap_disk_layer_name(st->slot, (int)k, name, sizeof(name));
			snprintf(paths[k], PATH_MAX, "%s/%s", dir, name);
			ptr[k] = paths[k];
		}
		memcpy(base.sha256, st->base_sha256, SHA256_LEN);
		base.size = st->base_size;
		struct disk_open_opts o = { .base = st->base_path, .layers = ptr,
					    .nlayers = (int)st->nlayers,
					    .expect_ids = (const uint8_t(*)[DISK_ID_LEN])st->layer_ids,
					    .expect_base = &base, .keep_id_cache = true };
		ret = disk_open(&o, &d, &msg);
		if (ret) {
			errmsg(err, ret, "disk in slot %u: %s", st->slot, msg.msg);
			break;
		}
		ret = fn ? fn(d, st, arg) : 0;
		disk_close(d, false);
		if (ret)
			errmsg(err, ret, "disk in slot %u: copying its layers: %s", st->slot,
			       strerror(-ret));
	}
	if (ret == -ENOMEM)
		errmsg(err, ret, "out of memory checking the snapshot's disks");
	free(st);
	free(paths);
	return ret;
}

int snap_disks_check(const char *dir, const struct snap_state *state, struct fvm_err *err)
{
	return for_each_chain(dir, state, NULL, NULL, err);
}

static int copy_chain(struct disk *d, const struct snap_disk_state *st, void *arg)
{
	struct snap_writer *w = arg;
	char name[64];

	for (uint32_t k = 0; k < st->nlayers; k++) {
		snap_disk_layer_name(st->slot, (int)k, name, sizeof(name));
		int ret = disk_layer_export(d, (int)k, w->tmp_fd, w->tmp, name);
		if (ret)
			return ret;
	}
	return 0;
}

int snap_disks_copy(const char *dir, const struct snap_state *state, struct snap_writer *w,
		    struct fvm_err *err)
{
	return for_each_chain(dir, state, copy_chain, w, err);
}
