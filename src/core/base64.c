/* base64 encoding for JSON replies that carry guest memory. */
#include "core/base64.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

char *base64_encode(const uint8_t *data, size_t len)
{
	static const char alphabet[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	char *out = malloc((len + 2) / 3 * 4 + 1), *p = out;

	if (!out)
		return NULL;
	for (size_t i = 0; i < len; i += 3) {
		uint32_t v = (uint32_t)data[i] << 16;
		if (i + 1 < len)
			v |= (uint32_t)data[i + 1] << 8;
		if (i + 2 < len)
			v |= data[i + 2];
		*p++ = alphabet[(v >> 18) & 63];
		*p++ = alphabet[(v >> 12) & 63];
		*p++ = i + 1 < len ? alphabet[(v >> 6) & 63] : '=';
		*p++ = i + 2 < len ? alphabet[v & 63] : '=';
	}
	*p = '\0';
	return out;
}

static int b64_value(char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	return c == '+' ? 62 : c == '/' ? 63 : -1;
}

int base64_decode(const char *text, uint8_t **out, size_t *outlen)
{
	size_t len = strlen(text), n = 0;
	uint8_t *buf;

	if (len % 4)
		return -EINVAL;
	buf = malloc(len / 4 * 3 + 1);
	if (!buf)
		return -ENOMEM;
	for (size_t i = 0; i < len; i += 4) {
		int v[4];
		for (int k = 0; k < 4; k++) {
			v[k] = text[i + k] == '=' && i + 4 == len && k >= 2 ? 0 : b64_value(text[i + k]);
			if (v[k] < 0) {
				free(buf);
				return -EINVAL;
			}
		}
		uint32_t w = (uint32_t)(v[0] << 18 | v[1] << 12 | v[2] << 6 | v[3]);
		buf[n++] = (uint8_t)(w >> 16);
		if (text[i + 2] != '=')
			buf[n++] = (uint8_t)(w >> 8);
		if (text[i + 3] != '=')
			buf[n++] = (uint8_t)w;
	}
	*out = buf;
	*outlen = n;
	return 0;
}
