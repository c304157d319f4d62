/* Unit tests for eval / eval_close / put_tree / get_tree validation and the eval driver
 * protocol (eval_proto.c): what the agent sends the interpreter and what it accepts back. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "eval_proto.h"
#include "frame.h"
#include "request.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int parse(const char *text, struct agent_request *req, struct fvm_err *e)
{
	e->msg[0] = '\0';
	return agent_request_parse((const uint8_t *)text, strlen(text), req, e);
}

/* Expect a failure whose message contains want (and, if err != 0, that errno). */
static void expect_error(const char *text, int err, const char *want)
{
	struct agent_request req;
	struct fvm_err e;
	int ret = parse(text, &req, &e);

	if (ret == 0 || !strstr(e.msg, want) || (err && ret != err))
		fail_msg("'%s': got %d '%s', wanted %d with '%s'", text, ret, e.msg, err, want);
	agent_request_free(&req);
}

static void test_eval_fields(void **state)
{
	struct agent_request req;
	struct fvm_err e;

	assert_int_equal(parse("{\"op\":\"eval\",\"lang\":\"python\",\"code\":\"x = 41\","
			       "\"timeout_ms\":500,\"context\":\"ctx-1.a_b\",\"max_output\":10,"
			       "\"output_encoding\":\"base64\"}", &req, &e), 0);
	assert_int_equal(req.op, OP_EVAL);
	assert_string_equal(req.eval.code, "x = 41");
	assert_int_equal(req.eval.code_len, 6);
	assert_string_equal(req.eval.context, "ctx-1.a_b");
	assert_int_equal(req.eval.timeout_ms, 500);
	assert_int_equal(req.eval.max_output, 10);
	assert_true(req.eval.force_base64);
	agent_request_free(&req);

	/* Defaults: python, context "default", no timeout, 1 MiB; larger max_output clamps. */
	assert_int_equal(parse("{\"op\":\"eval\",\"code\":\"caf\\u00e9\",\"max_output\":99999999}",
			       &req, &e), 0);
	assert_string_equal(req.eval.context, "default");
	assert_int_equal(req.eval.code_len, 5); /* UTF-8 bytes */
	assert_int_equal(req.eval.timeout_ms, 0);
	assert_int_equal(req.eval.max_output, AGENT_MAX_OUTPUT);
	assert_false(req.eval.force_base64);
	agent_request_free(&req);

	expect_error("{\"op\":\"eval\"}", -EINVAL, "missing field 'code'");
	expect_error("{\"op\":\"eval\",\"code\":5}", -EINVAL, "'code' must be a string");
	expect_error("{\"op\":\"eval\",\"code\":\"1\",\"lang\":\"ruby\"}", -EOPNOTSUPP,
		     "unsupported lang 'ruby'");
	expect_error("{\"op\":\"eval\",\"code\":\"1\",\"lang\":3}", -EINVAL,
		     "'lang' must be a string");
	expect_error("{\"op\":\"eval\",\"code\":\"1\",\"timeout_ms\":-1}", -ERANGE, "timeout_ms");
	expect_error("{\"op\":\"eval\",\"code\":\"1\",\"timeout_ms\":1.5}", -EINVAL,
		     "'timeout_ms' must be an integer");
	expect_error("{\"op\":\"eval\",\"code\":\"1\",\"output_encoding\":\"hex\"}", -EINVAL,
		     "output_encoding");
}

