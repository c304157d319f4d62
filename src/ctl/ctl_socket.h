/* Unix socket plumbing for the control server: listen, accept, path confinement. */
#ifndef FORKVM_CTL_SOCKET_H
#define FORKVM_CTL_SOCKET_H

#include <stddef.h>
#include <sys/types.h>

#include "util/errmsg.h"

#include <stdbool.h>

/* Most directories ctl_listen remembers as roots for path-bearing request fields. */
#define CTL_MAX_ROOTS 8

/*
 * Listen at path through unix_listen (util/unix_sock.h): a 0600 socket in a directory only
 * we can write; a stale socket file (nobody answering) is replaced, a live one is
 * -EADDRINUSE, a non-socket is left alone. The directory becomes a root for ctl_path_check.
 */
int ctl_listen(const char *path);
/* Accept a client whose uid is ours or root (others are refused and logged once). */
int ctl_accept(int listen_fd);
/*
 * Confine a path-bearing request field (docs/CONTROL.md, Security): inside a directory this
 * process listened in, the CLI run directory, or $FORKVM_SNAPSHOT_ROOTS (default /tmp,
 * /var/tmp, /dev/shm). Returns 0 or -errno with a message naming field in err.
 */
int ctl_path_check(const char *field, const char *path, bool allow_root, struct fvm_err *err);

#endif
