/* Page-server connections: accept, read lines (+ SCM_RIGHTS fds), register and status. */
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "util/errmsg.h"
#include "util/fdpass.h"
#include "util/log.h"
#include "util/unix_sock.h"
#include "uffd/ps_server.h"
#include "util/clock.h"

#define CONN_IDLE_NS (30ULL * 1000000000) /* an unregistered connection must finish by then */
#define MAX_CONNS 4096

static void conn_reply(struct ps_conn *c, json_t *o)
{
	char *line = o ? json_dumps(o, JSON_COMPACT) : NULL;
	size_t len, off = 0;

	json_decref(o);
	if (!line) {
		c->dead = true;
		return;
	}
	len = strlen(line);
	line[len++] = '\n';
	while (off < len) {
		ssize_t n = send(c->fd, line + off, len - off, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0 && errno == EAGAIN &&
		    poll(&(struct pollfd){ .fd = c->fd, .events = POLLOUT }, 1, 1000) == 1)
			continue;
		if (n < 0) {
			c->dead = true;
			break;
		}
		off += (size_t)n;
	}
	free(line);
}

static json_t *status(struct ps_server *s)
{
	json_t *vms = json_array();

	for (struct ps_vm *vm = s->vms; vm; vm = vm->next)
		json_array_append_new(vms, ps_vm_status(vm));
	return json_pack("{s:b,s:i,s:I,s:i,s:o}", "ok", 1, "pid", (int)getpid(),
			 "uptime_ms", (json_int_t)((monotonic_ns() - s->t_start) / 1000000),
			 "fault_around", (int)s->fault_around, "vms", vms);
}

static void handle_line(struct ps_server *s, struct ps_conn *c, char *line, int *fd)
{
	json_error_t jerr;
	json_t *req = json_loads(line, JSON_REJECT_DUPLICATES, &jerr);
	const char *cmd = json_string_value(json_object_get(req, "cmd"));
	struct fvm_err err = FVM_ERR_INIT;

	if (!req || !cmd) {
		conn_reply(c, json_pack("{s:b,s:s}", "ok", 0, "error",
					req ? "request needs a string 'cmd'" : "invalid JSON"));
	} else if (!strcmp(cmd, "status")) {
		conn_reply(c, status(s));
	} else if (!strcmp(cmd, "register") && c->vm) {
		conn_reply(c, json_pack("{s:b,s:s}", "ok", 0, "error", "this connection already "
					"registered a VM"));
	} else if (!strcmp(cmd, "register")) {
		if (ps_vm_register(s, c, req, *fd, &err) == 0) {
			*fd = -1; /* the VM owns it now */
		} else {
			log_warn("register from %s refused: %s",
				 json_string_value(json_object_get(req, "name")) ?: "?", err.msg);
			conn_reply(c, json_pack("{s:b,s:s}", "ok", 0, "error", err.msg));
		}
	} else {
		conn_reply(c, json_pack("{s:b,s:s+}", "ok", 0, "error", "unknown command ", cmd));
	}
	json_decref(req);
}

void ps_conn_readable(struct ps_server *s, struct ps_conn *c)
{
	struct iovec iov = { c->buf + c->len, sizeof(c->buf) - c->len - 1 };
	int fd = -1; /* only one fd per message is meaningful: any more are closed */
	ssize_t n = fdpass_recv(c->fd, &iov, 1, &fd, 1, NULL, NULL, MSG_DONTWAIT);

	if (n <= 0) {
		fdpass_close(&fd, 1);
		if (n == -EAGAIN)
			return;
		c->dead = true;
		return;
	}
	c->len += (size_t)n;
	c->buf[c->len] = 0;
	char *nl;
	while (!c->dead && (nl = memchr(c->buf, '\n', c->len))) {
		*nl = 0;
		handle_line(s, c, c->buf, &fd);
		c->len -= (size_t)(nl + 1 - c->buf);
		memmove(c->buf, nl + 1, c->len);
	}
	if (fd >= 0)
		close(fd);
	if (c->len >= sizeof(c->buf) - 1) {
		conn_reply(c, json_pack("{s:b,s:s}", "ok", 0, "error", "request line over 16 KiB"));
		c->dead = true;
	}
}

static void conn_event(void *arg, uint32_t events)
{
	struct ps_conn *c = arg;

	(void)events;
	if (!c->dead)
		ps_conn_readable(c->srv, c);
}

void ps_accept_all(struct ps_server *s)
{
	for (;;) {
		/* Only our uid or root: a connection can read any VM's RAM. */
		int fd = unix_accept(s->listen_fd, SOCK_CLOEXEC | SOCK_NONBLOCK, "page-server socket");
		if (fd < 0) {
			if (fd != -EAGAIN && fd != -EINTR)
				log_warn("accept on %s: %s", s->path, strerror(-fd));
			return;
		}
		struct ps_conn *c = s->nconns < MAX_CONNS ? calloc(1, sizeof(*c)) : NULL;
		if (!c) {
			log_warn("refusing a connection: %d open", s->nconns);
			close(fd);
			continue;
		}
		c->srv = s;
		c->fd = fd;
		c->deadline = monotonic_ns() + CONN_IDLE_NS;
		c->ev_id = ev_add(&s->loop, fd, EPOLLIN, EV_LATER, conn_event, c);
		if (c->ev_id < 0) {
			close(fd);
			free(c);
			continue;
		}
		c->next = s->conns;
		s->conns = c;
		s->nconns++;
	}
}