static void test_context_names(void **state)
{
	static const char *const good[] = { "default", "a", "A-Z_0.9", "x.y",
					    "0123456789012345678901234567890123456789" };
	static const char *const bad[] = { "", ".hidden", "a/b", "..", "a b", "caf\xc3\xa9",
					   "01234567890123456789012345678901234567890", "a\nb" };
	struct agent_request req;
	struct fvm_err e;

	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		assert_true(eval_context_name_ok(good[i]));
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (eval_context_name_ok(bad[i]))
			fail_msg("context name '%s' accepted", bad[i]);
	expect_error("{\"op\":\"eval\",\"code\":\"1\",\"context\":\"../x\"}", -EINVAL,
		     "field 'context' must be");
	expect_error("{\"op\":\"eval\",\"code\":\"1\",\"context\":7}", -EINVAL,
		     "'context' must be a string");
	/* eval_close takes a context and nothing else is required. */
	assert_int_equal(parse("{\"op\":\"eval_close\",\"context\":\"c2\"}", &req, &e), 0);
	assert_int_equal(req.op, OP_EVAL_CLOSE);
	assert_string_equal(req.eval.context, "c2");
	assert_null(req.eval.code);
	agent_request_free(&req);
	assert_int_equal(parse("{\"op\":\"eval_close\"}", &req, &e), 0);
	assert_string_equal(req.eval.context, "default");
	agent_request_free(&req);
	expect_error("{\"op\":\"eval_close\",\"context\":\"\"}", -EINVAL, "field 'context'");
}

static void test_tree_fields(void **state)
{
	struct agent_request req;
	struct fvm_err e;

	assert_int_equal(parse("{\"op\":\"put_tree\",\"path\":\"/tmp/d\",\"data\":\"AAEC\"}", &req,
			       &e), 0);
	assert_string_equal(req.put_tree.path, "/tmp/d");
	assert_int_equal(req.put_tree.len, 3);
	agent_request_free(&req);
	assert_int_equal(parse("{\"op\":\"get_tree\",\"path\":\"/etc\"}", &req, &e), 0);
	assert_int_equal(req.get_tree.max_bytes, AGENT_MAX_TREE);
	agent_request_free(&req);
	assert_int_equal(parse("{\"op\":\"get_tree\",\"path\":\"/etc\",\"max_bytes\":1024}", &req,
			       &e), 0);
	assert_int_equal(req.get_tree.max_bytes, 1024);
	agent_request_free(&req);

	expect_error("{\"op\":\"put_tree\",\"data\":\"\"}", -EINVAL, "missing field 'path'");
	expect_error("{\"op\":\"put_tree\",\"path\":\"\",\"data\":\"\"}", -EINVAL, "must not be empty");
	expect_error("{\"op\":\"put_tree\",\"path\":\"/d\"}", -EINVAL, "missing field 'data'");
	expect_error("{\"op\":\"put_tree\",\"path\":\"/d\",\"data\":\"!!\"}", -EINVAL,
		     "not valid base64");
	expect_error("{\"op\":\"get_tree\",\"path\":\"/d\",\"max_bytes\":99999999999}", -ERANGE,
		     "max_bytes");
}

/* The request frame decodes back to {"code", "max_output"}, NULs and all. */
static void test_driver_request(void **state)
{
	static const char code[] = "print('h\xc3\xa9')\0x";
	struct frame_decoder d;
	uint8_t *frame, *payload;
	size_t len, used, plen;
	json_t *back;

	assert_int_equal(evalp_request(code, sizeof(code) - 1, 1234, &frame, &len), 0);
	frame_decoder_init(&d, AGENT_MAX_FRAME);
	assert_int_equal(frame_decoder_feed(&d, frame, len, &used), FRAME_READY);
	assert_int_equal(used, len);
	payload = frame_decoder_take(&d, &plen);
	back = json_loadb((const char *)payload, plen, JSON_ALLOW_NUL, NULL);
	assert_non_null(back);
	assert_int_equal(json_string_length(json_object_get(back, "code")), sizeof(code) - 1);
	assert_memory_equal(json_string_value(json_object_get(back, "code")), code,
			    sizeof(code) - 1);
	assert_int_equal(json_integer_value(json_object_get(back, "max_output")), 1234);
	json_decref(back);
	free(payload);
	free(frame);
	frame_decoder_free(&d);
	/* Invalid UTF-8 cannot reach the driver (requests are checked JSON, but be sure). */
	assert_int_equal(evalp_request("\xff", 1, 1, &frame, &len), -ENOMEM);
}

static int hello(const char *text, struct eval_hello *h)
{
	struct fvm_err e = FVM_ERR_INIT;

	return evalp_parse_hello((const uint8_t *)text, strlen(text), h, &e);
}

