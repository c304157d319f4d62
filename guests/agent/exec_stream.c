/* Streamed exec output: event frames sent while the command runs (docs/AGENT.md, "stream"). */
#include "exec.h"
#include "io.h"
#include "reply.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static const char *const stream_name[2] = { "stdout", "stderr" };

/*
 * How many bytes at the end of buf start a UTF-8 character whose remaining bytes have not
 * arrived yet (0 … 3). Bytes that can never become valid are not held: they go out (as
 * base64) with the rest.
 */
static size_t cut_char_len(const uint8_t *buf, size_t len)
{
	for (size_t back = 1; back <= 3 && back <= len; back++) {
		uint8_t b = buf[len - back];
		size_t need;

		if ((b & 0xc0) == 0x80)
			continue; /* a continuation byte: the lead is further back */
		need = (b & 0xe0) == 0xc0 ? 2 : (b & 0xf0) == 0xe0 ? 3 : (b & 0xf8) == 0xf0 ? 4 : 1;
		return need > back ? back : 0;
	}
	return 0;
}

static int send_event(struct exec_stream *st, int which, const uint8_t *data, size_t n,
		      struct fvm_err *e)
{
	json_t *ev = json_object();
	int ret = -ENOMEM;

	if (ev && reply_set(ev, "event", json_string(stream_name[which])) == 0 &&
	    (!st->id || reply_set(ev, "id", json_incref(st->id)) == 0) &&
	    reply_set_bytes(ev, "data", data, n, st->force_base64) == 0)
		ret = io_send_json(st->conn_fd, ev);
	json_decref(ev);
	if (ret == -ENOMEM)
		return errmsg(e, ret, "build %s event: %s", stream_name[which], strerror(ENOMEM));
	if (ret < 0)
		return errmsg(e, ret, "send %s event: %s", stream_name[which], strerror(-ret));
	st->bytes[which] += n;
	return 0;
}

int exec_stream_emit(struct exec_stream *st, int which, const uint8_t *data, size_t n,
		     bool at_end, struct fvm_err *e)
{
	size_t held = st->tail_len[which], total = held + n, keep;
	uint8_t *buf;
	int ret = 0;

	if (total == 0)
		return 0;
	buf = malloc(total);
	if (!buf)
		return errmsg(e, -ENOMEM, "%s event buffer: %s", stream_name[which],
				  strerror(ENOMEM));
	memcpy(buf, st->tail[which], held);
	if (n)
		memcpy(buf + held, data, n);
	keep = at_end || st->force_base64 ? 0 : cut_char_len(buf, total);
	if (total > keep)
		ret = send_event(st, which, buf, total - keep, e);
	if (ret == 0) {
		memcpy(st->tail[which], buf + total - keep, keep);
		st->tail_len[which] = keep;
	}
	free(buf);
	return ret;
}
