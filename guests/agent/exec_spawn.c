/* Fork/exec for the exec op: new process group, pipes on 0/1/2, env, cwd. */
#include "exec.h"
#include "mem.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef SYS_close_range
#define SYS_close_range 436
#endif
#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif
#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif

/* What the child reports through the close-on-exec status pipe when it fails. */
struct spawn_failure {
	int stage;		/* 0: chdir, 1: exec, 2: setup */
	int err;
};

void exec_cloexec_from(unsigned int first)
{
	(void)syscall(SYS_close_range, first, ~0u, CLOSE_RANGE_CLOEXEC);
}

static void close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

static __attribute__((noreturn)) void child_fail(int status_fd, int stage)
{
	struct spawn_failure f = { .stage = stage, .err = errno };

	/* Nothing more to do if even this fails: the parent sees EOF plus exit 127. */
	if (write(status_fd, &f, sizeof(f)) < 0)
		_exit(127);
	_exit(127);
}

/* Runs in the forked child; never returns. */
static __attribute__((noreturn)) void child_run(const struct exec_request *x, int in_fd,
						int out_fd, int err_fd, int status_fd)
{
	sigset_t all;

	/* Own group, so a timeout can kill everything the command started. */
	if (setpgid(0, 0) < 0)
		child_fail(status_fd, 2);
	/* The agent ignores SIGPIPE and blocks signals; commands expect the defaults. */
	sigemptyset(&all);
	if (sigprocmask(SIG_SETMASK, &all, NULL) < 0 || signal(SIGPIPE, SIG_DFL) == SIG_ERR)
		child_fail(status_fd, 2);
	/* Commands get the agent's own RLIMIT_AS, not the connection process's bound. */
	errno = -mem_child_restore();
	if (errno)
		child_fail(status_fd, 2);
	if (dup2(in_fd, 0) < 0 || dup2(out_fd, 1) < 0 || dup2(err_fd, 2) < 0)
		child_fail(status_fd, 2);
	/* Fds the agent itself inherited (from init or a test harness) stay out of commands.
	 * Best effort: kernels before 5.11 lack CLOSE_RANGE_CLOEXEC. */
	exec_cloexec_from(3);
	if (x->cwd && chdir(x->cwd) < 0)
		child_fail(status_fd, 0);
	if (x->clear_env && clearenv() != 0)
		child_fail(status_fd, 2);
	for (size_t i = 0; x->env && x->env[i]; i++)
		if (putenv(x->env[i]) != 0)
			child_fail(status_fd, 2);
	execvp(x->argv[0], x->argv);
	child_fail(status_fd, 1);
}

/* Wait for the child to exec or report failure; 0 when it exec'd. */
static int await_exec(const struct exec_request *x, pid_t pid, int status_fd,
		      struct fvm_err *e)
{
	static const char *const stages[] = { "chdir", "exec", "set up child for" };
	struct spawn_failure f;
	ssize_t n;

	do
		n = read(status_fd, &f, sizeof(f));
	while (n < 0 && errno == EINTR);
	if (n == 0)
		return 0; /* the status pipe closed on exec */
	if (n != (ssize_t)sizeof(f)) {
		f.stage = 2;
		f.err = n < 0 ? errno : EPROTO;
	}
	while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
		;
	if (f.stage < 0 || f.stage > 2)
		f.stage = 2;
	return errmsg(e, -f.err, "%s %s: %s", stages[f.stage],
			  f.stage == 0 ? x->cwd : x->argv[0], strerror(f.err));
}

int exec_spawn(const struct exec_request *x, struct exec_proc *p, struct fvm_err *e)
{
	int in[2] = { -1, -1 }, out[2] = { -1, -1 }, err[2] = { -1, -1 };
	int status[2] = { -1, -1 };
	int ret;

	*p = (struct exec_proc){ .pid = -1, .in_fd = -1, .out_fd = -1, .err_fd = -1, .pid_fd = -1 };
	if (pipe2(in, O_CLOEXEC) < 0 || pipe2(out, O_CLOEXEC) < 0 || pipe2(err, O_CLOEXEC) < 0 ||
	    pipe2(status, O_CLOEXEC) < 0) {
		ret = errmsg(e, -errno, "create exec pipes: %s", strerror(errno));
		goto out;
	}
	p->pid = fork();
	if (p->pid < 0) {
		ret = errmsg(e, -errno, "fork for %s: %s", x->argv[0], strerror(errno));
		goto out;
	}
	if (p->pid == 0) {
		close(status[0]);
		child_run(x, in[0], out[1], err[1], status[1]);
	}
	/* Also set here so a kill(-pid) right after fork cannot miss the group; failure
	 * (EACCES once the child has exec'd) is fine since the child sets it too. */
	(void)setpgid(p->pid, p->pid);
	close_fd(&status[1]);
	ret = await_exec(x, p->pid, status[0], e);
	if (ret < 0)
		goto out;
	p->pid_fd = (int)syscall(SYS_pidfd_open, p->pid, 0);
	if (p->pid_fd < 0)
		p->pid_fd = -1; /* old kernel: exec_pump falls back to polling waitpid */
	p->in_fd = in[1];
	p->out_fd = out[0];
	p->err_fd = err[0];
	in[1] = out[0] = err[0] = -1;
	/* The child's stdin must not block the pump loop; a slow reader just waits for us. */
	if (fcntl(p->in_fd, F_SETFL, O_NONBLOCK) < 0 || fcntl(p->out_fd, F_SETFL, O_NONBLOCK) < 0 ||
	    fcntl(p->err_fd, F_SETFL, O_NONBLOCK) < 0) {
		ret = errmsg(e, -errno, "set exec pipes non-blocking: %s", strerror(errno));
		kill(-p->pid, SIGKILL);
		while (waitpid(p->pid, NULL, 0) < 0 && errno == EINTR)
			;
		close_fd(&p->in_fd);
		close_fd(&p->out_fd);
		close_fd(&p->err_fd);
		close_fd(&p->pid_fd);
	}
out:
	close_fd(&in[0]);
	close_fd(&in[1]);
	close_fd(&out[0]);
	close_fd(&out[1]);
	close_fd(&err[0]);
	close_fd(&err[1]);
	close_fd(&status[0]);
	close_fd(&status[1]);
	return ret;
}
