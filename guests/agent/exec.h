/* Running one exec request: spawning the process group and pumping its pipes. */
#ifndef FORKVM_AGENT_EXEC_H
#define FORKVM_AGENT_EXEC_H

#include "agent.h"
#include "io.h"
#include "request.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

struct exec_proc {
	pid_t pid;		/* also the process group id */
	int in_fd;		/* write end of the child's stdin, -1 once closed */
	int out_fd, err_fd;	/* read ends of stdout / stderr, -1 once closed */
	int pid_fd;		/* pidfd (readable at exit), -1 on kernels without it */
};

struct exec_capture {
	uint8_t *buf;
	size_t len, cap, max;
	bool truncated;		/* more than max bytes arrived; the rest was discarded */
};

/*
 * A streamed exec (request field "stream"): output leaves as event frames while the command
 * runs instead of being captured for the reply. A UTF-8 character cut by a read is held back
 * until its remaining bytes arrive, so text streams stay text.
 */
struct exec_stream {
	int conn_fd;
	json_t *id;		/* the request's id (borrowed), copied into every event */
	bool force_base64;
	uint8_t tail[2][4];	/* per stream: the start of a cut UTF-8 character */
	size_t tail_len[2];
	uint64_t bytes[2];	/* sent so far, per stream */
};

struct exec_result {
	int status;		/* waitpid status */
	bool timed_out;
	struct exec_capture out, err;
};

/*
 * In a child about to exec: mark every fd from first up close-on-exec, so fds the agent
 * inherited stay out of what it runs. Best effort: kernels before 5.11 lack
 * CLOSE_RANGE_CLOEXEC. Async-signal-safe (one syscall).
 */
void exec_cloexec_from(unsigned int first);

/* Fork and exec x in a new process group; -errno with e->msg when it never started. */
int exec_spawn(const struct exec_request *x, struct exec_proc *p, struct fvm_err *e);

/*
 * Feed stdin (with stdin_open also from the client's "stdin" frames on in), capture or
 * stream output, enforce the timeout, and reap the child. The client is watched for
 * hang-up (the process group is then killed). Always reaps p->pid and closes p's fds.
 */
int exec_pump(const struct exec_request *x, struct exec_proc *p, struct conn_in *in,
	      struct exec_stream *st, struct exec_result *res, struct fvm_err *e);

/*
 * exec_stream.c: send n bytes of stream which (0 stdout, 1 stderr) as an event frame
 * {"event":"stdout"|"stderr","id":..,"data":..,"data_encoding":..}; at_end flushes a held-back
 * partial character too. -errno (the client is gone) with e set.
 */
int exec_stream_emit(struct exec_stream *st, int which, const uint8_t *data, size_t n,
		     bool at_end, struct fvm_err *e);

void exec_result_free(struct exec_result *res);

#endif
