/* The host side of the guest agent's protocol: vsock CONNECT, frames, and the branch fix-up. */
#include "fork/agent_notify.h"

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "core/base64.h"
#include "ctl/ctl_socket.h"

static int read_full(int fd, void *buf, size_t len)
{
	for (size_t off = 0; off < len;) {
		ssize_t n = read(fd, (char *)buf + off, len - off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -ECONNRESET;
		off += (size_t)n;
	}
	return 0;
}

int agent_request(int fd, json_t *req, json_t **out, char *err, size_t errlen)
{
	char *text = json_dumps(req, JSON_COMPACT), *body = NULL;
	uint32_t len, be;
	json_t *reply = NULL;
	int ret;

	if (!text)
		return -ENOMEM;
	len = (uint32_t)strlen(text);
	be = htonl(len);
	ret = ctl_write_all(fd, &be, 4) < 0 || ctl_write_all(fd, text, len) < 0 ? -EIO : 0;
	if (!ret)
		ret = read_full(fd, &be, 4);
	if (!ret && (len = ntohl(be)) > (1u << 20))
		ret = -EPROTO;
	if (!ret && !(body = malloc(len + 1)))
		ret = -ENOMEM;
	if (!ret)
		ret = read_full(fd, body, len);
	if (!ret && !(reply = json_loadb(body, len, 0, NULL)))
		ret = -EPROTO;
	if (!ret && !json_is_true(json_object_get(reply, "ok"))) {
		const char *msg = json_string_value(json_object_get(reply, "error"));
		snprintf(err, errlen, "agent refused %s: %s",
			 json_string_value(json_object_get(req, "op")), msg ? msg : "no reason");
		ret = -EPERM;
	} else if (ret) {
		snprintf(err, errlen, "agent %s: %s", json_string_value(json_object_get(req, "op")),
			 strerror(-ret));
	}
	if (out && !ret)
		*out = reply;
	else
		json_decref(reply);
	free(body);
	free(text);
	return ret;
}

int agent_connect(const char *path, int port, int timeout_ms, char *err, size_t errlen)
{
	char line[64];
	size_t n = 0;
	int fd = ctl_connect(path, timeout_ms), len;

	if (fd < 0) {
		snprintf(err, errlen, "connecting to %s: %s", path, strerror(-fd));
		return fd;
	}
	len = snprintf(line, sizeof(line), "CONNECT %d\n", port);
	if (ctl_write_all(fd, line, (size_t)len) < 0)
		goto bad;
	/* Byte by byte: the stream may follow the newline at once. */
	while (n < sizeof(line) - 1 && read(fd, line + n, 1) == 1 && line[n] != '\n')
		n++;
	line[n] = '\0';
	if (strncmp(line, "OK ", 3) == 0)
		return fd;
bad:
	snprintf(err, errlen, "%s: no agent listening on vsock port %d", path, port);
	close(fd);
	return -ECONNREFUSED;
}

int agent_notify_branch(const char *vsock_socket, int port, int timeout_ms, char *err,
			size_t errlen)
{
	uint8_t seed[64];
	struct timespec now;
	char *b64;
	json_t *req;
	int fd, ret;

	if (getrandom(seed, sizeof(seed), 0) != sizeof(seed)) {
		snprintf(err, errlen, "getrandom: %s", strerror(errno));
		return -errno;
	}
	fd = agent_connect(vsock_socket, port, timeout_ms, err, errlen);
	if (fd < 0)
		return fd;
	b64 = malloc(base64_encoded_size(sizeof(seed)));
	if (b64)
		base64_encode(seed, sizeof(seed), b64);
	req = json_pack("{s:s,s:s}", "op", "reseed_entropy", "data", b64 ? b64 : "");
	ret = agent_request(fd, req, NULL, err, errlen);
	json_decref(req);
	free(b64);
	if (!ret) {
		clock_gettime(CLOCK_REALTIME, &now);
		req = json_pack("{s:s,s:I}", "op", "set_clock", "time_ns",
				(json_int_t)now.tv_sec * 1000000000LL + now.tv_nsec);
		ret = agent_request(fd, req, NULL, err, errlen);
		json_decref(req);
	}
	close(fd);
	return ret;
}
