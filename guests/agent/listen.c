/* Listening sockets; everything after accept is transport-agnostic. */
#include "listen.h"
#include "log.h"

#include <errno.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <linux/vm_sockets.h>

#define LISTEN_BACKLOG 64

static int bind_and_listen(int fd, const struct sockaddr *addr, socklen_t len, const char *what)
{
	if (bind(fd, addr, len) < 0)
		return log_errno(-errno, "bind %s", what);
	if (listen(fd, LISTEN_BACKLOG) < 0)
		return log_errno(-errno, "listen on %s", what);
	return 0;
}

int listen_unix(const char *path, int *out_fd)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	struct stat st;
	int fd = -1, ret;

	if (snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path) >=
	    (int)sizeof(addr.sun_path))
		return log_errno(-ENAMETOOLONG, "unix socket path %s", path);
	/* A socket left by a previous run would make bind fail; anything else is kept. */
	if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode) && unlink(path) < 0)
		return log_errno(-errno, "remove stale socket %s", path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return log_errno(-errno, "create unix socket for %s", path);
	ret = bind_and_listen(fd, (struct sockaddr *)&addr, sizeof(addr), path);
	if (ret < 0)
		goto out;
	*out_fd = fd;
	fd = -1;
out:
	if (fd >= 0)
		close(fd);
	return ret;
}

int listen_vsock(unsigned int port, int *out_fd)
{
	struct sockaddr_vm addr = {
		.svm_family = AF_VSOCK,
		.svm_cid = VMADDR_CID_ANY,
		.svm_port = port,
	};
	char what[32];
	int fd = -1, ret;

	snprintf(what, sizeof(what), "vsock port %u", port);
	fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return log_errno(-errno, "create socket for %s", what);
	ret = bind_and_listen(fd, (struct sockaddr *)&addr, sizeof(addr), what);
	if (ret < 0)
		goto out;
	*out_fd = fd;
	fd = -1;
out:
	if (fd >= 0)
		close(fd);
	return ret;
}
