/* The probe guest's virtio-vsock driver: polled rings, an echo server on one port. */
#ifndef FORKVM_PROBE_VSOCK_DRV_H
#define FORKVM_PROBE_VSOCK_DRV_H

#include "probe_abi.h"

typedef volatile struct probe_mailbox mailbox_t;

/* Negotiate the device at mmio, set up queues in area, listen on port: a PROBE_* status. */
uint32_t vsock_start(mailbox_t *mb, uint64_t port, uint64_t area, uint64_t mmio, uint64_t *cid);
/* One pass over the rings; returns nonzero if it did any work (so the caller does not idle). */
int vsock_poll(mailbox_t *mb);

#endif
