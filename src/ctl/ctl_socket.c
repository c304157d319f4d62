/* Unix socket helpers for the control server and its clients. */
#include "ctl/ctl_socket.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "core/log.h"

static int ctl_addr(const char *path, struct sockaddr_un *addr)
{
	memset(addr, 0, sizeof(*addr));
	addr->sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(addr->sun_path))
		return -ENAMETOOLONG;
	strcpy(addr->sun_path, path);
	return 0;
}

int ctl_connect(const char *path, int timeout_ms)
{
	struct sockaddr_un addr;
	int fd, err = ctl_addr(path, &addr);

	if (err)
		return err;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
		err = -errno;
		close(fd);
		return err;
	}
	if (timeout_ms > 0) {
		struct timeval tv = { .tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000 };
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	}
	return fd;
}

int ctl_listen(const char *path)
{
	struct sockaddr_un addr;
	int fd, err = ctl_addr(path, &addr);

	if (err)
		return log_errno(err, "control socket path %s (max %zu bytes)", path,
				 sizeof(addr.sun_path) - 1);
	fd = ctl_connect(path, 0);
	if (fd >= 0) {
		close(fd);
		return log_errno(-EADDRINUSE, "control socket %s: a running VM already answers there",
				 path);
	}
	if (unlink(path) < 0 && errno != ENOENT)
		return log_errno(-errno, "removing stale control socket %s", path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return log_errno(-errno, "socket for %s", path);
	if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
		err = log_errno(-errno, "bind control socket %s", path);
		goto err;
	}
	if (listen(fd, 64) < 0) {
		err = log_errno(-errno, "listen on control socket %s", path);
		unlink(path);
		goto err;
	}
	return fd;
err:
	close(fd);
	return err;
}

ssize_t ctl_write_all(int fd, const void *buf, size_t len)
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
