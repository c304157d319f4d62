/* The control event loop: accept, read request lines, dispatch, deliver async replies. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "util/errmsg.h"
#include "util/log.h"
#include "core/vm.h"
#include "ctl/ctl_server.h"
#include "ctl/ctl_socket.h"
#include "jail/seccomp.h"
#include "net/net.h"
#include "util/clock.h"

static void client_close(struct ctl_server *srv, struct ctl_client *c)
{
	ev_del(&srv->loop, c->ev_id);
	c->ev_id = -1;
	close(c->fd);
	json_decref(c->wait_id);
	c->wait_id = NULL;
	free(c->out);
	c->out = NULL;
	c->out_off = c->out_len = c->out_cap = 0;
	c->id = 0;
	c->fd = -1;
	c->len = 0;
	c->waiting = false;
	c->closing = false;
	c->held = false;
	c->eof = false;
	c->events = 0;
}

/* Best effort, never blocks: a last word to a client that is about to be closed. */
static void send_now(int fd, json_t *reply)
{
	char *text = json_dumps(reply, JSON_COMPACT);

	if (text) {
		size_t n = strlen(text);
		text[n] = '\n';
		if (send(fd, text, n + 1, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
			log_debug("control: final reply on fd %d: %s", fd, strerror(errno));
		free(text);
	}
	json_decref(reply);
}

/* Register what the client waits for: input while its buffer has room, output while unsent. */
static void client_update(struct ctl_server *srv, struct ctl_client *c)
{
	uint32_t want = 0;

	if (!c->closing && !c->eof && c->len < sizeof(c->buf))
		want |= EPOLLIN;
	if (c->out_len > c->out_off)
		want |= EPOLLOUT;
	if (want == c->events)
		return;
	if (ev_mod(&srv->loop, c->ev_id, want) < 0) {
		log_warn("control: disconnecting client %" PRIu64, c->id);
		client_close(srv, c);
		return;
	}
	c->events = want;
}

/* A client that shut down its side has nothing more coming: no request in flight or
 * buffered (a partial last line is dropped). Closed once its replies are sent. */
static bool client_finished(const struct ctl_client *c)
{
	return c->eof && !c->waiting && !c->held && !memchr(c->buf, '\n', c->len);
}

/* Send what the socket takes now. Returns -1 when the client was closed. */
static int client_flush(struct ctl_server *srv, struct ctl_client *c)
{
	while (c->out_len > c->out_off) {
		ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off,
				 MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			break;
		if (n <= 0) {
			log_debug("control: client %" PRIu64 " went away: %s", c->id,
				  n < 0 ? strerror(errno) : "short send");
			client_close(srv, c);
			return -1;
		}
		c->out_off += (size_t)n;
		c->active_ns = monotonic_ns();
	}
	if (c->out_off == c->out_len) {
		c->out_off = c->out_len = 0;
		if (c->closing || client_finished(c)) {
			client_close(srv, c);
			return -1;
		}
	}
	client_update(srv, c);
	return c->id ? 0 : -1;
}

/* Queue one reply line (consumes reply) and send what fits; a client that lets more than
 * CTL_MAX_UNSENT bytes of replies pile up is disconnected. Returns -1 when it was closed. */
static int client_queue(struct ctl_server *srv, struct ctl_client *c, json_t *reply)
{
	char *text = json_dumps(reply, JSON_COMPACT);
	size_t n, unsent;

	json_decref(reply);
	if (!text) {
		log_warn("control: encoding a reply to client %" PRIu64 " failed; disconnecting", c->id);
		client_close(srv, c);
		return -1;
	}
	n = strlen(text);
	unsent = c->out_len - c->out_off;
	if (unsent + n + 1 > CTL_MAX_UNSENT) {
		log_warn("control: client %" PRIu64 " has %zu bytes of unread replies (max %u); "
			 "disconnecting it", c->id, unsent + n + 1, CTL_MAX_UNSENT);
		free(text);
		client_close(srv, c);
		return -1;
	}
	if (c->out_off && c->out_len + n + 1 > c->out_cap) {
		memmove(c->out, c->out + c->out_off, unsent);
		c->out_off = 0;
		c->out_len = unsent;
	}
	if (c->out_len + n + 1 > c->out_cap) {
		size_t cap = c->out_cap ? c->out_cap : 4096;
		char *grown;

		while (cap < c->out_len + n + 1)
			cap *= 2;
		grown = realloc(c->out, cap);
		if (!grown) {
			log_warn("control: no memory for a %zu-byte reply to client %" PRIu64
				 "; disconnecting", n + 1, c->id);
			free(text);
			client_close(srv, c);
			return -1;
		}
		c->out = grown;
		c->out_cap = cap;
	}
	memcpy(c->out + c->out_len, text, n);
	c->out[c->out_len + n] = '\n';
	c->out_len += n + 1;
	free(text);
	return client_flush(srv, c);
}

static struct ctl_client *client_by_id(struct ctl_server *srv, uint64_t id)
{
	for (int i = 0; i < MAX_CLIENTS; i++)
		if (srv->clients[i].id == id)
			return &srv->clients[i];
	return NULL;
}

/* While a worker has the VM paused for a snapshot, only these run; any other request
 * (pause, resume, probe commands that write the guest's mailbox, branch...) waits for it. */
static bool runs_beside_worker(const struct ctl_command *cmd)
{
	static const char *const names[] = { "status", "peek", "memhash", "stop" };

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (strcmp(cmd->name, names[i]) == 0)
			return true;
	return false;
}

/* Handle every complete line in the buffer, in order, until one needs an asynchronous reply.
 * Lines behind a waiting request stay in buf; a full buffer stops reading (client_update). */
static void client_process(struct ctl_server *srv, struct ctl_client *c)
{
	struct fvm_err err = FVM_ERR_INIT;

	while (c->id && !c->waiting && !c->closing && !c->held) {
		char *nl = memchr(c->buf, '\n', c->len);
		struct ctl_request req;
		json_t *reply, *id;
		size_t linelen;

		if (!nl) {
			if (c->len < sizeof(c->buf))
				break;
			/* One line longer than the cap: answer, then close once it is sent. */
			c->len = 0;
			c->closing = true;
			log_warn("control: client %" PRIu64 " sent a request line over %d bytes; "
				 "disconnecting it", c->id, CTL_MAX_LINE);
			client_queue(srv, c, ctl_reply_error("request line longer than %d bytes",
							      CTL_MAX_LINE));
			return;
		}
		linelen = (size_t)(nl - c->buf);
		c->active_ns = monotonic_ns();
		if (ctl_request_parse(c->buf, linelen, &req, &err) < 0) {
			reply = ctl_reply_error("%s", err_text(&err));
		} else {
			if (srv->busy && !runs_beside_worker(req.cmd)) {
				/* Keep the line; deliver_completions runs it after the worker. */
				ctl_request_release(&req);
				c->held = true;
				break;
			}
			req.client = c->id;
			id = json_object_get(req.root, "id");
			reply = req.cmd->handler(srv, &req);
			if (reply && id)
				json_object_set(reply, "id", id);
			if (!reply) {
				c->waiting = true; /* a completion will carry the reply */
				c->wait_id = json_incref(id);
			}
			ctl_request_release(&req);
		}
		memmove(c->buf, nl + 1, c->len - linelen - 1);
		c->len -= linelen + 1;
		if (reply && client_queue(srv, c, reply) < 0)
			return;
	}
	if (c->id && client_finished(c) && c->out_len == c->out_off)
		client_close(srv, c);
	else if (c->id)
		client_update(srv, c);
}

static void client_readable(struct ctl_server *srv, struct ctl_client *c)
{
	ssize_t n;

	if (c->closing || c->eof || c->len == sizeof(c->buf))
		return; /* not reading now; a hang-up shows when the replies are sent */
	n = read(c->fd, c->buf + c->len, sizeof(c->buf) - c->len);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n < 0) {
		log_debug("control: reading client %" PRIu64 ": %s", c->id, strerror(errno));
		client_close(srv, c);
		return;
	}
	if (n == 0) {
		/* Half-closed (shutdown(SHUT_WR)): the requests it sent are still answered. */
		c->eof = true;
		client_process(srv, c);
		return;
	}
	c->len += (size_t)n;
	c->active_ns = monotonic_ns();
	client_process(srv, c);
}

static void client_event(void *arg, uint32_t events)
{
	struct ctl_client *c = arg;
	struct ctl_server *srv = c->srv;

	if (!c->id)
		return;
	if ((events & EPOLLOUT) && client_flush(srv, c) < 0)
		return;
	if (events & (EPOLLHUP | EPOLLERR)) {
		if (!(c->events & EPOLLIN) || c->closing) {
			client_close(srv, c); /* gone, and nothing left to read from it */
			return;
		}
	}
	if (events & (EPOLLIN | EPOLLHUP | EPOLLERR))
		client_readable(srv, c);
}

static bool client_idle(const struct ctl_client *c)
{
	return c->id && !c->waiting && !c->held;
}

static void client_drop_idle(struct ctl_server *srv, struct ctl_client *c, const char *why)
{
	log_info("control: closing client %" PRIu64 ": %s", c->id, why);
	send_now(c->fd, ctl_reply_error("connection closed: %s", why));
	client_close(srv, c);
}

/* Close clients idle past the timeout; returns the epoll timeout until the next one (ms). */
static int sweep_idle(struct ctl_server *srv)
{
	uint64_t now = monotonic_ns(), next = UINT64_MAX;
	char why[64];

	if (!srv->idle_ns)
		return -1;
	snprintf(why, sizeof(why), "idle for %" PRIu64 " ms", srv->idle_ns / 1000000);
	for (int i = 0; i < MAX_CLIENTS; i++) {
		struct ctl_client *c = &srv->clients[i];
		if (!client_idle(c))
			continue;
		if (now - c->active_ns >= srv->idle_ns)
			client_drop_idle(srv, c, why);
		else if (c->active_ns + srv->idle_ns - now < next)
			next = c->active_ns + srv->idle_ns - now;
	}
	if (next == UINT64_MAX)
		return -1;
	return next / 1000000 >= INT32_MAX ? INT32_MAX : (int)(next / 1000000 + 1);
}

static void accept_client(void *arg, uint32_t events)
{
	struct ctl_server *srv = arg;
	int fd = ctl_accept(srv->listen_fd); /* refuses peers of another uid */
	struct ctl_client *slot = NULL, *oldest = NULL;

	(void)events;
	if (fd < 0)
		return;
	for (int i = 0; i < MAX_CLIENTS && !slot; i++) {
		struct ctl_client *c = &srv->clients[i];
		if (!c->id)
			slot = c;
		else if (client_idle(c) && (!oldest || c->active_ns < oldest->active_ns))
			oldest = c;
	}
	if (!slot && oldest) {
		/* Full: the longest-idle client makes room, so idle connections cannot lock out. */
		client_drop_idle(srv, oldest, "the connection table is full and this one was idle "
					      "the longest");
		slot = oldest;
	}
	if (slot) {
		slot->id = ++srv->next_id;
		slot->fd = fd;
		slot->len = 0;
		slot->waiting = slot->closing = slot->held = false;
		slot->events = EPOLLIN;
		slot->active_ns = monotonic_ns();
		slot->srv = srv;
		slot->ev_id = ev_add(&srv->loop, fd, EPOLLIN, EV_LATER, client_event, slot);
		if (slot->ev_id >= 0)
			return;
		slot->id = 0;
		slot->fd = -1;
		slot->events = 0;
	}
	send_now(fd, ctl_reply_error("too many control connections (max %d, all busy)", MAX_CLIENTS));
	close(fd);
}

static void deliver_completions(struct ctl_server *srv)
{
	uint64_t count;
	struct completion *c = ctl_take_completions(srv);

	if (read(srv->done_fd, &count, sizeof(count)) < 0 && errno != EAGAIN)
		log_warn("control: reading completion eventfd: %s", strerror(errno));
	while (c) {
		struct completion *next = c->next;
		struct ctl_client *cl = client_by_id(srv, c->client);
		if (c->probe)
			c->reply = ctl_probe_reply(c->probe);
		if (c->worker) {
			ctl_worker_join(srv); /* it has returned, or is about to */
			ctl_thp_schedule(srv, THP_AFTER_WORKER_NS);
			for (int i = 0; i < MAX_CLIENTS; i++) {
				struct ctl_client *h = &srv->clients[i];
				if (h->id && h->held && h != cl) {
					h->held = false;
					client_process(srv, h);
				}
			}
			if (cl)
				cl->held = false;
		}
		if (cl) {
			cl->waiting = false;
			cl->active_ns = monotonic_ns();
			if (cl->wait_id)
				json_object_set(c->reply, "id", cl->wait_id);
			json_decref(cl->wait_id);
			cl->wait_id = NULL;
			if (client_queue(srv, cl, c->reply) == 0)
				client_process(srv, cl);
		} else {
			json_decref(c->reply);
		}
		free(c);
		c = next;
	}
}

static void on_done(void *arg, uint32_t events)
{
	(void)events;
	deliver_completions(arg);
}

static void on_end(void *arg, uint32_t events)
{
	struct ctl_server *srv = arg;

	(void)events;
	srv->running = false;
}

static void on_signal(void *arg, uint32_t events)
{
	struct ctl_server *srv = arg;
	struct signalfd_siginfo si;

	(void)events;
	if (read(srv->sig_fd, &si, sizeof(si)) == sizeof(si))
		vm_request_end(srv->vm, VM_END_STOPPED, "signal %s", strsignal((int)si.ssi_signo));
}

/* The idle timeout: CTL_IDLE_ENV in ms (0 = none), else CTL_IDLE_MS_DEFAULT. */
static uint64_t idle_timeout_ns(void)
{
	const char *s = getenv(CTL_IDLE_ENV);
	unsigned long long ms;
	char *end;

	if (!s || !*s)
		return CTL_IDLE_MS_DEFAULT * 1000000ULL;
	errno = 0;
	ms = strtoull(s, &end, 10);
	if (errno || *end || s[0] == '-' || ms > INT32_MAX) {
		log_warn("%s=%s is not a number of milliseconds; using %d", CTL_IDLE_ENV, s,
			 CTL_IDLE_MS_DEFAULT);
		return CTL_IDLE_MS_DEFAULT * 1000000ULL;
	}
	return ms * 1000000ULL;
}


/* The network broker this VMM started ended. It outlives a VMM that runs normally, so this is
 * a kill or its seccomp filter: say which, once, here, where the family's errors point. */
static void on_broker_end(void *arg, uint32_t events)
{
	struct ctl_server *srv = arg;
	pid_t pid = net_broker_child();
	char why[96] = "how, unknown";
	int status;

	(void)events;
	if (pid > 0 && waitpid(pid, &status, WNOHANG) == pid)
		jail_describe_wait(status, why, sizeof(why));
	log_warn("network broker forkvm-netd (pid %d) ended: %s; this VM's published ports "
		 "stopped (the broker relayed them) and no VM of its family can get a network now",
		 (int)pid, why);
	ev_del(&srv->loop, srv->broker_id);
	close(srv->broker_fd);
	srv->broker_fd = srv->broker_id = -1;
}

/* Watch the broker this process started, if any (a pidfd turns readable when it ends). */
static void watch_broker(struct ctl_server *srv)
{
	pid_t pid = net_broker_child();

	if (pid <= 0)
		return;
	srv->broker_fd = (int)syscall(SYS_pidfd_open, pid, 0);
	if (srv->broker_fd < 0) {
		log_warn("network broker (pid %d): no pidfd (%s): its end will not be reported",
			 (int)pid, strerror(errno));
		return;
	}
	srv->broker_id = ev_add(&srv->loop, srv->broker_fd, EPOLLIN, EV_LATER, on_broker_end,
				srv);
	if (srv->broker_id < 0) {
		log_warn("network broker (pid %d): watching it: %s", (int)pid,
			 strerror(-srv->broker_id));
		close(srv->broker_fd);
		srv->broker_fd = srv->broker_id = -1;
	}
}
static int server_open(struct ctl_server *srv, struct vm *vm, const char *path)
{
	sigset_t sigs;
	int err;

	srv->vm = vm;
	srv->done_tail = &srv->done_head;
	srv->pending.next = srv->pending.prev = &srv->pending;
	pthread_mutex_init(&srv->lock, NULL);
	/* A slot is free while its id is 0 (calloc): its fields are set when it is taken. Not
	 * touching the 64 slots here keeps the 4 MiB table's untouched pages shared zero pages,
	 * 256 KiB less private memory per VM (docs/PERFORMANCE.md). */
	srv->idle_ns = idle_timeout_ns();
	err = ev_init(&srv->loop, "control");
	if (err)
		return err;
	srv->listen_fd = ctl_listen(path);
	if (srv->listen_fd < 0)
		return srv->listen_fd;
	srv->done_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGHUP);
	srv->sig_fd = signalfd(-1, &sigs, SFD_CLOEXEC | SFD_NONBLOCK);
	if (srv->done_fd < 0 || srv->sig_fd < 0)
		return log_errno(-errno, "setting up the control loop for %s", path);
	if ((err = ev_add(&srv->loop, srv->listen_fd, EPOLLIN, EV_LATER, accept_client, srv)) < 0 ||
	    (err = ev_add(&srv->loop, srv->done_fd, EPOLLIN, EV_LATER, on_done, srv)) < 0 ||
	    (err = ev_add(&srv->loop, vm->end_eventfd, EPOLLIN, EV_LATER, on_end, srv)) < 0 ||
	    (err = ev_add(&srv->loop, srv->sig_fd, EPOLLIN, EV_LATER, on_signal, srv)) < 0)
		return log_errno(err, "control socket %s: watching its fds", path);
	watch_broker(srv);
	return 0;
}

