/* Request envelope (op, id) and the validators of the simple ops. */
#include "request.h"
#include "util/base64.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static const char *const op_names[] = {
	[OP_PING] = "ping",
	[OP_EXEC] = "exec",
	[OP_WRITE_FILE] = "write_file",
	[OP_READ_FILE] = "read_file",
	[OP_SET_CLOCK] = "set_clock",
	[OP_RESEED_ENTROPY] = "reseed_entropy",
	[OP_SHUTDOWN] = "shutdown",
	[OP_EVAL] = "eval",
	[OP_EVAL_CLOSE] = "eval_close",
	[OP_PUT_TREE] = "put_tree",
	[OP_GET_TREE] = "get_tree",
	[OP_STDIN] = "stdin",
	[OP_NET_CONFIG] = "net_config",
};

const char *agent_op_name(enum agent_op op)
{
	return op_names[op];
}

int req_string(json_t *obj, const char *key, bool required, const char **out,
	       struct fvm_err *e)
{
	json_t *v = json_object_get(obj, key);

	*out = NULL;
	if (!v || json_is_null(v)) {
		if (required)
			return errmsg(e, -EINVAL, "missing field '%s'", key);
		return 0;
	}
	if (!json_is_string(v))
		return errmsg(e, -EINVAL, "field '%s' must be a string", key);
	*out = json_string_value(v);
	return 0;
}

int req_bool(json_t *obj, const char *key, bool dflt, bool *out, struct fvm_err *e)
{
	json_t *v = json_object_get(obj, key);

	*out = dflt;
	if (!v || json_is_null(v))
		return 0;
	if (!json_is_boolean(v))
		return errmsg(e, -EINVAL, "field '%s' must be a boolean", key);
	*out = json_is_true(v);
	return 0;
}

int req_uint(json_t *obj, const char *key, uint64_t dflt, uint64_t max, uint64_t *out,
	     struct fvm_err *e)
{
	json_t *v = json_object_get(obj, key);
	json_int_t n;

	*out = dflt;
	if (!v || json_is_null(v))
		return 0;
	if (!json_is_integer(v))
		return errmsg(e, -EINVAL, "field '%s' must be an integer", key);
	n = json_integer_value(v);
	if (n < 0 || (uint64_t)n > max)
		return errmsg(e, -ERANGE, "field '%s' must be between 0 and %llu", key,
				  (unsigned long long)max);
	*out = (uint64_t)n;
	return 0;
}

int req_limits(json_t *root, uint64_t *timeout_ms, size_t *max_output, bool *force_base64,
	       struct fvm_err *e)
{
	const char *enc;
	uint64_t n;
	int ret;

	ret = req_uint(root, "timeout_ms", 0, UINT32_MAX, timeout_ms, e);
	if (ret < 0)
		return ret;
	/* Asking for more than the agent's bound is not an error: it is clamped. */
	ret = req_uint(root, "max_output", AGENT_MAX_OUTPUT, UINT64_MAX >> 1, &n, e);
	if (ret < 0)
		return ret;
	*max_output = n > AGENT_MAX_OUTPUT ? AGENT_MAX_OUTPUT : (size_t)n;
	ret = req_string(root, "output_encoding", false, &enc, e);
	if (ret < 0)
		return ret;
	if (enc && strcmp(enc, "auto") && strcmp(enc, "base64"))
		return errmsg(e, -EINVAL, "field 'output_encoding' must be \"auto\" or \"base64\"");
	*force_base64 = enc && !strcmp(enc, "base64");
	return 0;
}

int req_base64(json_t *obj, const char *key, bool required, size_t max, uint8_t **out,
	       size_t *out_len, struct fvm_err *e)
{
	const char *text;
	json_t *v;
	int ret;

	*out = NULL;
	*out_len = 0;
	ret = req_string(obj, key, required, &text, e);
	if (ret < 0 || !text)
		return ret;
	v = json_object_get(obj, key);
	ret = base64_decode(text, json_string_length(v), out, out_len);
	if (ret == -EINVAL)
		return errmsg(e, ret, "field '%s' is not valid base64", key);
	if (ret < 0)
		return errmsg(e, ret, "decode field '%s': %s", key, strerror(-ret));
	if (*out_len > max) {
		free(*out);
		*out = NULL;
		return errmsg(e, -EMSGSIZE, "field '%s' holds %zu bytes, above the limit %zu",
				  key, *out_len, max);
	}
	return 0;
}

