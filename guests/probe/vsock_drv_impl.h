/* Probe vsock driver internals: area layout, ring accessors, driver state (all in guest RAM). */
#ifndef FORKVM_PROBE_VSOCK_DRV_IMPL_H
#define FORKVM_PROBE_VSOCK_DRV_IMPL_H

#include "vsock_drv.h"

#include "../../src/devices/vsock_proto.h"

#define barrier() __asm__ volatile("" ::: "memory")
#define QN 64		      /* descriptors per queue */
#define BUF 8192	      /* rx and tx buffer size: header + payload */
#define PAYLOAD (BUF - 44)
#define NCONN 8
#define RING (256u << 10)     /* per-connection echo buffer = the credit we give the host */

/* Area layout (offsets): state, three queues, buffers, connection rings. */
#define OFF_QUEUE(q) (0x4000 + (q) * 0x4000)
#define OFF_RXBUF 0x10000
#define OFF_TXBUF (OFF_RXBUF + QN * BUF)
#define OFF_EVBUF (OFF_TXBUF + QN * BUF)
#define OFF_RING (OFF_EVBUF + 0x1000)
_Static_assert(OFF_RING + NCONN * RING <= PROBE_VSOCK_AREA, "driver area too small");

struct vq {
	uint64_t base;		/* desc at +0, avail at +0x1000, used at +0x2000 */
	uint16_t last_used, avail_idx;
};

struct conn {
	uint32_t used, local_port, peer_port;
	uint32_t peer_buf_alloc, peer_fwd_cnt, tx_cnt, fwd_cnt;
	uint32_t head, len;
	uint32_t send_credit, send_rst;
};

struct drv {
	uint64_t mmio, cid;
	uint32_t port;
	struct vq q[3];
	uint32_t tx_free[QN], ntx_free;
	struct conn c[NCONN];
};

#define DESC(v, i) ((volatile struct { uint64_t addr; uint32_t len; uint16_t flags, next; } *)((v)->base) + (i))
#define AVAIL(v) ((volatile uint16_t *)((v)->base + 0x1000))
#define USED(v) ((volatile uint16_t *)((v)->base + 0x2000))
#define USED_ELEM(v, i) ((volatile uint32_t *)((v)->base + 0x2004 + 8 * ((i) % QN)))

static inline uint32_t rd(struct drv *d, uint32_t off) { return *(volatile uint32_t *)(d->mmio + off); }
static inline void wr(struct drv *d, uint32_t off, uint32_t v) { *(volatile uint32_t *)(d->mmio + off) = v; }

static inline void copy(void *dst, const void *src, uint64_t n)
{
	uint8_t *o = dst;
	const uint8_t *i = src;

	for (; n >= 8; n -= 8, o += 8, i += 8)
		*(uint64_t *)o = *(const uint64_t *)i;
	while (n--)
		*o++ = *i++;
}

static inline void zero(void *p, uint64_t n)
{
	for (uint8_t *b = p; n; n--)
		*b++ = 0;
}

static inline void vq_post(struct vq *v, uint16_t desc)
{
	AVAIL(v)[2 + (v->avail_idx % QN)] = desc;
	barrier();
	v->avail_idx++;
	AVAIL(v)[1] = v->avail_idx; /* x86 keeps the ring write before the index */
}

#endif
