/* Reply envelopes and byte-field encoding (the non-UTF-8 output rule lives here). */
#include "reply.h"
#include "util/base64.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int reply_set(json_t *reply, const char *key, json_t *value)
{
	/* json_object_set_new consumes value even on failure. */
	if (!value || json_object_set_new(reply, key, value) < 0)
		return -ENOMEM;
	return 0;
}

json_t *reply_ok(json_t *id)
{
	json_t *r = json_object();

	if (!r)
		return NULL;
	if (reply_set(r, "ok", json_true()) < 0 ||
	    (id && reply_set(r, "id", json_incref(id)) < 0)) {
		json_decref(r);
		return NULL;
	}
	return r;
}

json_t *reply_error(json_t *id, const char *msg)
{
	json_t *r = json_object();
	json_t *text = json_string(msg);

	/* Messages may quote client bytes; never let them make the reply unencodable. */
	if (!text) {
		char *clean = strdup(msg);

		if (clean)
			for (char *p = clean; *p; p++)
				if ((unsigned char)*p >= 0x80 || (unsigned char)*p < 0x20)
					*p = '?';
		text = clean ? json_string(clean) : NULL;
		free(clean);
	}
	if (!r || !text)
		goto fail;
	if (reply_set(r, "ok", json_false()) < 0 ||
	    (id && reply_set(r, "id", json_incref(id)) < 0))
		goto fail;
	if (reply_set(r, "error", text) < 0) {
		text = NULL;
		goto fail;
	}
	return r;
fail:
	json_decref(text);
	json_decref(r);
	return NULL;
}

int reply_set_base64(json_t *reply, const char *key, const uint8_t *data, size_t len)
{
	char *text = malloc(base64_encoded_size(len));
	int ret;

	if (!text)
		return -ENOMEM;
	base64_encode(data, len, text);
	ret = reply_set(reply, key, json_string_nocheck(text));
	free(text);
	return ret;
}

int reply_set_bytes(json_t *reply, const char *key, const uint8_t *data, size_t len,
		    bool force_base64)
{
	char enc_key[64];
	json_t *s = NULL;
	int ret;

	snprintf(enc_key, sizeof(enc_key), "%s_encoding", key);
	/* jansson validates UTF-8 (overlongs, surrogates, range) and escapes NUL/controls. */
	if (!force_base64)
		s = json_stringn((const char *)(data ? data : (const uint8_t *)""), len);
	if (s) {
		ret = reply_set(reply, key, s);
		if (ret == 0)
			ret = reply_set(reply, enc_key, json_string("utf-8"));
		return ret;
	}
	ret = reply_set_base64(reply, key, data, len);
	if (ret == 0)
		ret = reply_set(reply, enc_key, json_string("base64"));
	return ret;
}