static int parse_write_file(json_t *root, struct write_file_request *w, struct fvm_err *e)
{
	uint64_t mode = 0;
	int ret;

	ret = req_string(root, "path", true, &w->path, e);
	if (ret == 0 && !w->path[0])
		ret = errmsg(e, -EINVAL, "field 'path' must not be empty");
	if (ret == 0)
		ret = req_uint(root, "mode", 0644, 07777, &mode, e);
	if (ret == 0)
		ret = req_bool(root, "atomic", true, &w->atomic, e);
	if (ret == 0)
		ret = req_base64(root, "content", true, AGENT_MAX_FRAME, &w->data, &w->len, e);
	w->mode = (mode_t)mode;
	return ret;
}

static int parse_read_file(json_t *root, struct read_file_request *r, struct fvm_err *e)
{
	uint64_t max = 0;
	int ret;

	ret = req_string(root, "path", true, &r->path, e);
	if (ret == 0 && !r->path[0])
		ret = errmsg(e, -EINVAL, "field 'path' must not be empty");
	if (ret == 0)
		ret = req_uint(root, "max_bytes", AGENT_DEFAULT_READ, AGENT_MAX_READ, &max, e);
	r->max_bytes = max;
	return ret;
}

static int parse_reseed(json_t *root, struct reseed_request *r, struct fvm_err *e)
{
	uint64_t bits = 0;
	int ret;

	ret = req_base64(root, "data", true, AGENT_MAX_ENTROPY, &r->data, &r->len, e);
	if (ret == 0 && r->len == 0)
		ret = errmsg(e, -EINVAL, "field 'data' must not be empty");
	if (ret == 0)
		ret = req_uint(root, "entropy_bits", r->len * 8, r->len * 8, &bits, e);
	r->entropy_bits = (int)bits;
	return ret;
}

static int parse_shutdown(json_t *root, bool *reboot, struct fvm_err *e)
{
	const char *mode;
	int ret;

	ret = req_string(root, "mode", false, &mode, e);
	if (ret < 0)
		return ret;
	if (!mode || !strcmp(mode, "poweroff"))
		*reboot = false;
	else if (!strcmp(mode, "reboot"))
		*reboot = true;
	else
		return errmsg(e, -EINVAL, "field 'mode' must be \"poweroff\" or \"reboot\"");
	return 0;
}

/* Dispatch to the op's validator once the envelope is known to be sound. */
static int parse_body(struct agent_request *req, struct fvm_err *e)
{
	uint64_t ns;
	int ret;

	switch (req->op) {
	case OP_PING:
		return 0;
	case OP_EXEC:
		return req_parse_exec(req->root, &req->exec, e);
	case OP_WRITE_FILE:
		return parse_write_file(req->root, &req->write_file, e);
	case OP_READ_FILE:
		return parse_read_file(req->root, &req->read_file, e);
	case OP_SET_CLOCK:
		if (!json_object_get(req->root, "time_ns"))
			return errmsg(e, -EINVAL, "missing field 'time_ns'");
		ret = req_uint(req->root, "time_ns", 0, INT64_MAX, &ns, e);
		req->set_clock_ns = (int64_t)ns;
		return ret;
	case OP_RESEED_ENTROPY:
		return parse_reseed(req->root, &req->reseed, e);
	case OP_SHUTDOWN:
		return parse_shutdown(req->root, &req->shutdown_reboot, e);
	case OP_EVAL:
	case OP_EVAL_CLOSE:
		return req_parse_eval(req->root, req->op == OP_EVAL, &req->eval, e);
	case OP_PUT_TREE:
		return req_parse_put_tree(req->root, &req->put_tree, e);
	case OP_GET_TREE:
		return req_parse_get_tree(req->root, &req->get_tree, e);
	case OP_NET_CONFIG:
		ret = req_string(req->root, "address", true, &req->net.address, e);
		if (ret == 0)
			ret = req_string(req->root, "interface", false, &req->net.interface, e);
		if (ret == 0)
			ret = req_string(req->root, "gateway", false, &req->net.gateway, e);
		if (ret == 0)
			ret = req_uint(req->root, "mtu", 0, 65535, &req->net.mtu, e);
		if (ret == 0 && json_object_get(req->root, "mtu") && req->net.mtu < 68)
			ret = errmsg(e, -ERANGE, "field 'mtu' must be between 68 and 65535");
		return ret;
	case OP_STDIN:
		ret = req_base64(req->root, "data", false, AGENT_MAX_FRAME, &req->stdin_frame.data,
				 &req->stdin_frame.len, e);
		return ret ? ret : req_bool(req->root, "eof", false, &req->stdin_frame.eof, e);
	}
	return errmsg(e, -EINVAL, "unknown op");
}

