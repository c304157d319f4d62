/* Source side of the cow strategy: pause, capture, fork the template, resume, read its report. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "util/errmsg.h"
#include "util/log.h"
#include "fork/cow.h"
#include "util/clock.h"

#define THP_REPAIR_BEFORE_FORK_NS (50 * NS_PER_MS)

/* Double fork: the template is orphaned at once, so it outlives the source and is not its zombie. */
static pid_t fork_template(struct vm *vm, struct snap_buf *state, const struct branch_opts *o,
			   int report_fd, const int gate[2])
{
	pid_t source = getpid(), mid = fork();

	if (mid == 0) {
		/* Wait until the source's vCPUs are back in the guest (it closes gate[1]): the
		 * work below, a second fork() among it, would take a CPU from them inside the
		 * pause window (ARCHITECTURE.md, fork rules). */
		char c;
		close(gate[1]);
		while (read(gate[0], &c, 1) < 0 && errno == EINTR)
			;
		close(gate[0]);
		/* Single-threaded here: the template starts in a cgroup of its own, out of the
		 * source's (which goes when the source does), without the source's limits (a
		 * pids.max could stop it forking children; the children get them). */
		const struct cgroup_opts *src = jail_cgroup_opts();
		struct cgroup_opts none = { .no_cgroup = src && src->no_cgroup };
		struct cgroup_slot cg;
		char name[80];

		snprintf(name, sizeof(name), "%s-template", o->prefix);
		jail_cgroup_prepare(name, &none, &cg);
		pid_t tpl = jail_cgroup_fork(&cg);
		if (tpl == 0)
			cow_template_main(vm, state, o, report_fd, source, &cg);
		_exit(tpl < 0 ? 1 : 0);
	}
	return mid;
}

/* The template's report: "child NAME PID SOCKET" lines, "stamps ...", then "ok SOCKET" or an
 * error (its last word, which may span lines: a child's quoted log). */
static int parse_report(char *buf, struct branch_result *res, struct fvm_err *err)
{
	size_t len = strlen(buf), total = len;
	/* An error is the template's last word and may span lines (a child's quoted log). */
	char *error = strncmp(buf, "error ", 6) == 0 ? buf : strstr(buf, "\nerror ");
	if (error) {
		error += *error == '\n' ? 7 : 6;
		len = strlen(error);
		while (len > 0 && error[len - 1] == '\n')
			error[--len] = '\0';
		return errmsg(err, -ECHILD, "%s", error);
	}
	for (char *save = NULL, *line = strtok_r(buf, "\n", &save); line;
	     line = strtok_r(NULL, "\n", &save)) {
		if (strncmp(line, "child ", 6) == 0 && res->count < BRANCH_MAX_CHILDREN) {
			struct branch_child *c = &res->children[res->count];
			int pid;
			if (sscanf(line + 6, "%63s %d %511s", c->name, &pid, c->socket) == 3) {
				c->pid = pid;
				res->count++;
			}
		} else if (strncmp(line, "stamps ", 7) == 0) {
			unsigned long long s[4];
			uint64_t *to[4] = { &res->template_ns, &res->first_fork_ns, &res->last_fork_ns,
					    &res->ready_ns };
			if (sscanf(line + 7, "%llu %llu %llu %llu", &s[0], &s[1], &s[2], &s[3]) == 4)
				for (int i = 0; i < 4; i++)
					*to[i] = s[i] > res->start_ns ? s[i] - res->start_ns : 0;
		} else if (strncmp(line, "ok ", 3) == 0) {
			snprintf(res->template_socket, sizeof(res->template_socket), "%s", line + 3);
			return 0;
		} else if (strncmp(line, "error ", 6) == 0) {
			return errmsg(err, -ECHILD, "%s", line + 6);
		}
	}
	return errmsg(err, -ECHILD, "the cow template exited without a report (%zu bytes: %.200s)",
		      total, buf);
}

/* A child's line (name, pid, socket path) at most; the rest of a report is a few KiB. */
#define REPORT_CHILD_LINE 600
#define REPORT_MAX (8u << 20)

