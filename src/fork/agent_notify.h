/* After a branch, tell a Linux child's guest agent to reseed its RNG and set its clock. */
#ifndef FORKVM_AGENT_NOTIFY_H
#define FORKVM_AGENT_NOTIFY_H

#include <jansson.h>
#include <stddef.h>

#define AGENT_VSOCK_PORT 52

/* Connect to a VM's vsock socket and to the guest port behind it; returns the fd or -errno. */
int agent_connect(const char *vsock_socket, int port, int timeout_ms, char *err, size_t errlen);
/* Send one request frame and read one reply; fails (err set) unless the reply says ok.
 * On success *reply (if out is not NULL) holds the reply for the caller to release. */
int agent_request(int fd, json_t *req, json_t **reply, char *err, size_t errlen);

/*
 * Connect to the child's vsock socket (Firecracker style: "CONNECT <port>\n" → "OK <p>\n"),
 * then send the agent two frames: reseed_entropy with 64 fresh random bytes, and set_clock
 * with the host's realtime clock. Siblings of one branch never share RNG state or a stale
 * clock. Returns 0, or -errno with err naming the step that failed.
 */
int agent_notify_branch(const char *vsock_socket, int port, int timeout_ms, char *err,
			size_t errlen);

#endif
