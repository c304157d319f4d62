/* Unit tests for the agent's frame encoder and incremental decoder. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "frame.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static size_t make_frame(uint8_t *buf, const char *payload)
{
	size_t len = strlen(payload);

	frame_put_len(buf, (uint32_t)len);
	memcpy(buf + FRAME_HEADER, payload, len);
	return FRAME_HEADER + len;
}

static void test_len_big_endian(void **state)
{
	uint8_t hdr[4];

	frame_put_len(hdr, 0x01020304);
	assert_memory_equal(hdr, "\x01\x02\x03\x04", 4);
	assert_int_equal(frame_get_len(hdr), 0x01020304);
	frame_put_len(hdr, UINT32_MAX);
	assert_int_equal(frame_get_len(hdr), UINT32_MAX);
}

static void test_decode_whole_frame(void **state)
{
	struct frame_decoder d;
	uint8_t buf[64];
	size_t n = make_frame(buf, "{\"op\":\"ping\"}"), used, len;
	uint8_t *payload;

	frame_decoder_init(&d, 1024);
	assert_int_equal(frame_decoder_feed(&d, buf, n, &used), FRAME_READY);
	assert_int_equal(used, n);
	payload = frame_decoder_take(&d, &len);
	assert_int_equal(len, n - FRAME_HEADER);
	assert_string_equal((char *)payload, "{\"op\":\"ping\"}"); /* NUL-terminated */
	assert_false(frame_decoder_partial(&d));
	free(payload);
	frame_decoder_free(&d);
}

/* Every split of the byte stream must give the same frame. */
static void test_decode_byte_by_byte(void **state)
{
	struct frame_decoder d;
	uint8_t buf[64];
	size_t n = make_frame(buf, "hello"), used, len;
	uint8_t *payload;

	frame_decoder_init(&d, 1024);
	for (size_t i = 0; i < n - 1; i++) {
		assert_int_equal(frame_decoder_feed(&d, buf + i, 1, &used), FRAME_MORE);
		assert_int_equal(used, 1);
		assert_true(frame_decoder_partial(&d));
	}
	assert_int_equal(frame_decoder_feed(&d, buf + n - 1, 1, &used), FRAME_READY);
	payload = frame_decoder_take(&d, &len);
	assert_int_equal(len, 5);
	assert_memory_equal(payload, "hello", 5);
	free(payload);
	frame_decoder_free(&d);
}

/* Two frames in one read: the decoder stops after the first and keeps the rest unread. */
static void test_decode_pipelined(void **state)
{
	struct frame_decoder d;
	uint8_t buf[64];
	size_t n1 = make_frame(buf, "one"), n2 = make_frame(buf + n1, "second"), used, len;
	uint8_t *payload;

	frame_decoder_init(&d, 1024);
	assert_int_equal(frame_decoder_feed(&d, buf, n1 + n2, &used), FRAME_READY);
	assert_int_equal(used, n1);
	assert_int_equal(frame_decoder_feed(&d, buf, 1, &used), -EBUSY); /* not taken yet */
	payload = frame_decoder_take(&d, &len);
	assert_memory_equal(payload, "one", 3);
	free(payload);
	assert_int_equal(frame_decoder_feed(&d, buf + n1, n2, &used), FRAME_READY);
	assert_int_equal(used, n2);
	payload = frame_decoder_take(&d, &len);
	assert_int_equal(len, 6);
	assert_memory_equal(payload, "second", 6);
	free(payload);
	frame_decoder_free(&d);
}

static void test_decode_empty_frame(void **state)
{
	struct frame_decoder d;
	uint8_t hdr[4] = { 0, 0, 0, 0 };
	size_t used, len = 99;
	uint8_t *payload;

	frame_decoder_init(&d, 1024);
	assert_int_equal(frame_decoder_feed(&d, hdr, 4, &used), FRAME_READY);
	payload = frame_decoder_take(&d, &len);
	assert_non_null(payload);
	assert_int_equal(len, 0);
	free(payload);
	frame_decoder_free(&d);
}

static void test_decode_oversized(void **state)
{
	struct frame_decoder d;
	uint8_t hdr[4];
	size_t used;

	frame_decoder_init(&d, 1024);
	frame_put_len(hdr, 1025);
	assert_int_equal(frame_decoder_feed(&d, hdr, 4, &used), -EMSGSIZE);
	assert_int_equal(d.need, 1025);
	frame_decoder_free(&d);
	/* Exactly the limit is fine. */
	frame_decoder_init(&d, 1024);
	frame_put_len(hdr, 1024);
	assert_int_equal(frame_decoder_feed(&d, hdr, 4, &used), FRAME_MORE);
	assert_true(frame_decoder_partial(&d));
	frame_decoder_free(&d);
}

