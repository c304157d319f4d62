/* Encoding eval requests for the driver and validating what it answers. */
#include "eval_proto.h"
#include "frame.h"
#include "request.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

int evalp_request(const char *code, size_t code_len, size_t max_output, uint8_t **out,
		  size_t *out_len)
{
	json_t *req = json_object();
	int ret = -ENOMEM;

	if (req && json_object_set_new(req, "code", json_stringn(code, code_len)) == 0 &&
	    json_object_set_new(req, "max_output", json_integer((json_int_t)max_output)) == 0)
		ret = frame_encode_json(req, AGENT_MAX_FRAME, out, out_len);
	json_decref(req);
	return ret;
}

/* A hello or meta has a dozen values; code that writes to the driver's private socket
 * could send more, and their parsed tree would cost ~100 bytes each. */
#define EVALP_MAX_VALUES 64

static json_t *load_object(const uint8_t *payload, size_t len, const char *what,
			   struct fvm_err *e)
{
	json_error_t jerr;
	json_t *root;

	if (agent_json_values(payload, len, EVALP_MAX_VALUES) > EVALP_MAX_VALUES) {
		errmsg(e, -EPROTO, "eval driver sent a %s of more than %d JSON values", what,
			   EVALP_MAX_VALUES);
		return NULL;
	}
	root = json_loadb((const char *)payload, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL,
			  &jerr);
	if (!root) {
		errmsg(e, -EPROTO, "eval driver sent a malformed %s: %s", what, jerr.text);
		return NULL;
	}
	if (!json_is_object(root)) {
		json_decref(root);
		errmsg(e, -EPROTO, "eval driver sent a %s that is not an object", what);
		return NULL;
	}
	return root;
}

int evalp_parse_hello(const uint8_t *payload, size_t len, struct eval_hello *h,
		      struct fvm_err *e)
{
	json_t *root = load_object(payload, len, "hello", e), *pid, *py;
	int ret = 0;

	if (!root)
		return -EPROTO;
	pid = json_object_get(root, "pid");
	py = json_object_get(root, "python");
	if (!json_is_integer(pid) || json_integer_value(pid) <= 1 ||
	    json_integer_value(pid) > INT32_MAX || !json_is_string(py))
		ret = errmsg(e, -EPROTO, "eval driver sent a hello without a valid pid/python");
	else {
		h->pid = (pid_t)json_integer_value(pid);
		snprintf(h->python, sizeof(h->python), "%s", json_string_value(py));
	}
	json_decref(root);
	return ret;
}

/* A boolean member, false when absent; -1 when present but not a boolean. */
static int get_flag(json_t *root, const char *key, bool *out)
{
	json_t *v = json_object_get(root, key);

	*out = json_is_true(v);
	return !v || json_is_boolean(v) ? 0 : -1;
}

static bool error_ok(json_t *err)
{
	static const char *const keys[] = { "name", "value", "traceback" };

	if (json_is_null(err))
		return true;
	if (!json_is_object(err) || json_object_size(err) != 3)
		return false;
	for (size_t i = 0; i < 3; i++)
		if (!json_is_string(json_object_get(err, keys[i])))
			return false;
	return true;
}

int evalp_parse_meta(const uint8_t *payload, size_t len, struct eval_meta *m,
		     struct fvm_err *e)
{
	json_t *result, *err;

	memset(m, 0, sizeof(*m));
	m->root = load_object(payload, len, "result", e);
	if (!m->root)
		return -EPROTO;
	result = json_object_get(m->root, "result");
	err = json_object_get(m->root, "error");
	if ((result && !json_is_null(result) && !json_is_string(result)) || (err && !error_ok(err)))
		return errmsg(e, -EPROTO, "eval driver sent a result with a bad result/error");
	if (get_flag(m->root, "result_truncated", &m->result_truncated) < 0 ||
	    get_flag(m->root, "stdout_truncated", &m->stdout_truncated) < 0 ||
	    get_flag(m->root, "stderr_truncated", &m->stderr_truncated) < 0)
		return errmsg(e, -EPROTO, "eval driver sent a result with a non-boolean flag");
	m->result = json_is_string(result) ? result : NULL;
	m->error = json_is_object(err) ? err : NULL;
	return 0;
}

void evalp_meta_free(struct eval_meta *m)
{
	json_decref(m->root);
	memset(m, 0, sizeof(*m));
}

json_t *evalp_error(const char *name, const char *value, const char *traceback)
{
	return json_pack("{s:s, s:s, s:s}", "name", name, "value", value, "traceback", traceback);
}
