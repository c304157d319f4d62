/* The control protocol's client side (docs/CONTROL.md): for the CLI, for a parent asking its
 * child VMMs, and for tests. */
#ifndef FORKVM_UTIL_CTL_CALL_H
#define FORKVM_UTIL_CTL_CALL_H

#include <jansson.h>
#include <stddef.h>

#include "util/errmsg.h"

/*
 * Connect to the control socket at path, send request as one line, read one reply line
 * (timeout_ms bounds each read; -1 = none). Returns 0 with *reply to json_decref, or -errno
 * with err naming the socket and what failed (unreachable, timed out, invalid JSON).
 */
int ctl_call(const char *path, json_t *request, json_t **reply, int timeout_ms,
	     struct fvm_err *err);
/* ctl_call to a server checked first (unix_peer_check: pid and uid, -1 any). */
int ctl_call_peer(const char *path, int pid, int uid, json_t *request, json_t **reply,
		  int timeout_ms, struct fvm_err *err);

#endif
