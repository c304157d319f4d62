/* vsock queues: packets from the guest (tx) and packets to it (rx), with credit both ways. */
#include "devices/vsock_impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "core/log.h"

#define HDR_LEN sizeof(struct vsock_hdr)
#define MAX_PAYLOAD (64u << 10)

void vsock_queue_rst(struct vsock *v, uint32_t local_port, uint32_t peer_port)
{
	if (v->nrst == VSOCK_MAX_ORPHAN_RST)
		return; /* the guest's own timeout covers the rest */
	v->rst[v->nrst].local_port = local_port;
	v->rst[v->nrst].peer_port = peer_port;
	v->nrst++;
}

static void conn_open(struct vsock *v, struct vsock_conn *c)
{
	char line[32];
	int n = snprintf(line, sizeof(line), "OK %u\n", c->local_port);

	c->buf = malloc(VSOCK_BUF_ALLOC);
	if (!c->buf || send(c->fd, line, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT) != n) {
		c->send_rst = true; /* out of memory or the client is gone */
		return;
	}
	c->state = VC_OPEN;
	v->stats.conns_accepted++;
}

/* Guest bytes for the host client: into the ring (the guest must respect our credit). */
static void conn_rx_data(struct vsock *v, struct vsock_conn *c, const struct virtq_chain *ch,
			 uint32_t len)
{
	uint32_t tail, first;

	if (c->state != VC_OPEN || c->fd < 0 || c->send_rst)
		return;
	if (len > VSOCK_BUF_ALLOC - c->len) {
		log_warn("vsock: guest port %u sent %u bytes beyond its credit; resetting",
			 c->peer_port, len - (VSOCK_BUF_ALLOC - c->len));
		c->send_rst = true;
		return;
	}
	tail = (c->head + c->len) % VSOCK_BUF_ALLOC;
	first = VSOCK_BUF_ALLOC - tail < len ? VSOCK_BUF_ALLOC - tail : len;
	virtq_chain_read(ch, HDR_LEN, c->buf + tail, first);
	virtq_chain_read(ch, HDR_LEN + first, c->buf, len - first);
	c->len += len;
	vsock_conn_flush(v, c);
}

static void handle_tx_packet(struct vsock *v, const struct virtq_chain *ch)
{
	struct vsock_hdr h;
	struct vsock_conn *c;
	uint32_t len;

	if (virtq_chain_read(ch, 0, &h, HDR_LEN) < HDR_LEN)
		return;
	if (h.src_cid != v->cid || h.dst_cid != VSOCK_HOST_CID)
		return; /* not for us: drop, as the spec says for a wrong CID */
	c = h.type == VSOCK_TYPE_STREAM ? vsock_conn_find(v, h.dst_port, h.src_port) : NULL;
	if (!c) {
		/* Guest-initiated connections (REQUEST to the host) are not offered: refuse. */
		if (h.op != VSOCK_OP_RST)
			vsock_queue_rst(v, h.dst_port, h.src_port);
		return;
	}
	c->peer_buf_alloc = h.buf_alloc;
	c->peer_fwd_cnt = h.fwd_cnt;
	len = h.len < ch->rd_len - HDR_LEN ? h.len : (uint32_t)(ch->rd_len - HDR_LEN);
	switch (h.op) {
	case VSOCK_OP_RESPONSE:
		if (c->state == VC_REQUESTED && c->fd >= 0)
			conn_open(v, c);
		else
			c->send_rst = true;
		break;
	case VSOCK_OP_RST:
		if (c->state == VC_REQUESTED)
			v->stats.conns_refused++; /* nobody listens: the client sees EOF, no OK */
		else
			vsock_conn_flush(v, c);
		vsock_conn_free(v, c);
		break;
	case VSOCK_OP_SHUTDOWN:
		c->shut_wr_pending = (h.flags & VSOCK_SHUTDOWN_SEND) != 0;
		vsock_conn_flush(v, c);
		if ((h.flags & (VSOCK_SHUTDOWN_SEND | VSOCK_SHUTDOWN_RCV)) ==
		    (VSOCK_SHUTDOWN_SEND | VSOCK_SHUTDOWN_RCV))
			c->send_rst = true; /* fully closed: finish with RST, then forget it */
		break;
	case VSOCK_OP_RW:
		conn_rx_data(v, c, ch, len);
		break;
	case VSOCK_OP_CREDIT_REQUEST:
		c->send_credit = true;
		break;
	default: /* CREDIT_UPDATE: the header fields above were all it carried */
		break;
	}
}

void vsock_process_tx(struct vsock *v, bool *used)
{
	struct virtq *q = &v->mmio->vq[VSOCK_QUEUE_TX];
	struct virtq_chain ch;
	int r;

	while ((r = virtq_pop(q, &ch)) != 0) {
		if (r < 0) {
			log_warn("vsock: malformed tx descriptor chain (head %u); device needs reset",
				 ch.head);
			v->mmio->r.status |= VIRTIO_STATUS_NEEDS_RESET;
			return;
		}
		handle_tx_packet(v, &ch);
		virtq_push(q, ch.head, 0);
		v->stats.pkts_tx++;
		*used = true;
	}
}

static void fill_hdr(struct vsock *v, struct vsock_conn *c, struct vsock_hdr *h, uint16_t op,
		     uint32_t local_port, uint32_t peer_port)
{
	*h = (struct vsock_hdr){ .src_cid = VSOCK_HOST_CID, .dst_cid = v->cid,
				 .src_port = local_port, .dst_port = peer_port,
				 .type = VSOCK_TYPE_STREAM, .op = op };
	if (c) {
		h->buf_alloc = VSOCK_BUF_ALLOC;
		h->fwd_cnt = c->fwd_cnt;
		c->fwd_sent = c->fwd_cnt; /* every packet carries our credit */
	}
}

