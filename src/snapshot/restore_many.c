/* Parallel restore: one VMM process per child, readiness over one pipe each. */
#include "snapshot/restore_many.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/vm.h"

extern char **environ;

struct child_proc {
	int ready_fd; /* read end; -1 once ready or failed */
	bool ready;
};

static int spawn_child(const struct restore_many_opts *o, struct restored_child *c, int k,
		       struct child_proc *p)
{
	char ready_arg[16], log_path[600];
	char *argv[32];
	int pipefd[2], n = 0, err;
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t attr;

	snprintf(c->name, sizeof(c->name), "%s-%d", o->prefix, k);
	snprintf(c->socket, sizeof(c->socket), "%s/%s.sock", o->run_dir, c->name);
	snprintf(log_path, sizeof(log_path), "%s.log", c->socket);
	if (pipe2(pipefd, O_CLOEXEC) < 0)
		return -errno;
	snprintf(ready_arg, sizeof(ready_arg), "%d", 3);
	argv[n++] = "forkvm";
	argv[n++] = "run";
	argv[n++] = "--restore";
	argv[n++] = (char *)o->dir;
	argv[n++] = "--backing";
	argv[n++] = (char *)o->backend;
	argv[n++] = "--name";
	argv[n++] = c->name;
	argv[n++] = "--socket";
	argv[n++] = c->socket;
	argv[n++] = "--ready-fd";
	argv[n++] = ready_arg;
	argv[n++] = "--log";
	argv[n++] = log_path;
	if (o->paused)
		argv[n++] = "--paused";
	for (int i = 0; i < o->nextra && i < 16; i++)
		argv[n++] = (char *)o->extra[i];
	argv[n] = NULL;
	posix_spawn_file_actions_init(&fa);
	posix_spawnattr_init(&attr);
	/* fd 3 in the child is the ready pipe; the console goes to a file next to the socket. */
	posix_spawn_file_actions_adddup2(&fa, pipefd[1], 3);
	posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSID);
	char console[620];
	snprintf(console, sizeof(console), "%s.console", c->socket);
	posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, console, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	/* The resolved path, not /proc/self/exe, so ps shows the children as "forkvm". */
	char self[4096];
	ssize_t n_self = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n_self > 0)
		self[n_self] = '\0';
	else
		snprintf(self, sizeof(self), "/proc/self/exe");
	err = posix_spawn(&c->pid, self, &fa, &attr, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&attr);
	close(pipefd[1]);
	if (err) {
		close(pipefd[0]);
		return -err;
	}
	p->ready_fd = pipefd[0];
	return 0;
}

void vmm_child_reason(const char *socket, char *buf, size_t len)
{
	char path[600], line[512] = "exited without a message";
	FILE *f;

	snprintf(path, sizeof(path), "%s.log", socket);
	f = fopen(path, "r");
	if (f) {
		char cur[512];
		while (fgets(cur, sizeof(cur), f))
			if (cur[0] != '\n')
				snprintf(line, sizeof(line), "%s", cur);
		fclose(f);
	}
	line[strcspn(line, "\n")] = '\0';
	snprintf(buf, len, "%s", line);
}

static void kill_all(struct restored_child *children, struct child_proc *procs, int n)
{
	for (int i = 0; i < n; i++) {
		char path[620];
		if (children[i].pid > 0) {
			kill(children[i].pid, SIGKILL);
			waitpid(children[i].pid, NULL, 0);
		}
		if (procs[i].ready_fd >= 0)
			close(procs[i].ready_fd);
		unlink(children[i].socket);
		snprintf(path, sizeof(path), "%s.log", children[i].socket);
		unlink(path);
		snprintf(path, sizeof(path), "%s.console", children[i].socket);
		unlink(path);
	}
}

static int wait_ready(const struct restore_many_opts *o, struct restored_child *children,
		      struct child_proc *procs, char *err, size_t errlen)
{
	uint64_t deadline = monotonic_ns() + (uint64_t)o->timeout_ms * 1000000ULL;
	struct pollfd *pfds = calloc((size_t)o->count, sizeof(*pfds));
	int remaining = o->count, ret = 0;

	if (!pfds)
		return -ENOMEM;
	while (remaining > 0) {
		int64_t left_ms = ((int64_t)deadline - (int64_t)monotonic_ns()) / 1000000;
		for (int i = 0; i < o->count; i++)
			pfds[i] = (struct pollfd){ .fd = procs[i].ready_fd, .events = POLLIN };
		if (left_ms <= 0 || poll(pfds, (nfds_t)o->count, (int)left_ms) == 0) {
			for (int i = 0; i < o->count; i++)
				if (procs[i].ready_fd >= 0) {
					snprintf(err, errlen, "child %d (%s): not ready within %d ms", i,
						 children[i].name, o->timeout_ms);
					break;
				}
			ret = -ETIMEDOUT;
			break;
		}
		for (int i = 0; i < o->count; i++) {
			char byte, reason[512];
			if (procs[i].ready_fd < 0 || !(pfds[i].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			if (read(procs[i].ready_fd, &byte, 1) != 1) {
				int status = 0;
				waitpid(children[i].pid, &status, 0);
				children[i].pid = 0;
				vmm_child_reason(children[i].socket, reason, sizeof(reason));
				/* A child killed outright (the OOM killer) leaves no log line of its own. */
				if (WIFSIGNALED(status))
					snprintf(reason, sizeof(reason), "killed by signal %d (%s)",
						 WTERMSIG(status), strsignal(WTERMSIG(status)));
				snprintf(err, errlen, "child %d (%s): %s", i, children[i].name, reason);
				ret = -ECHILD;
				goto out;
			}
			close(procs[i].ready_fd);
			procs[i].ready_fd = -1;
			remaining--;
		}
	}
out:
	free(pfds);
	return ret;
}

int restore_many(const struct restore_many_opts *o, struct restored_child *children, char *err,
		 size_t errlen)
{
	struct child_proc *procs = calloc((size_t)o->count, sizeof(*procs));
	int ret = 0, spawned = 0;

	if (!procs)
		return -ENOMEM;
	memset(children, 0, (size_t)o->count * sizeof(*children));
	for (int i = 0; i < o->count; i++)
		procs[i].ready_fd = -1;
	for (; spawned < o->count; spawned++) {
		ret = spawn_child(o, &children[spawned], spawned, &procs[spawned]);
		if (ret) {
			snprintf(err, errlen, "child %d: cannot start a VMM process: %s", spawned,
				 strerror(-ret));
			break;
		}
	}
	if (!ret)
		ret = wait_ready(o, children, procs, err, errlen);
	if (ret)
		kill_all(children, procs, spawned);
	free(procs);
	return ret;
}
