/* SHA-256 (OpenSSL's libcrypto does the hashing): one-shot hex digests and a streaming context. */
#ifndef FORKVM_CORE_SHA256_H
#define FORKVM_CORE_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define SHA256_LEN 32

/* One-shot digest as 64 lowercase hex digits + NUL; returns 0 or -EIO. */
int sha256_hex(const void *data, size_t len, char hex[65]);

/* Streaming: init, any number of updates, final (which frees the context). -ENOMEM / -EIO. */
struct sha256_ctx {
	void *md; /* EVP_MD_CTX */
};
int sha256_init(struct sha256_ctx *c);
int sha256_update(struct sha256_ctx *c, const void *data, size_t len);
int sha256_final(struct sha256_ctx *c, uint8_t out[SHA256_LEN]);
/* Free a context that will not reach sha256_final (safe on a finished or zeroed one). */
void sha256_abort(struct sha256_ctx *c);

/* 32 bytes as 64 lowercase hex digits + NUL; parse back (0, or -EINVAL). */
void sha256_to_hex(const uint8_t in[SHA256_LEN], char hex[65]);
int sha256_from_hex(const char *hex, uint8_t out[SHA256_LEN]);

#endif