static void test_driver_hello(void **state)
{
	struct eval_hello h;

	assert_int_equal(hello("{\"pid\":4242,\"python\":\"3.11.2\"}", &h), 0);
	assert_int_equal(h.pid, 4242);
	assert_string_equal(h.python, "3.11.2");
	/* pid 0/1/negative would make kill() hit a group or init; never accepted. */
	assert_int_equal(hello("{\"pid\":1,\"python\":\"3\"}", &h), -EPROTO);
	assert_int_equal(hello("{\"pid\":0,\"python\":\"3\"}", &h), -EPROTO);
	assert_int_equal(hello("{\"pid\":-5,\"python\":\"3\"}", &h), -EPROTO);
	assert_int_equal(hello("{\"pid\":99999999999,\"python\":\"3\"}", &h), -EPROTO);
	assert_int_equal(hello("{\"pid\":\"7\",\"python\":\"3\"}", &h), -EPROTO);
	assert_int_equal(hello("{\"pid\":7}", &h), -EPROTO);
	assert_int_equal(hello("[7]", &h), -EPROTO);
	assert_int_equal(hello("{\"pid\":7,", &h), -EPROTO);
}

static int meta(const char *text, struct eval_meta *m)
{
	struct fvm_err e = FVM_ERR_INIT;

	return evalp_parse_meta((const uint8_t *)text, strlen(text), m, &e);
}

static void test_driver_meta(void **state)
{
	struct eval_meta m;

	assert_int_equal(meta("{\"result\":\"42\",\"result_truncated\":false,\"error\":null,"
			      "\"stdout_truncated\":true,\"stderr_truncated\":false}", &m), 0);
	assert_string_equal(json_string_value(m.result), "42");
	assert_null(m.error);
	assert_true(m.stdout_truncated);
	assert_false(m.stderr_truncated);
	evalp_meta_free(&m);

	assert_int_equal(meta("{\"result\":null,\"error\":{\"name\":\"ZeroDivisionError\","
			      "\"value\":\"division by zero\",\"traceback\":\"T\\u0000\"}}", &m), 0);
	assert_null(m.result);
	assert_string_equal(json_string_value(json_object_get(m.error, "name")),
			    "ZeroDivisionError");
	evalp_meta_free(&m);

	/* Anything else is a driver out of step: refused, and the agent kills it. */
	assert_int_equal(meta("{\"result\":42}", &m), -EPROTO);
	evalp_meta_free(&m);
	assert_int_equal(meta("{\"error\":\"boom\"}", &m), -EPROTO);
	evalp_meta_free(&m);
	assert_int_equal(meta("{\"error\":{\"name\":\"E\",\"value\":\"v\"}}", &m), -EPROTO);
	evalp_meta_free(&m);
	assert_int_equal(meta("{\"error\":{\"name\":\"E\",\"value\":\"v\",\"traceback\":1}}", &m),
			 -EPROTO);
	evalp_meta_free(&m);
	assert_int_equal(meta("{\"stdout_truncated\":1}", &m), -EPROTO);
	evalp_meta_free(&m);
	assert_int_equal(meta("{\"result\":\"a\",\"result\":\"b\"}", &m), -EPROTO);
	evalp_meta_free(&m);
	assert_int_equal(meta("\"x\"", &m), -EPROTO);
	evalp_meta_free(&m);
	assert_int_equal(meta("", &m), -EPROTO);
	evalp_meta_free(&m);
}

static void test_agent_error_object(void **state)
{
	json_t *err = evalp_error("TimeoutError", "eval timed out", "");

	assert_non_null(err);
	assert_int_equal(json_object_size(err), 3);
	assert_string_equal(json_string_value(json_object_get(err, "name")), "TimeoutError");
	assert_string_equal(json_string_value(json_object_get(err, "traceback")), "");
	json_decref(err);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_eval_fields),
		cmocka_unit_test(test_context_names),
		cmocka_unit_test(test_tree_fields),
		cmocka_unit_test(test_driver_request),
		cmocka_unit_test(test_driver_hello),
		cmocka_unit_test(test_driver_meta),
		cmocka_unit_test(test_agent_error_object),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
