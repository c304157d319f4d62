/* virtio-net over virtio-mmio, backed by a TAP device (docs/NET.md, "Device"). */
#ifndef FORKVM_VIRTIO_NET_H
#define FORKVM_VIRTIO_NET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "devices/virtio_mmio.h"
#include "util/errmsg.h"

struct vm;
struct virtio_net;

#define VIRTIO_ID_NET 1
#define VIRTIO_NET_QUEUE_MAX 256
#define VIRTIO_NET_QUEUES 3 /* receiveq1, transmitq1, controlq */
enum { VIRTIO_NET_Q_RX = 0, VIRTIO_NET_Q_TX = 1, VIRTIO_NET_Q_CTRL = 2 };

/* Feature bits (virtio 1.x section 5.1.3). */
#define VIRTIO_NET_F_CSUM (1ULL << 0)
#define VIRTIO_NET_F_GUEST_CSUM (1ULL << 1)
#define VIRTIO_NET_F_MTU (1ULL << 3)
#define VIRTIO_NET_F_MAC (1ULL << 5)
#define VIRTIO_NET_F_GUEST_TSO4 (1ULL << 7)
#define VIRTIO_NET_F_GUEST_TSO6 (1ULL << 8)
#define VIRTIO_NET_F_GUEST_ECN (1ULL << 9)
#define VIRTIO_NET_F_GUEST_UFO (1ULL << 10)
#define VIRTIO_NET_F_HOST_TSO4 (1ULL << 11)
#define VIRTIO_NET_F_HOST_TSO6 (1ULL << 12)
#define VIRTIO_NET_F_HOST_ECN (1ULL << 13)
#define VIRTIO_NET_F_HOST_UFO (1ULL << 14)
#define VIRTIO_NET_F_MRG_RXBUF (1ULL << 15)
#define VIRTIO_NET_F_STATUS (1ULL << 16)
#define VIRTIO_NET_F_CTRL_VQ (1ULL << 17)
#define VIRTIO_NET_F_GUEST_ANNOUNCE (1ULL << 21)

/* What the device offers (VIRTIO_F_VERSION_1 is added by the transport). */
#define VIRTIO_NET_FEATURES                                                                   \
	(VIRTIO_NET_F_CSUM | VIRTIO_NET_F_GUEST_CSUM | VIRTIO_NET_F_MAC |                    \
	 VIRTIO_NET_F_GUEST_TSO4 | VIRTIO_NET_F_GUEST_TSO6 | VIRTIO_NET_F_GUEST_ECN |        \
	 VIRTIO_NET_F_HOST_TSO4 | VIRTIO_NET_F_HOST_TSO6 | VIRTIO_NET_F_HOST_ECN |           \
	 VIRTIO_NET_F_MRG_RXBUF | VIRTIO_NET_F_STATUS | VIRTIO_NET_F_CTRL_VQ |               \
	 VIRTIO_NET_F_GUEST_ANNOUNCE)

/* Config space status bits. */
#define VIRTIO_NET_S_LINK_UP 1
#define VIRTIO_NET_S_ANNOUNCE 2

/* The header in front of every frame, both ways (VERSION_1: always with num_buffers). */
struct virtio_net_hdr_v1 {
	uint8_t flags;
	uint8_t gso_type;
	uint16_t hdr_len, gso_size, csum_start, csum_offset, num_buffers;
};
#define VIRTIO_NET_HDR_LEN 12
_Static_assert(sizeof(struct virtio_net_hdr_v1) == VIRTIO_NET_HDR_LEN, "virtio_net_hdr_v1");
#define VIRTIO_NET_HDR_F_NEEDS_CSUM 1
#define VIRTIO_NET_HDR_F_DATA_VALID 2
#define VIRTIO_NET_HDR_GSO_NONE 0
#define VIRTIO_NET_HDR_GSO_TCPV4 1
#define VIRTIO_NET_HDR_GSO_UDP 3
#define VIRTIO_NET_HDR_GSO_TCPV6 4
#define VIRTIO_NET_HDR_GSO_ECN 0x80

/* Control queue: the one command the device takes (announce acknowledgement). */
#define VIRTIO_NET_CTRL_ANNOUNCE 3
#define VIRTIO_NET_CTRL_ANNOUNCE_ACK 0
#define VIRTIO_NET_OK 0
#define VIRTIO_NET_ERR 1

