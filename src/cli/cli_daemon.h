/*
 * The CLI's side of forkvmd (docs/DAEMON.md, "The CLI and the daemon"): a small HTTP client
 * (libcurl, loaded only when a command talks to a daemon) for the daemon's REST API on its
 * Unix socket or, for a remote daemon, http(s)://HOST:PORT with a bearer token; and the rule
 * that decides whether a VM named on the command line is one of the daemon's sandboxes (then
 * the commands go through the daemon, so its records stay right) or a VM of our own.
 */
#ifndef FORKVM_CLI_DAEMON_H
#define FORKVM_CLI_DAEMON_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/errmsg.h"

/*
 * Where the daemon is, from the global option `--daemon WHERE` (a socket path, or an http://
 * or https:// URL) or `--no-daemon` (where NULL: never ask a daemon). Without a call the CLI
 * uses $FORKVM_DAEMON_URL, else $FORKVM_DAEMON_SOCKET, else DAEMON_DEFAULT_SOCKET.
 * Returns 0, or -EINVAL / -ENAMETOOLONG with err set.
 */
int cli_daemon_set(const char *where, struct fvm_err *err);
/* The daemon's socket path or URL, for messages ("" under --no-daemon). */
const char *cli_daemon_where(void);

/*
 * Whether a daemon answers: a Unix socket that exists (when it does not, nothing else is
 * tried, so the direct path pays nothing) and answers GET /v1/healthz within 2 s, or the URL's
 * daemon answering the same. Decided once per process.
 */
bool cli_daemon_running(void);

/*
 * One JSON request to the daemon: body (NULL: none) sent as JSON, the JSON answer in *reply
 * (json_decref it). Returns 0, or -errno with err naming the daemon, the request and, for an
 * error answer, the daemon's status, code and message ("... 404 not_found: no sandbox X"):
 * -EINVAL 400, -EACCES 401, -ENOENT 404, -EBUSY 409, -EFBIG 413, -EREMOTEIO 422,
 * -ETIMEDOUT 504, -EIO other 5xx; -ECONNREFUSED, -ETIMEDOUT or -EIO when it did not answer.
 */
int cli_daemon_call(const char *method, const char *path, json_t *body, json_t **reply,
		    struct fvm_err *err);

/*
 * The same with raw bytes both ways (the files routes): data/len sent as
 * application/octet-stream (data NULL: no body); the answer's bytes in *out (malloc'd, with a
 * NUL after *out_len bytes; free it). Same returns.
 */
int cli_daemon_call_raw(const char *method, const char *path, const void *data, size_t len,
			uint8_t **out, size_t *out_len, struct fvm_err *err);

/*
 * A streamed answer (application/x-ndjson, e.g. a streamed exec): body sent as JSON, each line
 * of a 2xx answer passed to on_line as it arrives (borrowed). on_line returns 0 to go on, or
 * -errno (its message already given) to stop: that is then the result. An error answer is
 * returned as cli_daemon_call does.
 */
typedef int (*cli_daemon_line_fn)(void *arg, json_t *line);
int cli_daemon_stream(const char *method, const char *path, json_t *body,
		      cli_daemon_line_fn on_line, void *arg, struct fvm_err *err);

/* text escaped for a URL's query (malloc'd; NULL when out of memory or libcurl is missing). */
char *cli_daemon_escape(const char *text, struct fvm_err *err);

/* Whether name has the shape of a daemon sandbox id: "sb-" then [a-z0-9-] (children "-N"). */
bool cli_daemon_id_like(const char *name);

/*
 * Whether the VM named vm is a daemon sandbox: its name has the id shape, a daemon runs and
 * knows it. An id the daemon does not know is not one of its sandboxes when a VM of that name
 * runs in the CLI's run directory; otherwise the daemon's answer is the error (-ENOENT,
 * quoting it). Names of another shape never reach the daemon. 0 with *yes set, or -errno.
 */
int cli_daemon_sandbox(const char *vm, bool *yes, struct fvm_err *err);

/*
 * How to reach a VM named on the command line, for commands that also work directly: for a
 * daemon sandbox (*daemon_sandbox true) sock is its control socket as the daemon recorded it
 * (on the daemon's host; requests should go through cli_daemon_call on /v1/sandboxes/VM/...);
 * otherwise sock is cli_vm_socket's path. 0, or -errno with err set.
 */
int cli_vm_resolve(const char *vm, char *sock, size_t len, bool *daemon_sandbox,
		   struct fvm_err *err);

/* "/v1/sandboxes/ID" plus suffix ("" or "/pause", ...) into out; -ENAMETOOLONG if it does not fit. */
int cli_daemon_sandbox_path(const char *id, const char *suffix, char *out, size_t len);

/* Print "forkvm CMD: OPTION is not available for daemon sandboxes (WHY)" and return the
 * usage exit status: an option the daemon has no counterpart for is refused, not ignored. */
int cli_daemon_refuse(const char *cmd, const char *option, const char *why);

#endif
