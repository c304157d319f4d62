/* virtio-net device: config space, features, the device thread's loop, TAP hand-over,
 * snapshot hooks (docs/NET.md, "Device"). */
#include "devices/virtio_net_impl.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "util/errmsg.h"
#include "util/log.h"
#include "util/thread.h"
#include "core/vm.h"
#include "jail/seccomp.h"

#define CONFIG_SPACE 12 /* mac[6], status, max_virtqueue_pairs */

/* Wake the device thread: a new TAP, new features, a reset or a restore to act on. */
static void kick(struct virtio_net *n)
{
	uint64_t one = 1;

	if (n->kick_fd >= 0 && write(n->kick_fd, &one, sizeof(one)) < 0)
		log_warn("virtio-net: kick eventfd: %s", strerror(errno));
}

static void net_config_read(void *opaque, uint64_t off, void *data, int len)
{
	struct virtio_net *n = opaque;
	uint8_t cfg[CONFIG_SPACE] = { 0 };
	uint16_t pairs = 1;

	memcpy(cfg, n->mac, 6);
	memcpy(cfg + 6, &n->status, sizeof(n->status));
	memcpy(cfg + 8, &pairs, sizeof(pairs));
	memset(data, 0, (size_t)len);
	if (off < CONFIG_SPACE)
		memcpy(data, cfg + off, CONFIG_SPACE - off < (uint64_t)len ? CONFIG_SPACE - off : (size_t)len);
}

/* The driver reset the device (vCPU thread, lock held): whatever was in flight is gone. */
static void net_reset(void *opaque)
{
	struct virtio_net *n = opaque;

	if (n->frame_len)
		n->stats.rx_dropped++;
	n->frame_len = 0;
	n->rx_starved = false;
	n->tx_more = false;
	n->status &= (uint16_t)~VIRTIO_NET_S_ANNOUNCE;
	n->config_event = false;
	n->offload_pending = true; /* no driver: no offloads */
	kick(n);
}

/* DRIVER_OK (vCPU thread, lock held): the TAP's offloads follow the features, rx may start. */
static void net_activate(void *opaque)
{
	struct virtio_net *n = opaque;

	n->offload_pending = true;
	kick(n);
}

static bool net_features_ok(void *opaque, uint64_t features)
{
	(void)opaque;
	return virtio_net_features_valid(features);
}

static const struct virtio_dev_ops net_ops = {
	.config_read = net_config_read,
	.reset = net_reset,
	.activate = net_activate,
	.features_ok = net_features_ok,
};

void net_update_link(struct virtio_net *n, bool announce)
{
	struct virtio_mmio *m = n->mmio;
	uint16_t old = n->status;

	if (n->tap_fd >= 0)
		n->status |= VIRTIO_NET_S_LINK_UP;
	else
		n->status &= (uint16_t)~(VIRTIO_NET_S_LINK_UP | VIRTIO_NET_S_ANNOUNCE);
	if (announce && n->tap_fd >= 0 && virtio_mmio_driver_ok(m) &&
	    (m->r.driver_features & VIRTIO_NET_F_GUEST_ANNOUNCE))
		n->status |= VIRTIO_NET_S_ANNOUNCE;
	if (n->status != old) {
		m->r.config_gen++;
		n->config_event = true;
	}
}

void net_detach(struct virtio_net *n, const char *why)
{
	log_err("virtio-net: TAP %s: %s; the NIC is detached (link down to the guest)", n->ifname,
		why);
	ev_del(&n->loop, n->tap_ev);
	close(n->tap_fd);
	n->tap_fd = -1;
	n->tap_ev = -1;
	n->tap_mask = 0;
	n->ifname[0] = '\0';
	if (n->frame_len)
		n->stats.rx_dropped++;
	n->frame_len = 0;
	net_update_link(n, false);
}

static void on_stop(void *arg, uint32_t events)
{
	struct virtio_net *n = arg;

	(void)events;
	n->stopping = true;
}

