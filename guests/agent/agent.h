/* Shared limits, configuration and error-message plumbing of the guest agent. */
#ifndef FORKVM_AGENT_H
#define FORKVM_AGENT_H

#include <stdbool.h>
#include <stddef.h>
#include <string.h>

#include "util/errmsg.h" /* struct fvm_err: functions fill it and return -errno */

#define AGENT_VERSION "0.2.0"
#define AGENT_DEFAULT_VSOCK_PORT 52

/* Frames above this are refused; the stream cannot resync, so the connection closes. */
#define AGENT_MAX_FRAME (16u << 20)
/* Per-stream capture bound for exec; a request may only lower it. */
#define AGENT_MAX_OUTPUT (1u << 20)
/* read_file bound: base64 of this still fits comfortably in one reply frame. */
#define AGENT_MAX_READ (8u << 20)
#define AGENT_DEFAULT_READ (1u << 20)
/* RNDADDENTROPY buffers are small; more gives nothing. */
#define AGENT_MAX_ENTROPY 4096u
#define AGENT_MAX_ARGV 4096u
#define AGENT_MAX_ENV 4096u
#define AGENT_DEFAULT_MAX_CONNS 64
/* eval: live interpreter contexts at once, and the longest context name. */
#define AGENT_MAX_EVAL_CONTEXTS 16
#define AGENT_MAX_CONTEXT_NAME 40
/* eval: after a timeout's SIGINT, how long the code may take to stop before SIGKILL. */
#define AGENT_EVAL_GRACE_MS 2000
/* eval: how long a new (or busy, abandoned) interpreter may take to answer its socket. */
#define AGENT_EVAL_START_MS 30000
/* put_tree/get_tree: archive bytes (base64 of this fits one frame) and members. */
#define AGENT_MAX_TREE (11u << 20)
#define AGENT_MAX_TREE_ENTRIES 16384u
/* eval: the interpreter's result frame (result 1 MiB and two 256 KiB texts, JSON-escaped). */
#define AGENT_EVAL_META_MAX (10u << 20)

/*
 * Memory (mem.h): the budget all connections' large requests share (--mem-budget MiB), how
 * long a request waits for it (--mem-wait ms), the frame size below which a request needs
 * no reservation, what one parsed JSON value may cost, and what RLIMIT_AS allows a
 * connection process beyond the budget (binary, stack, small frames, exec/eval output).
 */
#define AGENT_DEFAULT_MEM_BUDGET (128u << 20)
#define AGENT_MIN_MEM_BUDGET_MIB 16u
#define AGENT_MAX_MEM_BUDGET_MIB 65536u
#define AGENT_DEFAULT_MEM_WAIT_MS 30000u
#define AGENT_FREE_FRAME 4096u
#define AGENT_VALUE_COST 160u
#define AGENT_CONN_SLACK (64u << 20)

/* A connection process exits with this to ask the listener to stop (--no-reboot shutdown). */
#define AGENT_EXIT_SHUTDOWN 3

struct agent_config {
	const char *unix_path;	/* NULL: listen on vsock */
	unsigned int vsock_port;
	bool no_reboot;		/* shutdown only stops the agent (test mode) */
	unsigned int max_conns;
	const char *run_dir;	/* eval sockets; NULL: /tmp/forkvm-agent.<pid> */
	const char *python;	/* eval interpreter, looked up in PATH (default "python3") */
	size_t mem_budget;	/* bytes all connections' reservations may hold together */
	unsigned int mem_wait_ms; /* how long a request waits for the budget */
};

#endif
