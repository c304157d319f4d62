/* Control protocol: request parsing and validation against the command table, accessors, replies. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl/ctl.h"
#include "util/errmsg.h"

static int parse_str(const char *line, struct ctl_request *req, struct fvm_err *err)
{
	errclear(err);
	return ctl_request_parse(line, strlen(line), req, err);
}

/* Parse a jansson object (stolen) as a request line. */
static int parse_obj(json_t *obj, struct ctl_request *req, struct fvm_err *err)
{
	char *line = json_dumps(obj, JSON_COMPACT);
	int ret;

	assert_non_null(line);
	ret = parse_str(line, req, err);
	free(line);
	json_decref(obj);
	return ret;
}

static json_t *valid_value(const struct ctl_field *f)
{
	switch (f->type) {
	case CTL_U64: return json_integer(f->max && f->max < 4096 ? (json_int_t)f->max : 4096);
	case CTL_STR: return json_string("x");
	default: return json_true();
	}
}

static json_t *wrong_value(enum ctl_field_type t)
{
	switch (t) {
	case CTL_U64: return json_string("4096");
	case CTL_STR: return json_integer(1);
	default: return json_integer(1);
	}
}

static int nfields(const struct ctl_command *c)
{
	int n = 0;

	while (n < CTL_MAX_FIELDS && c->fields[n].name)
		n++;
	return n;
}

/* A request for c with every required field, plus optional ones when `all`; `skip` omitted. */
static json_t *request_for(const struct ctl_command *c, bool all, const char *skip)
{
	json_t *o = json_pack("{s:s}", "cmd", c->name);

	for (int i = 0; i < nfields(c); i++) {
		const struct ctl_field *f = &c->fields[i];
		if ((f->required || all) && !(skip && strcmp(skip, f->name) == 0))
			json_object_set_new(o, f->name, valid_value(f));
	}
	return o;
}

static void assert_parse_fails(const char *line, const char *want_in_err)
{
	struct ctl_request req;
	struct fvm_err err = FVM_ERR_INIT;

	assert_int_equal(parse_str(line, &req, &err), -EINVAL);
	assert_null(req.root);
	if (!strstr(err.msg, want_in_err))
		fail_msg("parsing %s: error '%s' does not contain '%s'", line, err.msg,
			 want_in_err);
}

static void test_table_is_consistent(void **state)
{
	int n = 0;

	for (const struct ctl_command *c = ctl_commands; c->name; c++, n++) {
		assert_non_null(c->handler);
		assert_non_null(c->summary);
		assert_ptr_equal(ctl_command_find(c->name), c);
		for (int i = 0; i < nfields(c); i++) {
			assert_string_not_equal(c->fields[i].name, "cmd");
			assert_string_not_equal(c->fields[i].name, "id");
		}
	}
	assert_true(n >= 5);
	assert_null(ctl_command_find("nonexistent"));
	assert_null(ctl_command_find(""));
}

static void test_accepts_every_command_with_required_fields(void **state)
{
	for (const struct ctl_command *c = ctl_commands; c->name; c++) {
		struct ctl_request req;
		struct fvm_err err = FVM_ERR_INIT;
		int ret = parse_obj(request_for(c, false, NULL), &req, &err);
		if (ret)
			fail_msg("command %s rejected: %s", c->name, err.msg);
		assert_ptr_equal(req.cmd, c);
		assert_non_null(req.root);
		ctl_request_release(&req);
		assert_null(req.root);
	}
}

static void test_accepts_every_command_with_all_fields_and_id(void **state)
{
	for (const struct ctl_command *c = ctl_commands; c->name; c++) {
		struct ctl_request req;
		struct fvm_err err = FVM_ERR_INIT;
		json_t *o = request_for(c, true, NULL);
		json_object_set_new(o, "id", json_string("client-tag-1"));
		int ret = parse_obj(o, &req, &err);
		if (ret)
			fail_msg("command %s rejected: %s", c->name, err.msg);
		assert_ptr_equal(req.cmd, c);
		ctl_request_release(&req);
	}
}

static void test_rejects_invalid_json(void **state)
{
	assert_parse_fails("{", "invalid JSON");
	assert_parse_fails("", "invalid JSON");
	assert_parse_fails("status", "invalid JSON");
	assert_parse_fails("{\"cmd\":\"status\",}", "invalid JSON");
	assert_parse_fails("{\"cmd\":\"status\"} {}", "invalid JSON");
}

