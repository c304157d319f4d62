/* The eval and eval_close ops: code in a warm interpreter, its timeout, and the reply. */
#include "eval_ctx.h"
#include "io.h"
#include "log.h"
#include "ops.h"
#include "reply.h"
#include "util/fdio.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>

/* How one eval ended, as far as the agent saw it. */
struct eval_outcome {
	struct eval_meta meta;	/* meta.root is NULL when no result came back */
	uint8_t *out, *err;	/* the output frames */
	size_t out_len, err_len;
	bool interrupted;	/* SIGINT was sent: timeout or client hang-up */
	bool hung_up;		/* the client hung up */
	bool killed;		/* still running after the grace period: SIGKILLed */
	bool died;		/* the interpreter exited during the eval */
	int status;		/* its wait status when died and known, else -1 */
};

static int send_request(struct eval_session *s, const struct eval_request *x,
			struct fvm_err *e)
{
	uint8_t *frame = NULL;
	size_t len;
	int ret;

	ret = evalp_request(x->code, x->code_len, x->max_output, &frame, &len);
	if (ret < 0)
		return errmsg(e, ret, "encode the eval request: %s", strerror(-ret));
	ret = fd_write_all(s->st.fd, frame, len);
	free(frame);
	/* A dead interpreter shows as EPIPE here or as EOF on the reply: both mean "died". */
	if (ret == -EPIPE || ret == -ECONNRESET)
		return -ECONNRESET;
	if (ret < 0)
		return errmsg(e, ret, "send code to the interpreter of context '%s': %s",
				  s->context, strerror(-ret));
	return 0;
}

/* SIGINT the interpreter once: the driver turns it into KeyboardInterrupt in the code. */
static void interrupt(struct eval_session *s, struct eval_outcome *o, bool hung_up,
		      uint64_t *deadline)
{
	o->interrupted = true;
	o->hung_up = hung_up;
	if (kill(s->hello.pid, SIGINT) < 0)
		log_errno(-errno, "eval: interrupt pid %d", (int)s->hello.pid);
	*deadline = io_now_ms() + AGENT_EVAL_GRACE_MS;
}

/* Take the three reply frames, interrupting at the timeout or when the client hangs up. */
static int await_reply(const struct op_ctx *ctx, const struct eval_request *x,
		       struct eval_session *s, struct eval_outcome *o, struct fvm_err *e)
{
	uint64_t deadline = x->timeout_ms ? io_now_ms() + x->timeout_ms : 0;
	uint8_t *frames[3] = { NULL, NULL, NULL };
	size_t lens[3] = { 0, 0, 0 };
	int watch = ctx->conn_fd, got = 0, ret;

	ret = send_request(s, x, e);
	while (ret == 0 && got < 3) {
		/* The driver sends at most this much; more is a protocol breach (code writing to
		 * its private socket), refused before it is buffered. */
		s->st.dec.max = got == 0 ? AGENT_EVAL_META_MAX : x->max_output;
		ret = eval_recv(&s->st, deadline, watch, &frames[got], &lens[got]);
		if (ret == 0) {
			got++;
		} else if ((ret == -ETIMEDOUT || ret == -EPIPE) && !o->interrupted) {
			interrupt(s, o, ret == -EPIPE, &deadline);
			watch = -1;
			ret = 0;
		} else if (ret != -ETIMEDOUT && ret != -ECONNRESET) {
			ret = errmsg(e, ret, "receive from the interpreter of context '%s': %s",
					 s->context, strerror(-ret));
		}
	}
	if (ret == -ETIMEDOUT) {
		o->killed = true;
		eval_session_kill(s);
		ret = 0;
	} else if (ret == -ECONNRESET) {
		o->died = true;
		o->status = eval_session_lost(s);
		ret = 0;
	} else if (ret < 0) {
		eval_session_kill(s); /* out of step with us: its state cannot be trusted */
	} else {
		ret = evalp_parse_meta(frames[0], lens[0], &o->meta, e);
		if (ret < 0)
			eval_session_kill(s);
	}
	if (ret == 0 && got == 3) {
		o->out = frames[1];
		o->err = frames[2];
		o->out_len = lens[1] < x->max_output ? lens[1] : x->max_output;
		o->err_len = lens[2] < x->max_output ? lens[2] : x->max_output;
		frames[1] = frames[2] = NULL;
	}
	for (int i = 0; i < 3; i++)
		free(frames[i]);
	return ret;
}

