/*
 * The namespace thread and the port relay. The thread unshare()s a network namespace of its
 * own (the VMM's other threads stay in the host's), builds it, and then, when the VM
 * publishes ports, stays there as the relay: the listening sockets were bound in the host
 * namespace by net_create, while every socket this thread creates is in the VM's namespace,
 * so a connection accepted on a host port is relayed to GUEST:GUESTPORT from inside.
 *
 * Relay rules: one event loop (util/evloop.h); each connection buffers at most RELAY_BUF bytes
 * per direction and stops reading a side while its buffer is not delivered (backpressure);
 * an end of file is passed on as shutdown(SHUT_WR) once the buffer is flushed (half-close);
 * the connection closes when both directions are done or on any error; at most max_conns at
 * once: at the bound the listeners stop accepting (clients wait in the backlog) until one
 * closes; a guest that does not answer the connect within RELAY_CONNECT_MS closes the client.
 */
#include <errno.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "net/net_impl.h"
#include "util/clock.h"
#include "util/errmsg.h"
#include "util/evloop.h"
#include "util/log.h"
#include "util/thread.h"

#define RELAY_BUF 65536
#define RELAY_CONNECT_MS 10000
#define RELAY_ROUNDS 4 /* read/write rounds per wakeup and connection: others get their turn */
#define RELAY_RESUME_MS 100 /* out of fds or memory: how long the listeners rest */

struct relay_dir {
	size_t off, len;
	bool eof;	/* its source reached end of file */
	bool shut;	/* the end of file was passed on */
	char *buf;
};

struct relay_conn;

struct relay_end {
	struct relay_conn *c;
	int side;	/* 0: the client (host side), 1: the guest */
};

struct relay_conn {
	struct net_relay *r;
	int idx;			/* in r->conns */
	int fd[2], id[2];
	uint32_t mask[2];
	bool watched[2];
	struct relay_dir dir[2];	/* dir[i]: read from fd[i], written to fd[1 - i] */
	struct relay_end end[2];
	bool connecting;
	struct ev_timer timer;
};

struct relay_listener {
	struct net_relay *r;
	int port;	/* index in n->ports */
	int id;
};

struct net_relay {
	struct net *n;
	struct net_setup *setup;
	pthread_t thread;
	int stop_fd;
	int stop_id;
	bool stopping;
	struct evloop loop;
	bool loop_ready;
	struct relay_listener lis[NET_MAX_PUBLISH];
	bool accepting;
	struct ev_timer resume;		/* accepting again after running out of fds */
	struct relay_conn **conns;	/* max_conns entries, NULL when free */
	/* Every connection's fds, written as they open and close: a fork()ed copy can close
	 * them without walking structures the parent's thread may have been changing. */
	_Atomic int *fds;
	int nconns;
	_Atomic uint64_t active, total, failed;
};

/* Stop or start watching every listener (level-triggered: a pending client would otherwise
 * wake the loop again and again while it cannot be taken). */
static void listeners_watch(struct net_relay *r, bool on)
{
	for (int i = 0; i < r->n->nports; i++)
		ev_mod(&r->loop, r->lis[i].id, on ? EPOLLIN : 0);
	r->accepting = on;
}

/*
 * Close a connection. graceful: both directions ended normally, so the guest-side socket
 * gets an ordinary close (its last bytes still delivered); else (an error, a timeout, the
 * relay stopping) it keeps SO_LINGER 0 and resets, leaving nothing behind in the namespace.
 */
static void conn_close(struct relay_conn *c, bool graceful)
{
	struct net_relay *r = c->r;
	struct linger off = { 0 };

	/* If this fails the close resets instead: the guest may miss the last bytes, logged. */
	if (graceful && setsockopt(c->fd[1], SOL_SOCKET, SO_LINGER, &off, sizeof(off)) < 0)
		log_warn("net: relayed connection to guest port: SO_LINGER off: %s; it resets",
			 strerror(errno));
	ev_timer_disarm(&r->loop, &c->timer);
	for (int i = 0; i < 2; i++) {
		ev_del(&r->loop, c->id[i]);
		if (c->fd[i] >= 0) {
			atomic_store(&r->fds[2 * c->idx + i], -1);
			close(c->fd[i]);
		}
		free(c->dir[i].buf);
	}
	r->conns[c->idx] = NULL;
	r->nconns--;
	atomic_fetch_sub(&r->active, 1);
	free(c);
	/* Below the bound again: take the next client out of the backlog. */
	if (!r->accepting && !r->stopping && !r->resume.armed)
		listeners_watch(r, true);
}

