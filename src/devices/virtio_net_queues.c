/* virtio-net queues: guest frames to the TAP (tx), TAP frames into guest buffers (rx, merged
 * over several with MRG_RXBUF), the control queue's announce acknowledgement. */
#include "devices/virtio_net_impl.h"

#include <errno.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "util/log.h"
#include "core/vm.h"

void net_malformed(struct virtio_net *n, int queue, uint16_t head, const char *why)
{
	static const char *const names[] = { "rx", "tx", "control" };

	log_warn("virtio-net slot %d: %s queue, chain at descriptor %u: %s; device needs reset",
		 n->mmio->slot, names[queue], head, why);
	n->stats.malformed++;
	n->mmio->r.status |= VIRTIO_STATUS_NEEDS_RESET;
	virtio_mmio_signal(n->mmio, VIRTIO_INT_CONFIG);
}

static uint64_t features(const struct virtio_net *n)
{
	return n->mmio->r.driver_features;
}

/* The control queue: VIRTIO_NET_CTRL_ANNOUNCE_ACK clears the announce request; every other
 * command (none is offered) is answered VIRTIO_NET_ERR. */
static bool process_ctrl(struct virtio_net *n)
{
	struct virtq *q = &n->mmio->vq[VIRTIO_NET_Q_CTRL];
	struct virtq_chain c;
	uint8_t cmd[2], ack;
	bool used = false;
	int r;

	c.head = 0; /* named in the message if the ring itself is broken */
	if (!(features(n) & VIRTIO_NET_F_CTRL_VQ) || !q->s.ready)
		return false;
	while ((r = virtq_pop(q, &c)) != 0) {
		if (r < 0 || c.rd_len < sizeof(cmd) || c.wr_len < 1) {
			net_malformed(n, VIRTIO_NET_Q_CTRL, c.head, r < 0 ? "malformed descriptor chain" :
				      "no command header or no room for the ack");
			return used;
		}
		virtq_chain_read(&c, 0, cmd, sizeof(cmd));
		ack = VIRTIO_NET_ERR;
		if (cmd[0] == VIRTIO_NET_CTRL_ANNOUNCE && cmd[1] == VIRTIO_NET_CTRL_ANNOUNCE_ACK &&
		    (features(n) & VIRTIO_NET_F_GUEST_ANNOUNCE)) {
			if (n->status & VIRTIO_NET_S_ANNOUNCE) {
				n->status &= (uint16_t)~VIRTIO_NET_S_ANNOUNCE;
				n->mmio->r.config_gen++;
				n->stats.announces++;
			}
			ack = VIRTIO_NET_OK;
		}
		n->stats.ctrl_cmds++;
		virtq_chain_write(&c, c.wr_len - 1, &ack, 1);
		virtq_push(q, c.head, 1);
		used = true;
	}
	return used;
}

/* One guest frame, header and all, straight from its buffers to the TAP. */
static void send_frame(struct virtio_net *n, const struct virtq_chain *c)
{
	struct iovec iov[VIRTQ_MAX_IOV];
	ssize_t w;

	if (n->tap_fd < 0) {
		n->stats.tx_dropped++; /* detached: the link is down, like a cable pulled */
		return;
	}
	for (int i = 0; i < c->nrd; i++)
		iov[i] = (struct iovec){ c->rd[i].base, c->rd[i].len };
	do
		w = writev(n->tap_fd, iov, c->nrd);
	while (w < 0 && errno == EINTR);
	if (w >= 0) {
		n->stats.tx_frames++;
		n->stats.tx_bytes += c->rd_len - VIRTIO_NET_HDR_LEN;
		return;
	}
	if (errno == EAGAIN) {
		n->stats.tx_dropped++; /* the host side is full: a NIC drops too */
		return;
	}
	if (errno == EBADFD || errno == ENXIO || errno == ENODEV) {
		net_detach(n, strerror(errno));
		n->stats.tx_dropped++;
		return;
	}
	/* The TAP refused the frame (a header it does not take): the guest's frame is lost. */
	n->stats.tx_errors++;
	if (!n->warned_tx_error)
		log_warn("virtio-net: TAP %s refused a %llu-byte frame from the guest: %s (logged once)",
			 n->ifname, (unsigned long long)c->rd_len, strerror(errno));
	n->warned_tx_error = true;
}

