/* The probe's one-shot virtio-blk driver: one request per command, polled (docs/PROBE.md). */
#ifndef FORKVM_PROBE_BLK_DRV_H
#define FORKVM_PROBE_BLK_DRV_H

#include "probe_abi.h"

/*
 * Set up the virtio-blk device at mmio (reset, VERSION_1 only, queue 0 in area), submit one
 * request (type, sector, len bytes at buf; len 0: no data buffer), poll for its completion.
 * *status = the device's status byte, *used = the used length. PROBE_OK or a probe error.
 */
uint32_t blk_io(uint64_t type, uint64_t sector, uint64_t buf, uint64_t len, uint64_t area,
		uint64_t mmio, uint64_t *status, uint64_t *used);

#endif
