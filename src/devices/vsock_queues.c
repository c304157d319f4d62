/* vsock rx and event queues: packets to the guest, paced by its credit and receive buffers. */
#include "devices/vsock_impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "util/log.h"
#include "core/vm.h"
#include "util/clock.h"

#define HDR_LEN sizeof(struct vsock_hdr)
#define MAX_PAYLOAD (64u << 10)

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

/* Logged once per process (one VM each): a guest posting such buffers would flood the log. */
static void rx_too_small(uint64_t len)
{
	static bool warned;

	if (warned)
		return;
	warned = true;
	log_warn("vsock: the guest posted a %llu-byte receive buffer, too small for a %zu-byte "
		 "header and data; returning such buffers unused", (unsigned long long)len, HDR_LEN);
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
	/*
	 * A buffer with no room past the header can never carry data. Left in the ring it would
	 * be popped and put back forever while the socket stays readable (a busy loop), so each
	 * one is handed back empty, as send_ctrl does; the ring is finite, so this ends.
	 */
	for (;;) {
		if (virtq_pop(q, &ch) <= 0) {
			v->rx_starved = true;
			return false;
		}
		if (ch.wr_len > HDR_LEN)
			break;
		rx_too_small((uint64_t)ch.wr_len);
		virtq_push(q, ch.head, 0);
		*used = true;
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
	bool progress = true, settling = vsock_reset_settling(v);

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
				if (settling)
					continue; /* after the guest has handled the reset */
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
	v->reset_settling = true;
	v->reset_avail_idx = virtq_avail_idx(q);
	v->reset_deadline_ns = monotonic_ns() + VSOCK_RESET_SETTLE_NS;
	*used = true;
}

bool vsock_reset_settling(struct vsock *v)
{
	if (!v->reset_settling)
		return false;
	if (virtq_avail_idx(&v->mmio->vq[VSOCK_QUEUE_EVENT]) != v->reset_avail_idx) {
		/* the guest handled the event and re-posted its buffer */
		v->reset_settling = false;
		log_info("vsock: the guest handled the transport reset within %llu ms",
			 (unsigned long long)((monotonic_ns() + VSOCK_RESET_SETTLE_NS -
					       v->reset_deadline_ns) / 1000000ULL) + 1);
	} else if (monotonic_ns() >= v->reset_deadline_ns) {
		v->reset_settling = false;
		log_warn("vsock: the guest did not re-post its event buffer within %llu ms of the "
			 "transport reset; letting host connections through",
			 VSOCK_RESET_SETTLE_NS / 1000000ULL);
	}
	return v->reset_settling;
}