/* Transmit: up to NET_BUDGET chains, returned together. */
static bool process_tx(struct virtio_net *n)
{
	struct virtq *q = &n->mmio->vq[VIRTIO_NET_Q_TX];
	struct virtq_chain c;
	uint16_t done = 0;
	int r = 0;

	c.head = 0; /* named in the message if the ring itself is broken */
	n->tx_more = false;
	if (!q->s.ready)
		return false;
	while (done < NET_BUDGET && (r = virtq_pop(q, &c)) > 0) {
		if (c.nwr || c.rd_len < VIRTIO_NET_HDR_LEN + ETH_HEADER_LEN) {
			net_malformed(n, VIRTIO_NET_Q_TX, c.head, c.nwr ? "device-writable buffer in a "
				      "transmit chain" : "shorter than a vnet header and an Ethernet header");
			break;
		}
		send_frame(n, &c);
		virtq_fill(q, done++, c.head, 0);
	}
	if (r < 0)
		net_malformed(n, VIRTIO_NET_Q_TX, c.head, "malformed descriptor chain");
	if (done)
		virtq_flush(q, done);
	n->tx_more = done == NET_BUDGET;
	return done > 0;
}

/* A frame from the TAP as the driver may see it: offloads it did not accept never reach it. */
static bool rx_header_ok(struct virtio_net *n)
{
	struct virtio_net_hdr_v1 *h = (struct virtio_net_hdr_v1 *)n->frame;
	uint64_t f = features(n);
	uint8_t gso = h->gso_type & (uint8_t)~VIRTIO_NET_HDR_GSO_ECN;

	if (!(f & VIRTIO_NET_F_GUEST_CSUM)) {
		if (h->flags & VIRTIO_NET_HDR_F_NEEDS_CSUM)
			return false;
		h->flags = 0; /* DATA_VALID only with GUEST_CSUM */
	}
	if ((h->gso_type & VIRTIO_NET_HDR_GSO_ECN) && !(f & VIRTIO_NET_F_GUEST_ECN))
		return false;
	return gso == VIRTIO_NET_HDR_GSO_NONE ||
	       (gso == VIRTIO_NET_HDR_GSO_TCPV4 && (f & VIRTIO_NET_F_GUEST_TSO4)) ||
	       (gso == VIRTIO_NET_HDR_GSO_TCPV6 && (f & VIRTIO_NET_F_GUEST_TSO6));
}

/* A receive chain the driver may post: writable only, room for at least the header. */
static bool rx_chain_ok(struct virtio_net *n, int r, const struct virtq_chain *c)
{
	if (r < 0)
		net_malformed(n, VIRTIO_NET_Q_RX, c->head, "malformed descriptor chain");
	else if (c->nrd || c->wr_len < VIRTIO_NET_HDR_LEN)
		net_malformed(n, VIRTIO_NET_Q_RX, c->head, c->nrd ? "device-readable buffer in a "
			      "receive chain" : "receive buffer smaller than the vnet header");
	else
		return true;
	return false;
}

/*
 * The pending frame into the guest's receive buffers: one chain, or as many as it takes with
 * MRG_RXBUF (num_buffers in the header, all of them published with one used-index store, as
 * the driver reads them together). 1: delivered or dropped; 0: not enough buffers yet (the
 * frame stays, nothing is consumed); -1: a malformed chain (device needs reset).
 */
