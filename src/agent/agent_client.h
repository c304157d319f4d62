/*
 * Host side of the guest agent (guests/agent, docs/AGENT.md): reach it through a VM's vsock
 * socket ("CONNECT <port>\n" → "OK <p>\n", docs/VSOCK.md) and exchange length-prefixed JSON
 * frames. Below snapshot/ and fork/: both spawn clones that need the fix-up (agent_sync.h).
 */
#ifndef FORKVM_AGENT_CLIENT_H
#define FORKVM_AGENT_CLIENT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/clock.h"
#include "util/errmsg.h"

#define AGENT_VSOCK_PORT 52
/* The agent's own frame limit (AGENT_MAX_FRAME); a larger reply length is a protocol error. */
#define AGENT_CLIENT_MAX_FRAME (16u << 20)

/*
 * Every call below takes an absolute deadline on CLOCK_MONOTONIC in ns (0: none) and an fd
 * that, once readable, cancels the wait (a signalfd; -1: none). Errors, each with err set:
 *   -ETIMEDOUT     the deadline passed
 *   -ECANCELED     cancel_fd became readable
 *   -ECONNREFUSED  (agent_vsock_connect) the guest refused the port or has no vsock driver
 *                  yet: the socket was closed without an answer line
 *   -ECONNRESET    the connection was reset or closed before the whole reply arrived
 *   -EPIPE         the connection was closed while the request was being written
 *   -EPROTO        a malformed answer line, frame or JSON reply
 *   -EREMOTEIO     (agent_request) the agent answered ok:false; err quotes its message
 *   other -errno   from socket(), connect() (e.g. -ENOENT: no socket at the path), malloc
 */

/* Connect to the VM's vsock Unix socket only (non-blocking, close-on-exec); returns the fd. */
int agent_vsock_open(const char *vsock_socket, struct fvm_err *err);
/* Send "CONNECT <port>\n" on an opened socket and read the answer line; 0 once "OK <p>". */
int agent_vsock_connect(int fd, const char *vsock_socket, int port, uint64_t deadline_ns,
			int cancel_fd, struct fvm_err *err);
/* Both of the above; returns the connected fd. */
int agent_connect(const char *vsock_socket, int port, uint64_t deadline_ns, int cancel_fd,
		  struct fvm_err *err);
/*
 * Send one request frame and read one reply frame. Returns 0 only when the reply says ok;
 * then *reply (if reply is not NULL) holds it for the caller to json_decref.
 */
int agent_request(int fd, json_t *req, json_t **reply, uint64_t deadline_ns, int cancel_fd,
		  struct fvm_err *err);

/* Send one frame that has no reply (an exec's "stdin" input, docs/AGENT.md). */
int agent_send(int fd, json_t *msg, uint64_t deadline_ns, int cancel_fd, struct fvm_err *err);

/*
 * A frame with an "event" field that came before the reply (a streamed exec's output,
 * docs/AGENT.md). Borrowed: valid during the call. Nonzero (-errno with err set) stops the
 * request with that error.
 */
typedef int (*agent_event_fn)(void *arg, json_t *event, struct fvm_err *err);

/* agent_request, passing every event frame before the reply to on_event. */
int agent_request_stream(int fd, json_t *req, agent_event_fn on_event, void *arg, json_t **reply,
			 uint64_t deadline_ns, int cancel_fd, struct fvm_err *err);

/*
 * The receiving half of agent_request_stream, for a request of kind op already sent with
 * agent_send (so that frames another thread sends afterwards, such as stdin, follow it).
 */
int agent_receive_stream(int fd, const char *op, agent_event_fn on_event, void *arg,
			 json_t **reply, uint64_t deadline_ns, int cancel_fd, struct fvm_err *err);

/* ---- Typed requests (agent_calls.c), each one agent_request on a connected fd. ---- */

/* The agent's bounds for one put_tree/get_tree archive (docs/AGENT.md). */
#define AGENT_TREE_MAX_BYTES (11u << 20)
#define AGENT_TREE_MAX_ENTRIES 16384u

struct agent_eval_args {
	const char *lang;	/* NULL: "python" */
	const char *code;
	size_t code_len;
	const char *context;	/* NULL: "default" */
	uint64_t timeout_ms;	/* 0: none */
};

/*
 * Run code in the guest's warm interpreter (op "eval"; output as base64, so the bytes are
 * exact). The wait is unbounded without a timeout, else bounded by the timeout plus the
 * agent's grace and interpreter start times. *reply holds e.g. "stdout" (base64), "result",
 * "error" ({"name","value","traceback"} or null), "timed_out", "state_lost".
 */
int agent_eval(int fd, const struct agent_eval_args *a, json_t **reply, int cancel_fd,
	       struct fvm_err *err);
/* End a context's interpreter (op "eval_close"); *closed: one was running. */
int agent_eval_close(int fd, const char *context, bool *closed, uint64_t deadline_ns,
		     struct fvm_err *err);

/* Fetch path (a directory or a file) as a ustar archive: *tar malloc'd, *is_dir. */
int agent_get_tree(int fd, const char *path, uint8_t **tar, size_t *len, bool *is_dir,
		   uint64_t deadline_ns, struct fvm_err *err);
/* Extract a ustar archive into the guest directory path (created with its parents). */
int agent_put_tree(int fd, const char *path, const uint8_t *tar, size_t len,
		   uint64_t deadline_ns, struct fvm_err *err);

#endif
