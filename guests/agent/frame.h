/* Length-prefixed frames: 4-byte big-endian payload length, then the JSON payload. */
#ifndef FORKVM_AGENT_FRAME_H
#define FORKVM_AGENT_FRAME_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FRAME_HEADER 4

enum { FRAME_MORE = 0, FRAME_READY = 1, FRAME_SKIPPED = 2 };

/* Incremental decoder: bytes arrive in any split, frames come out whole. */
struct frame_decoder {
	size_t max;		/* largest payload accepted */
	uint8_t hdr[FRAME_HEADER];
	size_t hdr_have;
	size_t need;		/* announced payload length, valid once hdr_have == 4 */
	uint8_t *buf;		/* payload so far, grown as bytes arrive */
	size_t have, cap;
	bool ready;
	bool skip;		/* the payload is being read and dropped (frame_decoder_skip) */
};

void frame_decoder_init(struct frame_decoder *d, size_t max);
void frame_decoder_free(struct frame_decoder *d);

/*
 * Consume up to len bytes; *used says how many. Returns FRAME_MORE (all consumed, no
 * frame yet), FRAME_READY (take it with frame_decoder_take before feeding again),
 * FRAME_SKIPPED (the last byte of a skipped frame was consumed; the decoder is reset),
 * -EMSGSIZE (announced length above max; d->need holds it; the stream is lost),
 * -ENOMEM. A caller that wants to decide about a frame before its payload is buffered
 * feeds the header bytes alone first (frame_decoder_header_done, frame_decoder_skip).
 */
int frame_decoder_feed(struct frame_decoder *d, const uint8_t *data, size_t len, size_t *used);

/* Drop the frame whose header was read: its payload is consumed but not kept, so the
 * stream stays in sync. -EINVAL when no header is complete or the frame is ready. */
int frame_decoder_skip(struct frame_decoder *d);

/* True once the header of the current frame is complete and its payload not yet whole. */
bool frame_decoder_header_done(const struct frame_decoder *d);

/* Hand over the ready payload (malloc'd, NUL-terminated past *len) and reset. */
uint8_t *frame_decoder_take(struct frame_decoder *d, size_t *len);

/* True when part of a frame is buffered: EOF now means the frame was cut off. */
bool frame_decoder_partial(const struct frame_decoder *d);

void frame_put_len(uint8_t hdr[FRAME_HEADER], uint32_t len);
uint32_t frame_get_len(const uint8_t hdr[FRAME_HEADER]);

/* Serialize msg compactly into a malloc'd frame; -EMSGSIZE when above max, -ENOMEM. */
int frame_encode_json(const json_t *msg, size_t max, uint8_t **out, size_t *out_len);

#endif
