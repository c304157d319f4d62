/* The probe's virtio-net driver: polled, host-driven frames for tests (docs/PROBE.md). */
#ifndef FORKVM_PROBE_NET_DRV_H
#define FORKVM_PROBE_NET_DRV_H

#include "probe_abi.h"

typedef volatile struct probe_mailbox mailbox_t;

/* net_up: reset and set up the device at mmio with its state in area; PROBE_OK or an error. */
uint32_t net_up(mailbox_t *mb, uint64_t area, uint64_t mmio, uint64_t want, uint64_t nrx,
		uint64_t rxsize, uint64_t *features, uint64_t *mac);
/* net_send: count seeded frames of len bytes; *bytes = frame bytes sent. */
uint32_t net_send(mailbox_t *mb, uint64_t count, uint64_t len, uint64_t seed, uint64_t ethertype,
		  uint64_t *frames, uint64_t *bytes);
/* net_recv: received frames into buf as records; buffers re-posted up to `post`. */
uint32_t net_recv(mailbox_t *mb, uint64_t buf, uint64_t len, uint64_t post, uint64_t max,
		  uint64_t *frames, uint64_t *bytes);
/* net_stats: status | announces << 16, rx frames | tx frames << 32. */
uint32_t net_stats(mailbox_t *mb, uint64_t *status, uint64_t *counts);

#endif
