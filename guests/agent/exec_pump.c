/* The exec I/O loop: stdin in, bounded stdout/stderr out, timeout, hang-up, reaping. */
#include "exec.h"
#include "io.h"
#include "log.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* Without a pidfd, waitpid is re-checked this often once the pipes are quiet. */
#define PUMP_FALLBACK_POLL_MS 5
/* After the child exits, read at most this many more chunks per stream: a background
 * process still writing must not keep the reply from going out. */
#define PUMP_DRAIN_READS 64

enum { SLOT_IN, SLOT_OUT, SLOT_ERR, SLOT_PID, SLOT_CONN, SLOT_COUNT };

static void close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

/* Keep what fits under the bound; note (and drop) the rest. */
static int capture(struct exec_capture *c, const uint8_t *data, size_t n)
{
	size_t keep = c->max - c->len < n ? c->max - c->len : n;

	if (keep < n)
		c->truncated = true;
	if (!keep)
		return 0;
	if (c->len + keep > c->cap) {
		size_t cap = c->cap ? c->cap : 4096;
		uint8_t *nbuf;

		while (cap < c->len + keep)
			cap *= 2;
		if (cap > c->max)
			cap = c->max;
		nbuf = realloc(c->buf, cap);
		if (!nbuf)
			return -ENOMEM;
		c->buf = nbuf;
		c->cap = cap;
	}
	memcpy(c->buf + c->len, data, keep);
	c->len += keep;
	return 0;
}

/* Read what is available on *fd; closes it at EOF. max_reads bounds the loop. */
static int pump_read(int *fd, struct exec_capture *c, int max_reads, struct agent_err *e)
{
	static uint8_t chunk[64 * 1024];

	while (*fd >= 0 && max_reads-- > 0) {
		ssize_t n = read(*fd, chunk, sizeof(chunk));

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return 0;
		if (n < 0)
			return agent_fail(e, -errno, "read command output: %s", strerror(errno));
		if (n == 0) {
			close_fd(fd);
			return 0;
		}
		if (capture(c, chunk, (size_t)n) < 0)
			return agent_fail(e, -ENOMEM, "grow output buffer: %s", strerror(ENOMEM));
	}
	return 0;
}

/* Write the next piece of stdin; close it when done or when the child stopped reading. */
static int pump_write(int *fd, const struct exec_request *x, size_t *done, struct agent_err *e)
{
	while (*fd >= 0 && *done < x->stdin_len) {
		ssize_t n = write(*fd, x->stdin_data + *done, x->stdin_len - *done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return 0;
		if (n < 0 && errno == EPIPE)
			break; /* not reading stdin is the command's right */
		if (n < 0)
			return agent_fail(e, -errno, "write command stdin: %s", strerror(errno));
		*done += (size_t)n;
	}
	close_fd(fd);
	return 0;
}

static bool reap(pid_t pid, int *status, bool block)
{
	pid_t r;

	do
		r = waitpid(pid, status, block ? 0 : WNOHANG);
	while (r < 0 && errno == EINTR);
	return r == pid || (r < 0 && errno == ECHILD);
}

/* Poll timeout in ms until the next thing the loop must do on its own. */
static int next_wait(const struct exec_request *x, const struct exec_proc *p, uint64_t deadline)
{
	int wait_ms = -1;

	if (x->timeout_ms) {
		uint64_t now = io_now_ms();

		wait_ms = now >= deadline ? 0 : (int)(deadline - now);
	}
	if (p->pid_fd < 0 && (wait_ms < 0 || wait_ms > PUMP_FALLBACK_POLL_MS))
		wait_ms = PUMP_FALLBACK_POLL_MS;
	return wait_ms;
}

int exec_pump(const struct exec_request *x, struct exec_proc *p, int conn_fd,
	      struct exec_result *res, struct agent_err *e)
{
	uint64_t deadline = io_now_ms() + x->timeout_ms;
	struct pollfd fds[SLOT_COUNT];
	bool exited = false, kill_group = false;
	size_t stdin_done = 0;
	int ret = 0;

	res->out.max = res->err.max = x->max_output;
	if (x->stdin_len == 0)
		close_fd(&p->in_fd);
	while (!exited) {
		fds[SLOT_IN] = (struct pollfd){ .fd = p->in_fd, .events = POLLOUT };
		fds[SLOT_OUT] = (struct pollfd){ .fd = p->out_fd, .events = POLLIN };
		fds[SLOT_ERR] = (struct pollfd){ .fd = p->err_fd, .events = POLLIN };
		fds[SLOT_PID] = (struct pollfd){ .fd = p->pid_fd, .events = POLLIN };
		/* Only a full hang-up: a client that half-closed may still read the reply. */
		fds[SLOT_CONN] = (struct pollfd){ .fd = conn_fd, .events = 0 };
		if (poll(fds, SLOT_COUNT, next_wait(x, p, deadline)) < 0 && errno != EINTR) {
			ret = agent_fail(e, -errno, "poll command pipes: %s", strerror(errno));
			kill_group = true;
			break;
		}
		if (fds[SLOT_CONN].revents & (POLLHUP | POLLERR)) {
			ret = agent_fail(e, -ECONNRESET, "client hung up during exec");
			kill_group = true;
			break;
		}
		if (fds[SLOT_IN].revents)
			ret = pump_write(&p->in_fd, x, &stdin_done, e);
		if (ret == 0 && fds[SLOT_OUT].revents)
			ret = pump_read(&p->out_fd, &res->out, 4, e);
		if (ret == 0 && fds[SLOT_ERR].revents)
			ret = pump_read(&p->err_fd, &res->err, 4, e);
		if (ret < 0) {
			kill_group = true;
			break;
		}
		exited = reap(p->pid, &res->status, false);
		if (!exited && x->timeout_ms && io_now_ms() >= deadline) {
			res->timed_out = true;
			kill_group = true;
			break;
		}
	}
	if (kill_group && kill(-p->pid, SIGKILL) < 0 && errno != ESRCH)
		log_errno(-errno, "kill process group %d", (int)p->pid);
	if (!exited)
		reap(p->pid, &res->status, true);
	/* Output written before the exit is already in the pipes; collect it. */
	if (ret == 0)
		ret = pump_read(&p->out_fd, &res->out, PUMP_DRAIN_READS, e);
	if (ret == 0)
		ret = pump_read(&p->err_fd, &res->err, PUMP_DRAIN_READS, e);
	close_fd(&p->in_fd);
	close_fd(&p->out_fd);
	close_fd(&p->err_fd);
	close_fd(&p->pid_fd);
	return ret;
}

void exec_result_free(struct exec_result *res)
{
	free(res->out.buf);
	free(res->err.buf);
	memset(res, 0, sizeof(*res));
}
