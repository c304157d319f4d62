/* The probe guest's ABI, shared by the guest and the VMM: ports, mailbox, pattern and hash. */
#ifndef FORKVM_PROBE_ABI_H
#define FORKVM_PROBE_ABI_H

#include <stdint.h>

#define PROBE_MAGIC 0x45424f5250564b46ULL /* "FKVPROBE" */
#define PROBE_ABI_VERSION 4 /* 2: vsock commands and the vsock_* mailbox fields; 3: blk_io;
			     * 4: net_up/net_send/net_recv/net_stats and the net_area field */

/* Doorbells: every message costs one exit, whatever its size. */
#define PROBE_PORT_WAIT 0xf00 /* idle: the VMM resumes the vCPU only when a command is posted */
#define PROBE_PORT_DONE 0xf01 /* a result is in the mailbox; the vCPU continues at once */
#define PROBE_PORT_LOG 0xf02  /* mailbox log[] holds log_len bytes of text for the console */

enum probe_cmd {
	PROBE_CMD_NONE = 0,
	PROBE_CMD_PING = 1,	/* result[0] = PROBE_MAGIC ^ arg[0] */
	PROBE_CMD_FILL = 2,	/* arg: gpa, len, seed; words = probe_fill_word(seed, gpa) */
	PROBE_CMD_CHECKSUM = 3, /* arg: gpa, len; result[0] = probe_range_hash() */
	PROBE_CMD_DIRTY = 4,	/* arg: gpa, pages, stride, seed; pages == 0 stops; result[0] = counter */
	PROBE_CMD_COUNTER = 5,	/* result[0] = counter, result[1] = dirty iterations */
	PROBE_CMD_CRASH = 6,	/* execute ud2: with no IDT the VM sees a triple fault (tests) */
	/* arg: port, area gpa (PROBE_VSOCK_AREA bytes of work area), mmio base (0: default).
	 * Drives virtio-mmio + vsock by polling (no interrupts) and echoes every connection
	 * to port; result[0] = guest CID. */
	PROBE_CMD_VSOCK_LISTEN = 7,
	PROBE_CMD_VSOCK_STATS = 8, /* result[0] = connections accepted, result[3] = bytes echoed */
	/* arg: request type, sector, buffer gpa, len, area gpa (PROBE_BLK_AREA bytes), mmio base.
	 * Sets the virtio-blk device at mmio up, runs one request, polls for it (no interrupts);
	 * result[0] = the device's status byte, result[3] = the used length. */
	PROBE_CMD_BLK_IO = 9,
	/* arg: area gpa (PROBE_NET_AREA bytes), mmio base, features to accept (ANDed with the
	 * offered ones; VERSION_1 always), receive buffers to post (0..PROBE_NET_QN), their size
	 * (0: PROBE_NET_RXBUF_DEFAULT). Resets and sets up the virtio-net device (polled, no
	 * interrupts); result[0] = the accepted features, result[3] = the MAC (byte 0 lowest). */
	PROBE_CMD_NET_UP = 10,
	/* arg: count, len (Ethernet frame bytes), seed, ethertype (0: PROBE_NET_ETHERTYPE).
	 * Sends count frames to ff:ff:ff:ff:ff:ff from the NIC's MAC, payload probe_net_word(),
	 * in batches (one notify each) and waits until the device has taken every one;
	 * result[0] = frames, result[3] = frame bytes. */
	PROBE_CMD_NET_SEND = 11,
	/* arg: buf gpa, len (page-aligned range of the work area), receive buffers to keep posted
	 * (0..PROBE_NET_QN), at most this many frames (0: no limit). Answers an announce request
	 * first, then copies every complete received frame into buf as a record (struct
	 * probe_net_rec, the vnet header, the frame, padding to 8 bytes) and re-posts buffers;
	 * never waits. result[0] = frames, result[3] = bytes of buf used. */
	PROBE_CMD_NET_RECV = 12,
	/* result[0] = the config status (bits 0-15) | announces acknowledged << 16;
	 * result[3] = frames received (bits 0-31) | frames sent << 32. */
	PROBE_CMD_NET_STATS = 13,
};

