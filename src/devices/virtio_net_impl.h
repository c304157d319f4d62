/* virtio-net internals shared by the device, queue and TAP files. */
#ifndef FORKVM_VIRTIO_NET_IMPL_H
#define FORKVM_VIRTIO_NET_IMPL_H

#include <net/if.h>
#include <pthread.h>

#include "devices/virtio_net.h"
#include "util/evloop.h"

#define ETH_HEADER_LEN 14
/* The largest frame the TAP hands over: a 64 KiB GSO packet, its Ethernet and VLAN headers,
 * and the vnet header in front, with room to spare; a read that fills it was cut short. */
#define NET_FRAME_BUF (68u << 10)
/* Chains (tx) or frames (rx) handled per hold of the transport lock. */
#define NET_BUDGET 64
/* How often a held-back device thread (VM paused or not started) looks again. */
#define NET_HELD_POLL_MS 10

struct net_notify {
	struct virtio_net *n;
	int queue;
};

struct virtio_net {
	struct vm *vm;
	struct virtio_mmio *mmio; /* its lock guards everything below but the loop's stop/kick */
	uint8_t mac[6];
	uint16_t status;	  /* config status: VIRTIO_NET_S_* */
	bool config_event;	  /* status changed: a config interrupt once the VM runs */
	int tap_fd;		  /* -1: detached, the link is down */
	char ifname[IFNAMSIZ];
	int tap_ev;		  /* the TAP's id in the loop (-1: not registered) */
	uint32_t tap_mask;	  /* what the loop watches the TAP for: EPOLLIN or nothing */
	/* A TAP given by virtio_net_set_tap, taken over by the device thread (it owns the loop). */
	bool swap_pending;
	int swap_fd;
	char swap_ifname[IFNAMSIZ];
	bool offload_pending;	  /* the TAP's offloads must follow the driver's features */
	bool rx_starved;	  /* no receive buffer: the TAP is not read until the guest posts */
	bool tx_more;		  /* the transmit budget ran out with chains left */
	bool held;		  /* the VM is paused or not started: guest RAM is not touched */
	/* A frame read from the TAP that did not fit the guest's buffers yet (kept, not lost). */
	uint8_t *frame;
	uint32_t frame_len;
	uint16_t heads[VIRTIO_NET_QUEUE_MAX];
	uint32_t lens[VIRTIO_NET_QUEUE_MAX];
	/* The device thread's loop: stop and kick first (no lock), then the rest under it. */
	struct evloop loop;
	int stop_fd, kick_fd;
	bool stopping;
	struct net_notify notify[VIRTIO_NET_QUEUES];
	pthread_t thread;
	bool thread_started;
	pid_t tid;
	/* Logged once each: a guest or a TAP that keeps failing must not flood the log. */
	bool warned_rx_small, warned_tx_error, warned_rx_error;
	struct virtio_net_stats stats;
};

/* virtio_net_queues.c, all under the transport lock on the device thread. */
/* Control, transmit, then receive; one interrupt for all of it. */
void net_run_queues(struct virtio_net *n);
/* A guest bug the device cannot work around: log, DEVICE_NEEDS_RESET, config interrupt. */
void net_malformed(struct virtio_net *n, int queue, uint16_t head, const char *why);
/* The TAP failed for good (deleted interface, bad fd): close it, link down. */
void net_detach(struct virtio_net *n, const char *why);
/* Link up iff a TAP is attached; a change (and, with announce, a new TAP) is a config event. */
void net_update_link(struct virtio_net *n, bool announce);

#endif
