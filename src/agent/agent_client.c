/* The host side of the guest agent's protocol: vsock CONNECT and frames, with deadlines. */
#include "agent/agent_client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "util/errmsg.h"
#include "util/unix_sock.h"
#include "util/clock.h"

/* Wait until fd has `events`: 0, -ETIMEDOUT, -ECANCELED or -errno of poll. */
static int wait_io(int fd, short events, uint64_t deadline_ns, int cancel_fd)
{
	for (;;) {
		struct pollfd p[2] = { { .fd = fd, .events = events },
				       { .fd = cancel_fd, .events = POLLIN } };
		int timeout_ms = -1, r;

		if (deadline_ns) {
			uint64_t now = monotonic_ns(), left_ms;
			if (now >= deadline_ns)
				return -ETIMEDOUT;
			left_ms = (deadline_ns - now + 999999) / 1000000;
			timeout_ms = left_ms > INT_MAX ? INT_MAX : (int)left_ms;
		}
		r = poll(p, cancel_fd >= 0 ? 2 : 1, timeout_ms);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (cancel_fd >= 0 && (p[1].revents & POLLIN))
			return -ECANCELED;
		if (r > 0 && p[0].revents)
			return 0;
	}
}

/* Read what is there (at least one byte): n > 0, 0 at end of stream, or -errno. */
static ssize_t read_some(int fd, void *buf, size_t len, uint64_t deadline_ns, int cancel_fd)
{
	for (;;) {
		ssize_t n = read(fd, buf, len);
		int ret;

		if (n >= 0)
			return n;
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN)
			return -errno;
		ret = wait_io(fd, POLLIN, deadline_ns, cancel_fd);
		if (ret)
			return ret;
	}
}

/* len bytes or an error: the end of the stream before them is -ECONNRESET; *got says how far. */
static int read_full(int fd, void *buf, size_t len, size_t *got, uint64_t deadline_ns,
		     int cancel_fd)
{
	*got = 0;
	while (*got < len) {
		ssize_t n = read_some(fd, (char *)buf + *got, len - *got, deadline_ns, cancel_fd);
		if (n < 0)
			return (int)n;
		if (n == 0)
			return -ECONNRESET;
		*got += (size_t)n;
	}
	return 0;
}