enum probe_status {
	PROBE_OK = 0,
	PROBE_EINVAL = 1, /* unknown command */
	PROBE_ERANGE = 2, /* range outside the work area or not page aligned */
	PROBE_ENODEV = 3, /* no virtio-vsock (virtio-blk) device answers at the MMIO base */
	PROBE_EIO = 4,	  /* the device refused feature negotiation or queue setup */
	PROBE_ENOTUP = 5, /* net_send/net_recv/net_stats before net_up */
};

#define PROBE_VSOCK_AREA (4ULL << 20)
#define PROBE_VSOCK_MMIO_DEFAULT 0xd0000000ULL
#define PROBE_BLK_AREA 16384ULL	/* rings, request header and status of blk_io */
#define PROBE_BLK_MAX_LEN (1ULL << 20)
#define PROBE_VIRTIO_ID_BLOCK 2

#define PROBE_NET_AREA (8ULL << 20)	/* driver state, queues, tx and rx buffers */
#define PROBE_NET_QN 64			/* entries per queue; receive buffers at most */
#define PROBE_NET_RXBUF_DEFAULT 2048ULL
#define PROBE_NET_RXBUF_MIN 64ULL
#define PROBE_NET_RXBUF_MAX 0x11000ULL	/* a 64 KiB frame and its header in one buffer */
#define PROBE_NET_FRAME_MAX 65535ULL
#define PROBE_NET_SEND_MAX (1ULL << 20)	/* frames per net_send */
#define PROBE_NET_ETHERTYPE 0x88b5	/* IEEE local experimental */
#define PROBE_VIRTIO_ID_NET 1

/* One received frame in net_recv's buffer: then the 12-byte vnet header, the frame, and
 * zeros to the next multiple of 8 bytes. */
struct probe_net_rec {
	uint32_t len;		/* frame bytes (without the vnet header) */
	uint32_t nbufs;		/* receive buffers it came in (num_buffers) */
};

#define PROBE_MAX_REGIONS 2
#define PROBE_LOG_MAX 1024

/*
 * One 4 KiB page per vCPU at LAYOUT_PROBE_MAILBOX + id * 4096. The host writes the command,
 * then bumps cmd_seq; the guest writes results, then sets done_seq = cmd_seq and rings DONE.
 * x86 keeps stores in order, so a compiler barrier on each side is enough.
 */
struct probe_mailbox {
	uint64_t magic;	       /* guest writes PROBE_MAGIC once it runs */
	uint32_t abi_version;
	uint32_t vcpu_id;
	uint64_t cmd_seq;
	uint64_t done_seq;
	uint32_t cmd;
	uint32_t status;
	uint64_t arg[6];
	uint64_t result[4];
	uint64_t counter;      /* pages of work done (fill, checksum, dirty) + commands handled */
	uint64_t dirty_iters;  /* dirty iterations since the last dirty start */
	uint32_t dirty_active;
	uint32_t nregions;     /* RAM regions, written by the VMM before the vCPU starts */
	struct {
		uint64_t start, end;
	} work[PROBE_MAX_REGIONS]; /* ranges commands may touch */
	uint32_t log_len;
	char log[PROBE_LOG_MAX];
	/* ABI 2, appended: the vsock echo driver (guest-owned once started). */
	uint64_t vsock_area;	/* gpa of the driver's state, queues and buffers; 0 = off */
	uint64_t vsock_accepted;
	uint64_t vsock_echoed;
	/* ABI 4, appended: the virtio-net driver's area (guest-owned once set up); 0 = none. */
	uint64_t net_area;
};

_Static_assert(sizeof(struct probe_mailbox) <= 4096, "mailbox must fit a page");

