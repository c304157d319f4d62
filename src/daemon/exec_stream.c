/*
 * Streamed exec (docs/DAEMON.md, "Streaming exec"): the agent's event frames become NDJSON
 * lines of a chunked HTTP response while the command runs. A thread per stream sends the
 * request (stdin frames wait for it: they share the connection) and reads the agent
 * (agent_receive_stream, blocking, with an eventfd to cancel it), writing the lines into a
 * pipe; the HTTP side reads the pipe, so a client that reads slowly slows the command
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
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include "agent/agent_client.h"
#include "daemon/daemon_impl.h"
#include "util/base64.h"
#include "util/clock.h"
#include "util/errmsg.h"
#include "util/fdio.h"
#include "util/log.h"

/* How long one stdin request may wait for the command to take its bytes. */
#define STDIN_SEND_MS 30000

struct sb_stream {
	int rd, wr;		/* the pipe of NDJSON lines */
	int agent;		/* the connection to the guest agent */
	int cancel;		/* eventfd: the HTTP client left */
	json_t *req;		/* the agent request */
	uint64_t deadline_ns;	/* the exec's timeout plus grace; 0: none */
	char id[64];		/* the sandbox */
	char exec_id[24];	/* "ex-" + 12 hex: names the stream for POST /v1/execs/ID/stdin */
	pthread_t thread;
	/* stdin: sb_exec_stdin's writers hold wlock (they share the agent fd with the thread,
	 * which only reads it); registry_lock guards refs, next and the list */
	pthread_mutex_t wlock;
	pthread_cond_t sent;	/* request_sent became true */
	bool request_sent;	/* under wlock: no stdin frame may go before the request */
	bool stdin_open;	/* under wlock */
	int refs;
	struct sb_stream *next;
};

/* The running streams, by exec id; a stdin request holds a reference while it writes. */
static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t registry_cond = PTHREAD_COND_INITIALIZER;
static struct sb_stream *registry;

static void registry_add(struct sb_stream *s)
{
	pthread_mutex_lock(&registry_lock);
	s->next = registry;
	registry = s;
	pthread_mutex_unlock(&registry_lock);
}

/* Take s off the list (if it is still on it): its exec id answers 404 from now on. */
static void registry_unlist_locked(struct sb_stream *s)
{
	for (struct sb_stream **p = &registry; *p; p = &(*p)->next)
		if (*p == s) {
			*p = s->next;
			break;
		}
}

static void registry_unlist(struct sb_stream *s)
{
	pthread_mutex_lock(&registry_lock);
	registry_unlist_locked(s);
	pthread_mutex_unlock(&registry_lock);
}

/* Unlist s and wait until no stdin request holds it. */
static void registry_remove(struct sb_stream *s)
{
	pthread_mutex_lock(&registry_lock);
	registry_unlist_locked(s);
	while (s->refs)
		pthread_cond_wait(&registry_cond, &registry_lock);
	pthread_mutex_unlock(&registry_lock);
}

static struct sb_stream *registry_get(const char *exec_id)
{
	struct sb_stream *s;

	pthread_mutex_lock(&registry_lock);
	for (s = registry; s && strcmp(s->exec_id, exec_id); s = s->next)
		;
	if (s)
		s->refs++;
	pthread_mutex_unlock(&registry_lock);
	return s;
}

static void registry_put(struct sb_stream *s)
{
	pthread_mutex_lock(&registry_lock);
	if (--s->refs == 0)
		pthread_cond_broadcast(&registry_cond);
	pthread_mutex_unlock(&registry_lock);
}

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
static int on_event(void *arg, json_t *ev, struct fvm_err *err)
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
		return errmsg(err, ret, "passing %s on: %s", type, strerror(-ret));
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
	struct fvm_err err = FVM_ERR_INIT;
	int ret;

	/* The request first, under wlock: a stdin request waits for it (it could overtake it:
	 * the client has the exec id before this thread runs). */
	pthread_mutex_lock(&s->wlock);
	ret = agent_send(s->agent, s->req, s->deadline_ns, s->cancel, &err);
	s->request_sent = true;
	if (ret)
		s->stdin_open = false;
	pthread_cond_broadcast(&s->sent);
	pthread_mutex_unlock(&s->wlock);
	if (ret == 0)
		ret = agent_receive_stream(s->agent, "exec", on_event, s, &reply, s->deadline_ns,
					   s->cancel, &err);
	/* The command is over: its id answers 404 before the client can read the last line. */
	registry_unlist(s);
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
		char msg[sizeof(err_text(&err)) + 96];
		if (ret == -EREMOTEIO)
			snprintf(msg, sizeof(msg), "%s", err_text(&err));
		else
			snprintf(msg, sizeof(msg), "the agent of %s: %s", s->id, err_text(&err));
		put_line(s, json_pack("{s:s, s:{s:s, s:s}}", "type", "error", "error", "code",
				      ret == -EREMOTEIO ? "guest_error" : "agent_failed", "message",
				      msg));
	}
	json_decref(reply);
	/* EOF for the reader; the agent sees its connection end and kills what still runs. The
	 * fd itself stays open until the stream is freed: a stdin writer may still hold it. */
	close(s->wr);
	s->wr = -1;
	pthread_mutex_lock(&s->wlock);
	s->stdin_open = false;
	pthread_mutex_unlock(&s->wlock);
	shutdown(s->agent, SHUT_RDWR);
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
	pthread_mutex_destroy(&s->wlock);
	pthread_cond_destroy(&s->sent);
	free(s);
}

