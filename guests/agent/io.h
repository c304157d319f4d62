/* Blocking socket I/O helpers for one connection. */
#ifndef FORKVM_AGENT_IO_H
#define FORKVM_AGENT_IO_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/* Encode msg as one frame and send it. Returns 0 or -errno. */
int io_send_json(int fd, const json_t *msg);

/* Send msg, then drop it (convenience for reply paths). Returns io_send_json's result. */
int io_send_reply(int fd, json_t *msg);

/*
 * A connection's input: the bytes read ahead of the current frame stay in buf, so an op that
 * reads more frames of its own (an exec's stdin frames) takes them from here first.
 */
struct conn_in {
	int fd;
	uint8_t *buf;
	size_t cap;
	size_t pos, len;	/* buffered bytes: buf[pos .. len) */
};

/* True when bytes are buffered (the fd may not poll readable for them). */
static inline int conn_in_buffered(const struct conn_in *in)
{
	return in->pos < in->len;
}

/* Read exactly len bytes, buffered ones first: 0, or -ECONNRESET at the end of the stream
 * (*got says how far it came), or -errno. Blocks. */
int conn_in_read(struct conn_in *in, void *out, size_t len, size_t *got);

/* Monotonic milliseconds, for uptime and durations. */
uint64_t io_now_ms(void);

#endif