static void server_close(struct ctl_server *srv, const char *path)
{
	if (srv->broker_fd >= 0)
		close(srv->broker_fd);
	srv->broker_fd = -1;
	deliver_completions(srv);
	for (int i = 0; i < MAX_CLIENTS; i++) {
		struct ctl_client *c = &srv->clients[i];
		if (!c->id)
			continue;
		/* Never blocks: what the socket does not take now is dropped with the client. */
		if (c->waiting) {
			json_t *reply = ctl_reply_error("VM ended (%s) before the guest answered",
							vm_end_reason_name(srv->vm->end_reason));

			if (c->wait_id)
				json_object_set(reply, "id", c->wait_id);
			if (client_queue(srv, c, reply) < 0)
				continue;
		}
		client_close(srv, c);
	}
	ctl_drop_pending(srv);
	if (srv->listen_fd >= 0) {
		close(srv->listen_fd);
		unlink(path);
	}
	ev_fini(&srv->loop);
	if (srv->done_fd >= 0)
		close(srv->done_fd);
	if (srv->sig_fd >= 0)
		close(srv->sig_fd);
	pthread_mutex_destroy(&srv->lock);
}

int ctl_serve(struct vm *vm, const char *path, int ready_fd)
{
	struct ctl_server *srv = calloc(1, sizeof(*srv));
	int err;

	if (!srv)
		return log_errno(-ENOMEM, "allocating the control server");
	srv->listen_fd = srv->done_fd = srv->sig_fd = srv->loop.epfd = -1;
	srv->broker_fd = srv->broker_id = -1;
	err = server_open(srv, vm, path);
	/* The control thread's filter goes last, once every other thread runs (docs/SECURITY.md). */
	if (!err && (err = jail_seccomp_apply(JAIL_ROLE_CONTROL)) < 0) {
		vm_request_end(vm, VM_END_ERROR, "seccomp filter of the control thread: %s",
			       strerror(-err));
		goto out;
	}
	if (err) {
		vm_request_end(vm, VM_END_ERROR, "control socket %s: %s", path, strerror(-err));
		goto out;
	}
	if (ready_fd >= 0) {
		if (write(ready_fd, "R", 1) != 1)
			log_warn("writing the ready byte: %s", strerror(errno));
		close(ready_fd);
	}
	srv->running = true;
	while (srv->running) {
		int n = ev_run_once(&srv->loop, sweep_idle(srv));
		if (n < 0) {
			vm_request_end(vm, VM_END_ERROR, "control loop: %s", strerror(-n));
			break;
		}
	}
out:
	ctl_worker_join(srv); /* a snapshot in progress finishes; its reply is sent below */
	vm_join(vm); /* no vCPU thread (and so no probe completion) runs past this point */
	server_close(srv, path);
	free(srv);
	return err;
}
