/* Validation of the exec request: argv, environment, cwd, stdin, limits. */
#include "request.h"
#include "util/base64.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int parse_argv(json_t *root, struct exec_request *x, struct fvm_err *e)
{
	json_t *argv = json_object_get(root, "argv");
	json_t *v;
	size_t i;

	if (!argv)
		return errmsg(e, -EINVAL, "missing field 'argv'");
	if (!json_is_array(argv) || json_array_size(argv) == 0)
		return errmsg(e, -EINVAL, "field 'argv' must be a non-empty array of strings");
	if (json_array_size(argv) > AGENT_MAX_ARGV)
		return errmsg(e, -E2BIG, "field 'argv' has more than %u entries", AGENT_MAX_ARGV);
	x->argv = calloc(json_array_size(argv) + 1, sizeof(*x->argv));
	if (!x->argv)
		return errmsg(e, -ENOMEM, "allocate argv: %s", strerror(ENOMEM));
	json_array_foreach(argv, i, v) {
		/* Embedded NULs cannot reach execve; jansson strings may hold them. */
		if (!json_is_string(v) || !json_string_length(v) ||
		    strlen(json_string_value(v)) != json_string_length(v))
			return errmsg(e, -EINVAL, "argv[%zu] must be a non-empty string", i);
		x->argv[i] = (char *)json_string_value(v);
	}
	return 0;
}

/* Append "key=value" to x->env[*n] after checking both halves. */
static int add_env(struct exec_request *x, size_t *n, const char *key, size_t key_len,
		   const char *val, size_t val_len, struct fvm_err *e)
{
	char *kv;

	if (!key_len || memchr(key, '=', key_len) || memchr(key, '\0', key_len))
		return errmsg(e, -EINVAL, "env name '%.*s' must be non-empty without '=' or NUL",
				  (int)(key_len > 64 ? 64 : key_len), key);
	/* execve takes C strings: an embedded NUL would silently cut the value. */
	if (memchr(val, '\0', val_len))
		return errmsg(e, -EINVAL, "env value of '%.*s' contains NUL",
				  (int)(key_len > 64 ? 64 : key_len), key);
	if (asprintf(&kv, "%.*s=%.*s", (int)key_len, key, (int)val_len, val) < 0)
		return errmsg(e, -ENOMEM, "allocate env entry: %s", strerror(ENOMEM));
	x->env[(*n)++] = kv;
	return 0;
}

static int parse_env_object(json_t *env, struct exec_request *x, struct fvm_err *e)
{
	const char *key;
	size_t n = 0;
	json_t *v;
	int ret;

	json_object_foreach(env, key, v) {
		if (!json_is_string(v))
			return errmsg(e, -EINVAL, "env value of '%.64s' must be a string", key);
		ret = add_env(x, &n, key, strlen(key), json_string_value(v),
			      json_string_length(v), e);
		if (ret < 0)
			return ret;
	}
	return 0;
}

static int parse_env_array(json_t *env, struct exec_request *x, struct fvm_err *e)
{
	size_t n = 0, i;
	json_t *v;
	int ret;

	json_array_foreach(env, i, v) {
		const char *s = json_string_value(v);
		const char *eq = s ? memchr(s, '=', json_string_length(v)) : NULL;

		if (!eq)
			return errmsg(e, -EINVAL, "env[%zu] must be a \"K=V\" string", i);
		ret = add_env(x, &n, s, (size_t)(eq - s), eq + 1,
			      json_string_length(v) - (size_t)(eq - s) - 1, e);
		if (ret < 0)
			return ret;
	}
	return 0;
}

static int parse_env(json_t *root, struct exec_request *x, struct fvm_err *e)
{
	json_t *env = json_object_get(root, "env");
	size_t count;

	if (!env || json_is_null(env))
		return 0;
	if (json_is_object(env))
		count = json_object_size(env);
	else if (json_is_array(env))
		count = json_array_size(env);
	else
		return errmsg(e, -EINVAL, "field 'env' must be an object or an array of \"K=V\"");
	if (count > AGENT_MAX_ENV)
		return errmsg(e, -E2BIG, "field 'env' has more than %u entries", AGENT_MAX_ENV);
	x->env = calloc(count + 1, sizeof(*x->env));
	if (!x->env)
		return errmsg(e, -ENOMEM, "allocate env: %s", strerror(ENOMEM));
	if (json_is_object(env))
		return parse_env_object(env, x, e);
	return parse_env_array(env, x, e);
}

static int parse_stdin(json_t *root, struct exec_request *x, struct fvm_err *e)
{
	json_t *v = json_object_get(root, "stdin");
	bool b64;
	int ret;

	ret = req_bool(root, "stdin_base64", false, &b64, e);
	if (ret < 0 || !v || json_is_null(v))
		return ret;
	if (b64)
		return req_base64(root, "stdin", false, AGENT_MAX_FRAME, &x->stdin_data,
				  &x->stdin_len, e);
	if (!json_is_string(v))
		return errmsg(e, -EINVAL, "field 'stdin' must be a string");
	x->stdin_len = json_string_length(v);
	x->stdin_data = malloc(x->stdin_len + 1);
	if (!x->stdin_data)
		return errmsg(e, -ENOMEM, "allocate stdin: %s", strerror(ENOMEM));
	memcpy(x->stdin_data, json_string_value(v), x->stdin_len);
	return 0;
}

int req_parse_exec(json_t *root, struct exec_request *x, struct fvm_err *e)
{
	int ret;

	ret = parse_argv(root, x, e);
	if (ret == 0)
		ret = parse_env(root, x, e);
	if (ret == 0)
		ret = req_bool(root, "clear_env", false, &x->clear_env, e);
	if (ret == 0)
		ret = req_string(root, "cwd", false, &x->cwd, e);
	if (ret == 0 && x->cwd && !x->cwd[0])
		ret = errmsg(e, -EINVAL, "field 'cwd' must not be empty");
	if (ret == 0)
		ret = parse_stdin(root, x, e);
	if (ret == 0)
		ret = req_limits(root, &x->timeout_ms, &x->max_output, &x->force_base64, e);
	if (ret == 0)
		ret = req_bool(root, "stream", false, &x->stream, e);
	if (ret == 0)
		ret = req_bool(root, "stdin_open", false, &x->stdin_open, e);
	return ret;
}

void req_free_exec(struct exec_request *x)
{
	if (x->env)
		for (size_t i = 0; x->env[i]; i++)
			free(x->env[i]);
	free(x->env);
	free(x->argv);
	free(x->stdin_data);
	memset(x, 0, sizeof(*x));
}
