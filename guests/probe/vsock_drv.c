/* Probe vsock driver loop: rx → per-connection ring → tx echo, all by polling the rings. */
#include "vsock_drv_impl.h"

/* Take back tx buffers the device has consumed. */
static void reclaim_tx(struct drv *d)
{
	struct vq *v = &d->q[VSOCK_QUEUE_TX];

	while (v->last_used != USED(v)[1]) {
		barrier();
		d->tx_free[d->ntx_free++] = USED_ELEM(v, v->last_used)[0];
		v->last_used++;
	}
}

/* Queue one packet; false when every tx buffer is in flight. */
static int send_pkt(struct drv *d, struct conn *c, uint16_t op, uint32_t src_port,
		    uint32_t dst_port, const uint8_t *data, uint32_t len)
{
	struct vq *v = &d->q[VSOCK_QUEUE_TX];
	struct vsock_hdr *h;
	uint32_t i;

	if (!d->ntx_free)
		reclaim_tx(d);
	if (!d->ntx_free)
		return 0;
	i = d->tx_free[--d->ntx_free];
	h = (struct vsock_hdr *)(DESC(v, i)->addr);
	zero(h, sizeof(*h));
	h->src_cid = d->cid;
	h->dst_cid = VSOCK_HOST_CID;
	h->src_port = src_port;
	h->dst_port = dst_port;
	h->type = VSOCK_TYPE_STREAM;
	h->op = op;
	h->len = len;
	if (c) {
		h->buf_alloc = RING;
		h->fwd_cnt = c->fwd_cnt;
	}
	if (len)
		copy(h + 1, data, len);
	DESC(v, i)->len = (uint32_t)sizeof(*h) + len;
	DESC(v, i)->flags = 0;
	vq_post(v, (uint16_t)i);
	return 1;
}

/* A control packet that must go out: ring the doorbell until the device frees a buffer. */
static void send_wait(struct drv *d, struct conn *c, uint16_t op, uint32_t src, uint32_t dst)
{
	while (!send_pkt(d, c, op, src, dst, 0, 0)) {
		wr(d, 0x050, VSOCK_QUEUE_TX);
		reclaim_tx(d);
	}
}

static struct conn *find(struct drv *d, uint32_t local_port, uint32_t peer_port)
{
	for (int i = 0; i < NCONN; i++)
		if (d->c[i].used && d->c[i].local_port == local_port && d->c[i].peer_port == peer_port)
			return &d->c[i];
	return 0;
}

static uint8_t *ring_of(struct drv *d, struct conn *c)
{
	return (uint8_t *)(d->q[0].base - OFF_QUEUE(0) + OFF_RING + (uint64_t)(c - d->c) * RING);
}

/* One received packet: connection setup, data into the echo ring, credit, teardown. */
static void handle_rx(mailbox_t *mb, struct drv *d, const struct vsock_hdr *h)
{
	struct conn *c = find(d, h->dst_port, h->src_port);

	if (h->dst_cid != d->cid || h->type != VSOCK_TYPE_STREAM)
		return;
	if (!c) {
		if (h->op == VSOCK_OP_REQUEST && h->dst_port == d->port) {
			for (int i = 0; i < NCONN && !c; i++)
				if (!d->c[i].used)
					c = &d->c[i];
		}
		if (!c) {
			if (h->op != VSOCK_OP_RST) /* nobody listens there, or no room */
				send_wait(d, 0, VSOCK_OP_RST, h->dst_port, h->src_port);
			return;
		}
		*c = (struct conn){ .used = 1, .local_port = h->dst_port, .peer_port = h->src_port };
		c->peer_buf_alloc = h->buf_alloc;
		c->peer_fwd_cnt = h->fwd_cnt;
		send_wait(d, c, VSOCK_OP_RESPONSE, c->local_port, c->peer_port);
		mb->vsock_accepted++;
		return;
	}
	c->peer_buf_alloc = h->buf_alloc;
	c->peer_fwd_cnt = h->fwd_cnt;
	switch (h->op) {
	case VSOCK_OP_RW: {
		uint32_t n = h->len <= RING - c->len ? h->len : RING - c->len; /* host keeps to credit */
		uint32_t tail = (c->head + c->len) % RING, first = RING - tail < n ? RING - tail : n;
		copy(ring_of(d, c) + tail, h + 1, first);
		copy(ring_of(d, c), (const uint8_t *)(h + 1) + first, n - first);
		c->len += n;
		break;
	}
	case VSOCK_OP_CREDIT_REQUEST:
		c->send_credit = 1;
		break;
	case VSOCK_OP_SHUTDOWN:
		c->send_rst = 1;
		break;
	case VSOCK_OP_RST:
		c->used = 0;
		break;
	default:
		break;
	}
}