/* A header-only packet; false when the guest has no receive buffer. */
static bool send_ctrl(struct vsock *v, struct vsock_conn *c, uint16_t op, uint32_t flags,
		      uint32_t local_port, uint32_t peer_port, bool *used)
{
	struct virtq *q = &v->mmio->vq[VSOCK_QUEUE_RX];
	struct virtq_chain ch;
	struct vsock_hdr h;
	int r = virtq_pop(q, &ch);

	if (r <= 0 || ch.wr_len < HDR_LEN) {
		if (r > 0)
			virtq_push(q, ch.head, 0); /* too small to be useful: hand it back */
		v->rx_starved = true;
		return false;
	}
	fill_hdr(v, c, &h, op, local_port, peer_port);
	h.flags = flags;
	virtq_chain_write(&ch, 0, &h, HDR_LEN);
	virtq_push(q, ch.head, HDR_LEN);
	v->stats.pkts_rx++;
	*used = true;
	return true;
}

/* Host client bytes straight from the socket into one guest receive buffer. */
static bool send_data(struct vsock *v, struct vsock_conn *c, bool *used)
{
	struct virtq *q = &v->mmio->vq[VSOCK_QUEUE_RX];
	struct iovec iov[VIRTQ_MAX_IOV];
	uint32_t room = vsock_conn_credit(c), skip = HDR_LEN;
	struct virtq_chain ch;
	struct vsock_hdr h;
	int niov = 0;
	ssize_t n;

	if (room == 0 || c->eof)
		return false;
	if (virtq_pop(q, &ch) <= 0) {
		v->rx_starved = true;
		return false;
	}
	room = room < MAX_PAYLOAD ? room : MAX_PAYLOAD;
	for (int i = 0; i < ch.nwr && room; i++) {
		uint32_t l = ch.wr[i].len;
		if (skip >= l) {
			skip -= l;
			continue;
		}
		l -= skip;
		l = l < room ? l : room;
		iov[niov++] = (struct iovec){ ch.wr[i].base + skip, l };
		room -= l;
		skip = 0;
	}
	n = niov ? readv(c->fd, iov, niov) : -1;
	if (n <= 0) {
		virtq_unpop(q);
		if (n == 0 || (errno != EAGAIN && errno != EINTR && niov)) {
			c->eof = true; /* the client closed: tell the guest, wait for its RST */
			c->send_shutdown = true;
		}
		return false;
	}
	fill_hdr(v, c, &h, VSOCK_OP_RW, c->local_port, c->peer_port);
	h.len = (uint32_t)n;
	virtq_chain_write(&ch, 0, &h, HDR_LEN);
	virtq_push(q, ch.head, (uint32_t)(HDR_LEN + (size_t)n));
	c->tx_cnt += (uint32_t)n;
	v->stats.pkts_rx++;
	v->stats.bytes_to_guest += (uint64_t)n;
	*used = true;
	return true;
}

/* Control packets first (they unblock the peer), then one data packet per connection per
 * round so concurrent connections share the receive buffers. */
void vsock_deliver_rx(struct vsock *v, bool *used)
{
	bool progress = true;

	if (!v->mmio->vq[VSOCK_QUEUE_RX].s.ready)
		return;
	while (v->nrst) {
		if (!send_ctrl(v, NULL, VSOCK_OP_RST, 0, v->rst[v->nrst - 1].local_port,
			       v->rst[v->nrst - 1].peer_port, used))
			return;
		v->nrst--;
	}
	while (progress && !v->rx_starved) {
		progress = false;
		for (int k = 0; k < VSOCK_MAX_CONNS && !v->rx_starved; k++) {
			struct vsock_conn *c = v->conns[(v->rr + k) % VSOCK_MAX_CONNS];
			if (!c || c->state == VC_LINE)
				continue;
			if (c->send_request) {
				if (!send_ctrl(v, c, VSOCK_OP_REQUEST, 0, c->local_port, c->peer_port, used))
					return;
				c->send_request = false;
			}
			if (c->send_rst) {
				if (send_ctrl(v, c, VSOCK_OP_RST, 0, c->local_port, c->peer_port, used))
					vsock_conn_free(v, c);
				continue;
			}
			if (c->send_shutdown) {
				if (!send_ctrl(v, c, VSOCK_OP_SHUTDOWN, VSOCK_SHUTDOWN_RCV | VSOCK_SHUTDOWN_SEND,
					       c->local_port, c->peer_port, used))
					return;
				c->send_shutdown = false;
			}
			if (c->send_credit) {
				if (!send_ctrl(v, c, VSOCK_OP_CREDIT_UPDATE, 0, c->local_port, c->peer_port, used))
					return;
				c->send_credit = false;
			}
			if (c->state == VC_OPEN && c->fd >= 0 && send_data(v, c, used))
				progress = true;
		}
		v->rr = (v->rr + 1) % VSOCK_MAX_CONNS;
	}
}

void vsock_deliver_events(struct vsock *v, bool *used)
{
	struct virtq *q = &v->mmio->vq[VSOCK_QUEUE_EVENT];
	struct virtq_chain ch;
	uint32_t id = VSOCK_EVENT_TRANSPORT_RESET;

	if (!v->reset_event_pending || virtq_pop(q, &ch) <= 0)
		return;
	virtq_chain_write(&ch, 0, &id, sizeof(id));
	virtq_push(q, ch.head, sizeof(id));
	v->reset_event_pending = false;
	*used = true;
}