/* A command range: page aligned, non-empty, inside one work region. Both sides check it. */
static inline int probe_range_ok(const volatile struct probe_mailbox *mb, uint64_t gpa,
				 uint64_t len)
{
	if (len == 0 || ((gpa | len) & 4095) || gpa + len < gpa)
		return 0;
	for (uint32_t i = 0; i < mb->nregions && i < PROBE_MAX_REGIONS; i++)
		if (gpa >= mb->work[i].start && gpa + len <= mb->work[i].end)
			return 1;
	return 0;
}

/* blk_io: the driver area and the buffer (page aligned, when len > 0) inside the work area. */
static inline int probe_blk_args_ok(const volatile struct probe_mailbox *mb, uint64_t buf,
				    uint64_t len, uint64_t area)
{
	if (len > PROBE_BLK_MAX_LEN || !probe_range_ok(mb, area, PROBE_BLK_AREA))
		return 0;
	return len == 0 || probe_range_ok(mb, buf, (len + 4095) & ~4095ULL);
}

/* net_up: the area page aligned inside the work area, sane buffer counts and sizes. */
static inline int probe_net_up_ok(const volatile struct probe_mailbox *mb, uint64_t area,
				  uint64_t nrx, uint64_t rxsize)
{
	return !(area & 4095) && probe_range_ok(mb, area, PROBE_NET_AREA) && nrx <= PROBE_NET_QN &&
	       (rxsize == 0 || (rxsize >= PROBE_NET_RXBUF_MIN && rxsize <= PROBE_NET_RXBUF_MAX));
}

/* The bytes a dirty(gpa, pages, stride) run touches, or 0 if the arguments are invalid. */
static inline uint64_t probe_dirty_span(uint64_t pages, uint64_t stride)
{
	if (pages == 0 || stride == 0 || pages > (1ULL << 40) / stride)
		return 0;
	return ((pages - 1) * stride + 1) * 4096;
}

/* Deterministic fill: each 8-byte word depends on the seed and its guest-physical address. */
static inline uint64_t probe_fill_word(uint64_t seed, uint64_t gpa)
{
	return (gpa ^ seed) * 0x9e3779b97f4a7c15ULL + seed;
}

static inline uint64_t probe_mix64(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdULL;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ULL;
	x ^= x >> 33;
	return x;
}

/* Hash of one 4 KiB page; four independent lanes keep the multiplier pipeline busy. */
static inline uint64_t probe_page_hash(const uint64_t *w)
{
	uint64_t a = 1, b = 2, c = 3, d = 4;

	for (int i = 0; i < 512; i += 4) {
		a = (a ^ w[i]) * 0x100000001b3ULL;
		b = (b ^ w[i + 1]) * 0x100000001b3ULL;
		c = (c ^ w[i + 2]) * 0x100000001b3ULL;
		d = (d ^ w[i + 3]) * 0x100000001b3ULL;
	}
	return probe_mix64(a ^ probe_mix64(b ^ probe_mix64(c ^ probe_mix64(d))));
}

/* Hash of consecutive pages: chains page hashes so order matters. */
static inline uint64_t probe_hash_chain(uint64_t h, uint64_t page_hash)
{
	return probe_mix64(h ^ page_hash) + 0x9e3779b97f4a7c15ULL;
}

#define PROBE_HASH_INIT 0x6a09e667f3bcc908ULL

/* The dirty workload's page: word 0 is the stamp (counter before the write), word 1 the seed. */
static inline uint64_t probe_dirty_word(uint64_t seed, uint64_t stamp, uint64_t idx)
{
	return probe_mix64(seed + stamp * 512 + idx);
}

/* Word k of the payload of frame i of a net_send with seed: the frame's bytes after the
 * Ethernet header are these words' little-endian bytes, the last one cut to fit. */
static inline uint64_t probe_net_word(uint64_t seed, uint64_t i, uint64_t k)
{
	return probe_mix64(seed + (i << 32) + k);
}

#endif