/* Read the template's report to its end (it closes the pipe) into *out, grown as needed. */
static int read_all(int fd, int timeout_ms, int count, char **out, struct fvm_err *err)
{
	size_t cap = (64u << 10) + (size_t)count * REPORT_CHILD_LINE, len = 0;
	uint64_t deadline = deadline_after_ms(timeout_ms);
	char *buf = malloc(cap), *grown;
	int ret = 0;

	while (buf) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		int left = deadline_ms_left(deadline);
		ssize_t n;

		if (len == cap - 1) {
			if (cap >= REPORT_MAX) {
				ret = errmsg(err, -EMSGSIZE, "the cow template's report passed %u "
					     "bytes", REPORT_MAX);
				goto out;
			}
			grown = realloc(buf, cap * 2);
			if (!grown)
				break;
			buf = grown;
			cap *= 2;
		}
		if (left <= 0 || poll(&p, 1, left) <= 0) {
			ret = errmsg(err, -ETIMEDOUT, "the cow template did not report within %d ms",
				     timeout_ms);
			goto out;
		}
		n = read(fd, buf + len, cap - 1 - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			buf[len] = '\0';
			*out = buf;
			return 0;
		}
		len += (size_t)n;
	}
	ret = errmsg(err, -ENOMEM, "out of memory for the cow template's report");
out:
	free(buf);
	return ret;
}

static int read_report(int fd, int timeout_ms, int count, struct branch_result *res,
		       struct fvm_err *err)
{
	char *buf = NULL;
	int ret = read_all(fd, timeout_ms, count, &buf, err);

	if (ret)
		return ret;
	ret = parse_report(buf, res, err);
	free(buf);
	return ret;
}

int branch_cow(struct vm *vm, const struct branch_opts *o, struct branch_result *res,
	       struct fvm_err *err)
{
	struct snap_buf state;
	struct branch_pause bp;
	int pipefd[2], gate[2] = { -1, -1 }, ret;
	pid_t mid;

	if (!o->serve) {
		return errmsg(err, -EINVAL,
			      "cow branch: the caller gave no way for children to serve "
			 "their VM (branch_opts.serve)");
	}
	if (vm->mem.backing != GUEST_MEM_ANON) {
		return errmsg(err, -EINVAL,
			      "cow needs anonymous private guest RAM (this VM uses %s)",
			 guest_mem_backing_name(vm->mem.backing));
	}
	if (pipe2(pipefd, O_CLOEXEC) < 0) {
		ret = -errno;
		return errmsg(err, ret, "a pipe for the cow template's report: %s", strerror(-ret));
	}
	if (pipe2(gate, O_CLOEXEC) < 0) {
		ret = -errno;
		close(pipefd[0]);
		close(pipefd[1]);
		return errmsg(err, ret, "a pipe to hold the cow template: %s", strerror(-ret));
	}
	snap_buf_init(&state);
	/* Huge pages split since the last branch make this fork copy their page tables: put
	 * back what no sharer holds, before the pause (bounded; the control loop does the rest). */
	struct thp_repair *thp = thp_repair_get(&vm->thp);
	if (thp_repair_wanted(thp, &vm->mem))
		thp_repair_step(thp, &vm->mem, THP_REPAIR_BEFORE_FORK_NS);
	if ((ret = branch_pause_source(vm, o, res, &bp, err)))
		goto out;
	uint64_t t1 = monotonic_ns();
	ret = snap_capture(vm, &state);
	if (!ret)
		ret = snap_buf_finish(&state);
	res->capture_ns = monotonic_ns() - t1;
	t1 = monotonic_ns();
	mid = ret ? -1 : fork_template(vm, &state, o, pipefd[1], gate);
	int fork_errno = errno; /* before the resume can change it */
	res->fork_ns = monotonic_ns() - t1;
	branch_resume_source(vm, res, &bp);
	close(gate[1]);
	gate[1] = -1;
	if (ret) {
		errf(err, "capturing the source state: %s", strerror(-ret));
		goto out;
	}
	if (mid < 0) {
		ret = -fork_errno;
		errf(err, "fork of the template: %s", strerror(fork_errno));
		goto out;
	}
	thp_repair_mark(&vm->thp, &vm->mem); /* from now on the source's writes split shared huge pages */
	waitpid(mid, NULL, 0);
	close(pipefd[1]);
	pipefd[1] = -1;
	/* The template's own deadlines: children ready, then (Linux) their agent fix-up. */
	ret = read_report(pipefd[0], vm->probe_guest || o->no_agent_sync ? o->timeout_ms
									  : 2 * o->timeout_ms + 5000,
			  o->count, res, err);
out:
	snap_buf_free(&state);
	close(gate[0]);
	if (gate[1] >= 0)
		close(gate[1]);
	close(pipefd[0]);
	if (pipefd[1] >= 0)
		close(pipefd[1]);
	return ret;
}
