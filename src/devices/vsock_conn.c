/* vsock host connections: accept, the CONNECT line, buffered writes toward the host client. */
#include "devices/vsock_impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "util/log.h"
#include "util/unix_sock.h"

uint32_t vsock_conn_credit(const struct vsock_conn *c)
{
	return vsock_peer_credit(c->peer_buf_alloc, c->peer_fwd_cnt, c->tx_cnt);
}

struct vsock_conn *vsock_conn_find(struct vsock *v, uint32_t local_port, uint32_t peer_port)
{
	for (int i = 0; i < VSOCK_MAX_CONNS; i++) {
		struct vsock_conn *c = v->conns[i];
		if (c && c->state != VC_LINE && c->local_port == local_port &&
		    c->peer_port == peer_port)
			return c;
	}
	return NULL;
}

static void conn_close_fd(struct vsock *v, struct vsock_conn *c)
{
	if (c->fd < 0)
		return;
	ev_del(&v->loop, c->ev_id);
	c->ev_id = -1;
	close(c->fd);
	c->fd = -1;
	c->epoll_mask = 0;
}

void vsock_conn_free(struct vsock *v, struct vsock_conn *c)
{
	conn_close_fd(v, c);
	v->conns[c->id] = NULL;
	free(c->buf);
	free(c);
}

void vsock_conn_close_all(struct vsock *v)
{
	for (int i = 0; i < VSOCK_MAX_CONNS; i++)
		if (v->conns[i])
			vsock_conn_free(v, v->conns[i]);
}

static void conn_event(void *arg, uint32_t events);

void vsock_accept(void *vsock, uint32_t events)
{
	struct vsock *v = vsock;

	(void)events;
	for (;;) {
		/* Only our uid or root: the socket reaches into the guest. */
		int fd = unix_accept(v->listen_fd, SOCK_NONBLOCK | SOCK_CLOEXEC, "vsock socket");
		struct vsock_conn *c;
		int id = 0;

		if (fd < 0) {
			if (fd != -EAGAIN && fd != -EINTR)
				log_warn("vsock: accept on %s: %s", v->path, strerror(-fd));
			return;
		}
		while (id < VSOCK_MAX_CONNS && v->conns[id])
			id++;
		c = id < VSOCK_MAX_CONNS ? calloc(1, sizeof(*c)) : NULL;
		if (!c) {
			log_warn("vsock: refusing a connection: %d connections open", VSOCK_MAX_CONNS);
			close(fd);
			continue;
		}
		*c = (struct vsock_conn){ .fd = fd, .id = id, .dev = v, .state = VC_LINE,
					  .epoll_mask = EPOLLIN };
		c->ev_id = ev_add(&v->loop, fd, EPOLLIN, EV_LATER, conn_event, c);
		if (c->ev_id < 0) {
			log_warn("vsock: refusing a connection: it cannot be watched");
			close(fd);
			free(c);
			continue;
		}
		v->conns[id] = c;
	}
}

/* "CONNECT <port>\n", read a byte at a time so stream data behind it stays in the socket. */
static void conn_read_line(struct vsock *v, struct vsock_conn *c)
{
	char ch;
	unsigned long port;
	char *end;

	for (;;) {
		ssize_t n = recv(c->fd, &ch, 1, 0);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		if (n <= 0 || c->line_len == (int)sizeof(c->line) - 1)
			goto refuse;
		if (ch != '\n') {
			c->line[c->line_len++] = ch;
			continue;
		}
		c->line[c->line_len] = '\0';
		if (strncmp(c->line, "CONNECT ", 8) != 0)
			goto refuse;
		errno = 0;
		port = strtoul(c->line + 8, &end, 10);
		if (errno || end == c->line + 8 || *end || port > UINT32_MAX)
			goto refuse;
		if (!virtio_mmio_driver_ok(v->mmio))
			goto refuse; /* no guest driver: nobody can accept */
		c->peer_port = (uint32_t)port;
		c->local_port = v->next_port++;
		if (v->next_port < VSOCK_FIRST_HOST_PORT)
			v->next_port = VSOCK_FIRST_HOST_PORT;
		c->state = VC_REQUESTED;
		c->send_request = true;
		return;
	}
refuse:
	v->stats.conns_refused++;
	vsock_conn_free(v, c);
}

/* Write buffered guest bytes to the host client; credit goes back as the bytes leave. */
void vsock_conn_flush(struct vsock *v, struct vsock_conn *c)
{
	while (c->len && c->fd >= 0) {
		uint32_t first = VSOCK_BUF_ALLOC - c->head < c->len ? VSOCK_BUF_ALLOC - c->head : c->len;
		struct iovec iov[2] = { { c->buf + c->head, first }, { c->buf, c->len - first } };
		struct msghdr msg = { .msg_iov = iov, .msg_iovlen = c->len > first ? 2 : 1 };
		ssize_t n = sendmsg(c->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			break;
		if (n < 0) {
			/* The host client went away: drop its bytes, reset the guest side. */
			conn_close_fd(v, c);
			c->len = 0;
			c->send_rst = true;
			return;
		}
		c->head = (c->head + (uint32_t)n) % VSOCK_BUF_ALLOC;
		c->len -= (uint32_t)n;
		c->fwd_cnt += (uint32_t)n;
		v->stats.bytes_to_host += (uint64_t)n;
	}
	/* Report consumed space in batches; a stalled sender sees it at the latest when the
	 * buffer drains (then fwd_cnt - fwd_sent = VSOCK_BUF_ALLOC). */
	if (c->fwd_cnt - c->fwd_sent >= VSOCK_BUF_ALLOC / 4)
		c->send_credit = true;
	if (!c->len && c->shut_wr_pending && c->fd >= 0) {
		shutdown(c->fd, SHUT_WR);
		c->shut_wr_pending = false;
	}
}

/* A host connection's fd is ready (the device thread, under the transport lock). */
static void conn_event(void *arg, uint32_t events)
{
	struct vsock_conn *c = arg;
	struct vsock *v = c->dev;

	if (c->state == VC_LINE && (events & (EPOLLIN | EPOLLHUP | EPOLLERR))) {
		conn_read_line(v, c);
		return;
	}
	if (events & EPOLLOUT)
		vsock_conn_flush(v, c);
	if (!(events & (EPOLLHUP | EPOLLERR)) || c->fd < 0)
		return;
	if (c->state == VC_REQUESTED) {
		/* Client gave up before the guest answered: reset the guest side. */
		conn_close_fd(v, c);
		c->send_rst = true;
		return;
	}
	/* Unread bytes may remain: vsock_deliver_rx keeps reading until EOF, unwatched. */
	ev_del(&v->loop, c->ev_id);
	c->ev_id = -1;
	c->epoll_mask = 0;
	c->hup = true;
}

void vsock_conn_update_epoll(struct vsock *v, struct vsock_conn *c)
{
	uint32_t want = 0;

	if (c->fd < 0 || c->hup)
		return;
	if (c->state == VC_LINE)
		want = EPOLLIN;
	if (c->state == VC_OPEN && !c->eof && !v->rx_starved && vsock_conn_credit(c))
		want |= EPOLLIN;
	if (c->len)
		want |= EPOLLOUT;
	if (want == c->epoll_mask)
		return;
	if (ev_mod(&v->loop, c->ev_id, want) < 0)
		log_warn("vsock: the connection on port %u keeps its old events", c->local_port);
	else
		c->epoll_mask = want;
}
