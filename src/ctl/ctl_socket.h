/* Unix socket plumbing for the control channel: listen, connect, full writes. */
#ifndef FORKVM_CTL_SOCKET_H
#define FORKVM_CTL_SOCKET_H

#include <stddef.h>
#include <sys/types.h>

/* Listen at path; a stale socket file (nobody answering) is replaced, a live one is -EADDRINUSE. */
int ctl_listen(const char *path);
int ctl_connect(const char *path, int timeout_ms);
ssize_t ctl_write_all(int fd, const void *buf, size_t len);

#endif
