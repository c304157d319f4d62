/* virtio-vsock wire format (virtio 1.x section 5.10): packet header, ops, flags, events. */
#ifndef FORKVM_VSOCK_PROTO_H
#define FORKVM_VSOCK_PROTO_H

#include <stdint.h>

#define VIRTIO_ID_VSOCK 19
#define VSOCK_HOST_CID 2
#define VSOCK_DEFAULT_CID 3
#define VSOCK_TYPE_STREAM 1

enum vsock_op {
	VSOCK_OP_INVALID = 0,
	VSOCK_OP_REQUEST = 1,
	VSOCK_OP_RESPONSE = 2,
	VSOCK_OP_RST = 3,
	VSOCK_OP_SHUTDOWN = 4,
	VSOCK_OP_RW = 5,
	VSOCK_OP_CREDIT_UPDATE = 6,
	VSOCK_OP_CREDIT_REQUEST = 7,
};

#define VSOCK_SHUTDOWN_RCV 1
#define VSOCK_SHUTDOWN_SEND 2
#define VSOCK_EVENT_TRANSPORT_RESET 0

/* Queues: rx (device → driver), tx (driver → device), event. */
#define VSOCK_QUEUE_RX 0
#define VSOCK_QUEUE_TX 1
#define VSOCK_QUEUE_EVENT 2

struct vsock_hdr {
	uint64_t src_cid;
	uint64_t dst_cid;
	uint32_t src_port;
	uint32_t dst_port;
	uint32_t len;
	uint16_t type;
	uint16_t op;
	uint32_t flags;
	uint32_t buf_alloc;
	uint32_t fwd_cnt;
} __attribute__((packed));

_Static_assert(sizeof(struct vsock_hdr) == 44, "virtio_vsock_hdr is 44 bytes");

/* Bytes the peer can still accept: its buffer minus what we sent and it has not consumed. */
static inline uint32_t vsock_peer_credit(uint32_t peer_buf_alloc, uint32_t peer_fwd_cnt,
					 uint32_t tx_cnt)
{
	uint32_t in_flight = tx_cnt - peer_fwd_cnt; /* wraps like the counters do */

	return in_flight >= peer_buf_alloc ? 0 : peer_buf_alloc - in_flight;
}

#endif
