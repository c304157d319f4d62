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

#include "agent/agent_client.h"
#include "agent/agent_sync.h"
#include "util/errmsg.h"
#include "util/log.h"
#include "fork/cow.h"
#include "jail/seccomp.h"
#include "snapshot/restore_many.h"
#include "util/clock.h"

/*
 * Kill and reap the children of this call; remove their sockets, and the logs of those that
 * did not fail. One that exited by itself failed on its own: its log stays too.
 */
static void kill_children(struct cow_template *t, struct branch_child *c, int *fds, bool *keep,
			  int n)
{
	for (int i = 0; i < n; i++) {
		if (c[i].pid > 0) {
			pid_t got = waitpid(c[i].pid, NULL, WNOHANG);
			if (got == c[i].pid) {
				keep[i] = true;
			} else {
				kill(c[i].pid, SIGKILL);
				got = waitpid(c[i].pid, NULL, 0);
			}
			if (got == c[i].pid) {
				t->live--;
				for (int k = 0; k < t->nkids; k++) /* killed: it could not leave */
					if (t->kids[k].pid == got && t->kids[k].cgroup[0])
						rmdir(t->kids[k].cgroup);
			}
			c[i].pid = 0;
		}
		if (fds[i] >= 0)
			close(fds[i]);
		fds[i] = -1;
		vmm_child_remove_files(c[i].socket, keep[i]);
	}
}

static __attribute__((noinline)) int
wait_ready(struct cow_template *t, struct branch_child *c, int *fds, bool *keep,
	   struct pollfd *pfds, int n, int *failed, struct fvm_err *err)
{
	uint64_t deadline = deadline_after_ms(t->timeout_ms);
	int remaining = n;

	while (remaining > 0) {
		int left = deadline_ms_left(deadline);
		int r = 0;
		for (int i = 0; i < n; i++)
			pfds[i] = (struct pollfd){ .fd = fds[i], .events = POLLIN };
		if (left > 0)
			r = poll(pfds, (nfds_t)n, left);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			int e = errno;
			errf(err, "waiting for the children: poll: %s", strerror(e));
			return -e;
		}
		if (r == 0) {
			/* Every child not ready by now failed to become ready: all keep their logs. */
			for (int i = 0; i < n; i++) {
				if (fds[i] < 0)
					continue;
				keep[i] = true;
				if (*failed < 0) {
					*failed = i;
					errf(err, "child %s: not ready within %d ms (%d of %d "
						 "children not ready)", c[i].name, t->timeout_ms, remaining, n);
				}
			}
			return -ETIMEDOUT;
		}
		for (int i = 0; i < n; i++) {
			char byte, reason[512];
			int status = 0;
			if (fds[i] < 0 || !pfds[i].revents)
				continue;
			if (read(fds[i], &byte, 1) == 1) {
				close(fds[i]);
				fds[i] = -1;
				remaining--;
				continue;
			}
			if (waitpid(c[i].pid, &status, 0) == c[i].pid)
				t->live--;
			c[i].pid = 0;
			keep[i] = true;
			*failed = i;
			vmm_child_reason(c[i].socket, reason, sizeof(reason));
			if (WIFSIGNALED(status))
				jail_describe_wait(status, reason, sizeof(reason)); /* SIGSYS: seccomp */
			return errmsg(err, -ECHILD, "child %s: %s", c[i].name, reason);
		}
	}
	return 0;
}

/* Each Linux child's own entropy and the host's clock, within one deadline for all of them.
 * Not inlined (nor wait_ready): their buffers would sit in cow_spawn's frame, between the
 * fork and the frames each child writes, and spread a child's stack over more pages. */
static __attribute__((noinline)) int
sync_agents(struct cow_template *t, struct branch_child *c, bool *keep, int n, int *failed,
	    struct fvm_err *err)
{
	uint64_t deadline = deadline_after_ms(t->timeout_ms);

	for (int i = 0; i < n; i++) {
		char path[620];
		struct fvm_err why = FVM_ERR_INIT;
		int ret;

		snprintf(path, sizeof(path), "%s.vsock", c[i].socket);
		ret = agent_sync(path, AGENT_VSOCK_PORT, deadline, -1, NULL, &why);
		if (ret) {
			keep[i] = true;
			*failed = i;
			errf(err, "child %s: %s", c[i].name, why.msg);
			vmm_child_vcpus(c[i].socket, err);
			return ret;
		}
	}
	return 0;
}

#define SPAWN_BATCH 64

/* One fork's outcome, until record_batch. */
struct spawned_child {
	pid_t pid;
	int fd;		/* the read end of its ready pipe */
	bool in_cgroup;	/* forked into the cgroup jail_cgroup_prepare made */
};

/* out[first..first+n), fds and the template's table of children, from a batch of forks. */
static void record_batch(struct cow_template *t, struct branch_child *out, int *fds, int first,
			 const struct spawned_child *b, int n)
{
	for (int i = 0; i < n; i++) {
		struct branch_child *c = &out[first + i];

		c->pid = b[i].pid;
		fds[first + i] = b[i].fd;
		if (t->nkids < t->capkids) {
			t->kids[t->nkids].pid = b[i].pid;
			memcpy(t->kids[t->nkids].socket, c->socket, sizeof(c->socket));
			t->kids[t->nkids].cgroup[0] = '\0';
			if (b[i].in_cgroup)
				jail_cgroup_slot_path(c->name, t->kids[t->nkids].cgroup,
						      sizeof(t->kids[t->nkids].cgroup));
			t->nkids++;
		}
	}
}

