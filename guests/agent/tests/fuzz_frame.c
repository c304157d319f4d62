/* libFuzzer harness: arbitrary bytes through the frame decoder, validator and reply encoder. */
#include "frame.h"
#include "reply.h"
#include "request.h"

#include <stdlib.h>
#include <string.h>

/* Small, so the fuzzer also reaches the oversized-frame path. */
#define FUZZ_MAX_FRAME (64 * 1024)

/* What the agent does with one frame, minus the side effects; then check the reply
 * survives its own encode/decode round trip. */
static void handle(const uint8_t *payload, size_t len)
{
	struct frame_decoder d;
	struct agent_request req;
	struct fvm_err e = FVM_ERR_INIT;
	json_t *reply, *back;
	uint8_t *frame, *again;
	size_t frame_len, used, again_len;

	if (agent_request_parse(payload, len, &req, &e) == 0) {
		reply = reply_ok(req.id);
		/* Echo the payload as if it were command output: exercises the UTF-8 rule. */
		if (reply && reply_set_bytes(reply, "stdout", payload, len, false) < 0)
			abort();
	} else {
		reply = reply_error(req.id, e.msg);
	}
	if (!reply)
		abort();
	if (frame_encode_json(reply, 4 * FUZZ_MAX_FRAME, &frame, &frame_len) < 0)
		abort(); /* every reply must be encodable */
	frame_decoder_init(&d, 4 * FUZZ_MAX_FRAME);
	if (frame_decoder_feed(&d, frame, frame_len, &used) != FRAME_READY || used != frame_len)
		abort();
	again = frame_decoder_take(&d, &again_len);
	back = json_loadb((const char *)again, again_len, JSON_ALLOW_NUL, NULL);
	if (!back || !json_equal(back, reply))
		abort(); /* replies must be valid JSON that means what we built */
	json_decref(back);
	free(again);
	free(frame);
	frame_decoder_free(&d);
	json_decref(reply);
	agent_request_free(&req);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct frame_decoder d;
	size_t pos = 0, step;

	if (size < 1)
		return 0;
	/* The first byte picks the read size, so frames arrive split in varied ways. */
	step = data[0] ? data[0] : size;
	data++;
	size--;
	frame_decoder_init(&d, FUZZ_MAX_FRAME);
	while (pos < size) {
		size_t chunk = size - pos < step ? size - pos : step, used, len;
		int ret;

		/* As the client connection does (step bit 1): the header alone first; an odd step
		 * skips the frame (a refused one: its payload is dropped, the stream stays in
		 * sync). Otherwise header and payload arrive together, as from an interpreter. */
		if ((step & 3) && !frame_decoder_header_done(&d) && chunk > FRAME_HEADER - d.hdr_have)
			chunk = FRAME_HEADER - d.hdr_have;
		ret = frame_decoder_feed(&d, data + pos, chunk, &used);
		pos += used;
		if (ret < 0)
			break; /* oversized: the agent replies and closes */
		if (ret == FRAME_MORE && (step & 1) && frame_decoder_header_done(&d) && !d.skip &&
		    d.have == 0 && frame_decoder_skip(&d) < 0)
			abort();
		if (ret == FRAME_READY) {
			uint8_t *payload = frame_decoder_take(&d, &len);

			handle(payload, len);
			free(payload);
		}
	}
	frame_decoder_free(&d);
	return 0;
}
