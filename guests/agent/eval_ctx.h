/*
 * Interpreter contexts of the eval op. Each context is one long-lived interpreter process
 * (guests/agent/eval_driver.py) listening on RUN_DIR/py-<context>.sock; connection
 * processes come and go, the interpreters stay, so state survives across connections (and,
 * being guest memory, across snapshots and branches). RUN_DIR/py-<context>.lock, held with
 * flock for the whole eval, serializes a context: a second eval on it is refused as busy.
 * Interpreters hold the read end of a "lifeline" pipe whose write ends only agent processes
 * hold, so they kill themselves once the agent is gone.
 */
#ifndef FORKVM_AGENT_EVAL_CTX_H
#define FORKVM_AGENT_EVAL_CTX_H

#include "agent.h"
#include "eval_proto.h"
#include "frame.h"

#include <stdbool.h>
#include <stdint.h>

/* A connection to an interpreter: buffered reads, whole frames out. */
struct eval_stream {
	int fd;			/* -1 when not connected */
	struct frame_decoder dec;
	uint8_t buf[16384];
	size_t pos, len;
};

struct eval_session {
	const char *context;
	int lock_fd;		/* the context's flock, -1 when not held */
	struct eval_stream st;
	struct eval_hello hello;
	bool started;		/* a new interpreter was started for this request */
	bool state_lost;	/* the context's previous interpreter had died */
	uint32_t start_ms;	/* bound on the interpreter's hello (starting python3 included) */
};

/*
 * Prepare eval support: the lifeline pipe, and the run directory's name (cfg->run_dir, or
 * /tmp/forkvm-agent.<pid>), made on the first eval. Called once by main before serving; on
 * failure eval stays unavailable (the ops say why) and the agent serves everything else.
 */
int eval_setup(const struct agent_config *cfg);
/* Remove the run directory's files (and the default directory); interpreters end by
 * themselves when the agent exits. */
void eval_teardown(void);

/*
 * Lock the context (-EBUSY when another eval holds it), connect to its interpreter, starting
 * one when there is none (or the last one died), and read its hello. conn_fd (the client)
 * is watched for hang-up while waiting. Call eval_session_close afterwards in every case.
 */
int eval_session_open(const char *context, int conn_fd, uint32_t start_ms,
		      struct eval_session *s, struct fvm_err *e);
void eval_session_close(struct eval_session *s);

/*
 * Receive one frame from the interpreter: 0 with a malloc'd *payload, -ETIMEDOUT at
 * deadline_ms (monotonic, 0: none), -EPIPE when watch_fd (-1: none) hung up, -ECONNRESET
 * when the interpreter closed the connection, -EMSGSIZE/-ENOMEM/-errno otherwise.
 */
int eval_recv(struct eval_stream *st, uint64_t deadline_ms, int watch_fd, uint8_t **payload,
	      size_t *len);

/* SIGKILL the interpreter's process group, reap it if it is ours, forget its socket. */
void eval_session_kill(struct eval_session *s);
/* The interpreter went away by itself: reap it if ours (its wait status, else -1), forget
 * its socket. */
int eval_session_lost(struct eval_session *s);

/* eval_close: kill the context's interpreter (*closed: one was running) and remove its
 * files; -EBUSY while an eval runs in it. */
int eval_context_close(const char *context, bool *closed, struct fvm_err *e);

#endif
