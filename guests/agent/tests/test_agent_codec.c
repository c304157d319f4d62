/* Unit tests for base64 and reply encoding (the non-UTF-8 output rule). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "util/base64.h"
#include "reply.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* RFC 4648 section 10 test vectors. */
static const char *const vectors[][2] = {
	{ "", "" },	    { "f", "Zg==" },	     { "fo", "Zm8=" },	       { "foo", "Zm9v" },
	{ "foob", "Zm9vYg==" }, { "fooba", "Zm9vYmE=" }, { "foobar", "Zm9vYmFy" },
};

static void test_base64_vectors(void **state)
{
	for (size_t i = 0; i < sizeof(vectors) / sizeof(vectors[0]); i++) {
		const char *plain = vectors[i][0], *enc = vectors[i][1];
		char out[32];
		uint8_t *dec;
		size_t len;

		assert_int_equal(base64_encoded_size(strlen(plain)), strlen(enc) + 1);
		base64_encode((const uint8_t *)plain, strlen(plain), out);
		assert_string_equal(out, enc);
		assert_int_equal(base64_decode(enc, strlen(enc), &dec, &len), 0);
		assert_int_equal(len, strlen(plain));
		assert_memory_equal(dec, plain, len);
		free(dec);
	}
}

static void test_base64_binary_roundtrip(void **state)
{
	uint8_t in[256], *dec;
	char enc[400];
	size_t len;

	for (int i = 0; i < 256; i++)
		in[i] = (uint8_t)(255 - i);
	for (size_t n = 0; n <= sizeof(in); n += 37) {
		base64_encode(in, n, enc);
		assert_int_equal(base64_decode(enc, strlen(enc), &dec, &len), 0);
		assert_int_equal(len, n);
		assert_memory_equal(dec, in, n);
		free(dec);
	}
}

static void test_base64_rejects(void **state)
{
	static const char *const bad[] = {
		"Zg=",	/* length not a multiple of 4 */
		"Zg==Zg==", /* padding in the middle */
		"Z===", "====", "Zm9v!A==", "Zm 9", "Zh==", /* non-canonical: low bits set */
		"Zm9=", /* non-canonical */
	};
	uint8_t *dec = NULL;
	size_t len;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (base64_decode(bad[i], strlen(bad[i]), &dec, &len) != -EINVAL)
			fail_msg("'%s' was accepted", bad[i]);
}

static void test_reply_envelopes(void **state)
{
	json_t *id = json_string("req-1"), *r;

	r = reply_ok(id);
	assert_true(json_is_true(json_object_get(r, "ok")));
	assert_string_equal(json_string_value(json_object_get(r, "id")), "req-1");
	json_decref(r);
	r = reply_error(NULL, "bad thing");
	assert_true(json_is_false(json_object_get(r, "ok")));
	assert_null(json_object_get(r, "id"));
	assert_string_equal(json_string_value(json_object_get(r, "error")), "bad thing");
	json_decref(r);
	/* A message quoting invalid UTF-8 from the client still yields a valid reply. */
	r = reply_error(id, "unknown op '\xff\xfe'");
	assert_string_equal(json_string_value(json_object_get(r, "error")), "unknown op '?" "?'");
	json_decref(r);
	json_decref(id);
}

static void test_reply_bytes(void **state)
{
	json_t *r = json_object();

	assert_int_equal(reply_set_bytes(r, "out", (const uint8_t *)"h\xc3\xa9\0x", 5, false), 0);
	assert_string_equal(json_string_value(json_object_get(r, "out_encoding")), "utf-8");
	assert_int_equal(json_string_length(json_object_get(r, "out")), 5);
	assert_int_equal(reply_set_bytes(r, "bin", (const uint8_t *)"\xff\x00", 2, false), 0);
	assert_string_equal(json_string_value(json_object_get(r, "bin_encoding")), "base64");
	assert_string_equal(json_string_value(json_object_get(r, "bin")), "/wA=");
	/* A multi-byte character cut in half is not valid UTF-8 either. */
	assert_int_equal(reply_set_bytes(r, "cut", (const uint8_t *)"a\xc3", 2, false), 0);
	assert_string_equal(json_string_value(json_object_get(r, "cut_encoding")), "base64");
	assert_int_equal(reply_set_bytes(r, "forced", (const uint8_t *)"hi", 2, true), 0);
	assert_string_equal(json_string_value(json_object_get(r, "forced")), "aGk=");
	assert_int_equal(reply_set_bytes(r, "empty", NULL, 0, false), 0);
	assert_string_equal(json_string_value(json_object_get(r, "empty")), "");
	json_decref(r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_base64_vectors),
		cmocka_unit_test(test_base64_binary_roundtrip),
		cmocka_unit_test(test_base64_rejects),
		cmocka_unit_test(test_reply_envelopes),
		cmocka_unit_test(test_reply_bytes),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
