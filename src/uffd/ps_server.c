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
#include <unistd.h>

#include "util/log.h"
#include "jail/jail.h"
#include "jail/seccomp.h"
#include "util/unix_sock.h"
#include "util/clock.h"

#define MAX_GONE 256

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
	/* unix_listen: 0600 in a private directory; only a dead socket file is replaced. */
	int fd = unix_listen(s->path, 512, SOCK_NONBLOCK, "page-server socket");

	if (fd < 0)
		return fd;
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
			ps_conn_readable(s, ev[i].data.ptr);
		else if (kind == PS_LISTEN)
			ps_accept_all(s);
		else if (kind == PS_SIGNAL)
			*quit = true;
	}
}

int ps_serve(const char *path, uint32_t fault_around)
{
	struct ps_server s = { .path = path, .listen_kind = PS_LISTEN, .sig_kind = PS_SIGNAL,
			       .fault_around = fault_around ? fault_around : 1,
			       .listen_fd = -1, .sig_fd = -1, .epfd = -1 };
	struct epoll_event ev[64];
	sigset_t sigs;
	uint64_t last_tick = 0;
	bool quit = false;
	int ret;

	s.t_start = monotonic_ns();
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGHUP);
	sigprocmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);
	s.epfd = epoll_create1(EPOLL_CLOEXEC);
	s.sig_fd = signalfd(-1, &sigs, SFD_CLOEXEC | SFD_NONBLOCK);
	if (s.epfd < 0 || s.sig_fd < 0) {
		ret = log_errno(-errno, "epoll/signalfd for the page server");
		goto out;
	}
	ret = listen_on(&s);
	if (ret)
		goto out;
	if (epoll_ctl(s.epfd, EPOLL_CTL_ADD, s.listen_fd,
		      &(struct epoll_event){ .events = EPOLLIN, .data.ptr = &s.listen_kind }) < 0 ||
	    epoll_ctl(s.epfd, EPOLL_CTL_ADD, s.sig_fd,
		      &(struct epoll_event){ .events = EPOLLIN, .data.ptr = &s.sig_kind }) < 0) {
		ret = log_errno(-errno, "epoll_ctl add the page-server socket %s", path);
		goto out;
	}
	ret = jail_pageserver_enter(); /* socket bound as root; nothing served yet */
	if (ret)
		goto out;
	ret = jail_seccomp_apply(JAIL_ROLE_PAGESERVER);
	if (ret)
		goto out;
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
		/* The pending faults were served above; now one bounded background step per VM. */
		if (n <= 0 || busy)
			for (struct ps_vm *vm = s.vms; vm; vm = vm->next)
				ps_prefetch_step(&s, vm);
		uint64_t now = monotonic_ns();
		if (now - last_tick >= 50000000) {
			last_tick = now;
			for (struct ps_vm *vm = s.vms; vm; vm = vm->next)
				if (!vm->gone)
					ps_settle_tick(&s, vm, now);
		}
		reap(&s, now);
	}
	log_info("page server on %s stopping: populating the RAM of every VM first", path);
	for (struct ps_vm *vm = s.vms; vm; vm = vm->next) {
		if (vm->recording)
			ps_record_finish(vm, "page server stopping");
		if (!vm->gone)
			ps_vm_drain(&s, vm);
		ps_vm_drop(&s, vm, "page server stopping (RAM complete)");
	}
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
	if (s.sig_fd >= 0)
		close(s.sig_fd);
	if (s.epfd >= 0)
		close(s.epfd);
	return ret;
}