static int write_all(int fd, const void *buf, size_t len, uint64_t deadline_ns, int cancel_fd)
{
	for (size_t off = 0; off < len;) {
		ssize_t n = send(fd, (const char *)buf + off, len - off, MSG_NOSIGNAL);
		int ret;

		if (n > 0) {
			off += (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno != EAGAIN)
			return -errno;
		ret = wait_io(fd, POLLOUT, deadline_ns, cancel_fd);
		if (ret)
			return ret;
	}
	return 0;
}

int agent_vsock_open(const char *path, struct fvm_err *err)
{
	/* A Unix connect completes at once; a full backlog is EAGAIN, never EINPROGRESS. */
	int fd = unix_connect(path, SOCK_NONBLOCK);

	if (fd < 0)
		return errmsg(err, fd, "connecting to %s: %s", path, strerror(-fd));
	return fd;
}

int agent_vsock_connect(int fd, const char *path, int port, uint64_t deadline_ns, int cancel_fd,
			struct fvm_err *err)
{
	char line[64];
	size_t n = 0;
	int len = snprintf(line, sizeof(line), "CONNECT %d\n", port), ret;

	ret = write_all(fd, line, (size_t)len, deadline_ns, cancel_fd);
	if (ret == -EPIPE || ret == -ECONNRESET)
		return errmsg(err, -ECONNREFUSED,
			      "%s: no agent listening on vsock port %d (closed while sending CONNECT)",
			      path, port);
	if (ret)
		return errmsg(err, ret, "%s: sending CONNECT %d: %s", path, port,
			      ret == -ETIMEDOUT ? "no room within the deadline" : strerror(-ret));
	/* Byte by byte: the stream to the agent may follow the newline at once. */
	while (n < sizeof(line) - 1) {
		ssize_t r = read_some(fd, line + n, 1, deadline_ns, cancel_fd);
		if (r == 0 || r == -ECONNRESET)
			return errmsg(err, -ECONNREFUSED,
				      "%s: no agent listening on vsock port %d (closed without an answer)",
				      path, port);
		if (r < 0)
			return errmsg(err, (int)r, "%s: waiting for the answer to CONNECT %d: %s",
				      path, port, r == -ETIMEDOUT ? "none within the deadline" :
				      strerror((int)-r));
		if (line[n] == '\n')
			break;
		n++;
	}
	line[n] = '\0';
	if (n == sizeof(line) - 1)
		return errmsg(err, -EPROTO, "%s: answer to CONNECT %d has no newline in %zu bytes",
			      path, port, n);
	if (strncmp(line, "OK ", 3) != 0)
		return errmsg(err, -EPROTO, "%s: unexpected answer to CONNECT %d: '%s'", path,
			      port, line);
	return 0;
}

int agent_connect(const char *path, int port, uint64_t deadline_ns, int cancel_fd,
		  struct fvm_err *err)
{
	int fd, ret;

	/* A full backlog (EAGAIN: many connections at once to a busy VMM) passes: retried
	 * until the deadline. */
	while ((fd = agent_vsock_open(path, err)) == -EAGAIN && monotonic_ns() < deadline_ns) {
		errclear(err);
		usleep(2000);
	}
	if (fd < 0)
		return fd;
	ret = agent_vsock_connect(fd, path, port, deadline_ns, cancel_fd, err);
	if (ret) {
		close(fd);
		return ret;
	}
	return fd;
}

/* An I/O failure of one request, in words. */
static int io_error(struct fvm_err *err, const char *op, int ret, const char *stage,
		    size_t got, size_t want)
{
	if (ret == -ETIMEDOUT)
		return errmsg(err, ret, "%s: no %s within the deadline", op, stage);
	if (ret == -ECANCELED)
		return errmsg(err, ret, "%s: canceled while waiting for the %s", op, stage);
	if (ret == -ECONNRESET && got == 0 && want)
		return errmsg(err, ret, "%s: connection closed before the %s", op, stage);
	if (ret == -ECONNRESET && want)
		return errmsg(err, ret, "%s: connection closed after %zu of %zu %s bytes", op,
			      got, want, stage);
	return errmsg(err, ret, "%s: %s: %s", op, stage, strerror(-ret));
}

/* Read one frame and parse it as a JSON object into *out. */
static int recv_frame(int fd, const char *op, json_t **out, uint64_t deadline_ns, int cancel_fd,
		      struct fvm_err *err)
{
	char *body = NULL;
	uint32_t len, be;
	size_t got = 0;
	int ret;

	*out = NULL;
	ret = read_full(fd, &be, 4, &got, deadline_ns, cancel_fd);
	if (ret) {
		/* The header is the reply's first bytes: closed before it = before the reply. */
		ret = got ? io_error(err, op, ret, "reply header", got, 4)
			  : io_error(err, op, ret, "reply", 0, 1);
		goto out;
	}
	len = ntohl(be);
	if (len > AGENT_CLIENT_MAX_FRAME) {
		ret = errmsg(err, -EPROTO, "%s: reply of %u bytes exceeds the %u-byte limit",
			     op, len, AGENT_CLIENT_MAX_FRAME);
		goto out;
	}
	body = malloc((size_t)len + 1);
	if (!body) {
		ret = errmsg(err, -ENOMEM, "%s: %u-byte reply buffer: %s", op, len,
			     strerror(ENOMEM));
		goto out;
	}
	ret = read_full(fd, body, len, &got, deadline_ns, cancel_fd);
	if (ret) {
		ret = io_error(err, op, ret, "reply", got, len);
		goto out;
	}
	body[len] = '\0';
	*out = json_loadb(body, len, JSON_ALLOW_NUL, NULL);
	if (!json_is_object(*out)) {
		json_decref(*out);
		*out = NULL;
		ret = errmsg(err, -EPROTO, "%s: the reply is not a JSON object: '%.120s'", op,
			     body);
	}
out:
	free(body);
	return ret;
}

int agent_send(int fd, json_t *msg, uint64_t deadline_ns, int cancel_fd, struct fvm_err *err)
{
	const char *op = json_string_value(json_object_get(msg, "op")) ?: "request";
	char *text = json_dumps(msg, JSON_COMPACT);
	uint32_t len, be;
	int ret;

	if (!text)
		return errmsg(err, -ENOMEM, "%s: encoding the request: %s", op,
			      strerror(ENOMEM));
	len = (uint32_t)strlen(text);
	be = htonl(len);
	ret = write_all(fd, &be, 4, deadline_ns, cancel_fd);
	if (!ret)
		ret = write_all(fd, text, len, deadline_ns, cancel_fd);
	if (ret)
		ret = io_error(err, op, ret, "request sent", 0, 0);
	free(text);
	return ret;
}

int agent_request_stream(int fd, json_t *req, agent_event_fn on_event, void *arg, json_t **out,
			 uint64_t deadline_ns, int cancel_fd, struct fvm_err *err)
{
	const char *op = json_string_value(json_object_get(req, "op")) ?: "request";
	int ret = agent_send(fd, req, deadline_ns, cancel_fd, err);

	if (ret == 0)
		ret = agent_receive_stream(fd, op, on_event, arg, out, deadline_ns, cancel_fd, err);
	return ret;
}

int agent_receive_stream(int fd, const char *op, agent_event_fn on_event, void *arg,
			 json_t **out, uint64_t deadline_ns, int cancel_fd, struct fvm_err *err)
{
	json_t *reply = NULL;
	int ret = 0;

	/* Event frames (a streamed exec's output) come before the one reply. */
	for (;;) {
		ret = recv_frame(fd, op, &reply, deadline_ns, cancel_fd, err);
		if (ret || !json_object_get(reply, "event"))
			break;
		if (!on_event) {
			ret = errmsg(err, -EPROTO, "%s: an event frame where a reply belongs",
				     op);
			goto out;
		}
		ret = on_event(arg, reply, err);
		json_decref(reply);
		reply = NULL;
		if (ret)
			goto out;
	}
	if (ret)
		goto out;
	if (!json_is_true(json_object_get(reply, "ok"))) {
		const char *msg = json_string_value(json_object_get(reply, "error"));
		ret = errmsg(err, -EREMOTEIO, "agent refused %s: %s", op,
			     msg ? msg : "no reason given");
		goto out;
	}
	if (out) {
		*out = reply;
		reply = NULL;
	}
out:
	json_decref(reply);
	return ret;
}

int agent_request(int fd, json_t *req, json_t **out, uint64_t deadline_ns, int cancel_fd,
		  struct fvm_err *err)
{
	return agent_request_stream(fd, req, NULL, NULL, out, deadline_ns, cancel_fd, err);
}