/* Echo what the ring holds, as far as the host's credit and our tx buffers allow. */
static int echo(mailbox_t *mb, struct drv *d, struct conn *c)
{
	int sent = 0;

	if (c->send_rst) {
		if (send_pkt(d, c, VSOCK_OP_RST, c->local_port, c->peer_port, 0, 0))
			c->used = 0;
		return 1;
	}
	while (c->len) {
		uint32_t credit = vsock_peer_credit(c->peer_buf_alloc, c->peer_fwd_cnt, c->tx_cnt);
		uint32_t n = c->len < PAYLOAD ? c->len : PAYLOAD, first;

		if (n > credit)
			n = credit;
		if (n == 0)
			break;
		/* Send from the ring without wrapping inside one packet. */
		first = RING - c->head;
		if (n > first)
			n = first;
		c->fwd_cnt += n; /* consumed: the packet carries the new count */
		if (!send_pkt(d, c, VSOCK_OP_RW, c->local_port, c->peer_port, ring_of(d, c) + c->head, n)) {
			c->fwd_cnt -= n;
			break;
		}
		c->head = (c->head + n) % RING;
		c->len -= n;
		c->tx_cnt += n;
		mb->vsock_echoed += n;
		sent = 1;
	}
	if (c->send_credit && send_pkt(d, c, VSOCK_OP_CREDIT_UPDATE, c->local_port, c->peer_port, 0, 0)) {
		c->send_credit = 0;
		sent = 1;
	}
	return sent;
}

int vsock_poll(mailbox_t *mb)
{
	struct drv *d = (struct drv *)mb->vsock_area;
	struct vq *rx = &d->q[VSOCK_QUEUE_RX], *tx = &d->q[VSOCK_QUEUE_TX];
	struct vq *ev = &d->q[VSOCK_QUEUE_EVENT];
	uint16_t tx_before = tx->avail_idx, rx_end;
	int work = 0;

	/* The device publishes a transport reset before the packets that follow it: read the
	 * rx index first, then the events, so every packet seen here is seen after its event. */
	rx_end = USED(rx)[1];
	barrier();
	while (ev->last_used != USED(ev)[1]) {
		/* Transport reset (after a restore): every connection is gone. */
		uint32_t id = USED_ELEM(ev, ev->last_used)[0];
		for (int i = 0; i < NCONN; i++)
			d->c[i].used = 0;
		ev->last_used++;
		vq_post(ev, (uint16_t)id);
		wr(d, 0x050, VSOCK_QUEUE_EVENT);
		work = 1;
	}
	while (rx->last_used != rx_end) {
		uint32_t id;

		barrier();
		id = USED_ELEM(rx, rx->last_used)[0];
		handle_rx(mb, d, (const struct vsock_hdr *)(DESC(rx, id)->addr));
		rx->last_used++;
		vq_post(rx, (uint16_t)id); /* reuse the buffer at once */
		work = 1;
	}
	if (work)
		wr(d, 0x050, VSOCK_QUEUE_RX); /* one doorbell for the whole batch */
	for (int i = 0; i < NCONN; i++)
		if (d->c[i].used)
			work |= echo(mb, d, &d->c[i]);
	if (tx->avail_idx != tx_before)
		wr(d, 0x050, VSOCK_QUEUE_TX);
	reclaim_tx(d);
	return work;
}
