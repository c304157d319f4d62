/* virtio-blk device: config space, the device thread, snapshot sealing and restore. */
#include "devices/virtio_blk.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "util/log.h"
#include "util/thread.h"
#include "core/vm.h"
#include "disk/disk.h"
#include "jail/seccomp.h"

#define CONFIG_SPACE 64
#define PHYS_BLOCK_EXP 3 /* 4 KiB physical blocks of 512-byte logical ones: the cluster size */

/*
 * Config space (virtio 1.x 5.2.4): capacity (512-byte sectors), size_max, seg_max, geometry,
 * blk_size, then the topology: physical_block_exp, alignment_offset, min_io_size, opt_io_size.
 */
static void blk_config_read(void *opaque, uint64_t off, void *data, int len)
{
	struct virtio_blk *b = opaque;
	uint8_t cfg[CONFIG_SPACE] = { 0 };
	uint64_t cap = b->disk->size / DISK_SECTOR;
	uint32_t seg_max = VIRTIO_BLK_SEG_MAX, blk_size = DISK_SECTOR;
	uint16_t min_io = 1u << PHYS_BLOCK_EXP;

	memcpy(cfg + 0, &cap, sizeof(cap));
	memcpy(cfg + 12, &seg_max, sizeof(seg_max));
	memcpy(cfg + 20, &blk_size, sizeof(blk_size));
	cfg[24] = PHYS_BLOCK_EXP;
	memcpy(cfg + 26, &min_io, sizeof(min_io));
	memset(data, 0, (size_t)len);
	if (off < CONFIG_SPACE)
		memcpy(data, cfg + off, CONFIG_SPACE - off < (uint64_t)len ? CONFIG_SPACE - off : (size_t)len);
}

static const struct virtio_dev_ops blk_ops = {
	.config_read = blk_config_read,
};

/* A chain the transport cannot even walk: the device needs a reset (virtio 1.x 2.1.2). */
static void malformed(struct virtio_blk *b, uint16_t head)
{
	log_warn("virtio-blk slot %d: malformed descriptor chain (head %u); device needs reset",
		 b->mmio->slot, head);
	b->mmio->r.status |= VIRTIO_STATUS_NEEDS_RESET;
	virtio_mmio_signal(b->mmio, VIRTIO_INT_CONFIG);
}

/*
 * Not before the vCPUs run (a restored VM's queued requests would complete, and raise their
 * interrupt, before its LAPICs are restored) and not while paused (a snapshot copies memory).
 */
static bool held_back(const struct virtio_blk *b)
{
	return !__atomic_load_n(&b->vm->started, __ATOMIC_ACQUIRE) ||
	       __atomic_load_n(&b->vm->pause_requested, __ATOMIC_ACQUIRE);
}

/*
 * One request per hold of the transport lock, completed and signalled before the lock is
 * released: snapshot capture (which takes the lock) never sees a request half done, and a
 * paused VM's memory is not touched (the flag is read under the lock).
 */
static bool process_one(struct virtio_blk *b)
{
	struct virtio_mmio *m = b->mmio;
	struct virtq *q = &m->vq[0];
	struct virtq_chain c;
	int r;

	if (held_back(b))
		return false; /* the notification stays pending until the VM runs */
	if (!virtio_mmio_driver_ok(m)) {
		virtio_mmio_ack_notify(m, 0);
		return false;
	}
	r = virtq_pop(q, &c);
	if (r == 0) {
		/* Drain the notification, then look once more: nothing queued after it is lost. */
		virtio_mmio_ack_notify(m, 0);
		r = virtq_pop(q, &c);
	}
	if (r < 0)
		malformed(b, c.head);
	if (r <= 0)
		return false;
	virtq_push(q, c.head, virtio_blk_request(b, &c));
	if (virtq_wants_interrupt(q))
		virtio_mmio_signal(m, VIRTIO_INT_USED);
	return true;
}

void virtio_blk_process(struct virtio_blk *b)
{
	bool more;

	do {
		pthread_mutex_lock(&b->mmio->lock);
		more = process_one(b);
		pthread_mutex_unlock(&b->mmio->lock);
	} while (more);
}

