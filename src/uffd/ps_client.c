/* VMM ↔ page server handshake: connect, register (JSON + SCM_RIGHTS), ack, all bounded. */
#include "uffd/ps_client.h"

#include <fcntl.h>
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

#include "util/errmsg.h"
#include "util/log.h"
#include "util/stopfd.h"
#include "snapshot/snap_layer.h"
#include "uffd/ps_proto.h"
#include "util/clock.h"
#include "util/fdpass.h"
#include "util/unix_sock.h"

/* Wait for fd (or a cancelling signal) until the deadline: 0, -ETIMEDOUT or -ECANCELED. */
static int wait_fd(int fd, short events, int sig_fd, uint64_t deadline, int cap_ms)
{
	struct pollfd p[2] = { { .fd = sig_fd, .events = POLLIN }, { .fd = fd, .events = events } };
	int left = deadline_ms_left(deadline);
	int r;

	if (left <= 0)
		return -ETIMEDOUT;
	if (cap_ms && left > cap_ms)
		left = cap_ms;
	r = poll(p, fd >= 0 ? 2 : 1, left);
	if (r < 0)
		return errno == EINTR ? 0 : -errno;
	if (p[0].revents & POLLIN)
		return -ECANCELED;
	return 0;
}

static int connect_retry(struct ps_client *c, int sig_fd, uint64_t deadline)
{
	int last = 0;

	for (;;) {
		int fd = unix_connect(c->path, 0);
		if (fd >= 0) {
			c->sock = fd;
			return 0;
		}
		last = -fd;
		/* No server yet (or its backlog is full): an operator may be starting it now. */
		if (last != ENOENT && last != ECONNREFUSED && last != EAGAIN)
			return log_errno(-last, "connect to page server %s", c->path);
		int r = wait_fd(-1, 0, sig_fd, deadline, 50);
		if (r == -ETIMEDOUT)
			return log_errno(-ETIMEDOUT, "no page server answered on %s (%s; start one with "
					 "`forkvm pageserver --socket %s`)", c->path, strerror(last),
					 c->path);
		if (r)
			return log_errno(r, "connecting to page server %s", c->path);
	}
}

static int send_register(struct ps_client *c, const struct ps_client_opts *o,
			 const struct guest_mem *mem, const char *snapdir)
{
	struct ps_register r = { .pid = getpid(), .base = (uint64_t)(uintptr_t)mem->host,
				 .size = mem->size, .file_offset = 0, .page_size = 4096,
				 .nregions = mem->nregions, .record = o->record,
				 .prefetch = o->prefetch, .allow_bad_hotpages = o->allow_bad_hotpages,
				 .settle_ms = o->settle_ms, .record_max_ms = o->record_max_ms };
	char *line;
	int ret = 0;

	if (!realpath(snapdir, r.snapshot))
		return log_errno(-errno, "resolving snapshot directory %s", snapdir);
	snprintf(r.name, sizeof(r.name), "%s", o->name ? o->name : "vm");
	for (int i = 0; i < mem->nregions; i++)
		r.regions[i] = (struct ps_region){ mem->regions[i].gpa, mem->regions[i].size,
						   mem->regions[i].offset };
	json_t *j = ps_register_to_json(&r);
	line = j ? json_dumps(j, JSON_COMPACT) : NULL;
	json_decref(j);
	if (!line)
		return log_errno(-ENOMEM, "building the register message");
	size_t len = strlen(line);
	line[len++] = '\n';
	struct iovec iov = { line, len };
	/* A few hundred bytes on a fresh socket: one sendmsg, never partial in practice. */
	ssize_t n = fdpass_send(c->sock, &iov, 1, &mem->fd, 1, 0);
	if (n != (ssize_t)len)
		ret = log_errno(n < 0 ? (int)n : -EIO, "sending the register message to %s", c->path);
	free(line);
	return ret;
}

static int read_ack(struct ps_client *c, int sig_fd, uint64_t deadline, int timeout_ms)
{
	char buf[4096];
	size_t len = 0;
	json_t *ack;

	while (!memchr(buf, '\n', len)) {
		int r = wait_fd(c->sock, POLLIN, sig_fd, deadline, 0);
		if (r == -ETIMEDOUT)
			return log_errno(r, "page server %s did not acknowledge the restore within %d ms",
					 c->path, timeout_ms);
		if (r)
			return log_errno(r, "waiting for page server %s", c->path);
		ssize_t n = recv(c->sock, buf + len, sizeof(buf) - 1 - len, MSG_DONTWAIT);
		if (n == 0)
			return log_errno(-ECONNRESET, "page server %s closed the connection before "
					 "acknowledging the restore", c->path);
		if (n < 0 && errno != EAGAIN)
			return log_errno(-errno, "reading the ack from page server %s", c->path);
		len += n > 0 ? (size_t)n : 0;
		if (len >= sizeof(buf) - 1)
			return log_errno(-EPROTO, "page server %s: ack longer than 4 KiB", c->path);
	}
	*(char *)memchr(buf, '\n', len) = 0;
	ack = json_loads(buf, 0, NULL);
	if (!json_is_object(ack)) {
		json_decref(ack);
		return log_errno(-EPROTO, "page server %s: the ack is not a JSON object", c->path);
	}
	if (!json_is_true(json_object_get(ack, "ok"))) {
		const char *e = json_string_value(json_object_get(ack, "error"));
		log_err("page server %s refused the restore: %s", c->path, e ? e : "(no reason)");
		json_decref(ack);
		return -ECONNREFUSED;
	}
	log_info("page server %s: registered as vm %lld, %lld hot pages prefetched in %lld us%s%s",
		 c->path, json_integer_value(json_object_get(ack, "vm")),
		 json_integer_value(json_object_get(ack, "pages_prefetched")),
		 json_integer_value(json_object_get(ack, "prefetch_us")),
		 json_object_get(ack, "note") ? "; " : "",
		 json_string_value(json_object_get(ack, "note")) ?: "");
	json_decref(ack);
	return 0;
}

int ps_client_register(struct ps_client *c, const struct ps_client_opts *o,
		       const struct guest_mem *mem, const char *snapdir, const char *memory_path)
{
	uint64_t deadline;
	struct stat st;
	struct fvm_err why = FVM_ERR_INIT;
	int ret, sig_fd;

	*c = (struct ps_client){ .sock = -1, .stop_efd = -1, .uffd = mem->fd, .mem_fd = -1,
				 .mem = mem };
	snprintf(c->path, sizeof(c->path), "%s", o->path);
	deadline = deadline_after_ms(o->timeout_ms);
	/* Polled, never read: it only tells us to give up. */
	sig_fd = stop_signal_fd();
	if (sig_fd < 0)
		return log_errno(sig_fd, "signalfd for the page-server handshake");
	/* The fallback handler needs the memory file should the server die later. Opened without
	 * blocking on a FIFO in its place; a symbolic link is fine (diff layers). */
	ret = file_open_regular(memory_path, 0, &st, &why);
	if (ret < 0) {
		log_err("page-server fallback: %s", why.msg);
		goto err;
	}
	c->mem_fd = ret;
	ret = connect_retry(c, sig_fd, deadline);
	if (!ret)
		ret = send_register(c, o, mem, snapdir);
	if (!ret)
		ret = read_ack(c, sig_fd, deadline, o->timeout_ms);
	if (ret)
		goto err;
	close(sig_fd);
	return 0;
err:
	close(sig_fd);
	ps_client_close(c);
	return ret;
}