static void test_rejects_non_object(void **state)
{
	assert_parse_fails("[\"status\"]", "JSON object");
	assert_parse_fails("[]", "JSON object");
}

static void test_rejects_missing_or_non_string_cmd(void **state)
{
	assert_parse_fails("{}", "'cmd'");
	assert_parse_fails("{\"gpa\":0}", "'cmd'");
	assert_parse_fails("{\"cmd\":5}", "'cmd'");
	assert_parse_fails("{\"cmd\":null}", "'cmd'");
	assert_parse_fails("{\"cmd\":[\"status\"]}", "'cmd'");
	assert_parse_fails("{\"cmd\":true}", "'cmd'");
}

static void test_rejects_unknown_cmd(void **state)
{
	assert_parse_fails("{\"cmd\":\"warp\"}", "unknown command 'warp'");
	assert_parse_fails("{\"cmd\":\"\"}", "unknown command ''");
	assert_parse_fails("{\"cmd\":\"STATUS\"}", "unknown command 'STATUS'");
}

static void test_rejects_unknown_field(void **state)
{
	assert_parse_fails("{\"cmd\":\"status\",\"foo\":1}", "'foo'");
	assert_parse_fails("{\"cmd\":\"status\",\"foo\":1}", "'status'");
	/* A field of another command is still unknown here. */
	assert_parse_fails("{\"cmd\":\"pause\",\"gpa\":0}", "'gpa'");
}

static void test_rejects_wrong_field_types_naming_the_field(void **state)
{
	for (const struct ctl_command *c = ctl_commands; c->name; c++) {
		for (int i = 0; i < nfields(c); i++) {
			const struct ctl_field *f = &c->fields[i];
			struct ctl_request req;
			char want[64];
			struct fvm_err err = FVM_ERR_INIT;
			json_t *o = request_for(c, true, NULL);
			json_object_set_new(o, f->name, wrong_value(f->type));
			assert_int_equal(parse_obj(o, &req, &err), -EINVAL);
			snprintf(want, sizeof(want), "'%s'", f->name);
			if (!strstr(err.msg, want))
				fail_msg("%s.%s: error '%s' does not name the field", c->name,
					 f->name, err.msg);
			/* null is never a valid value. */
			o = request_for(c, true, NULL);
			json_object_set_new(o, f->name, json_null());
			assert_int_equal(parse_obj(o, &req, &err), -EINVAL);
			assert_non_null(strstr(err.msg, want));
		}
	}
}

static void test_rejects_negative_and_fractional_integers(void **state)
{
	int checked = 0;

	for (const struct ctl_command *c = ctl_commands; c->name; c++) {
		for (int i = 0; i < nfields(c); i++) {
			const struct ctl_field *f = &c->fields[i];
			struct ctl_request req;
			char want[64];
			struct fvm_err err = FVM_ERR_INIT;
			if (f->type != CTL_U64)
				continue;
			snprintf(want, sizeof(want), "'%s'", f->name);
			json_t *o = request_for(c, true, NULL);
			json_object_set_new(o, f->name, json_integer(-1));
			assert_int_equal(parse_obj(o, &req, &err), -EINVAL);
			assert_non_null(strstr(err.msg, want));
			assert_non_null(strstr(err.msg, "non-negative integer"));
			o = request_for(c, true, NULL);
			json_object_set_new(o, f->name, json_real(4096.0));
			assert_int_equal(parse_obj(o, &req, &err), -EINVAL);
			assert_non_null(strstr(err.msg, want));
			checked++;
		}
	}
	assert_true(checked > 0);
	assert_parse_fails("{\"cmd\":\"memhash\",\"gpa\":-4096,\"len\":4096}",
			   "field 'gpa' must be a non-negative integer");
}

static void test_accepts_zero_and_int64_max(void **state)
{
	struct ctl_request req;
	struct fvm_err err = FVM_ERR_INIT;

	assert_int_equal(parse_str("{\"cmd\":\"memhash\",\"gpa\":0,\"len\":9223372036854775807}", &req,
				   &err), 0);
	assert_int_equal(ctl_req_u64(&req, "gpa", 1), 0);
	assert_int_equal(ctl_req_u64(&req, "len", 1), 9223372036854775807ULL);
	ctl_request_release(&req);
}

