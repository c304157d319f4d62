/* The probe's virtio-net driver: negotiation, three polled queues in its area, seeded frames
 * out, received frames copied into a host-chosen buffer, announce acknowledgements. */
#include "net_drv.h"
#include "virtio_drv.h"

#define barrier() __asm__ volatile("" ::: "memory")
#define QN PROBE_NET_QN
#define POLL_MAX 2000000000ULL /* a device that never answers is an error, not a hang */
#define HDR 12
#define TX_SLOTS 16
#define TX_CHUNK 4096 /* bytes per transmit descriptor: a large frame is a long chain */
#define F_VERSION_1 (1ULL << 32)
#define F_MRG_RXBUF (1ULL << 15)
#define F_CTRL_VQ (1ULL << 17)
#define F_GUEST_ANNOUNCE (1ULL << 21)
#define S_ANNOUNCE 2

/* Area layout: state, the rx/tx/ctrl queues, the control buffer, tx slots, rx buffers. */
#define OFF_QUEUE(q) (0x4000ULL + (q) * 0x4000ULL)
#define OFF_CTRL 0x10000ULL
#define OFF_TX 0x20000ULL
#define OFF_RX 0x140000ULL
#define SLOT PROBE_NET_RXBUF_MAX
_Static_assert(OFF_TX + TX_SLOTS * SLOT <= OFF_RX, "tx slots overlap rx buffers");
_Static_assert(OFF_RX + QN * SLOT <= PROBE_NET_AREA, "net driver area too small");

struct vq {
	uint64_t base; /* desc at +0, avail at +0x1000, used at +0x2000 */
	uint16_t last_used, avail_idx;
};

struct ndrv {
	uint64_t mmio, features, area;
	uint8_t mac[8];
	uint32_t rxsize, rx_posted;
	struct vq q[3];
	uint16_t rx_free[QN];
	uint32_t nrx_free;
	uint64_t rx_frames, tx_frames, announces;
};
_Static_assert(sizeof(struct ndrv) <= OFF_QUEUE(0), "net driver state too large");

struct desc {
	uint64_t addr;
	uint32_t len;
	uint16_t flags, next;
};

#define DESC(v, i) ((volatile struct desc *)((v)->base) + (i))
#define AVAIL(v) ((volatile uint16_t *)((v)->base + 0x1000))
#define USED_IDX(v) (*(volatile uint16_t *)((v)->base + 0x2002))
#define USED_ELEM(v, i) ((volatile uint32_t *)((v)->base + 0x2004 + 8 * ((i) % QN)))

static inline uint32_t rd(struct ndrv *d, uint32_t off) { return *(volatile uint32_t *)(d->mmio + off); }
static inline void wr(struct ndrv *d, uint32_t off, uint32_t v) { *(volatile uint32_t *)(d->mmio + off) = v; }
static inline uint16_t cfg_status(struct ndrv *d) { return *(volatile uint16_t *)(d->mmio + 0x106); }

static void zero64(uint64_t addr, uint64_t n)
{
	for (uint64_t *p = (uint64_t *)addr; n >= 8; n -= 8)
		*p++ = 0;
}

static void copy(uint8_t *dst, const uint8_t *src, uint64_t n)
{
	for (; n >= 8; n -= 8, dst += 8, src += 8)
		*(uint64_t *)dst = *(const uint64_t *)src;
	while (n--)
		*dst++ = *src++;
}

static void post(struct vq *v, uint16_t head)
{
	AVAIL(v)[2 + (v->avail_idx % QN)] = head;
	barrier();
	v->avail_idx++;
	AVAIL(v)[1] = v->avail_idx; /* x86 keeps the ring write before the index */
}

/* Poll until the device has used everything posted on v; 0, or -1 after POLL_MAX. */
static int wait_used(struct vq *v)
{
	for (uint64_t i = 0; USED_IDX(v) != v->avail_idx; i++)
		if (i == POLL_MAX)
			return -1;
	barrier();
	v->last_used = v->avail_idx;
	return 0;
}

static int setup_queue(struct ndrv *d, int q)
{
	struct vq *v = &d->q[q];

	v->base = d->area + OFF_QUEUE(q);
	v->last_used = v->avail_idx = 0;
	return virtio_drv_queue(d->mmio, (uint32_t)q, v->base, QN);
}

/* Post free receive buffers until `target` are with the device; one notify if any went. */
static void rx_fill(struct ndrv *d, uint64_t target)
{
	struct vq *v = &d->q[0];
	int posted = 0;

	while (d->rx_posted < target && d->nrx_free) {
		uint16_t i = d->rx_free[--d->nrx_free];

		DESC(v, i)->addr = d->area + OFF_RX + (uint64_t)i * SLOT;
		DESC(v, i)->len = d->rxsize;
		DESC(v, i)->flags = 2; /* device-writable */
		DESC(v, i)->next = 0;
		post(v, i);
		d->rx_posted++;
		posted = 1;
	}
	if (posted)
		wr(d, 0x050, 0);
}

