/* virtio-blk over virtio-mmio, backed by a copy-on-write disk (docs/DISK.md). */
#ifndef FORKVM_VIRTIO_BLK_H
#define FORKVM_VIRTIO_BLK_H

#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "devices/virtio_mmio.h"

struct vm;
struct disk;

#define VIRTIO_ID_BLOCK 2
#define VIRTIO_BLK_QUEUE_MAX 256
#define VIRTIO_BLK_ID_BYTES 20
/* Data segments per request the driver is told of (a chain may carry more; at most
 * VIRTQ_MAX_IOV - 1 per direction besides the header or status). */
#define VIRTIO_BLK_SEG_MAX 15

/* Feature bits (virtio 1.x section 5.2.3). */
#define VIRTIO_BLK_F_SEG_MAX (1ULL << 2)
#define VIRTIO_BLK_F_RO (1ULL << 5)
#define VIRTIO_BLK_F_BLK_SIZE (1ULL << 6)
#define VIRTIO_BLK_F_FLUSH (1ULL << 9)
#define VIRTIO_BLK_F_TOPOLOGY (1ULL << 10)

/* Request types and status values. */
enum { VIRTIO_BLK_T_IN = 0, VIRTIO_BLK_T_OUT = 1, VIRTIO_BLK_T_FLUSH = 4,
       VIRTIO_BLK_T_GET_ID = 8 };
enum { VIRTIO_BLK_S_OK = 0, VIRTIO_BLK_S_IOERR = 1, VIRTIO_BLK_S_UNSUPP = 2 };

struct virtio_blk_req_hdr {
	uint32_t type;
	uint32_t ioprio;
	uint64_t sector;
};

struct virtio_blk_stats {
	uint64_t reads, writes, flushes, bytes_read, bytes_written, errors, unsupported;
};

struct virtio_blk {
	struct vm *vm;
	struct virtio_mmio *mmio; /* its lock guards everything below and the disk */
	struct disk *disk;
	char serial[VIRTIO_BLK_ID_BYTES + 1];
	char top_prefix[PATH_MAX]; /* writable tops: PREFIX.ovl, then PREFIX.<n>.ovl */
	unsigned top_gen;
	int captured_layers;	/* sealed layers the last snapshot capture recorded */
	int stop_fd;
	pthread_t thread;
	bool thread_started;
	bool warned_no_status;
	struct virtio_blk_stats stats;
};

/*
 * Put `disk` (taken over, closed by virtio_blk_destroy) in virtio slot `slot` and start its
 * device thread. serial: GET_ID's answer (at most 20 bytes used). top_prefix: where later
 * tops go when a snapshot seals the current one (NULL for a read-only disk).
 */
int virtio_blk_create(struct vm *vm, int slot, struct disk *disk, const char *serial,
		      const char *top_prefix, struct virtio_blk **out);
/* Start the device thread (once; vm_start_devices). */
int virtio_blk_start(struct virtio_blk *b);
/* Stop the thread, flush, close the disk and remove the files it created (run directory). */
void virtio_blk_destroy(struct virtio_blk *b);

/* One popped request (virtio_blk_req.c): run it, write its status; returns the used length. */
uint32_t virtio_blk_request(struct virtio_blk *b, struct virtq_chain *c);
/* Handle every available request (the device thread's work; unit tests call it directly). */
void virtio_blk_process(struct virtio_blk *b);

/*
 * Snapshot capture, VM paused: a top holding data is flushed and sealed, and the disk goes on
 * with a new empty top; captured_layers is then the chain the snapshot records.
 */
int virtio_blk_snapshot_seal(struct virtio_blk *b);
/* After virtio_mmio_restore: run the requests the driver had queued at the snapshot. */
int virtio_blk_restore(struct virtio_blk *b);

void virtio_blk_get_stats(struct virtio_blk *b, struct virtio_blk_stats *out);

#endif
