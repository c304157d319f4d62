/* Validation of eval / eval_close (interpreter contexts) and put_tree / get_tree (archives). */
#include "request.h"

#include <errno.h>
#include <string.h>

bool eval_context_name_ok(const char *name)
{
	size_t n = strlen(name);

	/* It becomes part of a socket file name: no '/', no leading '.', bounded. */
	if (n == 0 || n > AGENT_MAX_CONTEXT_NAME || name[0] == '.')
		return false;
	return strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") == n;
}

static int parse_lang(json_t *root, struct fvm_err *e)
{
	const char *lang;
	int ret = req_string(root, "lang", false, &lang, e);

	if (ret < 0)
		return ret;
	if (lang && strcmp(lang, "python"))
		return errmsg(e, -EOPNOTSUPP, "unsupported lang '%.64s': eval supports \"python\"",
				  lang);
	return 0;
}

static int parse_context(json_t *root, struct eval_request *x, struct fvm_err *e)
{
	int ret = req_string(root, "context", false, &x->context, e);

	if (ret < 0)
		return ret;
	if (!x->context)
		x->context = "default";
	if (!eval_context_name_ok(x->context))
		return errmsg(e, -EINVAL,
				  "field 'context' must be 1 to %d of A-Z a-z 0-9 _ . - (not starting "
				  "with '.')", AGENT_MAX_CONTEXT_NAME);
	return 0;
}

int req_parse_eval(json_t *root, bool with_code, struct eval_request *x, struct fvm_err *e)
{
	int ret;

	ret = parse_lang(root, e);
	if (ret == 0)
		ret = parse_context(root, x, e);
	if (ret < 0 || !with_code)
		return ret;
	ret = req_string(root, "code", true, &x->code, e);
	if (ret < 0)
		return ret;
	x->code_len = json_string_length(json_object_get(root, "code"));
	return req_limits(root, &x->timeout_ms, &x->max_output, &x->force_base64, e);
}

static int tree_path(json_t *root, const char **path, struct fvm_err *e)
{
	int ret = req_string(root, "path", true, path, e);

	if (ret == 0 && !(*path)[0])
		ret = errmsg(e, -EINVAL, "field 'path' must not be empty");
	return ret;
}

int req_parse_put_tree(json_t *root, struct put_tree_request *t, struct fvm_err *e)
{
	int ret = tree_path(root, &t->path, e);

	if (ret == 0)
		ret = req_base64(root, "data", true, AGENT_MAX_TREE, &t->data, &t->len, e);
	return ret;
}

int req_parse_get_tree(json_t *root, struct get_tree_request *t, struct fvm_err *e)
{
	uint64_t max = 0;
	int ret = tree_path(root, &t->path, e);

	if (ret == 0)
		ret = req_uint(root, "max_bytes", AGENT_MAX_TREE, AGENT_MAX_TREE, &max, e);
	t->max_bytes = (size_t)max;
	return ret;
}
