/* Parallel restore: one VMM process per child, readiness over one pipe each, then the fix-up. */
#include "snapshot/restore_many.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "agent/agent_client.h"
#include "agent/agent_sync.h"
#include "util/errmsg.h"
#include "util/log_tail.h"
#include "core/vm.h"
#include "util/ctl_call.h"
#include "jail/seccomp.h"
#include "snapshot/snap_config.h"
#include "net/net.h"
#include "snapshot/snap_disk.h"
#include "snapshot/snap_format.h"
#include "util/clock.h"
#include "util/log.h"
#include "util/unix_sock.h"

extern char **environ;

struct child_proc {
	int ready_fd;	/* read end; -1 once ready or failed */
	bool keep_log;	/* it failed: its log and console stay for the user */
};

static int spawn_child(const struct restore_many_opts *o, struct restored_child *c, int k,
		       struct child_proc *p)
{
	char ready_arg[16], log_path[600], console[620], self[4096];
	char *argv[20 + RESTORE_MAX_EXTRA];
	int pipefd[2], n = 0, err, broker = -1;
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t attr;
	ssize_t n_self;

	snprintf(c->name, sizeof(c->name), "%s-%d", o->prefix, k);
	snprintf(c->socket, sizeof(c->socket), "%s/%s.sock", o->run_dir, c->name);
	snprintf(log_path, sizeof(log_path), "%s.log", c->socket);
	snprintf(console, sizeof(console), "%s.console", c->socket);
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
	/* The fix-up of Linux clones is done here, after all are ready (restore_many). */
	argv[n++] = "--no-agent-sync";
	/* A jailed source's network broker, at fd 4: the children's networks come from it. */
	if (o->net_broker && net_broker_fd() >= 0) {
		argv[n++] = "--net-broker-fd";
		argv[n++] = "4";
	}
	if (o->paused)
		argv[n++] = "--paused";
	for (int i = 0; i < o->nextra && i < RESTORE_MAX_EXTRA; i++)
		argv[n++] = (char *)o->extra[i];
	argv[n] = NULL;
	/* The resolved path, not /proc/self/exe, so ps shows the children as "forkvm". */
	n_self = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n_self > 0)
		self[n_self] = '\0';
	else
		snprintf(self, sizeof(self), "/proc/self/exe");
	if (pipe2(pipefd, O_CLOEXEC) < 0)
		return -errno;
	err = posix_spawn_file_actions_init(&fa);
	if (err)
		goto out_pipe;
	err = posix_spawnattr_init(&attr);
	if (err)
		goto out_fa;
	/* fd 3 in the child is the ready pipe; the console goes to a file next to the socket. */
	err = posix_spawn_file_actions_adddup2(&fa, pipefd[1], 3);
	/* The broker from a copy above both targets: its own number may be 3 or 4. */
	if (!err && o->net_broker && net_broker_fd() >= 0 &&
	    (broker = fcntl(net_broker_fd(), F_DUPFD_CLOEXEC, 10)) < 0)
		err = errno;
	if (!err && broker >= 0)
		err = posix_spawn_file_actions_adddup2(&fa, broker, 4);
	if (!err)
		err = posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSID);
	if (!err)
		err = posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, console,
						       O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (!err)
		err = posix_spawn(&c->pid, self, &fa, &attr, argv, environ);
	posix_spawnattr_destroy(&attr);
out_fa:
	posix_spawn_file_actions_destroy(&fa);
out_pipe:
	if (broker >= 0)
		close(broker);
	close(pipefd[1]);
	if (err) {
		c->pid = 0;
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
	/* ASCII only: the reason may end up in a JSON reply, which needs valid UTF-8. */
	for (char *p = line; *p; p++)
		if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e)
			*p = *p == '\t' ? ' ' : '?';
	snprintf(buf, len, "%s", line);
}

