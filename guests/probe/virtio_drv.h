/* What the probe's virtio-mmio drivers share: register access and queue setup. */
#ifndef FORKVM_PROBE_VIRTIO_DRV_H
#define FORKVM_PROBE_VIRTIO_DRV_H

#include <stdint.h>

static inline uint32_t virtio_rd(uint64_t mmio, uint32_t off)
{
	return *(volatile uint32_t *)(mmio + off);
}

static inline void virtio_wr(uint64_t mmio, uint32_t off, uint32_t v)
{
	*(volatile uint32_t *)(mmio + off) = v;
}

/*
 * Queue q of the device at mmio with qn entries, its rings at base (descriptors),
 * base + 4 KiB (available) and base + 8 KiB (used); 0, or -1 when the device offers fewer
 * entries or does not take the queue.
 */
static inline int virtio_drv_queue(uint64_t mmio, uint32_t q, uint64_t base, uint32_t qn)
{
	virtio_wr(mmio, 0x030, q);
	if (virtio_rd(mmio, 0x034) < qn)
		return -1;
	virtio_wr(mmio, 0x038, qn);
	virtio_wr(mmio, 0x080, (uint32_t)base);
	virtio_wr(mmio, 0x084, (uint32_t)(base >> 32));
	virtio_wr(mmio, 0x090, (uint32_t)(base + 0x1000));
	virtio_wr(mmio, 0x094, (uint32_t)((base + 0x1000) >> 32));
	virtio_wr(mmio, 0x0a0, (uint32_t)(base + 0x2000));
	virtio_wr(mmio, 0x0a4, (uint32_t)((base + 0x2000) >> 32));
	virtio_wr(mmio, 0x044, 1);
	return virtio_rd(mmio, 0x044) == 1 ? 0 : -1;
}

#endif
