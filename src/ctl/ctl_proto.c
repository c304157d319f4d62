/* Request parsing and validation against the command table; reply constructors. */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "ctl/ctl.h"
#include "util/errmsg.h"

const struct ctl_command *ctl_command_find(const char *name)
{
	for (const struct ctl_command *c = ctl_commands; c->name; c++)
		if (strcmp(c->name, name) == 0)
			return c;
	return NULL;
}

static const struct ctl_field *field_find(const struct ctl_command *cmd, const char *name)
{
	for (int i = 0; i < CTL_MAX_FIELDS && cmd->fields[i].name; i++)
		if (strcmp(cmd->fields[i].name, name) == 0)
			return &cmd->fields[i];
	return NULL;
}

static int field_check(const struct ctl_field *f, json_t *v, struct fvm_err *err)
{
	switch (f->type) {
	case CTL_U64: {
		uint64_t max = f->max ? f->max : (uint64_t)INT64_MAX;

		/* Checked here, once, so no handler can truncate a value into its own type. */
		if (!json_is_integer(v) || json_integer_value(v) < 0 ||
		    (uint64_t)json_integer_value(v) > max) {
			return errmsg(err, -EINVAL,
				      "field '%s' must be a non-negative integer in 0..%" PRIu64,
				 f->name, max);
		}
		return 0;
	}
	case CTL_STR:
		if (!json_is_string(v)) {
			return errmsg(err, -EINVAL, "field '%s' must be a string", f->name);
		}
		return 0;
	default:
		if (!json_is_boolean(v)) {
			return errmsg(err, -EINVAL, "field '%s' must be true or false", f->name);
		}
		return 0;
	}
}

int ctl_request_parse(const char *line, size_t len, struct ctl_request *req, struct fvm_err *err)
{
	json_error_t jerr;
	const char *key;
	json_t *v, *cmd;

	memset(req, 0, sizeof(*req));
	req->root = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!req->root) {
		return errmsg(err, -EINVAL, "invalid JSON: %s", jerr.text);
	}
	if (!json_is_object(req->root)) {
		errf(err, "request must be a JSON object");
		goto bad;
	}
	cmd = json_object_get(req->root, "cmd");
	if (!json_is_string(cmd)) {
		errf(err, "missing string field 'cmd'");
		goto bad;
	}
	req->cmd = ctl_command_find(json_string_value(cmd));
	if (!req->cmd) {
		errf(err, "unknown command '%s'", json_string_value(cmd));
		goto bad;
	}
	json_object_foreach(req->root, key, v) {
		const struct ctl_field *f;
		if (strcmp(key, "cmd") == 0 || strcmp(key, "id") == 0)
			continue;
		f = field_find(req->cmd, key);
		if (!f) {
			errf(err, "command '%s' has no field '%s'", req->cmd->name, key);
			goto bad;
		}
		if (field_check(f, v, err))
			goto bad;
	}
	for (int i = 0; i < CTL_MAX_FIELDS && req->cmd->fields[i].name; i++) {
		if (req->cmd->fields[i].required && !json_object_get(req->root, req->cmd->fields[i].name)) {
			errf(err, "command '%s' needs field '%s'", req->cmd->name,
				 req->cmd->fields[i].name);
			goto bad;
		}
	}
	return 0;
bad:
	ctl_request_release(req);
	return -EINVAL;
}

void ctl_request_release(struct ctl_request *req)
{
	json_decref(req->root);
	req->root = NULL;
}

uint64_t ctl_req_u64(const struct ctl_request *req, const char *name, uint64_t dflt)
{
	json_t *v = json_object_get(req->root, name);
	return v ? (uint64_t)json_integer_value(v) : dflt;
}

const char *ctl_req_str(const struct ctl_request *req, const char *name, const char *dflt)
{
	json_t *v = json_object_get(req->root, name);
	return v ? json_string_value(v) : dflt;
}

bool ctl_req_bool(const struct ctl_request *req, const char *name, bool dflt)
{
	json_t *v = json_object_get(req->root, name);
	return v ? json_is_true(v) : dflt;
}

json_t *ctl_reply_ok(void)
{
	return json_pack("{s:b}", "ok", 1);
}

/* Length of the valid UTF-8 sequence at s (1-4), or 0 (overlong, surrogate, cut or bad). */
static size_t utf8_seq_len(const unsigned char *s)
{
	size_t n = s[0] < 0x80 ? 1 : s[0] >= 0xc2 && s[0] <= 0xdf ? 2 :
		   s[0] >= 0xe0 && s[0] <= 0xef ? 3 : s[0] >= 0xf0 && s[0] <= 0xf4 ? 4 : 0;

	for (size_t i = 1; i < n; i++)
		if ((s[i] & 0xc0) != 0x80)
			return 0;
	if ((n == 3 && ((s[0] == 0xe0 && s[1] < 0xa0) || (s[0] == 0xed && s[1] > 0x9f))) ||
	    (n == 4 && ((s[0] == 0xf0 && s[1] < 0x90) || (s[0] == 0xf4 && s[1] > 0x8f))))
		return 0;
	return n;
}

/* JSON strings must be valid UTF-8: an error quoting a client's bytes (jansson's "near '...'",
 * cut at its buffer's end mid-character) gets '?' for every byte that is not. */
static void utf8_sanitize(char *msg)
{
	unsigned char *s = (unsigned char *)msg;

	while (*s) {
		size_t n = utf8_seq_len(s);

		if (n == 0)
			*s++ = '?';
		else
			s += n;
	}
}

json_t *ctl_reply_error(const char *fmt, ...)
{
	char msg[4096]; /* room for a failed child's quoted log lines */
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	utf8_sanitize(msg);
	return json_pack("{s:b,s:s}", "ok", 0, "error", msg);
}