/* A large frame arrives in chunks and grows the buffer past its first allocation. */
static void test_decode_large_chunks(void **state)
{
	const size_t size = 100000;
	uint8_t *buf = malloc(FRAME_HEADER + size), *payload;
	struct frame_decoder d;
	size_t used, len, pos = 0;
	int ret = FRAME_MORE;

	assert_non_null(buf);
	frame_put_len(buf, (uint32_t)size);
	for (size_t i = 0; i < size; i++)
		buf[FRAME_HEADER + i] = (uint8_t)(i * 7);
	frame_decoder_init(&d, size);
	while (ret == FRAME_MORE) {
		size_t chunk = FRAME_HEADER + size - pos < 3001 ? FRAME_HEADER + size - pos : 3001;

		ret = frame_decoder_feed(&d, buf + pos, chunk, &used);
		pos += used;
	}
	assert_int_equal(ret, FRAME_READY);
	assert_int_equal(pos, FRAME_HEADER + size);
	payload = frame_decoder_take(&d, &len);
	assert_int_equal(len, size);
	assert_memory_equal(payload, buf + FRAME_HEADER, size);
	free(payload);
	free(buf);
	frame_decoder_free(&d);
}

static void test_encode_json(void **state)
{
	json_t *msg = json_pack("{s:b,s:s}", "ok", 1, "x", "\xc3\xa9");
	uint8_t *frame;
	size_t len;

	assert_int_equal(frame_encode_json(msg, 1024, &frame, &len), 0);
	assert_int_equal(frame_get_len(frame), len - FRAME_HEADER);
	assert_memory_equal(frame + FRAME_HEADER, "{\"ok\":true,\"x\":\"\xc3\xa9\"}",
			    len - FRAME_HEADER);
	free(frame);
	assert_int_equal(frame_encode_json(msg, 10, &frame, &len), -EMSGSIZE);
	json_decref(msg);
}

/* A frame skipped once its header is in is consumed without being kept; the next frame
 * decodes normally, whatever the split. */
static void test_skip_frame(void **state)
{
	struct frame_decoder d;
	uint8_t buf[128];
	size_t n1 = make_frame(buf, "{\"op\":\"big\",\"pad\":\"xxxxxxxxxx\"}");
	size_t n2 = make_frame(buf + n1, "{\"op\":\"ping\"}"), used, len;
	uint8_t *payload;

	for (size_t split = FRAME_HEADER; split < n1; split++) {
		size_t pos = 0;

		frame_decoder_init(&d, 1024);
		assert_int_equal(frame_decoder_skip(&d), -EINVAL); /* no header yet */
		assert_int_equal(frame_decoder_feed(&d, buf, FRAME_HEADER, &used), FRAME_MORE);
		assert_true(frame_decoder_header_done(&d));
		assert_int_equal(frame_decoder_skip(&d), 0);
		assert_int_equal(frame_decoder_skip(&d), -EINVAL); /* once */
		pos = FRAME_HEADER;
		assert_int_equal(frame_decoder_feed(&d, buf + pos, split - pos, &used), FRAME_MORE);
		pos += used;
		assert_true(frame_decoder_partial(&d));
		assert_int_equal(frame_decoder_feed(&d, buf + pos, n1 + n2 - pos, &used),
				 FRAME_SKIPPED);
		assert_int_equal(pos + used, n1); /* stops at the end of the skipped frame */
		assert_false(frame_decoder_partial(&d));
		pos += used;
		assert_int_equal(frame_decoder_feed(&d, buf + pos, n2, &used), FRAME_READY);
		payload = frame_decoder_take(&d, &len);
		assert_string_equal((char *)payload, "{\"op\":\"ping\"}");
		free(payload);
		frame_decoder_free(&d);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_len_big_endian),
		cmocka_unit_test(test_decode_whole_frame),
		cmocka_unit_test(test_decode_byte_by_byte),
		cmocka_unit_test(test_decode_pipelined),
		cmocka_unit_test(test_decode_empty_frame),
		cmocka_unit_test(test_decode_oversized),
		cmocka_unit_test(test_decode_large_chunks),
		cmocka_unit_test(test_encode_json),
		cmocka_unit_test(test_skip_frame),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