uint32_t net_up(mailbox_t *mb, uint64_t area, uint64_t mmio, uint64_t want, uint64_t nrx,
		uint64_t rxsize, uint64_t *features, uint64_t *mac)
{
	struct ndrv *d = (struct ndrv *)area;
	uint64_t offered;
	int nq;

	mb->net_area = 0;
	zero64(area, OFF_TX);
	d->area = area;
	d->mmio = mmio;
	d->rxsize = (uint32_t)(rxsize ? rxsize : PROBE_NET_RXBUF_DEFAULT);
	if (rd(d, 0x000) != 0x74726976 || rd(d, 0x004) != 2 || rd(d, 0x008) != PROBE_VIRTIO_ID_NET)
		return PROBE_ENODEV;
	wr(d, 0x070, 0);     /* reset */
	wr(d, 0x070, 1 | 2); /* ACKNOWLEDGE | DRIVER */
	wr(d, 0x014, 0);
	offered = rd(d, 0x010);
	wr(d, 0x014, 1);
	offered |= (uint64_t)rd(d, 0x010) << 32;
	if (!(offered & F_VERSION_1))
		return PROBE_EIO;
	d->features = (offered & want) | F_VERSION_1;
	wr(d, 0x024, 0);
	wr(d, 0x020, (uint32_t)d->features);
	wr(d, 0x024, 1);
	wr(d, 0x020, (uint32_t)(d->features >> 32));
	wr(d, 0x070, 1 | 2 | 8);
	if (!(rd(d, 0x070) & 8))
		return PROBE_EIO;
	nq = d->features & F_CTRL_VQ ? 3 : 2;
	for (int q = 0; q < nq; q++)
		if (setup_queue(d, q))
			return PROBE_EIO;
	for (int i = 0; i < 6; i++)
		d->mac[i] = *(volatile uint8_t *)(mmio + 0x100 + (uint64_t)i);
	for (uint16_t i = 0; i < QN; i++)
		d->rx_free[d->nrx_free++] = (uint16_t)(QN - 1 - i);
	wr(d, 0x070, 1 | 2 | 8 | 4); /* DRIVER_OK */
	rx_fill(d, nrx);
	*features = d->features;
	*mac = 0;
	for (int i = 5; i >= 0; i--)
		*mac = (*mac << 8) | d->mac[i];
	barrier();
	mb->net_area = area;
	return PROBE_OK;
}

/* Frame i of a net_send into slot memory at p: header, then the Ethernet frame. */
static void build_frame(struct ndrv *d, uint8_t *p, uint64_t len, uint64_t seed, uint64_t i,
			uint64_t ethertype)
{
	uint8_t *f = p + HDR;
	uint64_t k = 0;

	zero64((uint64_t)p, 16);
	for (int b = 0; b < 6; b++) {
		f[b] = 0xff;
		f[6 + b] = d->mac[b];
	}
	f[12] = (uint8_t)(ethertype >> 8);
	f[13] = (uint8_t)ethertype;
	for (uint64_t off = 14; off < len; k++) {
		uint64_t w = probe_net_word(seed, i, k);
		for (int b = 0; b < 8 && off < len; b++, off++)
			f[off] = (uint8_t)(w >> (8 * b));
	}
}

uint32_t net_send(mailbox_t *mb, uint64_t count, uint64_t len, uint64_t seed, uint64_t ethertype,
		  uint64_t *frames, uint64_t *bytes)
{
	struct ndrv *d = (struct ndrv *)mb->net_area;
	struct vq *v;
	uint64_t sent = 0;

	if (!d)
		return PROBE_ENOTUP;
	v = &d->q[1];
	if (!ethertype)
		ethertype = PROBE_NET_ETHERTYPE;
	while (sent < count) {
		uint16_t ndesc = 0;

		/* A batch: frames while slots and descriptors last, one notify, all taken back. */
		for (int slot = 0; slot < TX_SLOTS && sent < count; slot++, sent++) {
			uint64_t buf = d->area + OFF_TX + (uint64_t)slot * SLOT;
			uint16_t need = (uint16_t)(1 + (len + TX_CHUNK - 1) / TX_CHUNK), head = ndesc;

			if (ndesc + need > QN)
				break;
			build_frame(d, (uint8_t *)buf, len, seed, sent, ethertype);
			*DESC(v, ndesc) = (struct desc){ buf, HDR, 1, (uint16_t)(ndesc + 1) };
			ndesc++;
			for (uint64_t off = 0; off < len; off += TX_CHUNK, ndesc++) {
				uint32_t l = (uint32_t)(len - off < TX_CHUNK ? len - off : TX_CHUNK);
				int last = off + TX_CHUNK >= len;
				*DESC(v, ndesc) = (struct desc){ buf + HDR + off, l, (uint16_t)(last ? 0 : 1),
								 (uint16_t)(last ? 0 : ndesc + 1) };
			}
			post(v, head);
		}
		wr(d, 0x050, 1);
		if (wait_used(v))
			return PROBE_EIO;
	}
	d->tx_frames += count;
	*frames = count;
	*bytes = count * len;
	return PROBE_OK;
}

