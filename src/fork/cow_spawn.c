/* The template forks children; each reports readiness on its own pipe. All or nothing. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/log.h"
#include "fork/cow.h"
#include "snapshot/restore_many.h"

static void kill_children(struct cow_template *t, struct branch_child *c, int *fds, int n)
{
	for (int i = 0; i < n; i++) {
		char path[700];
		if (c[i].pid > 0) {
			kill(c[i].pid, SIGKILL);
			if (waitpid(c[i].pid, NULL, 0) == c[i].pid)
				t->live--;
		}
		if (fds[i] >= 0)
			close(fds[i]);
		unlink(c[i].socket);
		snprintf(path, sizeof(path), "%s.log", c[i].socket);
		unlink(path);
		snprintf(path, sizeof(path), "%s.console", c[i].socket);
		unlink(path);
	}
}

static int wait_ready(struct cow_template *t, struct branch_child *c, int *fds, int n, char *err,
		      size_t errlen)
{
	uint64_t deadline = monotonic_ns() + (uint64_t)t->timeout_ms * 1000000ULL;
	struct pollfd pfds[BRANCH_MAX_CHILDREN];
	int remaining = n;

	while (remaining > 0) {
		int64_t left = ((int64_t)deadline - (int64_t)monotonic_ns()) / 1000000;
		for (int i = 0; i < n; i++)
			pfds[i] = (struct pollfd){ .fd = fds[i], .events = POLLIN };
		if (left <= 0 || poll(pfds, (nfds_t)n, (int)left) == 0) {
			snprintf(err, errlen, "children not ready within %d ms", t->timeout_ms);
			return -ETIMEDOUT;
		}
		for (int i = 0; i < n; i++) {
			char byte, reason[512];
			if (fds[i] < 0 || !pfds[i].revents)
				continue;
			if (read(fds[i], &byte, 1) != 1) {
				if (waitpid(c[i].pid, NULL, 0) == c[i].pid)
					t->live--;
				c[i].pid = 0;
				vmm_child_reason(c[i].socket, reason, sizeof(reason));
				snprintf(err, errlen, "child %s: %s", c[i].name, reason);
				return -ECHILD;
			}
			close(fds[i]);
			fds[i] = -1;
			remaining--;
		}
	}
	return 0;
}

int cow_spawn(struct cow_template *t, int count, bool paused, struct branch_child *out,
	      char *err, size_t errlen)
{
	int fds[BRANCH_MAX_CHILDREN], spawned = 0, ret = 0;

	if (count < 1 || count > BRANCH_MAX_CHILDREN) {
		snprintf(err, errlen, "count %d out of range 1-%d", count, BRANCH_MAX_CHILDREN);
		return -EINVAL;
	}
	memset(out, 0, (size_t)count * sizeof(*out));
	for (; spawned < count; spawned++) {
		struct branch_child *c = &out[spawned];
		int pipefd[2];
		pid_t pid;

		fds[spawned] = -1;
		snprintf(c->name, sizeof(c->name), "%s-%d", t->prefix, t->next_index++);
		snprintf(c->socket, sizeof(c->socket), "%s/%s.sock", t->run_dir, c->name);
		if (pipe2(pipefd, O_CLOEXEC) < 0) {
			ret = -errno;
			snprintf(err, errlen, "child %s: pipe: %s", c->name, strerror(errno));
			break;
		}
		pid = fork();
		if (pid == 0) {
			close(pipefd[0]);
			cow_child_main(t, c->name, c->socket, paused, pipefd[1]);
		}
		close(pipefd[1]);
		if (pid < 0) {
			ret = -errno;
			close(pipefd[0]);
			snprintf(err, errlen, "child %s: fork: %s", c->name, strerror(errno));
			break;
		}
		c->pid = pid;
		fds[spawned] = pipefd[0];
		t->live++;
		if (t->nkids == t->capkids) {
			int cap = t->capkids ? t->capkids * 2 : 64;
			void *grown = realloc(t->kids, (size_t)cap * sizeof(*t->kids));
			if (grown) {
				t->kids = grown;
				t->capkids = cap;
			}
		}
		if (t->nkids < t->capkids) {
			t->kids[t->nkids].pid = pid;
			memcpy(t->kids[t->nkids++].socket, c->socket, sizeof(c->socket));
		}
	}
	if (!ret)
		ret = wait_ready(t, out, fds, spawned, err, errlen);
	if (ret)
		kill_children(t, out, fds, spawned);
	return ret;
}
