/* Reply construction: ok/error envelopes and byte fields that always stay valid JSON. */
#ifndef FORKVM_AGENT_REPLY_H
#define FORKVM_AGENT_REPLY_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* {"ok":true} plus "id" when id is non-NULL; NULL on allocation failure. */
json_t *reply_ok(json_t *id);

/* {"ok":false,"error":msg} plus "id"; invalid UTF-8 in msg is replaced by '?'. */
json_t *reply_error(json_t *id, const char *msg);

/*
 * Set key to the bytes: a plain string when they are valid UTF-8 (and !force_base64),
 * else base64; "<key>_encoding" says which ("utf-8" or "base64"). Returns 0 or -ENOMEM.
 */
int reply_set_bytes(json_t *reply, const char *key, const uint8_t *data, size_t len,
		    bool force_base64);

/* Set key to the base64 of the bytes (no encoding field: the protocol fixes it). */
int reply_set_base64(json_t *reply, const char *key, const uint8_t *data, size_t len);

/* json_object_set_new that reports failure as -ENOMEM. */
int reply_set(json_t *reply, const char *key, json_t *value);

#endif