/* Every integer field has its range checked at parse time: max is accepted, max+1 is an
 * error naming the field and the range (no handler can truncate it into a narrower type). */
static void test_integer_fields_are_range_checked(void **state)
{
	int checked = 0;

	for (const struct ctl_command *c = ctl_commands; c->name; c++) {
		for (int i = 0; i < nfields(c); i++) {
			const struct ctl_field *f = &c->fields[i];
			struct ctl_request req;
			char want[96];
			struct fvm_err err = FVM_ERR_INIT;
			json_t *o;
			if (f->type != CTL_U64 || !f->max)
				continue;
			assert_true(f->max < (uint64_t)INT64_MAX);
			o = request_for(c, true, NULL);
			json_object_set_new(o, f->name, json_integer((json_int_t)f->max));
			if (parse_obj(o, &req, &err))
				fail_msg("%s.%s = max %llu rejected: %s", c->name, f->name,
					 (unsigned long long)f->max, err.msg);
			assert_int_equal(ctl_req_u64(&req, f->name, 0), f->max);
			ctl_request_release(&req);
			o = request_for(c, true, NULL);
			json_object_set_new(o, f->name, json_integer((json_int_t)f->max + 1));
			assert_int_equal(parse_obj(o, &req, &err), -EINVAL);
			assert_null(req.root);
			snprintf(want, sizeof(want), "field '%s' must be a non-negative integer in 0..%llu",
				 f->name, (unsigned long long)f->max);
			assert_string_equal(err.msg, want);
			checked++;
		}
	}
	/* The fields that were found truncated: vcpu (int), timeout_ms (int), port (u32). */
	assert_true(checked >= 3);
	assert_parse_fails("{\"cmd\":\"ping\",\"vcpu\":4294967296}", "field 'vcpu'");
	assert_parse_fails("{\"cmd\":\"counter\",\"vcpu\":16}", "0..15");
	assert_parse_fails("{\"cmd\":\"branch\",\"strategy\":\"cow\",\"prefix\":\"c\",\"run_dir\":\"/r\","
			   "\"timeout_ms\":4294967295}", "field 'timeout_ms' must be a non-negative integer in 0..2147483647");
	assert_parse_fails("{\"cmd\":\"branch\",\"strategy\":\"cow\",\"prefix\":\"c\",\"run_dir\":\"/r\","
			   "\"count\":4294967297}", "field 'count' must be a non-negative integer in 0..1000");
	assert_parse_fails("{\"cmd\":\"vsock_listen\",\"port\":4294967296}", "field 'port'");
	/* Too big for JSON's int64 at all: jansson refuses it. */
	assert_parse_fails("{\"cmd\":\"ping\",\"nonce\":18446744073709551616}", "invalid JSON");
}

static void test_rejects_missing_required_fields_naming_them(void **state)
{
	int checked = 0;

	for (const struct ctl_command *c = ctl_commands; c->name; c++) {
		for (int i = 0; i < nfields(c); i++) {
			const struct ctl_field *f = &c->fields[i];
			struct ctl_request req;
			char want[128];
			struct fvm_err err = FVM_ERR_INIT;
			if (!f->required)
				continue;
			assert_int_equal(parse_obj(request_for(c, true, f->name), &req, &err),
					 -EINVAL);
			snprintf(want, sizeof(want), "command '%s' needs field '%s'", c->name, f->name);
			assert_string_equal(err.msg, want);
			checked++;
		}
	}
	assert_true(checked > 0);
	assert_parse_fails("{\"cmd\":\"memhash\",\"gpa\":0}", "'len'");
}

static void test_rejects_duplicate_keys(void **state)
{
	assert_parse_fails("{\"cmd\":\"status\",\"cmd\":\"status\"}", "invalid JSON");
	assert_parse_fails("{\"cmd\":\"memhash\",\"gpa\":0,\"len\":4096,\"gpa\":8192}",
			   "invalid JSON");
}

static void test_parse_uses_only_len_bytes(void **state)
{
	struct ctl_request req;
	struct fvm_err err = FVM_ERR_INIT;
	const char *line = "{\"cmd\":\"status\"}\n{\"cmd\":\"stop\"}";

	assert_int_equal(ctl_request_parse(line, 17, &req, &err), 0);
	assert_string_equal(req.cmd->name, "status");
	ctl_request_release(&req);
	assert_int_equal(ctl_request_parse(line, 10, &req, &err), -EINVAL);
	assert_null(req.root);
}

