/* SHA-256 hex digests for the image manifest (OpenSSL's libcrypto does the hashing). */
#ifndef FORKVM_IMAGE_SHA256_H
#define FORKVM_IMAGE_SHA256_H

#include <stddef.h>

/* One-shot digest as 64 lowercase hex digits + NUL; returns 0 or -EIO. */
int sha256_hex(const void *data, size_t len, char hex[65]);

#endif