/* Snapshot image of the device (SNAP_SEC_NET; its transport is SNAP_SEC_VIRTIO_MMIO at the
 * same slot). Frames in flight are not part of it: like a real NIC's, they are lost. */
struct virtio_net_state {
	uint8_t mac[6];
	uint16_t status;	/* config status as the guest last saw it: LINK_UP, ANNOUNCE */
	uint32_t flags;		/* 0 (none defined) */
	uint32_t reserved0;
	uint64_t reserved[6];
};

struct virtio_net_stats {
	uint64_t rx_frames, rx_bytes, rx_dropped, tx_frames, tx_bytes, tx_dropped, tx_errors;
	uint64_t ctrl_cmds, announces, malformed;
};

/* What `status` reports of the NIC. */
struct virtio_net_info {
	int slot;
	uint64_t mmio;
	uint32_t gsi;
	uint8_t mac[6];
	char ifname[16];	/* the TAP's interface name; "" when detached */
	bool attached;
	uint16_t status;
	uint64_t driver_features; /* what the guest's driver accepted (0: no driver yet) */
	pid_t tid;		/* the device thread */
	struct virtio_net_stats stats;
};

/*
 * Put a NIC with `mac` in virtio slot `slot` and start its device thread. tap_fd (a TAP opened
 * IFF_TAP | IFF_NO_PI | IFF_VNET_HDR, non-blocking) is taken over, also on failure; -1 starts
 * the NIC detached (link down). A TAP that is not such a device is an error.
 */
int virtio_net_create(struct vm *vm, int slot, int tap_fd, const uint8_t mac[6],
		      struct virtio_net **out);
/* Start the device thread (once; vm_start_devices). */
int virtio_net_start(struct virtio_net *n);
/* Stop the thread and close the TAP. */
void virtio_net_destroy(struct virtio_net *n);

/*
 * Give the NIC another TAP (a cow branch child's own, docs/NET.md), or none (-1: detached, link
 * down). tap_fd is taken over, also on failure (it is closed: the NIC keeps its current TAP).
 * The device thread switches over at once: the old TAP is closed, the guest sees the link go
 * up or down (a config interrupt), and a guest that accepted VIRTIO_NET_F_GUEST_ANNOUNCE is
 * asked to announce itself on the new TAP. Any thread; 0 or -errno (logged).
 */
int virtio_net_set_tap(struct virtio_net *n, int tap_fd);

/* The NIC's transport (its slot, registers and queues). */
struct virtio_mmio *virtio_net_transport(struct virtio_net *n);

void virtio_net_save(struct virtio_net *n, struct virtio_net_state *out);
/* After virtio_mmio_restore: the saved MAC and status on this process's TAP; the guest hears
 * of the new link at once (announce, or link down when detached) once its vCPUs run. */
int virtio_net_restore(struct virtio_net *n, const struct virtio_net_state *in);
/* A saved state's own fields (unicast MAC, known bits); one message in err, or 0. */
int virtio_net_state_check(const struct virtio_net_state *st, struct fvm_err *err);

void virtio_net_get_info(struct virtio_net *n, struct virtio_net_info *out);
/* "02:00:00:00:00:01" (out: at least 18 bytes). */
void virtio_net_format_mac(const uint8_t mac[6], char *out, size_t len);

/* The TAP side (virtio_net_tap.c). Check that fd is a TAP with IFF_VNET_HDR and no packet
 * info, set its vnet header to VIRTIO_NET_HDR_LEN bytes and its offloads off; ifname gets its
 * name (IFNAMSIZ). -errno, logged. */
int virtio_net_tap_prepare(int fd, char *ifname, size_t len);
/* The TUN_F_* offloads matching what a driver accepted (the TAP may then hand us frames the
 * guest takes: partial checksums with GUEST_CSUM, TSO with GUEST_TSO4/6 and GUEST_ECN). */
unsigned virtio_net_tap_offloads(uint64_t driver_features);
/* TUNSETOFFLOAD for those features; -errno, logged with ifname. */
int virtio_net_tap_set_offloads(int fd, const char *ifname, uint64_t driver_features);
/* Whether a driver's features hang together (each one's prerequisites accepted too). */
bool virtio_net_features_valid(uint64_t driver_features);

#endif
