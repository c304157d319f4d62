/* The exec op: run a command to completion and describe how it ended. */
#include "exec.h"
#include "io.h"
#include "log.h"
#include "ops.h"
#include "reply.h"

#include <errno.h>
#include <stdio.h>
#include <sys/wait.h>

static int set_outcome(json_t *reply, const struct exec_result *res, uint64_t duration_ms)
{
	int ret;

	/* Exactly one of exit_code / signal is an integer; the other is null. */
	ret = reply_set(reply, "exit_code", WIFEXITED(res->status)
				? json_integer(WEXITSTATUS(res->status)) : json_null());
	if (ret == 0)
		ret = reply_set(reply, "signal", WIFSIGNALED(res->status)
				? json_integer(WTERMSIG(res->status)) : json_null());
	if (ret == 0)
		ret = reply_set(reply, "timed_out", json_boolean(res->timed_out));
	if (ret == 0)
		ret = reply_set(reply, "duration_ms", json_integer((json_int_t)duration_ms));
	return ret;
}

static int set_output(json_t *reply, const char *key, const struct exec_capture *c,
		      bool force_base64)
{
	char trunc_key[32];
	int ret;

	snprintf(trunc_key, sizeof(trunc_key), "%s_truncated", key);
	ret = reply_set_bytes(reply, key, c->buf, c->len, force_base64);
	if (ret == 0)
		ret = reply_set(reply, trunc_key, json_boolean(c->truncated));
	return ret;
}

int op_exec(const struct op_ctx *ctx, const struct exec_request *x, json_t *id, json_t *reply,
	    struct fvm_err *e)
{
	struct exec_stream stream = { .conn_fd = ctx->conn_fd, .id = id,
				      .force_base64 = x->force_base64 };
	struct exec_result res = { 0 };
	uint64_t start = io_now_ms();
	struct exec_proc proc;
	int ret;

	ret = exec_spawn(x, &proc, e);
	if (ret < 0)
		return ret;
	log_debug("exec %s: pid %d", x->argv[0], (int)proc.pid);
	ret = exec_pump(x, &proc, ctx->in, x->stream ? &stream : NULL, &res, e);
	if (ret < 0)
		goto out;
	ret = set_outcome(reply, &res, io_now_ms() - start);
	if (ret == 0 && x->stream) {
		/* The output went out as events; the reply counts it. */
		ret = reply_set(reply, "streamed", json_true());
		if (ret == 0)
			ret = reply_set(reply, "stdout_bytes", json_integer((json_int_t)stream.bytes[0]));
		if (ret == 0)
			ret = reply_set(reply, "stderr_bytes", json_integer((json_int_t)stream.bytes[1]));
		goto built;
	}
	if (ret == 0)
		ret = set_output(reply, "stdout", &res.out, x->force_base64);
	if (ret == 0)
		ret = set_output(reply, "stderr", &res.err, x->force_base64);
built:
	if (ret < 0)
		errmsg(e, ret, "build exec reply: %s", strerror(-ret));
out:
	exec_result_free(&res);
	return ret;
}
