/* Unit tests for request validation: envelope, every op's fields, and error messages. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "request.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Parse text; returns the result and leaves req/e for inspection (caller frees req). */
static int parse(const char *text, struct agent_request *req, struct fvm_err *e)
{
	e->msg[0] = '\0';
	return agent_request_parse((const uint8_t *)text, strlen(text), req, e);
}

/* Expect a failure whose message contains want. */
static void expect_error(const char *text, const char *want)
{
	struct agent_request req;
	struct fvm_err e;
	int ret = parse(text, &req, &e);

	if (ret == 0 || !strstr(e.msg, want))
		fail_msg("'%s': got %d '%s', wanted an error with '%s'", text, ret, e.msg, want);
	agent_request_free(&req);
}

static void test_envelope(void **state)
{
	struct agent_request req;
	struct fvm_err e;

	assert_int_equal(parse("{\"op\":\"ping\",\"id\":[1,\"x\"]}", &req, &e), 0);
	assert_int_equal(req.op, OP_PING);
	assert_true(json_is_array(req.id));
	agent_request_free(&req);
	/* id is available for the error reply even when validation fails. */
	assert_int_not_equal(parse("{\"op\":\"nope\",\"id\":7}", &req, &e), 0);
	assert_int_equal(json_integer_value(req.id), 7);
	agent_request_free(&req);

	expect_error("", "malformed JSON");
	expect_error("{\"op\":", "malformed JSON");
	expect_error("{\"op\":\"ping\"} trailing", "malformed JSON");
	expect_error("{\"op\":\"ping\",\"op\":\"exec\"}", "malformed JSON"); /* duplicate key */
	expect_error("\"\xff\"", "malformed JSON");			    /* invalid UTF-8 */
	expect_error("[1,2]", "must be a JSON object");
	{
		static const char with_nul[] = "{\"op\":\"ping\"\0}";

		assert_int_equal(agent_request_parse((const uint8_t *)with_nul, sizeof(with_nul) - 1,
						     &req, &e), -EBADMSG);
		assert_non_null(strstr(e.msg, "raw NUL byte at offset 12"));
		agent_request_free(&req);
	}
	expect_error("{}", "missing field 'op'");
	expect_error("{\"op\":5}", "'op' must be a string");
	expect_error("{\"op\":\"reboot_now\"}", "unknown op 'reboot_now'");
}

static void test_exec_fields(void **state)
{
	struct agent_request req;
	struct fvm_err e;

	assert_int_equal(parse("{\"op\":\"exec\",\"argv\":[\"sh\",\"-c\",\"x\"],"
			       "\"env\":{\"A\":\"1\",\"B\":\"x=y\"},\"cwd\":\"/tmp\",\"stdin\":\"in\","
			       "\"timeout_ms\":500,\"max_output\":10}", &req, &e), 0);
	assert_string_equal(req.exec.argv[0], "sh");
	assert_string_equal(req.exec.argv[2], "x");
	assert_null(req.exec.argv[3]);
	assert_string_equal(req.exec.env[0], "A=1");
	assert_string_equal(req.exec.env[1], "B=x=y");
	assert_null(req.exec.env[2]);
	assert_string_equal(req.exec.cwd, "/tmp");
	assert_int_equal(req.exec.stdin_len, 2);
	assert_memory_equal(req.exec.stdin_data, "in", 2);
	assert_int_equal(req.exec.timeout_ms, 500);
	assert_int_equal(req.exec.max_output, 10);
	assert_false(req.exec.force_base64);
	agent_request_free(&req);

	assert_int_equal(parse("{\"op\":\"exec\",\"argv\":[\"cat\"],\"env\":[\"K=V=W\",\"E=\"],"
			       "\"stdin\":\"AAH/\",\"stdin_base64\":true,\"max_output\":99999999,"
			       "\"output_encoding\":\"base64\",\"clear_env\":true}", &req, &e), 0);
	assert_string_equal(req.exec.env[0], "K=V=W");
	assert_string_equal(req.exec.env[1], "E=");
	assert_int_equal(req.exec.stdin_len, 3);
	assert_memory_equal(req.exec.stdin_data, "\x00\x01\xff", 3);
	assert_int_equal(req.exec.max_output, AGENT_MAX_OUTPUT); /* clamped, not refused */
	assert_true(req.exec.force_base64);
	assert_true(req.exec.clear_env);
	assert_false(req.exec.stream);
	agent_request_free(&req);

	assert_int_equal(parse("{\"op\":\"exec\",\"argv\":[\"ls\"],\"stream\":true}", &req, &e), 0);
	assert_true(req.exec.stream);
	agent_request_free(&req);
}

