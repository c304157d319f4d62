/* Typed agent requests over a connected fd: eval, eval_close, get_tree, put_tree. */
#include "agent/agent_client.h"
#include "util/base64.h"
#include "util/errmsg.h"
#include "util/clock.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* The agent's own bounds on an eval beyond its timeout (AGENT_EVAL_GRACE_MS and
 * AGENT_EVAL_START_MS in guests/agent/agent.h), plus slack for the transport. */
#define EVAL_EXTRA_MS (2000 + 30000 + 10000)

int agent_eval(int fd, const struct agent_eval_args *a, json_t **reply, int cancel_fd,
	       struct fvm_err *err)
{
	json_t *req = json_pack("{s:s, s:s, s:s%, s:s, s:s, s:I}", "op", "eval", "lang",
				a->lang ? a->lang : "python", "code", a->code, a->code_len,
				"context", a->context ? a->context : "default", "output_encoding",
				"base64", "timeout_ms", (json_int_t)a->timeout_ms);
	uint64_t deadline = a->timeout_ms ? deadline_after_ms((int64_t)a->timeout_ms +
								    EVAL_EXTRA_MS) : 0;
	int ret;

	if (!req)
		return errmsg(err, -EINVAL, "eval: cannot encode the request (code must be "
			      "UTF-8)");
	ret = agent_request(fd, req, reply, deadline, cancel_fd, err);
	json_decref(req);
	return ret;
}

int agent_eval_close(int fd, const char *context, bool *closed, uint64_t deadline_ns,
		     struct fvm_err *err)
{
	json_t *req = json_pack("{s:s, s:s}", "op", "eval_close", "context",
				context ? context : "default");
	json_t *reply = NULL;
	int ret;

	if (!req)
		return errmsg(err, -ENOMEM, "eval_close: %s", strerror(ENOMEM));
	ret = agent_request(fd, req, &reply, deadline_ns, -1, err);
	if (ret == 0)
		*closed = json_is_true(json_object_get(reply, "closed"));
	json_decref(reply);
	json_decref(req);
	return ret;
}

int agent_get_tree(int fd, const char *path, uint8_t **tar, size_t *len, bool *is_dir,
		   uint64_t deadline_ns, struct fvm_err *err)
{
	json_t *req = json_pack("{s:s, s:s}", "op", "get_tree", "path", path), *reply = NULL;
	const char *data, *type;
	int ret;

	if (!req)
		return errmsg(err, -ENOMEM, "get_tree: %s", strerror(ENOMEM));
	ret = agent_request(fd, req, &reply, deadline_ns, -1, err);
	if (ret < 0)
		goto out;
	data = json_string_value(json_object_get(reply, "data"));
	type = json_string_value(json_object_get(reply, "type"));
	if (!data || !type || (strcmp(type, "directory") && strcmp(type, "file"))) {
		ret = errmsg(err, -EPROTO, "get_tree %s: the reply lacks data or type", path);
		goto out;
	}
	ret = base64_decode(data, strlen(data), tar, len);
	if (ret < 0) {
		ret = errmsg(err, -EPROTO, "get_tree %s: the data is not base64", path);
		goto out;
	}
	*is_dir = !strcmp(type, "directory");
out:
	json_decref(reply);
	json_decref(req);
	return ret;
}

int agent_put_tree(int fd, const char *path, const uint8_t *tar, size_t len,
		   uint64_t deadline_ns, struct fvm_err *err)
{
	char *b64 = malloc(base64_encoded_size(len));
	json_t *req = NULL;
	int ret;

	if (b64) {
		base64_encode(tar, len, b64);
		req = json_pack("{s:s, s:s, s:s}", "op", "put_tree", "path", path, "data", b64);
	}
	if (!req)
		ret = errmsg(err, -ENOMEM, "put_tree: %s", strerror(ENOMEM));
	else
		ret = agent_request(fd, req, NULL, deadline_ns, -1, err);
	json_decref(req);
	free(b64);
	return ret;
}