/* The error object of the reply: the code's exception, or what the agent had to do. */
static json_t *error_value(const struct eval_request *x, const struct eval_session *s,
			   const struct eval_outcome *o)
{
	const char *name = o->meta.error ? json_string_value(json_object_get(o->meta.error, "name"))
					 : NULL;
	char msg[320], how[64] = "";

	if (o->killed) {
		if (!o->hung_up)
			snprintf(how, sizeof(how), " after %llu ms", (unsigned long long)x->timeout_ms);
		snprintf(msg, sizeof(msg),
			 "eval %s%s; the code ignored SIGINT for %u ms and its interpreter was "
			 "killed: context '%s' lost its state",
			 o->hung_up ? "abandoned by the client" : "timed out", how,
			 AGENT_EVAL_GRACE_MS, s->context);
		return evalp_error("TimeoutError", msg, "");
	}
	if (o->died) {
		if (o->status >= 0 && WIFEXITED(o->status))
			snprintf(how, sizeof(how), " with status %d", WEXITSTATUS(o->status));
		else if (o->status >= 0 && WIFSIGNALED(o->status))
			snprintf(how, sizeof(how), " by signal %d", WTERMSIG(o->status));
		snprintf(msg, sizeof(msg),
			 "the interpreter of context '%s' exited during the eval%s: its state is lost",
			 s->context, how);
		return evalp_error("InterpreterExited", msg, "");
	}
	if (o->interrupted && name && !strcmp(name, "KeyboardInterrupt")) {
		snprintf(msg, sizeof(msg), "eval timed out after %llu ms (interrupted with SIGINT)",
			 (unsigned long long)x->timeout_ms);
		return evalp_error("TimeoutError", msg,
				   json_string_value(json_object_get(o->meta.error, "traceback")));
	}
	return o->meta.error ? json_incref(o->meta.error) : json_null();
}

static int set_stream(json_t *reply, const char *key, const uint8_t *data, size_t len,
		      bool truncated, bool force_base64)
{
	char trunc_key[32];
	int ret;

	snprintf(trunc_key, sizeof(trunc_key), "%s_truncated", key);
	ret = reply_set_bytes(reply, key, data, len, force_base64);
	if (ret == 0)
		ret = reply_set(reply, trunc_key, json_boolean(truncated));
	return ret;
}

static int build_reply(json_t *reply, const struct eval_request *x, const struct eval_session *s,
		       const struct eval_outcome *o, uint64_t duration_ms)
{
	json_t *result = o->meta.result ? json_incref(o->meta.result) : json_null();
	int ret;

	ret = reply_set(reply, "context", json_string(s->context));
	if (ret == 0)
		ret = reply_set(reply, "started", json_boolean(s->started));
	if (ret == 0)
		ret = reply_set(reply, "state_lost",
				json_boolean(s->state_lost || o->killed || o->died));
	if (ret == 0)
		ret = reply_set(reply, "timed_out", json_boolean(o->interrupted && !o->hung_up));
	if (ret == 0)
		ret = reply_set(reply, "python", json_string(s->hello.python));
	if (ret == 0)
		ret = reply_set(reply, "result", result);
	else
		json_decref(result);
	if (ret == 0)
		ret = reply_set(reply, "result_truncated", json_boolean(o->meta.result_truncated));
	if (ret == 0)
		ret = reply_set(reply, "error", error_value(x, s, o));
	if (ret == 0)
		ret = set_stream(reply, "stdout", o->out, o->out_len, o->meta.stdout_truncated,
				 x->force_base64);
	if (ret == 0)
		ret = set_stream(reply, "stderr", o->err, o->err_len, o->meta.stderr_truncated,
				 x->force_base64);
	if (ret == 0)
		ret = reply_set(reply, "duration_ms", json_integer((json_int_t)duration_ms));
	return ret;
}

int op_eval(const struct op_ctx *ctx, const struct eval_request *x, json_t *reply,
	    struct fvm_err *e)
{
	struct eval_outcome o = { .status = -1 };
	uint64_t start = io_now_ms();
	struct eval_session s;
	int ret;

	/* A cold python3 start can take long on a loaded or emulated host: the request's own
	 * timeout, when longer, bounds it too. */
	ret = eval_session_open(x->context, ctx->conn_fd,
				x->timeout_ms > UINT32_MAX ? UINT32_MAX : (uint32_t)x->timeout_ms, &s, e);
	if (ret == 0)
		ret = await_reply(ctx, x, &s, &o, e);
	if (ret == 0 && o.hung_up)
		ret = errmsg(e, -ECONNRESET, "client hung up during eval");
	if (ret == 0) {
		ret = build_reply(reply, x, &s, &o, io_now_ms() - start);
		if (ret < 0)
			errmsg(e, ret, "build eval reply: %s", strerror(-ret));
	}
	eval_session_close(&s);
	evalp_meta_free(&o.meta);
	free(o.out);
	free(o.err);
	return ret;
}

int op_eval_close(const struct eval_request *x, json_t *reply, struct fvm_err *e)
{
	bool closed;
	int ret;

	ret = eval_context_close(x->context, &closed, e);
	if (ret < 0)
		return ret;
	ret = reply_set(reply, "context", json_string(x->context));
	if (ret == 0)
		ret = reply_set(reply, "closed", json_boolean(closed));
	if (ret < 0)
		return errmsg(e, ret, "build eval_close reply: %s", strerror(-ret));
	return 0;
}