size_t agent_json_values(const uint8_t *p, size_t len, size_t max)
{
	size_t n = 1;
	bool in_str = false;

	for (size_t i = 0; i < len && n <= max; i++) {
		if (in_str) {
			if (p[i] == '\\')
				i++;
			else if (p[i] == '"')
				in_str = false;
			continue;
		}
		switch (p[i]) {
		case '"':
			in_str = true;
			break;
		case '[':
		case '{':
		case ',':
		case ':':
			n++;
			break;
		default:
			break;
		}
	}
	return n;
}

int agent_request_parse(const uint8_t *payload, size_t len, struct agent_request *req,
			struct fvm_err *e)
{
	const uint8_t *nul;
	json_error_t jerr;
	const char *op;
	size_t i;
	int ret;

	memset(req, 0, sizeof(*req));
	/* JSON never holds a raw NUL, but jansson's lexer silently skips one. */
	nul = memchr(payload, '\0', len);
	if (nul)
		return errmsg(e, -EBADMSG, "malformed JSON: raw NUL byte at offset %zu",
				  (size_t)(nul - payload));
	/* Bound the parsed tree before building it: its memory, not the frame's, is the risk. */
	if (agent_json_values(payload, len, AGENT_MAX_JSON_VALUES) > AGENT_MAX_JSON_VALUES)
		return errmsg(e, -E2BIG, "request holds more than %u JSON values",
				  AGENT_MAX_JSON_VALUES);
	/* Duplicate keys would make "which argv ran" ambiguous; refuse them. */
	req->root = json_loadb((const char *)payload, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!req->root)
		return errmsg(e, -EBADMSG, "malformed JSON at byte %d: %s", jerr.position,
				  jerr.text);
	if (!json_is_object(req->root))
		return errmsg(e, -EINVAL, "request must be a JSON object");
	req->id = json_object_get(req->root, "id");
	ret = req_string(req->root, "op", true, &op, e);
	if (ret < 0 || !op)
		return ret < 0 ? ret : -EINVAL;
	for (i = 0; i < sizeof(op_names) / sizeof(op_names[0]); i++)
		if (!strcmp(op, op_names[i]))
			break;
	if (i == sizeof(op_names) / sizeof(op_names[0]))
		return errmsg(e, -EOPNOTSUPP, "unknown op '%.64s'", op);
	req->op = (enum agent_op)i;
	return parse_body(req, e);
}

void agent_request_free(struct agent_request *req)
{
	if (!req->root)
		return;
	switch (req->op) {
	case OP_EXEC:
		req_free_exec(&req->exec);
		break;
	case OP_WRITE_FILE:
		free(req->write_file.data);
		break;
	case OP_RESEED_ENTROPY:
		free(req->reseed.data);
		break;
	case OP_PUT_TREE:
		free(req->put_tree.data);
		break;
	case OP_STDIN:
		free(req->stdin_frame.data);
		break;
	default:
		break;
	}
	json_decref(req->root);
	memset(req, 0, sizeof(*req));
}
