/* virtio-vsock device: the Unix listener, the device thread's event loop, snapshot hooks. */
#include "devices/vsock_impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "util/log.h"
#include "util/unix_sock.h"
#include "util/thread.h"
#include "core/vm.h"
#include "jail/seccomp.h"

static void vsock_config_read(void *opaque, uint64_t off, void *data, int len)
{
	struct vsock *v = opaque;
	uint64_t cid = v->cid; /* config space: le64 guest_cid */

	memset(data, 0, (size_t)len);
	if (off < sizeof(cid))
		memcpy(data, (uint8_t *)&cid + off, off + (uint64_t)len > 8 ? 8 - off : (size_t)len);
}

static void vsock_reset(void *opaque)
{
	struct vsock *v = opaque;

	/* The driver went away: every connection is gone with it. */
	vsock_conn_close_all(v);
	v->nrst = 0;
	v->rx_starved = false;
	v->reset_event_pending = false;
	v->reset_settling = false;
}

static const struct virtio_dev_ops vsock_ops = {
	.config_read = vsock_config_read,
	.reset = vsock_reset,
};

static void on_stop(void *arg, uint32_t events)
{
	struct vsock *v = arg;

	(void)events;
	v->stopping = true;
}

static void on_notify(void *arg, uint32_t events)
{
	struct vsock_notify *n = arg;

	(void)events;
	virtio_mmio_ack_notify(n->v->mmio, n->queue);
	if (n->queue == VSOCK_QUEUE_RX)
		n->v->rx_starved = false; /* the driver posted receive buffers */
}

static void *vsock_thread(void *arg)
{
	struct vsock *v = arg;

	if (jail_seccomp_apply(JAIL_ROLE_DEVICE) < 0) {
		vm_request_end(v->vm, VM_END_ERROR, "vsock: seccomp filter of its thread not loaded");
		return NULL;
	}
	for (;;) {
		/* While a transport reset settles, look again every few ms for the guest's answer. */
		int n = ev_wait(&v->loop, v->reset_settling ? 5 : -1);
		bool used = false;

		if (n < 0)
			return NULL;
		ev_dispatch(&v->loop, EV_FIRST); /* the stop request */
		if (v->stopping)
			return NULL;
		pthread_mutex_lock(&v->mmio->lock);
		/*
		 * A paused VM's memory must not change (snapshots copy it). The flag is read
		 * under the transport lock, and capture takes that lock, so a batch that started
		 * before the pause ends before the device state is saved. Events stay pending
		 * (the loop is level-triggered: the next wait reports them again).
		 */
		if (__atomic_load_n(&v->vm->pause_requested, __ATOMIC_ACQUIRE)) {
			pthread_mutex_unlock(&v->mmio->lock);
			usleep(1000);
			continue;
		}
		ev_dispatch(&v->loop, EV_LATER);
		if (virtio_mmio_driver_ok(v->mmio)) {
			vsock_process_tx(v, &used);
			/* A transport reset goes out before any packet that follows it. */
			vsock_deliver_events(v, &used);
			vsock_deliver_rx(v, &used);
		}
		for (int i = 0; i < VSOCK_MAX_CONNS; i++)
			if (v->conns[i])
				vsock_conn_update_epoll(v, v->conns[i]);
		if (used)
			virtio_mmio_signal(v->mmio, VIRTIO_INT_USED);
		pthread_mutex_unlock(&v->mmio->lock);
	}
}

/* unix_listen: 0600 in a private directory; only a dead socket file is replaced. */
static int vsock_listen(struct vsock *v)
{
	int err;

	v->listen_fd = unix_listen(v->path, 64, SOCK_NONBLOCK, "vsock socket");
	if (v->listen_fd < 0)
		return v->listen_fd;
	err = ev_add(&v->loop, v->listen_fd, EPOLLIN, EV_LATER, vsock_accept, v);
	return err < 0 ? err : 0;
}

