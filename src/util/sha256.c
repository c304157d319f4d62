/* SHA-256 via libcrypto's EVP digests: one-shot hex, streaming, hex conversion. */
#include "util/sha256.h"

#include <errno.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>

void sha256_to_hex(const uint8_t in[SHA256_LEN], char hex[65])
{
	static const char digits[] = "0123456789abcdef";

	for (int i = 0; i < SHA256_LEN; i++) {
		hex[2 * i] = digits[in[i] >> 4];
		hex[2 * i + 1] = digits[in[i] & 15];
	}
	hex[64] = '\0';
}

static int nibble(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

int sha256_from_hex(const char *hex, uint8_t out[SHA256_LEN])
{
	if (strlen(hex) != 64)
		return -EINVAL;
	for (int i = 0; i < SHA256_LEN; i++) {
		int hi = nibble(hex[2 * i]), lo = nibble(hex[2 * i + 1]);

		if (hi < 0 || lo < 0)
			return -EINVAL;
		out[i] = (uint8_t)(hi << 4 | lo);
	}
	return 0;
}

int sha256_hex(const void *data, size_t len, char hex[65])
{
	unsigned char digest[EVP_MAX_MD_SIZE];
	unsigned int n = 0;

	if (!EVP_Digest(data, len, digest, &n, EVP_sha256(), NULL) || n != SHA256_LEN)
		return -EIO;
	sha256_to_hex(digest, hex);
	return 0;
}

int sha256_init(struct sha256_ctx *c)
{
	c->md = EVP_MD_CTX_new();
	if (!c->md)
		return -ENOMEM;
	if (!EVP_DigestInit_ex(c->md, EVP_sha256(), NULL)) {
		sha256_abort(c);
		return -EIO;
	}
	return 0;
}

int sha256_update(struct sha256_ctx *c, const void *data, size_t len)
{
	return EVP_DigestUpdate(c->md, data, len) ? 0 : -EIO;
}

int sha256_final(struct sha256_ctx *c, uint8_t out[SHA256_LEN])
{
	unsigned int n = 0;
	int ret = EVP_DigestFinal_ex(c->md, out, &n) && n == SHA256_LEN ? 0 : -EIO;

	sha256_abort(c);
	return ret;
}

void sha256_abort(struct sha256_ctx *c)
{
	EVP_MD_CTX_free(c->md);
	c->md = NULL;
}
