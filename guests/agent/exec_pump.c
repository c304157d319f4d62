/* The exec I/O loop: stdin in, bounded stdout/stderr out, timeout, hang-up, reaping. */
#include "exec.h"
#include "frame.h"
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

/*
 * Read what is available on *fd; closes it at EOF. max_reads bounds the loop. Output goes to
 * c, or with a stream st to the client as stream `which`.
 */
static int pump_read(int *fd, struct exec_capture *c, struct exec_stream *st, int which,
		     int max_reads, struct fvm_err *e)
{
	static uint8_t chunk[64 * 1024];

	while (*fd >= 0 && max_reads-- > 0) {
		ssize_t n = read(*fd, chunk, sizeof(chunk));

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return 0;
		if (n < 0)
			return errmsg(e, -errno, "read command output: %s", strerror(errno));
		if (n == 0) {
			close_fd(fd);
			return st ? exec_stream_emit(st, which, NULL, 0, true, e) : 0;
		}
		if (st) {
			int ret = exec_stream_emit(st, which, chunk, (size_t)n, false, e);

			if (ret < 0)
				return ret;
			continue;
		}
		if (capture(c, chunk, (size_t)n) < 0)
			return errmsg(e, -ENOMEM, "grow output buffer: %s", strerror(ENOMEM));
	}
	return 0;
}

/*
 * The command's input: the request's "stdin", then with stdin_open the bytes of "stdin"
 * frames as they arrive, until one says eof (or the client half-closes).
 */
struct stdin_feed {
	uint8_t *buf;		/* owned: what is still to be written starts at done */
	size_t len, done;
	bool eof;		/* no more input will come: close the pipe once written */
	bool closed;		/* the pipe is closed: later input is dropped */
};

/* Stop reading stdin frames while this much input waits for the command to read it. */
#define FEED_PENDING_MAX (1u << 20)

static int feed_append(struct stdin_feed *f, const uint8_t *data, size_t n, struct fvm_err *e)
{
	uint8_t *nbuf;

	if (f->done == f->len)
		f->done = f->len = 0;
	if (!n || f->closed)
		return 0;
	nbuf = realloc(f->buf, f->len + n);
	if (!nbuf)
		return errmsg(e, -ENOMEM, "buffer command stdin: %s", strerror(ENOMEM));
	memcpy(nbuf + f->len, data, n);
	f->buf = nbuf;
	f->len += n;
	return 0;
}

/* Write the pending input; close the pipe once all is written and no more will come, or when
 * the child stopped reading. */