static void test_exec_errors(void **state)
{
	expect_error("{\"op\":\"exec\"}", "missing field 'argv'");
	expect_error("{\"op\":\"exec\",\"argv\":[\"ls\"],\"stream\":1}", "field 'stream'");
	expect_error("{\"op\":\"exec\",\"argv\":[]}", "non-empty array");
	expect_error("{\"op\":\"exec\",\"argv\":\"ls\"}", "non-empty array");
	expect_error("{\"op\":\"exec\",\"argv\":[\"ls\",3]}", "argv[1] must be a non-empty string");
	expect_error("{\"op\":\"exec\",\"argv\":[\"\"]}", "argv[0] must be a non-empty string");
	expect_error("{\"op\":\"exec\",\"argv\":[\"ls\"],\"env\":5}", "field 'env'");
	expect_error("{\"op\":\"exec\",\"argv\":[\"ls\"],\"env\":{\"A\":1}}", "must be a string");
	expect_error("{\"op\":\"exec\",\"argv\":[\"ls\"],\"env\":{\"\":\"x\"}}", "env name");
	expect_error("{\"op\":\"exec\",\"argv\":[\"ls\"],\"env\":{\"A=B\":\"x\"}}", "env name");
	expect_error("{\"op\":\"exec\",\"argv\":[\"ls\"],\"env\":[\"NOEQUALS\"]}", "env[0]");
	expect_error("{\"op\":\"exec\",\"argv\":[\"ls\"],\"env\":[\"=x\"]}", "env name");
	expect_error("{\"op\":\"exec\",\"argv\":[\"ls\"],\"cwd\":7}", "field 'cwd'");
	expect_error("{\"op\":\"exec\",\"argv\":[\"ls\"],\"cwd\":\"\"}", "field 'cwd'");
	expect_error("{\"op\":\"exec\",\"argv\":[\"ls\"],\"stdin\":1}", "field 'stdin'");
	expect_error("{\"op\":\"exec\",\"argv\":[\"ls\"],\"stdin\":\"!!\",\"stdin_base64\":true}",
		     "not valid base64");
	expect_error("{\"op\":\"exec\",\"argv\":[\"ls\"],\"stdin_base64\":1}", "boolean");
	expect_error("{\"op\":\"exec\",\"argv\":[\"ls\"],\"timeout_ms\":-1}", "between 0 and");
	expect_error("{\"op\":\"exec\",\"argv\":[\"ls\"],\"timeout_ms\":1.5}", "integer");
	expect_error("{\"op\":\"exec\",\"argv\":[\"ls\"],\"max_output\":\"1\"}", "integer");
	expect_error("{\"op\":\"exec\",\"argv\":[\"ls\"],\"output_encoding\":\"hex\"}",
		     "output_encoding");
}

static void test_file_ops(void **state)
{
	struct agent_request req;
	struct fvm_err e;

	assert_int_equal(parse("{\"op\":\"write_file\",\"path\":\"/x\",\"content\":\"aGk=\"}",
			       &req, &e), 0);
	assert_int_equal(req.write_file.len, 2);
	assert_memory_equal(req.write_file.data, "hi", 2);
	assert_int_equal(req.write_file.mode, 0644);
	assert_true(req.write_file.atomic);
	agent_request_free(&req);
	assert_int_equal(parse("{\"op\":\"write_file\",\"path\":\"/x\",\"content\":\"\","
			       "\"mode\":493,\"atomic\":false}", &req, &e), 0);
	assert_int_equal(req.write_file.len, 0);
	assert_int_equal(req.write_file.mode, 0755);
	assert_false(req.write_file.atomic);
	agent_request_free(&req);
	expect_error("{\"op\":\"write_file\",\"content\":\"\"}", "missing field 'path'");
	expect_error("{\"op\":\"write_file\",\"path\":\"\",\"content\":\"\"}", "must not be empty");
	expect_error("{\"op\":\"write_file\",\"path\":\"/x\"}", "missing field 'content'");
	expect_error("{\"op\":\"write_file\",\"path\":\"/x\",\"content\":\"a\"}", "base64");
	expect_error("{\"op\":\"write_file\",\"path\":\"/x\",\"content\":\"\",\"mode\":4096}",
		     "'mode'");

	assert_int_equal(parse("{\"op\":\"read_file\",\"path\":\"/x\"}", &req, &e), 0);
	assert_int_equal(req.read_file.max_bytes, AGENT_DEFAULT_READ);
	agent_request_free(&req);
	expect_error("{\"op\":\"read_file\",\"path\":[]}", "field 'path'");
	expect_error("{\"op\":\"read_file\",\"path\":\"/x\",\"max_bytes\":1000000000}",
		     "'max_bytes'");
}