static void *blk_thread(void *arg)
{
	struct virtio_blk *b = arg;

	if (jail_seccomp_apply(JAIL_ROLE_DEVICE) < 0) {
		vm_request_end(b->vm, VM_END_ERROR, "virtio-blk: seccomp filter of its thread not loaded");
		return NULL;
	}
	for (;;) {
		struct pollfd p[2] = { { .fd = b->mmio->notify_fd[0], .events = POLLIN },
				       { .fd = b->stop_fd, .events = POLLIN } };

		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			log_err("virtio-blk: poll: %s", strerror(errno));
			return NULL;
		}
		if (p[1].revents)
			return NULL;
		virtio_blk_process(b);
		/* Held back: the notification is still pending; look again shortly. */
		if (held_back(b))
			usleep(1000);
	}
}

int virtio_blk_create(struct vm *vm, int slot, struct disk *disk, const char *serial,
		      const char *top_prefix, struct virtio_blk **out)
{
	struct virtio_blk *b = calloc(1, sizeof(*b));
	uint64_t features = VIRTIO_BLK_F_SEG_MAX | VIRTIO_BLK_F_BLK_SIZE | VIRTIO_BLK_F_FLUSH |
			    VIRTIO_BLK_F_TOPOLOGY | (disk->has_top ? 0 : VIRTIO_BLK_F_RO);
	int err;

	if (!b) {
		disk_close(disk, true);
		return log_errno(-ENOMEM, "allocating virtio-blk slot %d", slot);
	}
	b->vm = vm;
	b->disk = disk;
	b->stop_fd = -1;
	snprintf(b->serial, sizeof(b->serial), "%s", serial ? serial : "");
	snprintf(b->top_prefix, sizeof(b->top_prefix), "%s", top_prefix ? top_prefix : "");
	b->captured_layers = disk_nsealed(disk);
	err = virtio_mmio_create(vm, slot, VIRTIO_ID_BLOCK, features, 1, VIRTIO_BLK_QUEUE_MAX,
				 &blk_ops, b, &b->mmio);
	if (err)
		goto err;
	b->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (b->stop_fd < 0) {
		err = log_errno(-errno, "virtio-blk slot %d: eventfd", slot);
		goto err;
	}
	log_info("virtio-blk: %s, %llu bytes%s, %d sealed layer%s (virtio-mmio slot %d, gsi %u)",
		 disk->base_path, (unsigned long long)disk->size, disk->has_top ? "" : ", read-only",
		 disk_nsealed(disk), disk_nsealed(disk) == 1 ? "" : "s", slot, b->mmio->gsi);
	*out = b;
	return 0;
err:
	virtio_blk_destroy(b);
	return err;
}

int virtio_blk_start(struct virtio_blk *b)
{
	int err;

	if (b->thread_started)
		return 0;
	err = -thread_start(&b->thread, blk_thread, b);
	if (err)
		return log_errno(err, "virtio-blk slot %d: starting the device thread",
				 b->mmio->slot);
	b->thread_started = true;
	return 0;
}

void virtio_blk_destroy(struct virtio_blk *b)
{
	uint64_t one = 1;

	if (!b)
		return;
	if (b->thread_started) {
		if (write(b->stop_fd, &one, sizeof(one)) < 0)
			log_warn("virtio-blk: stop eventfd: %s", strerror(errno));
		pthread_join(b->thread, NULL);
	}
	/* The files this VM made (its top, layers it sealed) go; snapshots hold their own links. */
	disk_close(b->disk, true);
	if (b->stop_fd >= 0)
		close(b->stop_fd);
	virtio_mmio_destroy(b->mmio);
	free(b);
}

int virtio_blk_snapshot_seal(struct virtio_blk *b)
{
	char path[PATH_MAX + 32];
	int ret = 0;

	pthread_mutex_lock(&b->mmio->lock);
	if (b->disk->has_top && !disk_top_empty(b->disk)) {
		snprintf(path, sizeof(path), "%s.%u.ovl", b->top_prefix, ++b->top_gen);
		ret = disk_seal_top_and_push_new(b->disk, path);
	}
	if (!ret)
		b->captured_layers = disk_nsealed(b->disk);
	pthread_mutex_unlock(&b->mmio->lock);
	return ret;
}

int virtio_blk_restore(struct virtio_blk *b)
{
	uint64_t one = 1;

	/* Requests the driver queued before the snapshot are still in the ring: run them. */
	if (write(b->mmio->notify_fd[0], &one, sizeof(one)) < 0)
		return log_errno(-errno, "virtio-blk slot %d: waking the device thread", b->mmio->slot);
	return 0;
}

void virtio_blk_get_stats(struct virtio_blk *b, struct virtio_blk_stats *out)
{
	pthread_mutex_lock(&b->mmio->lock);
	*out = b->stats;
	pthread_mutex_unlock(&b->mmio->lock);
}