/* What each fd waits for now; an fd with nothing left to do leaves the loop (a hung-up
 * socket would otherwise report EPOLLHUP on every wait). Returns false once both are done. */
static bool conn_interest(struct relay_conn *c)
{
	struct net_relay *r = c->r;

	if (c->dir[0].shut && c->dir[1].shut)
		return false;
	for (int i = 0; i < 2; i++) {
		struct relay_dir *in = &c->dir[i], *out = &c->dir[1 - i];
		uint32_t m = (in->len == 0 && !in->eof ? EPOLLIN : 0) | (out->len ? EPOLLOUT : 0);
		bool needed = !in->eof || !out->shut;

		if (!needed && c->watched[i]) {
			ev_del(&r->loop, c->id[i]);
			c->id[i] = -1;
			c->watched[i] = false;
		} else if (needed && m != c->mask[i]) {
			if (ev_mod(&r->loop, c->id[i], m) < 0)
				return false;
			c->mask[i] = m;
		}
	}
	return true;
}

/* Move bytes both ways as far as the sockets take them now. Returns false on an error. */
static bool conn_pump(struct relay_conn *c)
{
	for (int round = 0; round < RELAY_ROUNDS; round++) {
		bool moved = false;

		for (int i = 0; i < 2; i++) {
			struct relay_dir *d = &c->dir[i];
			int src = c->fd[i], dst = c->fd[1 - i];

			if (d->len == 0 && !d->eof) {
				ssize_t n = read(src, d->buf, RELAY_BUF);
				if (n > 0) {
					d->off = 0;
					d->len = (size_t)n;
					moved = true;
				} else if (n == 0) {
					d->eof = true;
					moved = true;
				} else if (errno != EAGAIN && errno != EINTR) {
					return false;
				}
			}
			if (d->len) {
				ssize_t n = send(dst, d->buf + d->off, d->len, MSG_NOSIGNAL);
				if (n > 0) {
					d->off += (size_t)n;
					d->len -= (size_t)n;
					moved = true;
				} else if (n < 0 && errno != EAGAIN && errno != EINTR) {
					return false;
				}
			}
			if (d->eof && d->len == 0 && !d->shut) {
				/* Half-close: the other side sees our peer's end of file. */
				if (shutdown(dst, SHUT_WR) < 0 && errno != ENOTCONN)
					return false;
				d->shut = true;
				moved = true;
			}
		}
		if (!moved)
			break;
	}
	return true;
}

static void on_connect_timeout(void *arg)
{
	struct relay_conn *c = arg;

	atomic_fetch_add(&c->r->failed, 1);
	conn_close(c, false);
}

static void on_conn(void *arg, uint32_t events)
{
	struct relay_end *e = arg;
	struct relay_conn *c = e->c;

	if (c->connecting) {
		int soerr = 0;
		socklen_t len = sizeof(soerr);

		if (e->side == 0) {
			/* Only errors are watched on the client while the guest is being reached. */
			if (events & (EPOLLERR | EPOLLHUP))
				conn_close(c, false);
			return;
		}
		if (getsockopt(c->fd[1], SOL_SOCKET, SO_ERROR, &soerr, &len) < 0 || soerr) {
			atomic_fetch_add(&c->r->failed, 1);
			conn_close(c, false);
			return;
		}
		c->connecting = false;
		ev_timer_disarm(&c->r->loop, &c->timer);
	}
	if (!conn_pump(c))
		conn_close(c, false);
	else if (!conn_interest(c))
		conn_close(c, c->dir[0].shut && c->dir[1].shut);
}

