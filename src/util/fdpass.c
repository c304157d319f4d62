/* Descriptors passed over Unix sockets (SCM_RIGHTS). */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "util/fdpass.h"

ssize_t fdpass_send(int sock, const struct iovec *iov, int niov, const int *fds, int nfds,
		    int flags)
{
	char cbuf[CMSG_SPACE(FDPASS_MAX * sizeof(int))] = { 0 };
	struct msghdr m = { .msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)niov };
	ssize_t n;

	if (nfds < 0 || nfds > FDPASS_MAX)
		return -EINVAL;
	if (nfds > 0) {
		m.msg_control = cbuf;
		m.msg_controllen = CMSG_SPACE((size_t)nfds * sizeof(int));
		struct cmsghdr *c = CMSG_FIRSTHDR(&m);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN((size_t)nfds * sizeof(int));
		memcpy(CMSG_DATA(c), fds, (size_t)nfds * sizeof(int));
	}
	n = sendmsg(sock, &m, flags | MSG_NOSIGNAL);
	return n < 0 ? -errno : n;
}

ssize_t fdpass_recv(int sock, struct iovec *iov, int niov, int *fds, int maxfds, int *nfds,
		    int *truncated, int flags)
{
	char cbuf[CMSG_SPACE(FDPASS_MAX * sizeof(int))];
	struct msghdr m = { .msg_iov = iov, .msg_iovlen = (size_t)niov, .msg_control = cbuf,
			    .msg_controllen = sizeof(cbuf) };
	ssize_t n = recvmsg(sock, &m, flags | MSG_CMSG_CLOEXEC);
	int got = 0;

	for (int i = 0; i < maxfds; i++)
		fds[i] = -1;
	if (n < 0)
		return -errno;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		for (size_t i = 0; i < (c->cmsg_len - CMSG_LEN(0)) / sizeof(int); i++, got++) {
			int fd;
			memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
			if (got < maxfds)
				fds[got] = fd;
			else
				close(fd);
		}
	}
	if (nfds)
		*nfds = got;
	if (truncated)
		*truncated = (m.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) != 0;
	return n;
}

void fdpass_close(int *fds, int n)
{
	for (int i = 0; i < n; i++)
		if (fds[i] >= 0) {
			close(fds[i]);
			fds[i] = -1;
		}
}
