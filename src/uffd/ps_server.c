/* Page-server main loop: one event loop over the socket, connections and every VM's uffd. */
#include "uffd/ps_server.h"

#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
		ev_del(&s->loop, c->ev_id);
		close(c->fd);
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

static void on_listen(void *arg, uint32_t events)
{
	(void)events;
	ps_accept_all(arg);
}

static void on_signal(void *arg, uint32_t events)
{
	struct ps_server *s = arg;

	(void)events;
	s->quit = true;
}

/* Every 50 ms: the settle detectors sample their VMs' fault counts. */
static void on_tick(void *arg)
{
	struct ps_server *s = arg;
	uint64_t now = monotonic_ns();

	for (struct ps_vm *vm = s->vms; vm; vm = vm->next)
		if (!vm->gone)
			ps_settle_tick(s, vm, now);
	ev_timer_arm(&s->loop, &s->tick, now + 50000000, on_tick, s);
}

static int serve_setup(struct ps_server *s, const char *path)
{
	sigset_t sigs;
	int ret;

	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGHUP);
	sigprocmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);
	s->sig_fd = signalfd(-1, &sigs, SFD_CLOEXEC | SFD_NONBLOCK);
	if (s->sig_fd < 0)
		return log_errno(-errno, "signalfd for the page server");
	ret = listen_on(s);
	if (ret)
		return ret;
	if ((ret = ev_add(&s->loop, s->listen_fd, EPOLLIN, EV_LATER, on_listen, s)) < 0 ||
	    (ret = ev_add(&s->loop, s->sig_fd, EPOLLIN, EV_LATER, on_signal, s)) < 0)
		return log_errno(ret, "page server: watching its socket %s", path);
	on_tick(s);
	ret = jail_pageserver_enter(); /* socket bound as root; nothing served yet */
	if (ret)
		return ret;
	return jail_seccomp_apply(JAIL_ROLE_PAGESERVER);
}

int ps_serve(const char *path, uint32_t fault_around)
{
	struct ps_server s = { .path = path, .fault_around = fault_around ? fault_around : 1,
			       .listen_fd = -1, .sig_fd = -1 };
	int ret;

	s.t_start = monotonic_ns();
	ret = ev_init(&s.loop, "page server");
	if (ret)
		return ret;
	ret = serve_setup(&s, path);
	if (ret)
		goto out;
	log_info("page server listening on %s (fault-around %u pages)", path, s.fault_around);
	while (!s.quit) {
		bool busy = false;
		for (struct ps_vm *vm = s.vms; vm && !busy; vm = vm->next)
			busy = !vm->gone && vm->phase != PS_IDLE;
		int n = ev_run_once(&s.loop, busy ? 0 : 100);
		if (n < 0) {
			ret = n;
			break;
		}
		/* The pending faults were served above; now one bounded background step per VM. */
		if (n == 0 || busy)
			for (struct ps_vm *vm = s.vms; vm; vm = vm->next)
				ps_prefetch_step(&s, vm);
		reap(&s, monotonic_ns());
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
	ev_fini(&s.loop);
	if (s.listen_fd >= 0)
		close(s.listen_fd);
	if (s.sig_fd >= 0)
		close(s.sig_fd);
	return ret;
}
