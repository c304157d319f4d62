/* Split virtqueues (virtio 1.x, section 2.7): pop descriptor chains, push used elements. */
#ifndef FORKVM_VIRTQUEUE_H
#define FORKVM_VIRTQUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct guest_mem;

#define VIRTQ_DESC_F_NEXT 1
#define VIRTQ_DESC_F_WRITE 2
#define VIRTQ_DESC_F_INDIRECT 4
#define VIRTQ_AVAIL_F_NO_INTERRUPT 1
/* Descriptors per chain and direction: a Linux virtio-net transmit is up to MAX_SKB_FRAGS + 2
 * direct descriptors (17 by default, 45 at most), which a device must take whole. */
#define VIRTQ_MAX_IOV 64

struct virtq_desc {
	uint64_t addr;
	uint32_t len;
	uint16_t flags;
	uint16_t next;
};

struct virtq_used_elem {
	uint32_t id;
	uint32_t len;
};

/* What the driver programs and the device tracks; also the snapshot image of a queue. */
struct virtq_state {
	uint16_t num, ready, last_avail, used_idx;
	uint64_t desc_gpa, avail_gpa, used_gpa;
};

struct virtq {
	struct virtq_state s;
	/* Host views of the rings, valid while ready. */
	struct virtq_desc *desc;
	uint16_t *avail; /* flags, idx, ring[num], used_event */
	uint8_t *used;	 /* flags, idx, ring[num] of virtq_used_elem, avail_event */
	const struct guest_mem *mem;
};

struct virtq_iov {
	uint8_t *base;
	uint64_t gpa; /* where base is in the guest, to mark the VMM's writes dirty */
	uint32_t len;
};

/* One descriptor chain: device-readable buffers first, then device-writable ones. */
struct virtq_chain {
	const struct guest_mem *mem;
	uint16_t head;
	int nrd, nwr;
	struct virtq_iov rd[VIRTQ_MAX_IOV], wr[VIRTQ_MAX_IOV];
	uint64_t rd_len, wr_len;
};

/* Map the rings: num a power of two <= max, every ring inside guest RAM and aligned. */
int virtq_activate(struct virtq *q, const struct guest_mem *mem, uint16_t max);
void virtq_reset(struct virtq *q);
/* 1 and a chain, 0 when the driver has nothing new, -EINVAL for a malformed chain
 * (out of RAM, loop, indirect, readable after writable). */
int virtq_pop(struct virtq *q, struct virtq_chain *c);
/* Give back the chain popped last, unused (the device could not fill it yet). */
void virtq_unpop(struct virtq *q);
/* Give back the n chains popped last, unused (a frame that needs more buffers than are there). */
void virtq_unpop_n(struct virtq *q, uint16_t n);
/* Return a chain to the driver with `len` bytes written into its writable buffers. */
void virtq_push(struct virtq *q, uint16_t head, uint32_t len);
/*
 * Several chains returned at once: virtq_fill writes used element used_idx + k without
 * publishing it; virtq_flush then publishes the n filled elements with one index store, so
 * the driver sees them together (a virtio-net frame spread over several receive buffers).
 */
void virtq_fill(struct virtq *q, uint16_t k, uint16_t head, uint32_t len);
void virtq_flush(struct virtq *q, uint16_t n);
bool virtq_has_avail(const struct virtq *q);
/* The driver's published avail index (0 while the queue is not ready). */
uint16_t virtq_avail_idx(const struct virtq *q);
/* The driver wants an interrupt for used buffers (no VIRTQ_AVAIL_F_NO_INTERRUPT). */
bool virtq_wants_interrupt(const struct virtq *q);

/* Copy between a chain's buffers and flat memory, starting `off` bytes into them. */
size_t virtq_chain_read(const struct virtq_chain *c, size_t off, void *dst, size_t len);
size_t virtq_chain_write(struct virtq_chain *c, size_t off, const void *src, size_t len);

#endif