/* "; its log PATH ends:" and the lines, for one file next to the socket. */
static void append_tail(const char *socket, const char *suffix, const char *what, bool always,
			char *buf, size_t len)
{
	char path[620];
	size_t used = strlen(buf);
	struct stat st;
	int n;

	snprintf(path, sizeof(path), "%s%s", socket, suffix);
	if (stat(path, &st) < 0) {
		if (always)
			snprintf(buf + used, len - used, "; no %s at %s (%s)", what, path,
				 strerror(errno));
		return;
	}
	if (st.st_size == 0) {
		if (always)
			snprintf(buf + used, len - used, "; its %s %s is empty", what, path);
		return;
	}
	snprintf(buf + used, len - used, "; its %s %s ends:", what, path);
	n = log_tail_append(path, LOG_TAIL_LINES, buf, len);
	if (n < 0)
		snprintf(buf + used, len - used, "; its %s %s cannot be read: %s", what, path,
			 strerror(-n));
}

void vmm_child_log_tail(const char *socket, struct fvm_err *err)
{
	if (!err)
		return;
	append_tail(socket, ".log", "log", true, err->msg, sizeof(err->msg));
	/* cow children write the guest console apart from the log; restored ones into it. */
	append_tail(socket, ".console", "console", false, err->msg, sizeof(err->msg));
}

/* How long killed children may take to end on SIGTERM before SIGKILL. */
#define KILL_GRACE_MS 5000

/*
 * Kill and reap every child; remove the sockets, and the logs of those that did not fail.
 * A child that exited by itself failed on its own: its log stays too.
 */
static void kill_all(struct restored_child *children, struct child_proc *procs, int n)
{
	uint64_t deadline = monotonic_ns() + (uint64_t)KILL_GRACE_MS * 1000000;
	bool waiting = false;

	/*
	 * SIGTERM first: a child still starting holds it until its control loop runs, and then
	 * exits cleanly, so none is cut off halfway through making a file (a socket's staging
	 * directory); SIGKILL for what has not gone within the grace period.
	 */
	for (int i = 0; i < n; i++) {
		if (children[i].pid <= 0)
			continue;
		if (waitpid(children[i].pid, NULL, WNOHANG) == children[i].pid) {
			procs[i].keep_log = true;
			children[i].pid = 0;
		} else {
			kill(children[i].pid, SIGTERM);
			waiting = true;
		}
	}
	while (waiting && monotonic_ns() < deadline) {
		struct timespec pause = { 0, 10 * 1000 * 1000 };
		waiting = false;
		for (int i = 0; i < n; i++) {
			if (children[i].pid <= 0)
				continue;
			if (waitpid(children[i].pid, NULL, WNOHANG) == children[i].pid)
				children[i].pid = 0;
			else
				waiting = true;
		}
		if (waiting)
			nanosleep(&pause, NULL);
	}
	for (int i = 0; i < n; i++) {
		if (children[i].pid > 0) {
			kill(children[i].pid, SIGKILL);
			waitpid(children[i].pid, NULL, 0);
			children[i].pid = 0;
		}
		if (procs[i].ready_fd >= 0)
			close(procs[i].ready_fd);
		procs[i].ready_fd = -1;
		vmm_child_remove_files(children[i].socket, procs[i].keep_log);
	}
}

void vmm_child_remove_files(const char *socket, bool keep_log)
{
	char path[PATH_MAX];

	if (unix_sock_live(socket)) {
		log_warn("%s is served by another VMM: its files stay", socket);
		return;
	}
	unlink(socket);
	/* Killed, the VMM could not remove its vsock socket either. */
	snprintf(path, sizeof(path), "%s.vsock", socket);
	unlink(path);
	snap_disks_remove_leftovers(socket);
	if (keep_log)
		return;
	snprintf(path, sizeof(path), "%s.log", socket);
	unlink(path);
	snprintf(path, sizeof(path), "%s.console", socket);
	unlink(path);
}

int vmm_child_names_free(const char *run_dir, const char *prefix, int first, int count,
			 struct fvm_err *err)
{
	/* A socket path's size, not PATH_MAX: the cow template runs this just before its forks,
	 * and a deeper stack there is pages each child ends up holding privately. */
	char path[sizeof(((struct sockaddr_un *)0)->sun_path) + 16];