static void on_kick(void *arg, uint32_t events)
{
	struct virtio_net *n = arg;
	uint64_t v;

	(void)events;
	if (read(n->kick_fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		log_warn("virtio-net: kick eventfd read: %s", strerror(errno));
}

static void on_notify(void *arg, uint32_t events)
{
	struct net_notify *q = arg;

	(void)events;
	virtio_mmio_ack_notify(q->n->mmio, q->queue);
	if (q->queue == VIRTIO_NET_Q_RX)
		q->n->rx_starved = false; /* the driver posted receive buffers */
}

/* The TAP is readable (the queue step reads it), or it failed: epoll reports an error or a
 * hang-up even while we watch for nothing, so the TAP must go, or the loop would spin. */
static void on_tap(void *arg, uint32_t events)
{
	struct virtio_net *n = arg;

	if (events & (EPOLLERR | EPOLLHUP))
		net_detach(n, "it reports an error or hang-up (interface deleted?)");
}

/* A TAP handed over by virtio_net_set_tap: the loop is this thread's, so the switch is here. */
static void take_swap(struct virtio_net *n)
{
	int fd = n->swap_fd, id;

	if (!n->swap_pending)
		return;
	n->swap_pending = false;
	n->swap_fd = -1;
	if (n->tap_fd >= 0) {
		ev_del(&n->loop, n->tap_ev);
		close(n->tap_fd);
		log_info("virtio-net: TAP %s let go", n->ifname);
	}
	n->tap_fd = n->tap_ev = -1;
	n->tap_mask = 0;
	n->ifname[0] = '\0';
	if (n->frame_len)
		n->stats.rx_dropped++; /* for the old network */
	n->frame_len = 0;
	if (fd >= 0) {
		id = ev_add(&n->loop, fd, 0, EV_LATER, on_tap, n);
		if (id < 0) {
			log_err("virtio-net: TAP %s: cannot watch it; the NIC stays detached", n->swap_ifname);
			close(fd);
		} else {
			n->tap_fd = fd;
			n->tap_ev = id;
			memcpy(n->ifname, n->swap_ifname, sizeof(n->ifname));
			n->offload_pending = true;
			log_info("virtio-net: TAP %s attached", n->ifname);
		}
	} else {
		log_info("virtio-net: no TAP: the NIC is detached (link down to the guest)");
	}
	net_update_link(n, true);
}

/* The TAP's offloads follow what the driver accepted (none without a driver). */
static void apply_offloads(struct virtio_net *n)
{
	struct virtio_mmio *m = n->mmio;
	uint64_t features = virtio_mmio_driver_ok(m) ? m->r.driver_features : 0;

	if (!n->offload_pending || n->tap_fd < 0)
		return;
	n->offload_pending = false;
	if (virtio_net_tap_set_offloads(n->tap_fd, n->ifname, features))
		net_detach(n, "its offloads cannot follow the guest's features");
}

/* The TAP is read only when a frame can go somewhere: never while the guest has no buffers. */
static void update_tap_mask(struct virtio_net *n)
{
	struct virtio_mmio *m = n->mmio;
	uint32_t want = 0;

	if (n->tap_fd < 0)
		return;
	if (!n->held && !n->rx_starved && virtio_mmio_driver_ok(m) && m->vq[VIRTIO_NET_Q_RX].s.ready)
		want = EPOLLIN;
	if (want == n->tap_mask)
		return;
	if (ev_mod(&n->loop, n->tap_ev, want) < 0)
		net_detach(n, "cannot change what the loop watches it for");
	else
		n->tap_mask = want;
}

/* Not before the vCPUs run (a restored VM's interrupts would come before its LAPICs) and not
 * while paused (a snapshot copies memory): the flags are read under the transport lock. */
static bool held_back(const struct virtio_net *n)
{
	return !__atomic_load_n(&n->vm->started, __ATOMIC_ACQUIRE) ||
	       __atomic_load_n(&n->vm->pause_requested, __ATOMIC_ACQUIRE);
}

static void *net_thread(void *arg)
{
	struct virtio_net *n = arg;
	struct virtio_mmio *m = n->mmio;

	if (jail_seccomp_apply(JAIL_ROLE_DEVICE) < 0) {
		vm_request_end(n->vm, VM_END_ERROR, "virtio-net: seccomp filter of its thread not loaded");
		return NULL;
	}
	pthread_mutex_lock(&m->lock);
	n->tid = gettid();
	pthread_mutex_unlock(&m->lock);
	for (;;) {
		/* Held back: look again shortly (no event says the VM runs again). */
		int r = ev_wait(&n->loop, n->held ? NET_HELD_POLL_MS : n->tx_more ? 0 : -1);

		if (r < 0) {
			vm_request_end(n->vm, VM_END_ERROR, "virtio-net: its event loop failed: %s",
				       strerror(-r));
			return NULL;
		}
		ev_dispatch(&n->loop, EV_FIRST); /* stop, kick */
		if (n->stopping)
			return NULL;
		pthread_mutex_lock(&m->lock);
		take_swap(n);
		apply_offloads(n);
		n->held = held_back(n);
		ev_dispatch(&n->loop, EV_LATER); /* notifications and the TAP: flags only */
		if (!n->held)
			net_run_queues(n);
		update_tap_mask(n);
		pthread_mutex_unlock(&m->lock);
	}
}

/* Everything but the thread; the caller destroys n on error. */
static int net_setup(struct virtio_net *n, struct vm *vm, int slot)
{
	int err = virtio_mmio_create(vm, slot, VIRTIO_ID_NET, VIRTIO_NET_FEATURES, VIRTIO_NET_QUEUES,
				     VIRTIO_NET_QUEUE_MAX, &net_ops, n, &n->mmio);

	if (err)
		return err;
	n->frame = malloc(NET_FRAME_BUF);
	if (!n->frame)
		return log_errno(-ENOMEM, "virtio-net slot %d: its %u-byte frame buffer", slot,
				 NET_FRAME_BUF);
	n->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	n->kick_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (n->stop_fd < 0 || n->kick_fd < 0)
		return log_errno(-errno, "virtio-net slot %d: eventfd", slot);
	err = ev_add(&n->loop, n->stop_fd, EPOLLIN, EV_FIRST, on_stop, n);
	if (err >= 0)
		err = ev_add(&n->loop, n->kick_fd, EPOLLIN, EV_FIRST, on_kick, n);
	for (int q = 0; q < VIRTIO_NET_QUEUES && err >= 0; q++) {
		n->notify[q] = (struct net_notify){ n, q };
		err = ev_add(&n->loop, n->mmio->notify_fd[q], EPOLLIN, EV_LATER, on_notify, &n->notify[q]);
	}
	if (err >= 0 && n->tap_fd >= 0)
		err = n->tap_ev = ev_add(&n->loop, n->tap_fd, 0, EV_LATER, on_tap, n);
	return err < 0 ? err : 0;
}

int virtio_net_create(struct vm *vm, int slot, int tap_fd, const uint8_t mac[6],
		      struct virtio_net **out)
{
	struct virtio_net *n = calloc(1, sizeof(*n));
	char macs[18];
	int err;

	if (!n) {
		if (tap_fd >= 0)
			close(tap_fd);
		return log_errno(-ENOMEM, "allocating virtio-net slot %d", slot);
	}
	n->vm = vm;
	n->tap_fd = tap_fd;
	n->tap_ev = n->swap_fd = n->stop_fd = n->kick_fd = -1;
	memcpy(n->mac, mac, sizeof(n->mac));
	err = ev_init(&n->loop, "virtio-net");
	if (err) {
		if (tap_fd >= 0)
			close(tap_fd);
		free(n);
		return err;
	}
	if (tap_fd >= 0 && (err = virtio_net_tap_prepare(tap_fd, n->ifname, sizeof(n->ifname))))
		goto err;
	err = net_setup(n, vm, slot);
	if (err)
		goto err;
	n->status = tap_fd >= 0 ? VIRTIO_NET_S_LINK_UP : 0;
	virtio_net_format_mac(mac, macs, sizeof(macs));
	if (tap_fd >= 0)
		log_info("virtio-net: MAC %s on TAP %s (virtio-mmio slot %d, gsi %u)", macs, n->ifname,
			 slot, n->mmio->gsi);
	else
		log_info("virtio-net: MAC %s, no TAP: detached, link down (virtio-mmio slot %d, gsi %u)",
			 macs, slot, n->mmio->gsi);
	*out = n;
	return 0;
err:
	virtio_net_destroy(n);
	return err;
}

int virtio_net_start(struct virtio_net *n)
{
	int err;

	if (n->thread_started)
		return 0;
	err = -thread_start(&n->thread, net_thread, n);
	if (err)
		return log_errno(err, "virtio-net slot %d: starting the device thread",
				 n->mmio->slot);
	n->thread_started = true;
	return 0;
}

void virtio_net_destroy(struct virtio_net *n)
{
	uint64_t one = 1;

	if (!n)
		return;
	if (n->thread_started) {
		if (write(n->stop_fd, &one, sizeof(one)) < 0)
			log_warn("virtio-net: stop eventfd: %s", strerror(errno));
		pthread_join(n->thread, NULL);
	}
	if (n->tap_fd >= 0)
		close(n->tap_fd);
	if (n->swap_fd >= 0)
		close(n->swap_fd);
	ev_fini(&n->loop);
	if (n->stop_fd >= 0)
		close(n->stop_fd);
	if (n->kick_fd >= 0)
		close(n->kick_fd);
	virtio_mmio_destroy(n->mmio);
	free(n->frame);
	free(n);
}

int virtio_net_set_tap(struct virtio_net *n, int tap_fd)
{
	char ifname[IFNAMSIZ] = "";
	int err;

	if (tap_fd >= 0 && (err = virtio_net_tap_prepare(tap_fd, ifname, sizeof(ifname)))) {
		close(tap_fd);
		return err;
	}
	pthread_mutex_lock(&n->mmio->lock);
	if (n->swap_pending && n->swap_fd >= 0)
		close(n->swap_fd); /* handed over earlier, never taken: this one replaces it */
	n->swap_pending = true;
	n->swap_fd = tap_fd;
	memcpy(n->swap_ifname, ifname, sizeof(n->swap_ifname));
	pthread_mutex_unlock(&n->mmio->lock);
	kick(n);
	return 0;
}

struct virtio_mmio *virtio_net_transport(struct virtio_net *n)
{
	return n->mmio;
}

void virtio_net_save(struct virtio_net *n, struct virtio_net_state *out)
{
	memset(out, 0, sizeof(*out));
	pthread_mutex_lock(&n->mmio->lock);
	memcpy(out->mac, n->mac, sizeof(out->mac));
	out->status = n->status;
	pthread_mutex_unlock(&n->mmio->lock);
}

int virtio_net_restore(struct virtio_net *n, const struct virtio_net_state *in)
{
	struct fvm_err why = FVM_ERR_INIT;

	if (virtio_net_state_check(in, &why))
		return log_errno(-EINVAL, "restoring virtio-net slot %d: %s", n->mmio->slot,
				 why.msg);
	pthread_mutex_lock(&n->mmio->lock);
	memcpy(n->mac, in->mac, sizeof(n->mac));
	n->status = in->status;
	n->frame_len = 0;
	n->rx_starved = false;
	n->tx_more = true; /* chains queued at the snapshot go out once the VM runs */
	n->offload_pending = true;
	/* This process's TAP, not the one the snapshot saw: link state, and an announcement. */
	net_update_link(n, true);
	pthread_mutex_unlock(&n->mmio->lock);
	kick(n);
	return 0;
}

int virtio_net_state_check(const struct virtio_net_state *st, struct fvm_err *err)
{
	static const uint8_t zero[6];
	char mac[18];

	virtio_net_format_mac(st->mac, mac, sizeof(mac));
	if ((st->mac[0] & 1) || !memcmp(st->mac, zero, sizeof(zero))) {
		return errmsg(err, -EINVAL, "MAC %s is not a unicast address", mac);
	}
	if (st->status & ~(VIRTIO_NET_S_LINK_UP | VIRTIO_NET_S_ANNOUNCE) || st->flags) {
		return errmsg(err, -EINVAL, "unknown status bits 0x%x or flags 0x%x", st->status,
			      st->flags);
	}
	return 0;
}

void virtio_net_get_info(struct virtio_net *n, struct virtio_net_info *out)
{
	struct virtio_mmio *m = n->mmio;

	memset(out, 0, sizeof(*out));
	pthread_mutex_lock(&m->lock);
	out->slot = m->slot;
	out->mmio = m->base;
	out->gsi = m->gsi;
	memcpy(out->mac, n->mac, sizeof(out->mac));
	snprintf(out->ifname, sizeof(out->ifname), "%s", n->ifname);
	out->attached = n->tap_fd >= 0;
	out->status = n->status;
	out->driver_features = virtio_mmio_driver_ok(m) ? m->r.driver_features : 0;
	out->tid = n->tid;
	out->stats = n->stats;
	pthread_mutex_unlock(&m->lock);
}

void virtio_net_format_mac(const uint8_t mac[6], char *out, size_t len)
{
	snprintf(out, len, "%02x:%02x:%02x:%02x:%02x:%02x", mac[0], mac[1], mac[2], mac[3], mac[4],
		 mac[5]);
}