int vsock_create(struct vm *vm, int slot, const char *path, uint32_t cid, struct vsock **out)
{
	struct vsock *v = calloc(1, sizeof(*v));
	int err;

	if (!v)
		return log_errno(-ENOMEM, "allocating the vsock device");
	v->vm = vm;
	v->cid = cid ? cid : VSOCK_DEFAULT_CID;
	v->next_port = VSOCK_FIRST_HOST_PORT;
	v->listen_fd = v->stop_fd = -1;
	err = ev_init(&v->loop, "vsock");
	if (err) {
		free(v);
		return err;
	}
	err = virtio_mmio_create(vm, slot, VIRTIO_ID_VSOCK, 0, 3, 256, &vsock_ops, v, &v->mmio);
	if (err)
		goto err;
	if (strlen(path) >= sizeof(v->path)) {
		err = log_errno(-ENAMETOOLONG, "vsock socket path %s", path);
		goto err;
	}
	snprintf(v->path, sizeof(v->path), "%s", path);
	v->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (v->stop_fd < 0) {
		err = log_errno(-errno, "vsock: the stop eventfd");
		goto err;
	}
	err = ev_add(&v->loop, v->stop_fd, EPOLLIN, EV_FIRST, on_stop, v);
	for (int q = 0; q < 3 && err >= 0; q++) {
		v->notify[q] = (struct vsock_notify){ v, q };
		err = ev_add(&v->loop, v->mmio->notify_fd[q], EPOLLIN, EV_LATER, on_notify,
			     &v->notify[q]);
	}
	if (err < 0)
		goto err;
	log_info("vsock: guest CID %u, host socket %s (virtio-mmio slot %d, gsi %u)", v->cid, path,
		 slot, v->mmio->gsi);
	*out = v;
	return 0;
err:
	vsock_destroy(v);
	return err;
}

int vsock_start(struct vsock *v)
{
	int err;

	if (v->thread_started)
		return 0;
	/* The socket is made here, not at create: a jailed restore makes it as the jail's uid in
	 * the jail's own directory, like the control socket. */
	if (v->listen_fd < 0 && (err = vsock_listen(v)))
		return err;
	err = -thread_start(&v->thread, vsock_thread, v);
	if (err)
		return log_errno(err, "vsock: starting the device thread");
	v->thread_started = true;
	return 0;
}

void vsock_destroy(struct vsock *v)
{
	uint64_t one = 1;

	if (!v)
		return;
	if (v->thread_started) {
		if (write(v->stop_fd, &one, sizeof(one)) < 0)
			log_warn("vsock: stop eventfd: %s", strerror(errno));
		pthread_join(v->thread, NULL);
	}
	if (v->mmio) {
		pthread_mutex_lock(&v->mmio->lock);
		vsock_conn_close_all(v);
		pthread_mutex_unlock(&v->mmio->lock);
	}
	if (v->listen_fd >= 0) {
		close(v->listen_fd);
		unlink(v->path);
	}
	ev_fini(&v->loop);
	if (v->stop_fd >= 0)
		close(v->stop_fd);
	virtio_mmio_destroy(v->mmio);
	free(v);
}

void vsock_save(struct vsock *v, struct vsock_state *out)
{
	memset(out, 0, sizeof(*out));
	pthread_mutex_lock(&v->mmio->lock);
	out->cid = v->cid;
	pthread_mutex_unlock(&v->mmio->lock);
}

int vsock_restore(struct vsock *v, const struct vsock_state *in)
{
	uint64_t one = 1;

	pthread_mutex_lock(&v->mmio->lock);
	v->cid = (uint32_t)in->cid;
	vsock_conn_close_all(v);
	/* The guest's connections refer to host sockets that did not survive: tell it. */
	v->reset_event_pending = virtio_mmio_driver_ok(v->mmio);
	pthread_mutex_unlock(&v->mmio->lock);
	/* Let the device thread deliver the event (it runs the queues after any wakeup). */
	if (write(v->mmio->notify_fd[VSOCK_QUEUE_EVENT], &one, sizeof(one)) < 0)
		return log_errno(-errno, "vsock: waking the device thread");
	return 0;
}

void vsock_get_stats(struct vsock *v, struct vsock_stats *out)
{
	pthread_mutex_lock(&v->mmio->lock);
	*out = v->stats;
	pthread_mutex_unlock(&v->mmio->lock);
}