	for (int i = first; i < first + count; i++) {
		if (snprintf(path, sizeof(path), "%s/%s-%d.sock", run_dir, prefix, i) >=
		    (int)sizeof(path))
			return 0; /* no socket can have that path: the child says so */
		if (access(path, F_OK) == 0 && unix_sock_live(path))
			return errmsg(err, -EADDRINUSE, "child %s-%d: a running VM already answers "
				      "at %s (choose another --name)", prefix, i, path);
	}
	return 0;
}

/* Until every child wrote its ready byte; on failure *failed is the child the error names. */
static int wait_ready(const struct restore_many_opts *o, struct restored_child *children,
		      struct child_proc *procs, int *failed, struct fvm_err *err)
{
	uint64_t deadline = deadline_after_ms(o->timeout_ms);
	struct pollfd *pfds = calloc((size_t)o->count, sizeof(*pfds));
	int remaining = o->count, ret = 0;

	if (!pfds)
		return errmsg(err, -ENOMEM, "waiting for %d children: %s", o->count,
			      strerror(ENOMEM));
	while (remaining > 0) {
		int left_ms = deadline_ms_left(deadline);
		int r = 0;
		for (int i = 0; i < o->count; i++)
			pfds[i] = (struct pollfd){ .fd = procs[i].ready_fd, .events = POLLIN };
		if (left_ms > 0)
			r = poll(pfds, (nfds_t)o->count, left_ms);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			ret = errmsg(err, -errno, "waiting for the children: poll: %s",
				     strerror(errno));
			break;
		}
		if (r == 0) {
			/* Every child not ready by now failed to become ready: all keep their logs. */
			for (int i = 0; i < o->count; i++) {
				if (procs[i].ready_fd < 0)
					continue;
				procs[i].keep_log = true;
				if (*failed < 0) {
					*failed = i;
					errf(err, "child %d (%s): not ready within %d ms (%d of %d "
						 "children not ready)", i, children[i].name, o->timeout_ms,
						 remaining, o->count);
				}
			}
			ret = -ETIMEDOUT;
			break;
		}
		for (int i = 0; i < o->count; i++) {
			char byte, reason[512];
			int status = 0;
			if (procs[i].ready_fd < 0 || !(pfds[i].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			if (read(procs[i].ready_fd, &byte, 1) == 1) {
				close(procs[i].ready_fd);
				procs[i].ready_fd = -1;
				remaining--;
				continue;
			}
			if (waitpid(children[i].pid, &status, 0) == children[i].pid)
				children[i].pid = 0;
			procs[i].keep_log = true;
			vmm_child_reason(children[i].socket, reason, sizeof(reason));
			/* A child killed outright (the OOM killer) leaves no log line of its own. */
			if (WIFSIGNALED(status))
				jail_describe_wait(status, reason, sizeof(reason)); /* SIGSYS: seccomp */
			errf(err, "child %d (%s): %s", i, children[i].name, reason);
			*failed = i;
			ret = -ECHILD;
			goto out;
		}
	}
out:
	free(pfds);
	return ret;
}

/* The snapshot's guest kind and whether it has a vsock device (the agent's way in). */
static int peek_guest(const char *dir, bool *is_linux, bool *has_vsock, struct fvm_err *err)
{
	const struct snap_section *s;
	struct snap_config c;
	struct snapshot snap;
	int ret = snap_open(dir, &snap, err);

	if (ret)
		return ret;
	s = snap_state_find(&snap.state, SNAP_SEC_CONFIG, 0);
	if (!s || s->len != sizeof(c)) {
		ret = errmsg(err, -EINVAL, "snapshot %s: no config section", dir);
	} else {
		memcpy(&c, s->data, sizeof(c));
		*is_linux = c.guest_kind == SNAP_GUEST_LINUX;
		*has_vsock = snap_state_find(&snap.state, SNAP_SEC_VSOCK, 0) != NULL;
	}
	snap_close(&snap);
	return ret;
}

void vmm_child_vcpus(const char *socket, struct fvm_err *err)
{
	json_t *req = json_pack("{s:s}", "cmd", "vcpus"), *reply = NULL;
	struct fvm_err why = { .msg = "its reply had no vcpus" };

	/* The child pauses to look: up to 10 s if a vCPU thread does not park. */
	if (req && ctl_call(socket, req, &reply, 15000, &why) == 0 &&
	    json_is_string(json_object_get(reply, "vcpus")))
		errappend(err, "; its vCPUs then: %s",
			 json_string_value(json_object_get(reply, "vcpus")));
	else
		errappend(err, "; its vCPUs could not be read (%s)",
			  req ? why.msg : "out of memory");
	json_decref(req);
	json_decref(reply);
}

/* Each Linux clone's own entropy and the host's clock, within one deadline for all of them. */
static int sync_agents(const struct restore_many_opts *o, struct restored_child *children,
		       struct child_proc *procs, int *failed, struct fvm_err *err)
{
	uint64_t deadline = deadline_after_ms(o->timeout_ms);

