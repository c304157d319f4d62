/*
 * Streamed exec (docs/DAEMON.md, "Streaming exec"): the agent's event frames become NDJSON
 * lines of a chunked HTTP response while the command runs. A thread per stream talks to the
 * agent (agent_request_stream, blocking, with an eventfd to cancel it) and writes the lines
 * into a pipe; the HTTP side reads the pipe, so a client that reads slowly slows the command
 * down (pipe, then vsock, then the guest's pipe), and one that leaves cancels it.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "agent/agent_client.h"
#include "daemon/daemon_impl.h"
#include "util/clock.h"
#include "util/errmsg.h"
#include "util/fdio.h"
#include "util/log.h"

struct sb_stream {
	int rd, wr;		/* the pipe of NDJSON lines */
	int agent;		/* the connection to the guest agent */
	int cancel;		/* eventfd: the HTTP client left */
	json_t *req;		/* the agent request */
	uint64_t deadline_ns;	/* the exec's timeout plus grace; 0: none */
	char id[64];
	pthread_t thread;
};

/* One NDJSON line into the pipe; -EPIPE once the reader is gone. */
static int put_line(struct sb_stream *s, json_t *line)
{
	char *text = line ? json_dumps(line, JSON_COMPACT) : NULL;
	int ret = -ENOMEM;

	json_decref(line);
	if (text) {
		size_t len = strlen(text);
		text[len] = '\n'; /* json_dumps leaves room for the NUL */
		ret = fd_write_all(s->wr, text, len + 1);
		free(text);
	}
	return ret;
}

/* An agent event frame → {"type":"stdout"|"stderr","data":..,"encoding":..}. */
static int on_event(void *arg, json_t *ev, char *err, size_t errlen)
{
	struct sb_stream *s = arg;
	const char *type = json_string_value(json_object_get(ev, "event"));
	int ret;

	if (!type || (strcmp(type, "stdout") && strcmp(type, "stderr")))
		return 0; /* an event kind this daemon does not know: not output */
	ret = put_line(s, json_pack("{s:s, s:O?, s:O?}", "type", type, "data",
				    json_object_get(ev, "data"), "encoding",
				    json_object_get(ev, "data_encoding")));
	if (ret)
		return errmsg(err, errlen, ret, "passing %s on: %s", type, strerror(-ret));
	return 0;
}

/* An agent from before streaming answers with the captured output: send it as two lines. */
static int replay_captured(struct sb_stream *s, json_t *reply)
{
	static const char *const names[] = { "stdout", "stderr" };
	char key[32];
	int ret = 0;

	for (int i = 0; i < 2 && ret == 0; i++) {
		json_t *data = json_object_get(reply, names[i]);
		snprintf(key, sizeof(key), "%s_encoding", names[i]);
		if (json_is_string(data) && json_string_length(data))
			ret = put_line(s, json_pack("{s:s, s:O, s:O?}", "type", names[i], "data", data,
						    "encoding", json_object_get(reply, key)));
	}
	return ret;
}

static void *stream_thread(void *arg)
{
	struct sb_stream *s = arg;
	json_t *reply = NULL;
	char err[1024];
	int ret;

	ret = agent_request_stream(s->agent, s->req, on_event, s, &reply, s->deadline_ns,
				   s->cancel, err, sizeof(err));
	if (ret == 0)
		ret = replay_captured(s, reply);
	if (ret == 0)
		put_line(s, json_pack("{s:s, s:O?, s:O?, s:O?, s:O?}", "type", "exit", "exit_code",
				      json_object_get(reply, "exit_code"), "signal",
				      json_object_get(reply, "signal"), "timed_out",
				      json_object_get(reply, "timed_out"), "duration_ms",
				      json_object_get(reply, "duration_ms")));
	else if (ret != -ECANCELED && ret != -EPIPE) {
		/* The same codes and words as a failing plain exec, in the stream's last line. */
		char msg[sizeof(err) + 96];
		if (ret == -EREMOTEIO)
			snprintf(msg, sizeof(msg), "%s", err);
		else
			snprintf(msg, sizeof(msg), "the agent of %s: %s", s->id, err);
		put_line(s, json_pack("{s:s, s:{s:s, s:s}}", "type", "error", "error", "code",
				      ret == -EREMOTEIO ? "guest_error" : "agent_failed", "message",
				      msg));
	}
	json_decref(reply);
	/* EOF for the reader; the agent sees its connection end and kills what still runs. */
	close(s->wr);
	s->wr = -1;
	close(s->agent);
	s->agent = -1;
	return NULL;
}

static void stream_free(struct sb_stream *s)
{
	if (s->rd >= 0)
		close(s->rd);
	if (s->wr >= 0)
		close(s->wr);
	if (s->agent >= 0)
		close(s->agent);
	if (s->cancel >= 0)
		close(s->cancel);
	json_decref(s->req);
	free(s);
}

int sb_exec_stream_open(struct daemon *d, const char *id, json_t *body, struct sb_stream **out,
			struct api_err *e)
{
	struct sb_stream *s = calloc(1, sizeof(*s));
	struct sandbox_rec r;
	uint64_t timeout_ms;
	int fds[2], ret;

	if (!s)
		return api_fail(e, 500, "internal", "exec stream of %s: out of memory", id);
	s->rd = s->wr = s->agent = s->cancel = -1;
	snprintf(s->id, sizeof(s->id), "%s", id);
	if (sb_exec_check(body, &timeout_ms, e))
		goto fail;
	s->deadline_ns = timeout_ms ? deadline_after_ms((int64_t)(timeout_ms + EXEC_GRACE_MS)) : 0;
	s->req = json_deep_copy(body);
	if (!s->req || json_object_set_new(s->req, "op", json_string("exec")) ||
	    json_object_set_new(s->req, "stream", json_true())) {
		api_fail(e, 500, "internal", "exec stream of %s: out of memory", id);
		goto fail;
	}
	if (pipe2(fds, O_CLOEXEC) < 0) {
		api_fail(e, 500, "internal", "exec stream of %s: pipe: %s", id, strerror(errno));
		goto fail;
	}
	s->rd = fds[0];
	s->wr = fds[1];
	s->cancel = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (s->cancel < 0) {
		api_fail(e, 500, "internal", "exec stream of %s: eventfd: %s", id, strerror(errno));
		goto fail;
	}
	s->agent = sb_agent_fd(d, id, &r, e);
	if (s->agent < 0)
		goto fail;
	ret = pthread_create(&s->thread, NULL, stream_thread, s);
	if (ret) {
		api_fail(e, 500, "internal", "exec stream of %s: a thread: %s", id, strerror(ret));
		goto fail;
	}
	*out = s;
	return 0;
fail:
	stream_free(s);
	return -1;
}

int sb_stream_fd(const struct sb_stream *s)
{
	return s->rd;
}

void sb_stream_close(struct sb_stream *s)
{
	uint64_t one = 1;

	if (!s)
		return;
	/* Wake a thread waiting on the agent, and fail its writes into the pipe. */
	if (write(s->cancel, &one, sizeof(one)) < 0)
		log_err("exec stream of %s: cancel: %s", s->id, strerror(errno));
	close(s->rd);
	s->rd = -1;
	pthread_join(s->thread, NULL);
	stream_free(s);
}