static int pump_write(int *fd, struct stdin_feed *f, struct fvm_err *e)
{
	while (*fd >= 0 && f->done < f->len) {
		ssize_t n = write(*fd, f->buf + f->done, f->len - f->done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return 0;
		if (n < 0 && errno == EPIPE) {
			f->done = f->len; /* not reading stdin is the command's right */
			f->eof = true;
			break;
		}
		if (n < 0)
			return errmsg(e, -errno, "write command stdin: %s", strerror(errno));
		f->done += (size_t)n;
	}
	if (f->eof) {
		close_fd(fd);
		f->closed = true;
	}
	return 0;
}

/*
 * One frame from the client during an exec with stdin_open: only "stdin" frames may come.
 * *conn_done once no more will (eof, or the client shut down its write side).
 */
static int read_stdin_frame(struct conn_in *in, struct stdin_feed *f, bool *conn_done,
			    struct fvm_err *e)
{
	struct agent_request req = { 0 };
	uint8_t hdr[FRAME_HEADER], *payload = NULL;
	size_t got, len;
	int ret;

	ret = conn_in_read(in, hdr, sizeof(hdr), &got);
	if (ret == -ECONNRESET && got == 0) {
		*conn_done = f->eof = true; /* a half-close ends the input */
		return 0;
	}
	if (ret < 0)
		return errmsg(e, ret, "read stdin frame: %s", strerror(-ret));
	len = frame_get_len(hdr);
	if (len > AGENT_MAX_FRAME)
		return errmsg(e, -EMSGSIZE, "stdin frame of %zu bytes exceeds the limit", len);
	payload = malloc(len + 1);
	if (!payload)
		return errmsg(e, -ENOMEM, "stdin frame buffer: %s", strerror(ENOMEM));
	ret = conn_in_read(in, payload, len, &got);
	if (ret < 0) {
		errmsg(e, ret, "read stdin frame: %s", strerror(-ret));
		goto out;
	}
	ret = agent_request_parse(payload, len, &req, e);
	if (ret == 0 && req.op != OP_STDIN)
		ret = errmsg(e, -EPROTO, "only stdin frames may come while an exec with "
				 "stdin_open runs, not '%s'", agent_op_name(req.op));
	if (ret == 0)
		ret = feed_append(f, req.stdin_frame.data, req.stdin_frame.len, e);
	if (ret == 0 && req.stdin_frame.eof)
		*conn_done = f->eof = true;
out:
	agent_request_free(&req);
	free(payload);
	return ret;
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

int exec_pump(const struct exec_request *x, struct exec_proc *p, struct conn_in *in,
	      struct exec_stream *st, struct exec_result *res, struct fvm_err *e)
{
	uint64_t deadline = io_now_ms() + x->timeout_ms;
	struct stdin_feed feed = { .eof = !x->stdin_open };
	struct pollfd fds[SLOT_COUNT];
	bool exited = false, kill_group = false, conn_done = !x->stdin_open;
	int ret = 0;

	res->out.max = res->err.max = x->max_output;
	ret = feed_append(&feed, x->stdin_data, x->stdin_len, e);
	if (ret < 0)
		kill_group = true;
	else if (feed.eof && feed.len == 0)
		close_fd(&p->in_fd);
	while (ret == 0 && !exited) {
		bool pending = feed.done < feed.len;

		fds[SLOT_IN] = (struct pollfd){ .fd = pending ? p->in_fd : -1, .events = POLLOUT };
		fds[SLOT_OUT] = (struct pollfd){ .fd = p->out_fd, .events = POLLIN };
		fds[SLOT_ERR] = (struct pollfd){ .fd = p->err_fd, .events = POLLIN };
		fds[SLOT_PID] = (struct pollfd){ .fd = p->pid_fd, .events = POLLIN };
		/* Only a full hang-up: a client that half-closed may still read the reply. Input
		 * frames are read while the command keeps up with them. */
		bool want_in = !conn_done && feed.len - feed.done < FEED_PENDING_MAX;

		fds[SLOT_CONN] = (struct pollfd){ .fd = in->fd, .events = want_in ? POLLIN : 0 };
		/* Frames already read ahead do not make the fd readable: do not wait for them. */
		if (poll(fds, SLOT_COUNT, want_in && conn_in_buffered(in) ? 0
					  : next_wait(x, p, deadline)) < 0 && errno != EINTR) {
			ret = errmsg(e, -errno, "poll command pipes: %s", strerror(errno));
			kill_group = true;
			break;
		}
		if (fds[SLOT_CONN].revents & (POLLHUP | POLLERR)) {
			ret = errmsg(e, -ECONNRESET, "client hung up during exec");
			kill_group = true;
			break;
		}
		if (want_in && ((fds[SLOT_CONN].revents & POLLIN) || conn_in_buffered(in)))
			ret = read_stdin_frame(in, &feed, &conn_done, e);
		if (ret == 0 && (fds[SLOT_IN].revents || (feed.eof && !pending)))
			ret = pump_write(&p->in_fd, &feed, e);
		if (ret == 0 && fds[SLOT_OUT].revents)
			ret = pump_read(&p->out_fd, &res->out, st, 0, 4, e);
		if (ret == 0 && fds[SLOT_ERR].revents)
			ret = pump_read(&p->err_fd, &res->err, st, 1, 4, e);
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
		ret = pump_read(&p->out_fd, &res->out, st, 0, PUMP_DRAIN_READS, e);
	if (ret == 0)
		ret = pump_read(&p->err_fd, &res->err, st, 1, PUMP_DRAIN_READS, e);
	/* A stream cut by the drain bound still sends its held-back bytes. */
	for (int i = 0; st && ret == 0 && i < 2; i++)
		ret = exec_stream_emit(st, i, NULL, 0, true, e);
	close_fd(&p->in_fd);
	close_fd(&p->out_fd);
	close_fd(&p->err_fd);
	close_fd(&p->pid_fd);
	free(feed.buf);
	return ret;
}

void exec_result_free(struct exec_result *res)
{
	free(res->out.buf);
	free(res->err.buf);
	memset(res, 0, sizeof(*res));
}
