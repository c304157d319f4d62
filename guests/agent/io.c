/* Socket write helpers and the monotonic clock the ops measure with. */
#include "io.h"
#include "agent.h"
#include "frame.h"
#include "log.h"
#include "util/fdio.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int io_send_json(int fd, const json_t *msg)
{
	uint8_t *frame = NULL;
	size_t len;
	int ret;

	ret = frame_encode_json(msg, AGENT_MAX_FRAME, &frame, &len);
	if (ret < 0) {
		log_errno(ret, "encode reply frame");
		goto out;
	}
	ret = fd_write_all(fd, frame, len);
	/* A client that hung up is routine, not worth a console line. */
	if (ret < 0 && ret != -EPIPE && ret != -ECONNRESET)
		log_errno(ret, "send reply on fd %d", fd);
out:
	free(frame);
	return ret;
}

int io_send_reply(int fd, json_t *msg)
{
	int ret;

	if (!msg)
		return log_errno(-ENOMEM, "build reply");
	ret = io_send_json(fd, msg);
	json_decref(msg);
	return ret;
}

uint64_t io_now_ms(void)
{
	struct timespec ts;

	/* CLOCK_MONOTONIC cannot fail with a valid clock id; set_clock must not skew it. */
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

int conn_in_read(struct conn_in *in, void *out, size_t len, size_t *got)
{
	uint8_t *dst = out;

	*got = 0;
	while (*got < len) {
		if (in->pos < in->len) {
			size_t n = in->len - in->pos < len - *got ? in->len - in->pos : len - *got;

			memcpy(dst + *got, in->buf + in->pos, n);
			in->pos += n;
			*got += n;
			continue;
		}
		ssize_t n = read(in->fd, dst + *got, len - *got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -ECONNRESET;
		*got += (size_t)n;
	}
	return 0;
}
