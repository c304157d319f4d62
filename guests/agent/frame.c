/* Frame encoding and the incremental decoder; pure, so unit tests and the fuzzer drive it. */
#include "frame.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Payload buffers grow with the bytes actually received, so a client announcing a huge
 * frame and then stalling costs little memory. */
#define FRAME_MIN_CHUNK 4096u

void frame_put_len(uint8_t hdr[FRAME_HEADER], uint32_t len)
{
	hdr[0] = (uint8_t)(len >> 24);
	hdr[1] = (uint8_t)(len >> 16);
	hdr[2] = (uint8_t)(len >> 8);
	hdr[3] = (uint8_t)len;
}

uint32_t frame_get_len(const uint8_t hdr[FRAME_HEADER])
{
	return (uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 | (uint32_t)hdr[2] << 8 | hdr[3];
}

void frame_decoder_init(struct frame_decoder *d, size_t max)
{
	memset(d, 0, sizeof(*d));
	d->max = max;
}

void frame_decoder_free(struct frame_decoder *d)
{
	free(d->buf);
	frame_decoder_init(d, d->max);
}

bool frame_decoder_partial(const struct frame_decoder *d)
{
	return d->hdr_have > 0 || d->ready;
}

bool frame_decoder_header_done(const struct frame_decoder *d)
{
	return d->hdr_have == FRAME_HEADER && !d->ready;
}

int frame_decoder_skip(struct frame_decoder *d)
{
	if (!frame_decoder_header_done(d) || d->skip)
		return -EINVAL;
	free(d->buf);
	d->buf = NULL;
	d->cap = 0;
	d->skip = true;
	return 0;
}

/* Make room for want payload bytes (want <= d->need + 1 for the NUL). */
static int reserve(struct frame_decoder *d, size_t want)
{
	size_t cap = d->cap ? d->cap : FRAME_MIN_CHUNK;
	uint8_t *nbuf;

	if (want <= d->cap)
		return 0;
	while (cap < want)
		cap *= 2;
	if (cap > d->need + 1)
		cap = d->need + 1;
	nbuf = realloc(d->buf, cap);
	if (!nbuf)
		return -ENOMEM;
	d->buf = nbuf;
	d->cap = cap;
	return 0;
}

int frame_decoder_feed(struct frame_decoder *d, const uint8_t *data, size_t len, size_t *used)
{
	size_t pos = 0;
	int ret = FRAME_MORE;

	if (d->ready)
		return -EBUSY; /* caller forgot frame_decoder_take */
	while (d->hdr_have < FRAME_HEADER && pos < len)
		d->hdr[d->hdr_have++] = data[pos++];
	if (d->hdr_have < FRAME_HEADER)
		goto out;
	d->need = frame_get_len(d->hdr);
	if (d->need > d->max) {
		ret = -EMSGSIZE;
		goto out;
	}
	if (d->skip) {
		size_t chunk = d->need - d->have < len - pos ? d->need - d->have : len - pos;

		d->have += chunk;
		pos += chunk;
		if (d->have == d->need) {
			frame_decoder_init(d, d->max);
			ret = FRAME_SKIPPED;
		}
		goto out;
	}
	if (len - pos > 0 || d->have == d->need) {
		size_t chunk = d->need - d->have;

		if (chunk > len - pos)
			chunk = len - pos;
		ret = reserve(d, d->have + chunk + 1);
		if (ret < 0)
			goto out;
		memcpy(d->buf + d->have, data + pos, chunk);
		d->have += chunk;
		pos += chunk;
	}
	if (d->have == d->need) {
		d->buf[d->have] = '\0';
		d->ready = true;
		ret = FRAME_READY;
	}
out:
	*used = pos;
	return ret;
}

uint8_t *frame_decoder_take(struct frame_decoder *d, size_t *len)
{
	uint8_t *payload = d->buf;

	if (!d->ready)
		return NULL;
	*len = d->have;
	d->buf = NULL;
	frame_decoder_init(d, d->max);
	return payload;
}

int frame_encode_json(const json_t *msg, size_t max, uint8_t **out, size_t *out_len)
{
	const size_t flags = JSON_COMPACT | JSON_ENCODE_ANY;
	size_t size = json_dumpb(msg, NULL, 0, flags);
	uint8_t *buf;

	if (size == 0)
		return -EINVAL; /* jansson reports every failure as 0 bytes */
	if (size > max || size > UINT32_MAX)
		return -EMSGSIZE;
	buf = malloc(FRAME_HEADER + size);
	if (!buf)
		return -ENOMEM;
	if (json_dumpb(msg, (char *)buf + FRAME_HEADER, size, flags) != size) {
		free(buf);
		return -EIO;
	}
	frame_put_len(buf, (uint32_t)size);
	*out = buf;
	*out_len = FRAME_HEADER + size;
	return 0;
}