static void test_error_text_fits_small_buffer(void **state)
{
	struct ctl_request req;
	struct fvm_err err = FVM_ERR_INIT;

	memset(err.msg, 'z', sizeof(err.msg));
	assert_int_equal(parse_str("{\"cmd\":\"a-very-long-unknown-command\"}", &req, &err),
			 -EINVAL);
	assert_true(memchr(err.msg, '\0', sizeof(err.msg)) != NULL);
}

static void test_req_u64_defaults_and_values(void **state)
{
	struct ctl_request req;
	struct fvm_err err = FVM_ERR_INIT;

	assert_int_equal(parse_str("{\"cmd\":\"ping\"}", &req, &err), 0);
	assert_int_equal(ctl_req_u64(&req, "nonce", 0x1234), 0x1234);
	assert_int_equal(ctl_req_u64(&req, "vcpu", 0), 0);
	assert_int_equal(ctl_req_u64(&req, "vcpu", 7), 7);
	assert_string_equal(ctl_req_str(&req, "cmd", NULL), "ping");
	assert_null(ctl_req_str(&req, "missing", NULL));
	assert_string_equal(ctl_req_str(&req, "missing", "dflt"), "dflt");
	assert_true(ctl_req_bool(&req, "missing", true));
	assert_false(ctl_req_bool(&req, "missing", false));
	ctl_request_release(&req);

	assert_int_equal(parse_str("{\"cmd\":\"ping\",\"nonce\":99,\"vcpu\":3,\"id\":1}", &req,
			 &err), 0);
	assert_int_equal(ctl_req_u64(&req, "nonce", 0x1234), 99);
	assert_int_equal(ctl_req_u64(&req, "vcpu", 0), 3);
	ctl_request_release(&req);

	/* Zero given explicitly is not the default. */
	assert_int_equal(parse_str("{\"cmd\":\"ping\",\"nonce\":0}", &req, &err), 0);
	assert_int_equal(ctl_req_u64(&req, "nonce", 0x1234), 0);
	ctl_request_release(&req);
}

static void test_release_twice_is_safe(void **state)
{
	struct ctl_request req;
	struct fvm_err err = FVM_ERR_INIT;

	assert_int_equal(parse_str("{\"cmd\":\"stop\"}", &req, &err), 0);
	ctl_request_release(&req);
	ctl_request_release(&req);
	assert_null(req.root);
}

static void test_replies(void **state)
{
	json_t *ok = ctl_reply_ok(), *e = ctl_reply_error("bad %s %d", "thing", 42);

	assert_true(json_is_true(json_object_get(ok, "ok")));
	assert_int_equal(json_object_size(ok), 1);
	assert_true(json_is_false(json_object_get(e, "ok")));
	assert_string_equal(json_string_value(json_object_get(e, "error")), "bad thing 42");
	json_decref(ok);
	json_decref(e);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_table_is_consistent),
		cmocka_unit_test(test_accepts_every_command_with_required_fields),
		cmocka_unit_test(test_accepts_every_command_with_all_fields_and_id),
		cmocka_unit_test(test_rejects_invalid_json),
		cmocka_unit_test(test_rejects_non_object),
		cmocka_unit_test(test_rejects_missing_or_non_string_cmd),
		cmocka_unit_test(test_rejects_unknown_cmd),
		cmocka_unit_test(test_rejects_unknown_field),
		cmocka_unit_test(test_rejects_wrong_field_types_naming_the_field),
		cmocka_unit_test(test_rejects_negative_and_fractional_integers),
		cmocka_unit_test(test_accepts_zero_and_int64_max),
		cmocka_unit_test(test_integer_fields_are_range_checked),
		cmocka_unit_test(test_rejects_missing_required_fields_naming_them),
		cmocka_unit_test(test_rejects_duplicate_keys),
		cmocka_unit_test(test_parse_uses_only_len_bytes),
		cmocka_unit_test(test_error_text_fits_small_buffer),
		cmocka_unit_test(test_req_u64_defaults_and_values),
		cmocka_unit_test(test_release_twice_is_safe),
		cmocka_unit_test(test_replies),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