static int deliver_frame(struct virtio_net *n)
{
	struct virtq *q = &n->mmio->vq[VIRTIO_NET_Q_RX];
	struct virtio_net_hdr_v1 *h = (struct virtio_net_hdr_v1 *)n->frame;
	bool mrg = features(n) & VIRTIO_NET_F_MRG_RXBUF;
	uint32_t len = n->frame_len, first_len, off;
	struct virtq_chain first, c;
	uint16_t k = 1;
	int r;

	first.head = c.head = 0; /* named in the message if the ring itself is broken */
	r = virtq_pop(q, &first);
	if (r == 0)
		return 0;
	if (!rx_chain_ok(n, r, &first))
		return -1;
	first_len = first.wr_len < len ? (uint32_t)first.wr_len : len;
	if (!mrg && first_len < len) {
		/* Without merging a buffer holds a whole frame (virtio 1.x 5.1.6.3.1). */
		virtq_unpop(q);
		if (!n->warned_rx_small)
			log_warn("virtio-net: a %u-byte frame does not fit the guest's %llu-byte receive "
				 "buffer; dropped (logged once)", len - VIRTIO_NET_HDR_LEN,
				 (unsigned long long)first.wr_len);
		n->warned_rx_small = true;
		n->stats.rx_dropped++;
		n->frame_len = 0;
		return 1;
	}
	for (off = first_len; off < len; k++) {
		uint32_t take;

		r = virtq_pop(q, &c);
		if (r == 0) {
			virtq_unpop_n(q, k);
			if (k < q->s.num)
				return 0; /* wait for the guest's next buffers */
			n->stats.rx_dropped++; /* the whole ring cannot hold it */
			n->frame_len = 0;
			return 1;
		}
		if (!rx_chain_ok(n, r, &c))
			return -1;
		take = c.wr_len < len - off ? (uint32_t)c.wr_len : len - off;
		virtq_chain_write(&c, 0, n->frame + off, take);
		n->heads[k] = c.head;
		n->lens[k] = take;
		off += take;
	}
	h->num_buffers = k;
	virtq_chain_write(&first, 0, n->frame, first_len);
	n->heads[0] = first.head;
	n->lens[0] = first_len;
	for (uint16_t i = 0; i < k; i++)
		virtq_fill(q, i, n->heads[i], n->lens[i]);
	virtq_flush(q, k);
	n->stats.rx_frames++;
	n->stats.rx_bytes += len - VIRTIO_NET_HDR_LEN;
	n->frame_len = 0;
	return 1;
}

/* Read one frame from the TAP into the frame buffer: 1, 0 when there is none, -1 detached. */
static int read_frame(struct virtio_net *n)
{
	ssize_t r;

	do
		r = read(n->tap_fd, n->frame, NET_FRAME_BUF);
	while (r < 0 && errno == EINTR);
	if (r < 0 && errno == EAGAIN)
		return 0;
	if (r < 0) {
		net_detach(n, strerror(errno));
		return -1;
	}
	if (r < VIRTIO_NET_HDR_LEN + ETH_HEADER_LEN || r == NET_FRAME_BUF || !rx_header_ok(n)) {
		if (!n->warned_rx_error)
			log_warn("virtio-net: TAP %s gave a %zd-byte frame the guest cannot take (short, "
				 "cut off or an offload it did not accept); dropped (logged once)",
				 n->ifname, r);
		n->warned_rx_error = true;
		n->stats.rx_dropped++;
		return 1;
	}
	n->frame_len = (uint32_t)r;
	return 1;
}

/* Receive: up to NET_BUDGET frames; stops (and stops watching the TAP) without buffers. */
static bool process_rx(struct virtio_net *n)
{
	struct virtq *q = &n->mmio->vq[VIRTIO_NET_Q_RX];
	bool used = false;

	if (!q->s.ready || n->tap_fd < 0 || n->rx_starved)
		return false;
	for (int budget = NET_BUDGET; budget > 0; budget--) {
		int d;

		if (!n->frame_len) {
			int r = read_frame(n);
			if (r <= 0)
				break;
			if (!n->frame_len)
				continue; /* dropped */
		}
		d = deliver_frame(n);
		if (d < 0)
			break;
		if (d == 0) {
			n->rx_starved = true; /* the next rx notification lifts it */
			break;
		}
		used = true;
	}
	return used;
}

void net_run_queues(struct virtio_net *n)
{
	struct virtio_mmio *m = n->mmio;
	bool ctrl, tx, rx;

	n->tx_more = false; /* process_tx sets it again; never left set for a stopped device */
	if (!virtio_mmio_driver_ok(m)) {
		n->config_event = false; /* a driver reads the status when it starts */
		return;
	}
	if (n->config_event) {
		n->config_event = false;
		virtio_mmio_signal(m, VIRTIO_INT_CONFIG);
	}
	ctrl = process_ctrl(n) && virtq_wants_interrupt(&m->vq[VIRTIO_NET_Q_CTRL]);
	tx = virtio_mmio_driver_ok(m) && process_tx(n) && virtq_wants_interrupt(&m->vq[VIRTIO_NET_Q_TX]);
	rx = virtio_mmio_driver_ok(m) && process_rx(n) && virtq_wants_interrupt(&m->vq[VIRTIO_NET_Q_RX]);
	if (ctrl || tx || rx)
		virtio_mmio_signal(m, VIRTIO_INT_USED);
}
