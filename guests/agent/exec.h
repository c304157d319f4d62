/* Running one exec request: spawning the process group and pumping its pipes. */
#ifndef FORKVM_AGENT_EXEC_H
#define FORKVM_AGENT_EXEC_H

#include "agent.h"
#include "request.h"

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
int exec_spawn(const struct exec_request *x, struct exec_proc *p, struct agent_err *e);

/*
 * Feed stdin, capture output, enforce the timeout, and reap the child. conn_fd is watched
 * for hang-up (the process group is then killed). Always reaps p->pid and closes p's fds.
 */
int exec_pump(const struct exec_request *x, struct exec_proc *p, int conn_fd,
	      struct exec_result *res, struct agent_err *e);

void exec_result_free(struct exec_result *res);

#endif
