/* Page-server main loop: one epoll over the socket, connections and every VM's uffd. */
#include "uffd/ps_server.h"

#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"

#define CONN_IDLE_NS (30ULL * 1000000000) /* an unregistered connection must finish by then */
#define MAX_CONNS 4096
#define MAX_GONE 256

uint64_t ps_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000 + (uint64_t)ts.tv_nsec;
}

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
			 "uptime_ms", (json_int_t)((ps_now_ns() - s->t_start) / 1000000),
			 "fault_around", (int)s->fault_around, "vms", vms);
}

static void handle_line(struct ps_server *s, struct ps_conn *c, char *line, int *fd)
{
	json_error_t jerr;
	json_t *req = json_loads(line, JSON_REJECT_DUPLICATES, &jerr);
	const char *cmd = json_string_value(json_object_get(req, "cmd"));
	char err[768];

	if (!req || !cmd) {
		conn_reply(c, json_pack("{s:b,s:s}", "ok", 0, "error",
					req ? "request needs a string 'cmd'" : "invalid JSON"));
	} else if (!strcmp(cmd, "status")) {
		conn_reply(c, status(s));
	} else if (!strcmp(cmd, "register") && c->vm) {
		conn_reply(c, json_pack("{s:b,s:s}", "ok", 0, "error", "this connection already "
					"registered a VM"));
	} else if (!strcmp(cmd, "register")) {
		if (ps_vm_register(s, c, req, *fd, err, sizeof(err)) == 0) {
			*fd = -1; /* the VM owns it now */
		} else {
			log_warn("register from %s refused: %s",
				 json_string_value(json_object_get(req, "name")) ?: "?", err);
			conn_reply(c, json_pack("{s:b,s:s}", "ok", 0, "error", err));
		}
	} else {
		conn_reply(c, json_pack("{s:b,s:s+}", "ok", 0, "error", "unknown command ", cmd));
	}
	json_decref(req);
}

static void conn_readable(struct ps_server *s, struct ps_conn *c)
{
	char cbuf[CMSG_SPACE(4 * sizeof(int))];
	struct iovec iov = { c->buf + c->len, sizeof(c->buf) - c->len - 1 };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
			     .msg_controllen = sizeof(cbuf) };
	ssize_t n = recvmsg(c->fd, &mh, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
	int fd = -1;

	for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
			continue;
		int *fds = (int *)CMSG_DATA(cm), nfds = (int)((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int));
		for (int i = 0; i < nfds; i++) {
			if (fd < 0)
				fd = fds[i];
			else
				close(fds[i]); /* only one fd per message is meaningful */
		}
	}
	if (n <= 0) {
		if (fd >= 0)
			close(fd);
		if (n < 0 && errno == EAGAIN)
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
		conn_reply(c, json_pack("{s:b,s:s}", "ok", 0, "error", "request line over 64 KiB"));
		c->dead = true;
	}
}

static void accept_all(struct ps_server *s)
{
	for (;;) {
		int fd = accept4(s->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
		if (fd < 0) {
			if (errno != EAGAIN && errno != EINTR)
				log_warn("accept on %s: %s", s->path, strerror(errno));
			return;
		}
		struct ps_conn *c = s->nconns < MAX_CONNS ? calloc(1, sizeof(*c)) : NULL;
		if (!c) {
			log_warn("refusing a connection: %d open", s->nconns);
			close(fd);
			continue;
		}
		c->kind = PS_CONN;
		c->fd = fd;
		c->deadline = ps_now_ns() + CONN_IDLE_NS;
		if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, fd,
			      &(struct epoll_event){ .events = EPOLLIN, .data.ptr = c }) < 0) {
			log_warn("epoll_ctl add connection: %s", strerror(errno));
			close(fd);
			free(c);
			continue;
		}
		c->next = s->conns;
		s->conns = c;
		s->nconns++;
	}
}

/* Safe point: free dead connections and all but the newest MAX_GONE dropped VMs. */
static void reap(struct ps_server *s, uint64_t now)
{
	int gone = 0;

	for (struct ps_conn **pp = &s->conns, *c; (c = *pp);) {
		if (!c->vm && now > c->deadline)
			c->dead = true;
		if (!c->dead) {
			pp = &c->next;
			continue;
		}
		if (c->vm)
			ps_vm_drop(s, c->vm, "the VMM closed its connection");
		close(c->fd); /* also leaves the epoll set */
		*pp = c->next;
		s->nconns--;
		free(c);
	}
	for (struct ps_vm **pp = &s->vms, *vm; (vm = *pp);) {
		if (vm->gone && ++gone > MAX_GONE) {
			*pp = vm->next;
			ps_vm_free(vm);
			continue;
		}
		pp = &vm->next;
	}
}

