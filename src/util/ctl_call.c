/* The control protocol's client side: one JSON request line, one reply line. */
#include "util/ctl_call.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "util/errmsg.h"
#include "util/unix_sock.h"
#include "util/unix_sock.h"

static int connect_to(const char *path, int timeout_ms)
{
	int fd = unix_connect(path, 0);

	if (fd >= 0 && timeout_ms > 0) {
		struct timeval tv = { .tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000 };
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	}
	return fd;
}

static ssize_t send_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;
	size_t done = 0;

	while (done < len) {
		ssize_t n = send(fd, p + done, len - done, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN) {
				/* Replies are small; wait briefly for a slow reader rather than drop. */
				struct pollfd pfd = { .fd = fd, .events = POLLOUT };
				if (poll(&pfd, 1, 1000) > 0)
					continue;
			}
			return -errno;
		}
		done += (size_t)n;
	}
	return (ssize_t)done;
}

static int read_line(int fd, char **out, size_t *outlen)
{
	size_t cap = 4096, len = 0;
	char *buf = malloc(cap);

	if (!buf)
		return -ENOMEM;
	for (;;) {
		ssize_t n;
		if (len == cap) {
			char *grown = cap < (64u << 20) ? realloc(buf, cap * 2) : NULL;
			if (!grown) {
				free(buf);
				return -E2BIG;
			}
			buf = grown;
			cap *= 2;
		}
		n = read(fd, buf + len, cap - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			int err = n < 0 ? -errno : -ECONNRESET;
			free(buf);
			return err;
		}
		char *nl = memchr(buf + len, '\n', (size_t)n);
		len += (size_t)n;
		if (nl) {
			*out = buf;
			*outlen = (size_t)(nl - buf);
			return 0;
		}
	}
}

int ctl_call(const char *path, json_t *request, json_t **reply, int timeout_ms, struct fvm_err *err)
{
	return ctl_call_peer(path, -1, -1, request, reply, timeout_ms, err);
}

int ctl_call_peer(const char *path, int pid, int uid, json_t *request, json_t **reply,
		  int timeout_ms, struct fvm_err *err)
{
	json_error_t jerr;
	char *text = NULL, *line = NULL;
	size_t linelen = 0;
	int fd, ret;

	*reply = NULL;
	fd = connect_to(path, timeout_ms);
	if (fd < 0) {
		return errmsg(err, fd, "cannot reach VM at %s: %s", path, strerror(-fd));
	}
	if ((ret = unix_peer_check(fd, pid, uid, path, err))) {
		close(fd);
		return ret;
	}
	text = json_dumps(request, JSON_COMPACT);
	ret = text ? 0 : -ENOMEM;
	if (!ret) {
		/* One write for the whole line: a one-shot server may answer and close at once. */
		size_t n = strlen(text);
		char *grown = realloc(text, n + 2);
		if (grown) {
			text = grown;
			memcpy(text + n, "\n", 2);
		}
		if (!grown || send_all(fd, text, n + 1) < 0)
			ret = grown ? -errno : -ENOMEM;
	}
	if (!ret)
		ret = read_line(fd, &line, &linelen);
	if (ret) {
		errf(err, "talking to VM at %s: %s", path,
			 ret == -EAGAIN ? "timed out" : strerror(-ret));
		goto out;
	}
	*reply = json_loadb(line, linelen, 0, &jerr);
	if (!*reply) {
		errf(err, "VM at %s sent invalid JSON: %s", path, jerr.text);
		ret = -EPROTO;
	}
out:
	free(text);
	free(line);
	close(fd);
	return ret;
}