/* A client on published port p: a socket in the VM's namespace towards the guest. */
static void conn_open(struct net_relay *r, int p, int cfd)
{
	struct net_port *port = &r->n->ports[p];
	struct sockaddr_in guest = { .sin_family = AF_INET,
				     .sin_port = htons(port->spec.guest_port),
				     .sin_addr.s_addr = htonl(r->n->opts.guest_addr) };
	struct relay_conn *c = calloc(1, sizeof(*c));
	int idx = 0, gfd = -1;

	while (idx < r->n->opts.max_conns && r->conns[idx])
		idx++;
	if (!c || idx == r->n->opts.max_conns)
		goto fail;
	c->dir[0].buf = malloc(RELAY_BUF);
	c->dir[1].buf = malloc(RELAY_BUF);
	/* Created by this thread, so in the VM's namespace: the guest's address is routable. */
	gfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (!c->dir[0].buf || !c->dir[1].buf || gfd < 0)
		goto fail;
	/* Reset, not linger, when closed by anything but a graceful end: a VMM killed outright
	 * must leave no socket that keeps its namespace alive. */
	if (setsockopt(gfd, SOL_SOCKET, SO_LINGER, &(struct linger){ 1, 0 },
		       sizeof(struct linger)) < 0)
		goto fail;
	if (connect(gfd, (struct sockaddr *)&guest, sizeof(guest)) < 0 && errno != EINPROGRESS) {
		atomic_fetch_add(&r->failed, 1);
		goto fail;
	}
	c->r = r;
	c->idx = idx;
	c->fd[0] = cfd;
	c->fd[1] = gfd;
	c->id[0] = c->id[1] = -1;
	c->connecting = true;
	c->mask[1] = EPOLLOUT; /* the connect's end; the client: errors only, meanwhile */
	for (int i = 0; i < 2; i++) {
		c->end[i] = (struct relay_end){ c, i };
		c->id[i] = ev_add(&r->loop, c->fd[i], c->mask[i], EV_LATER, on_conn, &c->end[i]);
		c->watched[i] = c->id[i] >= 0;
		if (c->id[i] < 0) {
			ev_del(&r->loop, c->id[0]);
			goto fail;
		}
	}
	r->conns[idx] = c;
	atomic_store(&r->fds[2 * idx], cfd);
	atomic_store(&r->fds[2 * idx + 1], gfd);
	r->nconns++;
	atomic_fetch_add(&r->active, 1);
	atomic_fetch_add(&r->total, 1);
	ev_timer_arm(&r->loop, &c->timer, deadline_after_ms(RELAY_CONNECT_MS), on_connect_timeout,
		     c);
	return;
fail:
	if (gfd >= 0)
		close(gfd);
	close(cfd);
	if (c) {
		free(c->dir[0].buf);
		free(c->dir[1].buf);
	}
	free(c);
}

static void on_resume(void *arg)
{
	struct net_relay *r = arg;

	if (!r->stopping && r->nconns < r->n->opts.max_conns)
		listeners_watch(r, true);
}

static void on_listener(void *arg, uint32_t events)
{
	struct relay_listener *l = arg;
	struct net_relay *r = l->r;

	while (r->nconns < r->n->opts.max_conns) {
		int cfd = accept4(r->n->ports[l->port].fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (cfd >= 0) {
			conn_open(r, l->port, cfd);
			continue;
		}
		if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED)
			return;
		/* Out of fds or memory: rest a moment instead of spinning on the pending client. */
		log_warn("net: accepting on host port %u: %s; the published ports pause for %d ms",
			 r->n->ports[l->port].host_port, strerror(errno), RELAY_RESUME_MS);
		listeners_watch(r, false);
		ev_timer_arm(&r->loop, &r->resume, deadline_after_ms(RELAY_RESUME_MS), on_resume, r);
		return;
	}
	/* At the bound: the clients wait in the listeners' backlogs. */
	listeners_watch(r, false);
}

static void on_stop(void *arg, uint32_t events)
{
	struct net_relay *r = arg;

	r->stopping = true;
}

/* The loop, the stop eventfd and the listeners, before any filter narrows the thread. */
static int relay_prepare(struct net_relay *r, struct fvm_err *err)
{
	int ret = ev_init(&r->loop, "net relay");

	if (ret)
		return errmsg(err, ret, "the relay's event loop: %s", strerror(-ret));
	r->loop_ready = true;
	r->stop_id = ev_add(&r->loop, r->stop_fd, EPOLLIN, EV_FIRST, on_stop, r);
	if (r->stop_id < 0)
		return errmsg(err, r->stop_id, "the relay's stop eventfd: %s",
			      strerror(-r->stop_id));
	for (int i = 0; i < r->n->nports; i++) {
		r->lis[i] = (struct relay_listener){ .r = r, .port = i };
		r->lis[i].id = ev_add(&r->loop, r->n->ports[i].fd, EPOLLIN, EV_LATER, on_listener,
				      &r->lis[i]);
		if (r->lis[i].id < 0)
			return errmsg(err, r->lis[i].id, "watching host port %u: %s",
				      r->n->ports[i].host_port, strerror(-r->lis[i].id));
	}
	r->accepting = true;
	return 0;
}

static void setup_report(struct net_setup *s, int ret, const char *err)
{
	pthread_mutex_lock(&s->lock);
	s->ret = ret;
	snprintf(s->err, sizeof(s->err), "%s", err);
	s->done = true;
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->lock);
}