	for (int i = 0; i < o->count; i++) {
		char path[620];
		struct fvm_err why = FVM_ERR_INIT;
		int ret;

		snprintf(path, sizeof(path), "%s.vsock", children[i].socket);
		ret = agent_sync(path, AGENT_VSOCK_PORT, deadline, -1, NULL, &why);
		if (ret) {
			procs[i].keep_log = true;
			*failed = i;
			errmsg(err, ret, "child %d (%s): %s", i, children[i].name, why.msg);
			vmm_child_vcpus(children[i].socket, err);
			return ret;
		}
	}
	return 0;
}

int restore_many(const struct restore_many_opts *o, struct restored_child *children,
		 struct fvm_err *err)
{
	struct child_proc *procs = calloc((size_t)o->count, sizeof(*procs));
	bool is_linux = false, has_vsock = false, agent = false;
	struct fvm_err peek_err = FVM_ERR_INIT;
	int ret, spawned = 0, failed = -1;

	if (!procs)
		return errmsg(err, -ENOMEM, "%d children: %s", o->count, strerror(ENOMEM));
	memset(children, 0, (size_t)o->count * sizeof(*children));
	for (int i = 0; i < o->count; i++)
		procs[i].ready_fd = -1;
	/*
	 * A snapshot that cannot be opened here fails in every child too, which names the
	 * problem per child; only if the children come up anyway is this error the answer.
	 */
	ret = peek_guest(o->dir, &is_linux, &has_vsock, &peek_err);
	agent = !ret && is_linux && !o->no_agent_sync;
	if (agent && o->paused) {
		ret = errmsg(err, -EINVAL,
			     "%s is a Linux guest: paused clones cannot get the agent fix-up (new "
			     "entropy, the host's clock), which needs the guest running; resume-time "
			     "fix-up is not done, so pass --no-agent-sync to start them paused anyway",
			     o->dir);
		goto out;
	}
	if (agent && !has_vsock) {
		ret = errmsg(err, -EINVAL,
			     "%s is a Linux guest without a vsock device: its agent cannot be reached "
			     "to give each clone new entropy and the host's clock (--no-agent-sync "
			     "restores it without)", o->dir);
		goto out;
	}
	if ((ret = vmm_child_names_free(o->run_dir, o->prefix, 0, o->count, err)))
		goto out;
	for (; spawned < o->count; spawned++) {
		ret = spawn_child(o, &children[spawned], spawned, &procs[spawned]);
		if (ret) {
			errf(err, "child %d: cannot start a VMM process: %s", spawned,
				 strerror(-ret));
			break;
		}
	}
	if (!ret)
		ret = wait_ready(o, children, procs, &failed, err);
	if (!ret && peek_err.msg[0])
		ret = errmsg(err, -EINVAL, "%s", peek_err.msg);
	if (!ret && agent)
		ret = sync_agents(o, children, procs, &failed, err);
	if (ret) {
		kill_all(children, procs, spawned);
		if (failed >= 0)
			vmm_child_log_tail(children[failed].socket, err);
	}
out:
	free(procs);
	return ret;
}
