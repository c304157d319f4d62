/* virtio-vsock internals shared by the device, connection and queue files. */
#ifndef FORKVM_VSOCK_IMPL_H
#define FORKVM_VSOCK_IMPL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "devices/virtio_mmio.h"
#include "devices/vsock.h"
#include "devices/vsock_proto.h"
#include "util/evloop.h"

#define VSOCK_MAX_CONNS 64
#define VSOCK_BUF_ALLOC (256u << 10) /* bytes we buffer per connection toward the host */
#define VSOCK_MAX_ORPHAN_RST 32
#define VSOCK_FIRST_HOST_PORT (1u << 30)

enum vsock_conn_state {
	VC_LINE,      /* waiting for "CONNECT <port>\n" from the host client */
	VC_REQUESTED, /* REQUEST queued or sent to the guest, waiting for RESPONSE */
	VC_OPEN,
	VC_CLOSING,   /* fd closed; waiting for the guest's RST so the ports can be reused */
};

struct vsock_conn {
	int fd;
	int id;	   /* index in vsock.conns */
	int ev_id; /* fd in the device thread's loop (-1: not watched) */
	struct vsock *dev;
	enum vsock_conn_state state;
	uint32_t local_port, peer_port;
	char line[40];
	int line_len;
	/* Toward the guest: its buffer space and what it has consumed, what we sent. */
	uint32_t peer_buf_alloc, peer_fwd_cnt, tx_cnt;
	/* Toward the host: a ring of guest bytes not yet written to fd. */
	uint8_t *buf;
	uint32_t head, len;
	uint32_t fwd_cnt, fwd_sent;
	bool send_request, send_credit, send_rst, send_shutdown, shut_wr_pending, eof;
	bool hup; /* no longer watched (a hung-up fd reports EPOLLHUP forever) */
	uint32_t epoll_mask;
};

struct vsock {
	struct vm *vm;
	struct virtio_mmio *mmio; /* its lock guards everything below */
	char path[108];
	uint32_t cid;
	int listen_fd, stop_fd;
	/*
	 * The device thread's loop. Its thread dispatches under the transport lock, and other
	 * threads (reset, restore, destroy) drop connections under that lock too: the slots
	 * change only under it. The stop request is dispatched first, without the lock.
	 */
	struct evloop loop;
	struct vsock_notify { struct vsock *v; int queue; } notify[3];
	bool stopping;
	pthread_t thread;
	bool thread_started;
	struct vsock_conn *conns[VSOCK_MAX_CONNS];
	uint32_t next_port;
	int rr; /* round-robin start for fairness */
	bool rx_starved, reset_event_pending;
	/*
	 * After a transport reset the guest resets every connected socket when its event work
	 * runs, which may be after its rx work accepted a new host connection: that connection
	 * would die silently. So host CONNECTs wait until the guest has handled the event (it
	 * re-posts the event buffer: the event queue's avail index moves) or a bound passes.
	 */
	bool reset_settling;
	uint16_t reset_avail_idx;
	uint64_t reset_deadline_ns;
	int nrst;
	struct { uint32_t local_port, peer_port; } rst[VSOCK_MAX_ORPHAN_RST];
	struct vsock_stats stats;
};

/* vsock_conn.c */
void vsock_accept(void *vsock, uint32_t events);
void vsock_conn_free(struct vsock *v, struct vsock_conn *c);
void vsock_conn_close_all(struct vsock *v);
void vsock_conn_flush(struct vsock *v, struct vsock_conn *c);
void vsock_conn_update_epoll(struct vsock *v, struct vsock_conn *c);
struct vsock_conn *vsock_conn_find(struct vsock *v, uint32_t local_port, uint32_t peer_port);
/* Whether conn c can take more host bytes toward the guest now. */
uint32_t vsock_conn_credit(const struct vsock_conn *c);

/* How long host CONNECTs may wait for the guest to handle a transport reset. A live Linux
 * driver re-posts its event buffer within milliseconds when it gets CPU time; a loaded host
 * (clones starting together, nested or emulated KVM) can delay that by seconds, and a connection
 * let through before then is reset by the guest's late handling. Only a guest that never
 * handles the event waits this long, once. */
#define VSOCK_RESET_SETTLE_NS (30000ULL * 1000 * 1000)

/* vsock_queues.c */
void vsock_process_tx(struct vsock *v, bool *used);
void vsock_deliver_rx(struct vsock *v, bool *used);
void vsock_deliver_events(struct vsock *v, bool *used);
/* Whether host CONNECTs must still wait for the guest to handle a reset (updates the state). */
bool vsock_reset_settling(struct vsock *v);
void vsock_queue_rst(struct vsock *v, uint32_t local_port, uint32_t peer_port);

#endif
