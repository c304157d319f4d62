/* Standard base64 (RFC 4648) for binary data in JSON replies. */
#ifndef FORKVM_BASE64_H
#define FORKVM_BASE64_H

#include <stddef.h>
#include <stdint.h>

/* Returns a malloc'd NUL-terminated string, or NULL on allocation failure. */
char *base64_encode(const uint8_t *data, size_t len);
/* Strict RFC 4648 decode into a malloc'd buffer: 0, -EINVAL on bad input, -ENOMEM. */
int base64_decode(const char *text, uint8_t **out, size_t *outlen);

#endif
