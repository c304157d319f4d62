/* vsock tx queue: packets from the guest — handshake answers, data toward the host, credit. */
#include "devices/vsock_impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "util/log.h"

#define HDR_LEN sizeof(struct vsock_hdr)

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
