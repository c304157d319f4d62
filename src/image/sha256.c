/* SHA-256 via libcrypto's one-shot EVP digest. */
#include "image/sha256.h"

#include <errno.h>
#include <openssl/evp.h>
#include <stdio.h>

int sha256_hex(const void *data, size_t len, char hex[65])
{
	unsigned char digest[EVP_MAX_MD_SIZE];
	unsigned int n = 0;

	if (!EVP_Digest(data, len, digest, &n, EVP_sha256(), NULL) || n != 32)
		return -EIO;
	for (unsigned int i = 0; i < n; i++)
		snprintf(hex + 2 * i, 3, "%02x", digest[i]);
	return 0;
}