static void test_system_ops(void **state)
{
	struct agent_request req;
	struct fvm_err e;

	assert_int_equal(parse("{\"op\":\"set_clock\",\"time_ns\":1700000000123456789}", &req, &e),
			 0);
	assert_true(req.set_clock_ns == 1700000000123456789LL);
	agent_request_free(&req);
	expect_error("{\"op\":\"set_clock\"}", "missing field 'time_ns'");
	expect_error("{\"op\":\"set_clock\",\"time_ns\":-5}", "'time_ns'");
	expect_error("{\"op\":\"set_clock\",\"time_ns\":\"now\"}", "'time_ns'");

	assert_int_equal(parse("{\"op\":\"reseed_entropy\",\"data\":\"AAECAw==\"}", &req, &e), 0);
	assert_int_equal(req.reseed.len, 4);
	assert_int_equal(req.reseed.entropy_bits, 32);
	agent_request_free(&req);
	expect_error("{\"op\":\"reseed_entropy\"}", "missing field 'data'");
	expect_error("{\"op\":\"reseed_entropy\",\"data\":\"\"}", "must not be empty");
	expect_error("{\"op\":\"reseed_entropy\",\"data\":\"AA==\",\"entropy_bits\":9}",
		     "'entropy_bits'");

	assert_int_equal(parse("{\"op\":\"shutdown\",\"mode\":\"reboot\"}", &req, &e), 0);
	assert_true(req.shutdown_reboot);
	agent_request_free(&req);
	assert_int_equal(parse("{\"op\":\"shutdown\"}", &req, &e), 0);
	assert_false(req.shutdown_reboot);
	agent_request_free(&req);
	expect_error("{\"op\":\"shutdown\",\"mode\":\"halt\"}", "'mode'");
}

/* Text of "{"op":"ping","x":[ITEM,ITEM,...]}" with n items. */
static char *many(const char *item, size_t n)
{
	size_t il = strlen(item), len = 32 + n * (il + 1);
	char *t = malloc(len), *p = t;

	assert_non_null(t);
	p += sprintf(p, "{\"op\":\"ping\",\"x\":[");
	for (size_t i = 0; i < n; i++) {
		memcpy(p, item, il);
		p += il;
		*p++ = i + 1 < n ? ',' : ']';
	}
	strcpy(p, "}");
	return t;
}

/* A tree of tiny values would cost ~50x its text: refused before parsing. */
static void test_value_count_bounded(void **state)
{
	const char *items[] = { "0", "[]", "{}", "\"\"" };
	struct agent_request req;
	struct fvm_err e;
	char *t;

	for (size_t k = 0; k < sizeof(items) / sizeof(items[0]); k++) {
		t = many(items[k], AGENT_MAX_JSON_VALUES);
		assert_int_equal(parse(t, &req, &e), -E2BIG);
		assert_non_null(strstr(e.msg, "more than 65536 JSON values"));
		agent_request_free(&req);
		free(t);
		/* Well under the cap (an empty container counts twice: its bracket and its comma). */
		t = many(items[k], AGENT_MAX_JSON_VALUES / 2 - 8);
		assert_int_equal(parse(t, &req, &e), 0);
		agent_request_free(&req);
		free(t);
	}
	/* Structural characters inside strings (and escaped quotes) do not count. */
	t = many("\"[,{:\\\"\"", 1000);
	assert_int_equal(parse(t, &req, &e), 0);
	agent_request_free(&req);
	free(t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_envelope),
		cmocka_unit_test(test_exec_fields),
		cmocka_unit_test(test_exec_errors),
		cmocka_unit_test(test_file_ops),
		cmocka_unit_test(test_system_ops),
		cmocka_unit_test(test_value_count_bounded),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