int cow_spawn(struct cow_template *t, int count, bool paused, bool no_agent_sync,
	      struct branch_child *out, struct fvm_err *err)
{
	int *fds = NULL, spawned = 0, ret = 0, failed = -1;
	bool *keep = NULL;
	struct pollfd *pfds = NULL;
	bool agent = t->machine.config.guest_kind == SNAP_GUEST_LINUX && !no_agent_sync;

	if (count < 1 || count > BRANCH_MAX_CHILDREN) {
		return errmsg(err, -EINVAL, "count %d out of range 1-%d", count,
			      BRANCH_MAX_CHILDREN);
	}
	if (agent && paused) {
		return errmsg(err, -EINVAL,
			      "paused children of a Linux guest cannot get the agent fix-up "
			 "(new entropy, the host's clock), which needs them running; pass "
			 "no_agent_sync (--no-agent-sync) to spawn them paused anyway");
	}
	if (agent && !t->machine.has_vsock) {
		return errmsg(err, -EINVAL,
			      "this Linux guest has no vsock device: its children's agents "
			 "cannot be reached for the fix-up (new entropy, the host's clock); pass "
			 "no_agent_sync (--no-agent-sync) to spawn without it");
	}
	ret = vmm_child_names_free(t->run_dir, t->prefix, t->next_index, count, err);
	if (ret)
		return ret;
	/* On the heap, not in this frame: each child forks from here and copies the stack pages
	 * it writes, so the frames it runs in stay small and close together. */
	fds = calloc((size_t)count, sizeof(*fds));
	keep = calloc((size_t)count, sizeof(*keep));
	pfds = calloc((size_t)count, sizeof(*pfds));
	if (!fds || !keep || !pfds) {
		ret = errmsg(err, -ENOMEM, "spawning %d children: out of memory", count);
		goto out;
	}
	/*
	 * Everything the loop can do before the first fork is done here: a page the template
	 * writes between two forks differs between the children on either side, so each holds
	 * its own copy (private memory per child, docs/PERFORMANCE.md). The struct cow_template
	 * itself (its counters) is written only after the last fork.
	 */
	memset(out, 0, (size_t)count * sizeof(*out));
	for (int i = 0; i < count; i++) {
		fds[i] = -1;
		snprintf(out[i].name, sizeof(out[i].name), "%s-%d", t->prefix, t->next_index + i);
		snprintf(out[i].socket, sizeof(out[i].socket), "%s/%s.sock", t->run_dir,
			 out[i].name);
	}
	if (t->capkids - t->nkids < count) {
		int cap = t->nkids + count > 64 ? (t->nkids + count) * 2 : 64;
		void *grown = realloc(t->kids, (size_t)cap * sizeof(*t->kids));
		if (grown) {
			t->kids = grown;
			t->capkids = cap;
		}
	}
	/* What each fork returns waits here, in this frame (a page every child writes anyway),
	 * and goes to the heap SPAWN_BATCH forks at a time: the children of one batch share the
	 * heap pages' one version instead of each holding its own. */
	struct spawned_child batch[SPAWN_BATCH] = { { 0 } };
	int nbatch = 0;
	uint64_t first_fork_ns = 0;
	for (; spawned < count; spawned++) {
		struct branch_child *c = &out[spawned];
		int pipefd[2];
		pid_t pid;

		if (nbatch == SPAWN_BATCH) {
			record_batch(t, out, fds, spawned - nbatch, batch, nbatch);
			nbatch = 0;
		}
		if (pipe2(pipefd, O_CLOEXEC) < 0) {
			ret = -errno;
			errf(err, "child %s: pipe: %s", c->name, strerror(errno));
			break;
		}
		/* Made here, the child starts in its cgroup: no migration (jail/cgroup.h). */
		struct cgroup_slot cg;
		jail_cgroup_prepare(c->name, t->have_cg ? &t->cg : NULL, &cg);
		pid = jail_cgroup_fork(&cg);
		if (pid == 0) {
			close(pipefd[0]);
			cow_child_main(t, c->name, c->socket, paused, pipefd[1], &cg);
		}
		close(pipefd[1]);
		if (pid < 0) {
			ret = -errno;
			close(pipefd[0]);
			errf(err, "child %s: fork: %s", c->name, strerror(errno));
			break;
		}
		batch[nbatch++] = (struct spawned_child){ .pid = pid, .fd = pipefd[0],
							  .in_cgroup = cg.dir[0] != '\0' };
		if (!first_fork_ns)
			first_fork_ns = monotonic_ns();
	}
	record_batch(t, out, fds, spawned - nbatch, batch, nbatch);
	t->last_fork_ns = monotonic_ns();
	t->first_fork_ns = first_fork_ns;
	t->next_index += spawned;
	t->live += spawned;
	if (!ret)
		ret = wait_ready(t, out, fds, keep, pfds, spawned, &failed, err);
	if (!ret && agent)
		ret = sync_agents(t, out, keep, spawned, &failed, err);
	t->ready_ns = monotonic_ns();
	if (ret) {
		kill_children(t, out, fds, keep, spawned);
		if (failed >= 0)
			vmm_child_log_tail(out[failed].socket, err);
	}
out:
	free(fds);
	free(keep);
	free(pfds);
	return ret;
}
