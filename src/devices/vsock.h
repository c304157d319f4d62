/* virtio-vsock device; host side is a Unix socket speaking "CONNECT <port>\n" (Firecracker style). */
#ifndef FORKVM_VSOCK_H
#define FORKVM_VSOCK_H

#include <stdint.h>

#include "devices/virtio_mmio.h"

struct vm;
struct vsock;

/* Snapshot image of the device (the transport's registers are SNAP_SEC_VIRTIO_MMIO);
 * connections are not saved. */
struct vsock_state {
	uint64_t cid;
};

/* Put the device in virtio slot `slot`; its host socket is path (made by vsock_start). */
int vsock_create(struct vm *vm, int slot, const char *path, uint32_t cid, struct vsock **out);
/* Listen on the socket path (a stale socket there is replaced) and start the device thread
 * (once; vm_start_devices). Until then nothing is served. */
int vsock_start(struct vsock *v);
/* Stop the device thread, close every connection, remove the socket file. */
void vsock_destroy(struct vsock *v);

void vsock_save(struct vsock *v, struct vsock_state *out);
/* After virtio_mmio_restore: open connections are gone, so a guest whose driver is live gets
 * a transport reset event (its sockets see ECONNRESET, as with Firecracker). */
int vsock_restore(struct vsock *v, const struct vsock_state *in);

struct vsock_stats {
	uint64_t conns_accepted, conns_refused, pkts_rx, pkts_tx, bytes_to_guest, bytes_to_host;
};
void vsock_get_stats(struct vsock *v, struct vsock_stats *out);

#endif
