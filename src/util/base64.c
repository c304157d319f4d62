/* Strict base64 codec: rejects bad characters, bad padding and non-canonical tails. */
#include "util/base64.h"

#include <errno.h>
#include <stdlib.h>

static const char alphabet[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

size_t base64_encoded_size(size_t len)
{
	return (len + 2) / 3 * 4 + 1;
}

void base64_encode(const uint8_t *in, size_t len, char *out)
{
	size_t i = 0;
	char *p = out;

	for (; i + 3 <= len; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];

		*p++ = alphabet[v >> 18 & 63];
		*p++ = alphabet[v >> 12 & 63];
		*p++ = alphabet[v >> 6 & 63];
		*p++ = alphabet[v & 63];
	}
	if (len - i == 1) {
		uint32_t v = (uint32_t)in[i] << 16;

		*p++ = alphabet[v >> 18 & 63];
		*p++ = alphabet[v >> 12 & 63];
		*p++ = '=';
		*p++ = '=';
	} else if (len - i == 2) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;

		*p++ = alphabet[v >> 18 & 63];
		*p++ = alphabet[v >> 12 & 63];
		*p++ = alphabet[v >> 6 & 63];
		*p++ = '=';
	}
	*p = '\0';
}

/* 0..63 for an alphabet character, -1 otherwise. */
static int sextet(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

int base64_decode(const char *text, size_t len, uint8_t **out, size_t *out_len)
{
	uint8_t *buf;
	size_t n = 0;

	if (len % 4)
		return -EINVAL;
	/* +1 so an empty input still yields a non-NULL buffer. */
	buf = malloc(len / 4 * 3 + 1);
	if (!buf)
		return -ENOMEM;
	for (size_t i = 0; i < len; i += 4) {
		int a = sextet(text[i]), b = sextet(text[i + 1]);
		int c = sextet(text[i + 2]), d = sextet(text[i + 3]);
		int last = i + 4 == len;

		if (a < 0 || b < 0)
			goto bad;
		buf[n++] = (uint8_t)(a << 2 | b >> 4);
		if (last && text[i + 2] == '=' && text[i + 3] == '=') {
			/* Canonical form: the unused low bits must be zero. */
			if (b & 15)
				goto bad;
			break;
		}
		if (c < 0)
			goto bad;
		buf[n++] = (uint8_t)((b & 15) << 4 | c >> 2);
		if (last && text[i + 3] == '=') {
			if (c & 3)
				goto bad;
			break;
		}
		if (d < 0)
			goto bad;
		buf[n++] = (uint8_t)((c & 3) << 6 | d);
	}
	*out = buf;
	*out_len = n;
	return 0;
bad:
	free(buf);
	return -EINVAL;
}