json_t *sb_exec_stdin(const char *exec_id, const void *data, size_t len, bool eof,
		      struct api_err *e)
{
	struct sb_stream *s = registry_get(exec_id);
	json_t *msg = NULL, *res = NULL;
	char *b64 = NULL;
	struct fvm_err err = FVM_ERR_INIT;
	int ret;

	if (!s) {
		api_fail(e, 404, "not_found", "no running exec %s", exec_id);
		return NULL;
	}
	b64 = malloc(base64_encoded_size(len));
	if (b64)
		base64_encode(data, len, b64);
	msg = b64 ? json_pack("{s:s, s:s, s:b}", "op", "stdin", "data", b64, "eof", eof) : NULL;
	if (!msg) {
		api_fail(e, 500, "internal", "stdin of %s: out of memory", exec_id);
		goto out;
	}
	pthread_mutex_lock(&s->wlock);
	while (!s->request_sent)
		pthread_cond_wait(&s->sent, &s->wlock);
	if (!s->stdin_open) {
		pthread_mutex_unlock(&s->wlock);
		api_fail(e, 409, "stdin_closed", "exec %s takes no more input (it was started "
			 "without stdin_open, its input was closed, or it ended)", exec_id);
		goto out;
	}
	/* A command that does not read its input holds this up to its pipe's and the agent's
	 * buffers; the stream's end (cancel) releases it. */
	ret = agent_send(s->agent, msg, deadline_after_ms(STDIN_SEND_MS), s->cancel, &err);
	if (ret == 0 && eof)
		s->stdin_open = false;
	pthread_mutex_unlock(&s->wlock);
	if (ret == -ETIMEDOUT)
		api_fail(e, 504, "stdin_stalled", "exec %s: the command did not take %zu bytes of "
			 "input within %d ms", exec_id, len, STDIN_SEND_MS);
	else if (ret)
		api_fail(e, 409, "stdin_closed", "exec %s: %s", exec_id, err_text(&err));
	else
		res = json_pack("{s:s, s:I, s:b}", "exec_id", exec_id, "bytes", (json_int_t)len,
				"eof", eof);
out:
	json_decref(msg);
	free(b64);
	registry_put(s);
	return res;
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
	if (pthread_mutex_init(&s->wlock, NULL)) {
		free(s);
		return api_fail(e, 500, "internal", "exec stream of %s: a mutex", id);
	}
	if (pthread_cond_init(&s->sent, NULL)) {
		pthread_mutex_destroy(&s->wlock);
		free(s);
		return api_fail(e, 500, "internal", "exec stream of %s: a condition", id);
	}
	if (sb_exec_check(body, &timeout_ms, e))
		goto fail;
	s->stdin_open = json_is_true(json_object_get(body, "stdin_open"));
	uint8_t r6[6];
	if (getrandom(r6, sizeof(r6), 0) != (ssize_t)sizeof(r6)) {
		api_fail(e, 500, "internal", "an exec id: getrandom: %s", strerror(errno));
		goto fail;
	}
	snprintf(s->exec_id, sizeof(s->exec_id), "ex-%02x%02x%02x%02x%02x%02x", r6[0], r6[1],
		 r6[2], r6[3], r6[4], r6[5]);
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
	/* The first line names the exec (the pipe is empty: this never blocks). */
	ret = put_line(s, json_pack("{s:s, s:s, s:b}", "type", "start", "exec_id", s->exec_id,
				    "stdin_open", s->stdin_open));
	if (ret) {
		api_fail(e, 500, "internal", "exec stream of %s: %s", id, strerror(-ret));
		goto fail;
	}
	/* Listed before the thread starts: the thread unlists it when the command ends. */
	registry_add(s);
	ret = pthread_create(&s->thread, NULL, stream_thread, s);
	if (ret) {
		pthread_mutex_lock(&s->wlock); /* release a stdin request waiting for the request */
		s->request_sent = true;
		s->stdin_open = false;
		pthread_cond_broadcast(&s->sent);
		pthread_mutex_unlock(&s->wlock);
		registry_remove(s);
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
	/* Wake a thread waiting on the agent (and stdin writers), and fail its writes into the
	 * pipe. */
	if (write(s->cancel, &one, sizeof(one)) < 0)
		log_err("exec stream of %s: cancel: %s", s->id, strerror(errno));
	registry_remove(s);
	close(s->rd);
	s->rd = -1;
	pthread_join(s->thread, NULL);
	stream_free(s);
}
