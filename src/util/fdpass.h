/* Descriptors passed over Unix sockets (SCM_RIGHTS): one message, its bytes and its fds. */
#ifndef FORKVM_UTIL_FDPASS_H
#define FORKVM_UTIL_FDPASS_H

#include <sys/types.h>
#include <sys/uio.h>

#define FDPASS_MAX 4 /* fds per message, either way */

/* sendmsg of iov[0..niov) with fds[0..nfds) (nfds <= FDPASS_MAX) and flags (MSG_NOSIGNAL is
 * added). The bytes sent, or -errno. */
ssize_t fdpass_send(int sock, const struct iovec *iov, int niov, const int *fds, int nfds,
		    int flags);
/*
 * recvmsg into iov[0..niov) with flags (MSG_CMSG_CLOEXEC is added). The first maxfds fds
 * received go to fds[] (the rest of fds[] is -1), any more are closed; *nfds: how many came
 * in all (so a caller can refuse a message with too many). *truncated: the bytes or the fds
 * did not fit. The bytes received, or -errno.
 */
ssize_t fdpass_recv(int sock, struct iovec *iov, int niov, int *fds, int maxfds, int *nfds,
		    int *truncated, int flags);
/* Close fds[0..n) that are >= 0 and set them to -1. */
void fdpass_close(int *fds, int n);

#endif