/* The device asks for an announcement: this driver has nobody to tell; it acknowledges. */
static int answer_announce(struct ndrv *d)
{
	struct vq *v = &d->q[2];
	uint64_t buf = d->area + OFF_CTRL;
	volatile uint8_t *b = (volatile uint8_t *)buf;

	if (!(d->features & F_GUEST_ANNOUNCE) || !(cfg_status(d) & S_ANNOUNCE))
		return 0;
	b[0] = 3;    /* VIRTIO_NET_CTRL_ANNOUNCE */
	b[1] = 0;    /* VIRTIO_NET_CTRL_ANNOUNCE_ACK */
	b[8] = 0xff; /* the ack the device writes */
	*DESC(v, 0) = (struct desc){ buf, 2, 1, 1 };
	*DESC(v, 1) = (struct desc){ buf + 8, 1, 2, 0 };
	post(v, 0);
	wr(d, 0x050, 2);
	if (wait_used(v) || b[8] != 0)
		return -1;
	d->announces++;
	return 0;
}

uint32_t net_recv(mailbox_t *mb, uint64_t buf, uint64_t len, uint64_t post_target, uint64_t max,
		  uint64_t *frames, uint64_t *bytes)
{
	struct ndrv *d = (struct ndrv *)mb->net_area;
	struct vq *v;
	uint64_t out = 0, n = 0;
	int mrg;

	if (!d)
		return PROBE_ENOTUP;
	v = &d->q[0];
	mrg = (d->features & F_MRG_RXBUF) != 0;
	if (answer_announce(d))
		return PROBE_EIO;
	while (v->last_used != USED_IDX(v) && (!max || n < max)) {
		uint16_t ready = (uint16_t)(USED_IDX(v) - v->last_used), nb = 1;
		uint32_t id0, total = 0;
		uint8_t *first;

		barrier();
		id0 = USED_ELEM(v, v->last_used)[0];
		if (id0 >= QN)
			return PROBE_EIO;
		first = (uint8_t *)(d->area + OFF_RX + (uint64_t)id0 * SLOT);
		if (mrg)
			nb = *(volatile uint16_t *)(first + 10);
		if (nb == 0 || nb > QN)
			return PROBE_EIO;
		if (ready < nb)
			break; /* the device publishes a frame's buffers together: not there yet */
		for (uint16_t k = 0; k < nb; k++)
			total += USED_ELEM(v, (uint16_t)(v->last_used + k))[1];
		if (total < HDR)
			return PROBE_EIO;
		if (out + 8 + ((total + 7) & ~7ULL) > len)
			break; /* the next call takes it */
		struct probe_net_rec *rec = (struct probe_net_rec *)(buf + out);
		uint8_t *dst = (uint8_t *)(buf + out + 8);
		rec->len = total - HDR;
		rec->nbufs = nb;
		for (uint16_t k = 0; k < nb; k++) {
			uint32_t id = USED_ELEM(v, (uint16_t)(v->last_used + k))[0];
			uint32_t l = USED_ELEM(v, (uint16_t)(v->last_used + k))[1];
			if (id >= QN || l > d->rxsize)
				return PROBE_EIO;
			copy(dst, (const uint8_t *)(d->area + OFF_RX + (uint64_t)id * SLOT), l);
			dst += l;
			d->rx_free[d->nrx_free++] = (uint16_t)id;
		}
		while ((uint64_t)(dst - (uint8_t *)buf) & 7)
			*dst++ = 0;
		out = (uint64_t)(dst - (uint8_t *)buf);
		v->last_used = (uint16_t)(v->last_used + nb);
		d->rx_posted -= nb;
		n++;
	}
	d->rx_frames += n;
	rx_fill(d, post_target);
	*frames = n;
	*bytes = out;
	return PROBE_OK;
}

uint32_t net_stats(mailbox_t *mb, uint64_t *status, uint64_t *counts)
{
	struct ndrv *d = (struct ndrv *)mb->net_area;

	if (!d)
		return PROBE_ENOTUP;
	*status = cfg_status(d) | (d->announces << 16);
	*counts = (d->rx_frames & 0xffffffffULL) | (d->tx_frames << 32);
	return PROBE_OK;
}
