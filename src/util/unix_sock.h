/* The one way forkvm listens on a Unix socket and the one check on who may connect. */
#ifndef FORKVM_UNIX_SOCK_H
#define FORKVM_UNIX_SOCK_H

#include <stdbool.h>
#include <stddef.h>

#include "util/errmsg.h"

/*
 * Listen on a SOCK_STREAM Unix socket at path (what names it in errors: "control socket").
 * - The containing directory is created 0700 if missing; an existing one must be owned by
 *   our euid and not group- or world-writable, else -EPERM with a message saying why.
 * - The socket file is mode 0600 whatever the umask, and never reachable by another user
 *   with a wider mode: it is bound in a private (0700) directory, chmod'ed, then linked
 *   into place.
 * - A socket file at path that nobody answers on is replaced; a live one is -EADDRINUSE;
 *   anything that is not a socket is left alone (-EEXIST).
 * sock_flags adds SOCK_NONBLOCK etc. (SOCK_CLOEXEC is always set). Returns the fd or -errno.
 */
int unix_listen(const char *path, int backlog, int sock_flags, const char *what);

/*
 * A SOCK_STREAM connection to the Unix socket at path (SOCK_CLOEXEC always; sock_flags adds
 * SOCK_NONBLOCK). A path longer than sun_path holds is -ENAMETOOLONG, never cut short to
 * another socket's name. Returns the fd or the -errno of socket/connect (ENOENT: nothing there,
 * ECONNREFUSED: nobody listening, EAGAIN: its backlog is full).
 */
int unix_connect(const char *path, int sock_flags);

/* Whether a process serves the Unix socket at path (it accepts, or its backlog is full):
 * true means the path is someone's, not a stale file to remove. */
bool unix_sock_live(const char *path);

/*
 * The server a connected fd reached is the one expected: the process that listens (pid, -1
 * any) as the user expected (uid, -1 any), from SO_PEERCRED. A client that cannot trust the
 * path (a socket in a directory a VM owns may have been swapped for a link to another VM's)
 * checks who answered. 0, or -EPERM with err naming path and who answers there.
 */
int unix_peer_check(int fd, int pid, int uid, const char *path, struct fvm_err *err);

/*
 * accept4() that only returns peers whose SO_PEERCRED uid is our euid or root; others are
 * closed and logged once per (what, uid); what must be a string literal. Returns the fd or -errno (-EAGAIN when nothing is left).
 */
int unix_accept(int listen_fd, int flags, const char *what);

/* Whether the peer of a connected Unix socket is our euid or root (false if unknown). */
bool unix_peer_trusted(int fd, unsigned *uid);

/*
 * Path confinement for request fields. path must be absolute, without "." or ".."
 * components, and (after resolving symlinks of its longest existing prefix) strictly
 * inside one of the roots, or equal to one when allow_root. Roots: extra_roots (a NULL-
 * terminated list, may be NULL), then $FORKVM_SNAPSHOT_ROOTS (colon-separated) or, when that is unset or empty,
 * /tmp, /var/tmp and /dev/shm. On refusal returns -EACCES/-EINVAL with err naming field.
 */
int path_confine(const char *field, const char *path, const char *const *extra_roots,
		 bool allow_root, struct fvm_err *err);

/* The roots path_confine allows: $FORKVM_SNAPSHOT_ROOTS, or "/tmp:/var/tmp:/dev/shm". */
const char *path_snapshot_roots(void);

/* A file name field (a VM name, a prefix): 1-maxlen bytes, no '/', no leading '.'. */
int name_check(const char *field, const char *name, size_t maxlen, struct fvm_err *err);

#endif
