/* The control event loop: accept, read request lines, dispatch, deliver async replies. */
#include <inttypes.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/log.h"
#include "core/vm.h"
#include "ctl/ctl_server.h"
#include "ctl/ctl_socket.h"

/* epoll tags: small integers for the fixed fds, slot index + TAG_CLIENT for clients. */
enum { TAG_LISTEN, TAG_DONE, TAG_END, TAG_SIGNAL, TAG_CLIENT };

static int loop_add(struct ctl_server *srv, int fd, uint64_t tag)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = tag };

	if (epoll_ctl(srv->epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
		return log_errno(-errno, "epoll_ctl add fd %d", fd);
	return 0;
}

static void client_close(struct ctl_server *srv, struct ctl_client *c)
{
	epoll_ctl(srv->epfd, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	c->id = 0;
	c->fd = -1;
	c->len = 0;
	c->waiting = false;
}

static struct ctl_client *client_by_id(struct ctl_server *srv, uint64_t id)
{
	for (int i = 0; i < MAX_CLIENTS; i++)
		if (srv->clients[i].id == id)
			return &srv->clients[i];
	return NULL;
}

/* Handle every complete line in the buffer until one needs an asynchronous reply. */
static void client_process(struct ctl_server *srv, struct ctl_client *c)
{
	char err[256];

	while (!c->waiting) {
		char *nl = memchr(c->buf, '\n', c->len);
		struct ctl_request req;
		json_t *reply, *id;
		size_t linelen;

		if (!nl)
			return;
		linelen = (size_t)(nl - c->buf);
		if (ctl_request_parse(c->buf, linelen, &req, err, sizeof(err)) < 0) {
			reply = ctl_reply_error("%s", err);
		} else {
			req.client = c->id;
			id = json_object_get(req.root, "id");
			reply = req.cmd->handler(srv, &req);
			if (!reply)
				c->waiting = true; /* a completion will carry the reply */
			else if (id)
				json_object_set(reply, "id", id);
			ctl_request_release(&req);
		}
		memmove(c->buf, nl + 1, c->len - linelen - 1);
		c->len -= linelen + 1;
		if (reply) {
			ctl_client_send(c, reply);
			json_decref(reply);
		}
	}
}

static void client_readable(struct ctl_server *srv, struct ctl_client *c)
{
	ssize_t n = read(c->fd, c->buf + c->len, sizeof(c->buf) - c->len);

	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		client_close(srv, c);
		return;
	}
	c->len += (size_t)n;
	client_process(srv, c);
	if (c->id && c->len == sizeof(c->buf) && !memchr(c->buf, '\n', c->len)) {
		json_t *reply = ctl_reply_error("request line longer than %d bytes", CTL_MAX_LINE);
		ctl_client_send(c, reply);
		json_decref(reply);
		client_close(srv, c);
	}
}

static void accept_client(struct ctl_server *srv)
{
	int fd = accept4(srv->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

	if (fd < 0)
		return;
	for (int i = 0; i < MAX_CLIENTS; i++) {
		struct ctl_client *c = &srv->clients[i];
		if (c->id)
			continue;
		c->id = ++srv->next_id;
		c->fd = fd;
		c->len = 0;
		c->waiting = false;
		if (loop_add(srv, fd, TAG_CLIENT + (uint64_t)i) == 0)
			return;
		c->id = 0;
		break;
	}
	json_t *reply = ctl_reply_error("too many control connections (max %d)", MAX_CLIENTS);
	struct ctl_client tmp = { .fd = fd };
	ctl_client_send(&tmp, reply);
	json_decref(reply);
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
		if (cl) {
			ctl_client_send(cl, c->reply);
			cl->waiting = false;
			client_process(srv, cl);
		}
		json_decref(c->reply);
		free(c);
		c = next;
	}
}

static void on_signal(struct ctl_server *srv)
{
	struct signalfd_siginfo si;

	if (read(srv->sig_fd, &si, sizeof(si)) == sizeof(si))
		vm_request_end(srv->vm, VM_END_STOPPED, "signal %s", strsignal((int)si.ssi_signo));
}

static int server_open(struct ctl_server *srv, struct vm *vm, const char *path)
{
	sigset_t sigs;

	srv->vm = vm;
	srv->done_tail = &srv->done_head;
	srv->pending.next = srv->pending.prev = &srv->pending;
	pthread_mutex_init(&srv->lock, NULL);
	for (int i = 0; i < MAX_CLIENTS; i++)
		srv->clients[i].fd = -1;
	srv->listen_fd = ctl_listen(path);
	if (srv->listen_fd < 0)
		return srv->listen_fd;
	srv->epfd = epoll_create1(EPOLL_CLOEXEC);
	srv->done_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGHUP);
	srv->sig_fd = signalfd(-1, &sigs, SFD_CLOEXEC | SFD_NONBLOCK);
	if (srv->epfd < 0 || srv->done_fd < 0 || srv->sig_fd < 0)
		return log_errno(-errno, "setting up the control loop for %s", path);
	if (loop_add(srv, srv->listen_fd, TAG_LISTEN) || loop_add(srv, srv->done_fd, TAG_DONE) ||
	    loop_add(srv, vm->end_eventfd, TAG_END) || loop_add(srv, srv->sig_fd, TAG_SIGNAL))
		return -EIO;
	return 0;
}

static void server_close(struct ctl_server *srv, const char *path)
{
	deliver_completions(srv);
	for (int i = 0; i < MAX_CLIENTS; i++) {
		struct ctl_client *c = &srv->clients[i];
		if (!c->id)
			continue;
		if (c->waiting) {
			json_t *reply = ctl_reply_error("VM ended (%s) before the guest answered",
							vm_end_reason_name(srv->vm->end_reason));
			ctl_client_send(c, reply);
			json_decref(reply);
		}
		client_close(srv, c);
	}
	ctl_drop_pending(srv);
	if (srv->listen_fd >= 0) {
		close(srv->listen_fd);
		unlink(path);
	}
	if (srv->epfd >= 0)
		close(srv->epfd);
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
	srv->listen_fd = srv->epfd = srv->done_fd = srv->sig_fd = -1;
	err = server_open(srv, vm, path);
	if (err) {
		vm_request_end(vm, VM_END_ERROR, "control socket %s: %s", path, strerror(-err));
		goto out;
	}
	if (ready_fd >= 0) {
		if (write(ready_fd, "R", 1) != 1)
			log_warn("writing the ready byte: %s", strerror(errno));
		close(ready_fd);
	}
	for (bool running = true; running;) {
		struct epoll_event evs[16];
		int n = epoll_wait(srv->epfd, evs, 16, -1);
		if (n < 0 && errno != EINTR) {
			vm_request_end(vm, VM_END_ERROR, "epoll_wait: %s", strerror(errno));
			break;
		}
		for (int i = 0; i < n; i++) {
			uint64_t tag = evs[i].data.u64;
			if (tag == TAG_LISTEN)
				accept_client(srv);
			else if (tag == TAG_DONE)
				deliver_completions(srv);
			else if (tag == TAG_END)
				running = false;
			else if (tag == TAG_SIGNAL)
				on_signal(srv);
			else if (srv->clients[tag - TAG_CLIENT].id)
				client_readable(srv, &srv->clients[tag - TAG_CLIENT]);
		}
	}
out:
	vm_join(vm); /* no vCPU thread (and so no probe completion) runs past this point */
	server_close(srv, path);
	free(srv);
	return err;
}
