/* Standard base64 (RFC 4648, padded) for binary payloads inside JSON strings. */
#ifndef FORKVM_BASE64_H
#define FORKVM_BASE64_H

#include <stddef.h>
#include <stdint.h>

/* Encoded length including the terminating NUL. */
size_t base64_encoded_size(size_t len);

/* Encode len bytes into out (base64_encoded_size(len) bytes); always NUL-terminates. */
void base64_encode(const uint8_t *in, size_t len, char *out);

/*
 * Decode text (len chars, padding required, no whitespace) into a fresh malloc'd
 * buffer. Returns 0, -EINVAL for malformed text, -ENOMEM. *out is set only on success
 * (never NULL on success, even for empty input).
 */
int base64_decode(const char *text, size_t len, uint8_t **out, size_t *out_len);

#endif