static void *relay_main(void *arg)
{
	struct net_relay *r = arg;
	struct fvm_err err = FVM_ERR_INIT;
	int ret = 0;

	/* ps -T / top -H tell it apart; a failure only leaves the VMM's name. */
	pthread_setname_np(pthread_self(), "forkvm-net");
	if (unshare(CLONE_NEWNET) < 0) {
		ret = -errno;
		errmsg(&err, ret, "creating the VM's network namespace (unshare "
		       "CLONE_NEWNET): %s%s", strerror(errno), errno == EPERM ?
		       " (networking a VM needs root: CAP_SYS_ADMIN and CAP_NET_ADMIN)" : "");
	}
	if (!ret)
		ret = net_setup_namespace(r->n, r->setup, &err);
	if (!ret && r->n->nports)
		ret = relay_prepare(r, &err);
	if (!ret && r->n->nports && r->n->opts.relay_thread_init &&
	    r->n->opts.relay_thread_init() != 0) {
		ret = -EPERM;
		errmsg(&err, ret, "preparing the relay thread (its seccomp filter)");
	}
	/* From here on, r->setup belongs to net_create again. */
	setup_report(r->setup, ret, err.msg);
	if (ret || !r->n->nports)
		return NULL;
	while (!r->stopping) {
		ret = ev_run_once(&r->loop, -1);
		if (ret < 0 && ret != -EINTR) {
			log_err("net: the relay's event loop failed: %s; published ports stop",
				strerror(-ret));
			break;
		}
	}
	for (int i = 0; i < r->n->opts.max_conns; i++)
		if (r->conns[i])
			conn_close(r->conns[i], false);
	return NULL;
}

int net_relay_start(struct net *n, struct net_setup *s, struct fvm_err *err)
{
	struct net_relay *r = calloc(1, sizeof(*r));
	int ret, max = n->opts.max_conns;

	if (!r)
		return errmsg(err, -ENOMEM, "the network thread's state");
	*r = (struct net_relay){ .n = n, .setup = s, .stop_fd = -1, .stop_id = -1 };
	r->loop.epfd = -1;
	r->conns = calloc((size_t)max, sizeof(*r->conns));
	r->fds = malloc((size_t)max * 2 * sizeof(*r->fds));
	if (!r->conns || !r->fds) {
		ret = errmsg(err, -ENOMEM, "the relay's connection table");
		goto fail;
	}
	for (int i = 0; i < 2 * max; i++)
		atomic_init(&r->fds[i], -1);
	r->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (r->stop_fd < 0) {
		ret = errmsg(err, -errno, "the relay's stop eventfd: %s", strerror(errno));
		goto fail;
	}
	ret = -thread_start(&r->thread, relay_main, r);
	if (ret) {
		errmsg(err, ret, "starting the network thread: %s", strerror(-ret));
		goto fail;
	}
	pthread_mutex_lock(&s->lock);
	while (!s->done)
		pthread_cond_wait(&s->cond, &s->lock);
	pthread_mutex_unlock(&s->lock);
	ret = s->ret;
	if (ret || !n->nports) {
		/* Failed, or nothing to relay: the thread has ended (its namespace stays, held by
		 * n->ns_fd and the TAP). */
		pthread_join(r->thread, NULL);
		if (ret)
			errmsg(err, ret, "%s", s->err);
		goto fail;
	}
	n->relay = r;
	return 0;
fail:
	if (r->loop_ready)
		ev_fini(&r->loop);
	if (r->stop_fd >= 0)
		close(r->stop_fd);
	free(r->conns);
	free((void *)r->fds);
	free(r);
	return ret;
}

void net_relay_stop(struct net *n)
{
	struct net_relay *r = n->relay;
	uint64_t one = 1;

	if (!r)
		return;
	if (write(r->stop_fd, &one, sizeof(one)) != sizeof(one))
		log_warn("net: waking the relay to stop it: %s", strerror(errno));
	pthread_join(r->thread, NULL);
	ev_fini(&r->loop);
	close(r->stop_fd);
	free(r->conns);
	free((void *)r->fds);
	free(r);
	n->relay = NULL;
}

void net_relay_forget(struct net *n, bool fds_closed)
{
	struct net_relay *r = n->relay;

	if (!r)
		return;
	if (!fds_closed) {
		for (int i = 0; i < 2 * n->opts.max_conns; i++) {
			int fd = atomic_load(&r->fds[i]);
			if (fd >= 0)
				close(fd);
		}
		if (r->loop.epfd >= 0)
			close(r->loop.epfd);
		close(r->stop_fd);
	}
	n->relay = NULL;
}

void net_relay_stats(const struct net_relay *r, uint64_t out[3])
{
	out[0] = r ? atomic_load(&r->active) : 0;
	out[1] = r ? atomic_load(&r->total) : 0;
	out[2] = r ? atomic_load(&r->failed) : 0;
}