static int listen_on(struct ps_server *s)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd;

	if (strlen(s->path) >= sizeof(sa.sun_path))
		return log_errno(-ENAMETOOLONG, "page-server socket %s", s->path);
	strcpy(sa.sun_path, s->path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return log_errno(-errno, "socket for %s", s->path);
	/* A socket file nobody answers on is a leftover of a dead server: replace it. */
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
		close(fd);
		return log_errno(-EADDRINUSE, "a page server already listens on %s", s->path);
	}
	close(fd);
	unlink(s->path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return log_errno(-errno, "socket for %s", s->path);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || chmod(s->path, 0600) < 0 ||
	    listen(fd, 512) < 0) {
		int e = -errno;
		close(fd);
		return log_errno(e, "listen on %s", s->path);
	}
	s->listen_fd = fd;
	return 0;
}

static void dispatch(struct ps_server *s, struct epoll_event *ev, int n, bool uffds, bool *quit)
{
	for (int i = 0; i < n; i++) {
		enum ps_kind kind = *(enum ps_kind *)ev[i].data.ptr;
		/* Demand faults first: every uffd of the batch before any connection. */
		if ((kind == PS_UFFD) != uffds)
			continue;
		if (kind == PS_UFFD && !((struct ps_vm *)ev[i].data.ptr)->gone)
			ps_vm_uffd_ready(s, ev[i].data.ptr);
		else if (kind == PS_CONN && !((struct ps_conn *)ev[i].data.ptr)->dead)
			conn_readable(s, ev[i].data.ptr);
		else if (kind == PS_LISTEN)
			accept_all(s);
		else if (kind == PS_SIGNAL)
			*quit = true;
	}
}

int ps_serve(const char *path, uint32_t fault_around)
{
	struct ps_server s = { .path = path, .listen_kind = PS_LISTEN, .sig_kind = PS_SIGNAL,
			       .fault_around = fault_around ? fault_around : 1,
			       .listen_fd = -1, .sig_fd = -1 };
	struct epoll_event ev[64];
	sigset_t sigs;
	uint64_t last_tick = 0;
	bool quit = false;
	int ret;

	s.t_start = ps_now_ns();
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGHUP);
	sigprocmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);
	s.epfd = epoll_create1(EPOLL_CLOEXEC);
	s.sig_fd = signalfd(-1, &sigs, SFD_CLOEXEC | SFD_NONBLOCK);
	if (s.epfd < 0 || s.sig_fd < 0)
		return log_errno(-errno, "epoll/signalfd for the page server");
	ret = listen_on(&s);
	if (ret)
		goto out;
	epoll_ctl(s.epfd, EPOLL_CTL_ADD, s.listen_fd,
		  &(struct epoll_event){ .events = EPOLLIN, .data.ptr = &s.listen_kind });
	epoll_ctl(s.epfd, EPOLL_CTL_ADD, s.sig_fd,
		  &(struct epoll_event){ .events = EPOLLIN, .data.ptr = &s.sig_kind });
	log_info("page server listening on %s (fault-around %u pages)", path, s.fault_around);
	while (!quit) {
		bool busy = false;
		for (struct ps_vm *vm = s.vms; vm && !busy; vm = vm->next)
			busy = !vm->gone && vm->phase != PS_IDLE;
		int n = epoll_wait(s.epfd, ev, 64, busy ? 0 : 100);
		if (n < 0 && errno != EINTR) {
			ret = log_errno(-errno, "epoll_wait");
			break;
		}
		dispatch(&s, ev, n > 0 ? n : 0, true, &quit);
		dispatch(&s, ev, n > 0 ? n : 0, false, &quit);
		/* Background work only when no fault is waiting: one bounded step per VM. */
		if (n <= 0 || busy)
			for (struct ps_vm *vm = s.vms; vm; vm = vm->next)
				ps_prefetch_step(&s, vm);
		uint64_t now = ps_now_ns();
		if (now - last_tick >= 50000000) {
			last_tick = now;
			for (struct ps_vm *vm = s.vms; vm; vm = vm->next)
				if (!vm->gone)
					ps_settle_tick(&s, vm, now);
		}
		reap(&s, now);
	}
	log_info("page server on %s stopping", path);
	for (struct ps_vm *vm = s.vms; vm; vm = vm->next)
		ps_vm_drop(&s, vm, "page server stopping");
	reap(&s, UINT64_MAX);
	while (s.vms) {
		struct ps_vm *vm = s.vms;
		s.vms = vm->next;
		ps_vm_free(vm);
	}
	unlink(path);
out:
	if (s.listen_fd >= 0)
		close(s.listen_fd);
	close(s.sig_fd);
	close(s.epfd);
	return ret;
}
