/* One client connection: read frames, validate, dispatch, reply; runs in its own process. */
#include "conn.h"
#include "frame.h"
#include "io.h"
#include "log.h"
#include "mem.h"
#include "ops.h"
#include "reply.h"
#include "request.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static int dispatch(const struct op_ctx *ctx, const struct agent_request *req, json_t *reply,
		    struct fvm_err *e)
{
	switch (req->op) {
	case OP_PING:
		return op_ping(ctx, reply, e);
	case OP_EXEC:
		return op_exec(ctx, &req->exec, req->id, reply, e);
	case OP_WRITE_FILE:
		return op_write_file(&req->write_file, reply, e);
	case OP_READ_FILE:
		return op_read_file(&req->read_file, reply, e);
	case OP_SET_CLOCK:
		return op_set_clock(req->set_clock_ns, reply, e);
	case OP_RESEED_ENTROPY:
		return op_reseed_entropy(&req->reseed, reply, e);
	case OP_SHUTDOWN:
		return op_shutdown_check(ctx, req->shutdown_reboot, reply, e);
	case OP_EVAL:
		return op_eval(ctx, &req->eval, reply, e);
	case OP_EVAL_CLOSE:
		return op_eval_close(&req->eval, reply, e);
	case OP_PUT_TREE:
		return op_put_tree(&req->put_tree, reply, e);
	case OP_GET_TREE:
		return op_get_tree(&req->get_tree, reply, e);
	case OP_NET_CONFIG:
		return op_net_config(&req->net, reply, e);
	case OP_STDIN:
		break; /* handle_frame drops these */
	}
	return errmsg(e, -EINVAL, "unhandled op");
}

/*
 * Handle one complete frame (payload is freed here, once parsed: the request keeps no
 * pointer into it). Returns 0 to keep reading, AGENT_EXIT_SHUTDOWN to stop the agent, or
 * -errno when the connection is unusable.
 */
static int handle_frame(const struct op_ctx *ctx, uint8_t *payload, size_t len)
{
	struct agent_request req;
	struct fvm_err e = FVM_ERR_INIT;
	json_t *reply = NULL;
	int ret;

	ret = agent_request_parse(payload, len, &req, &e);
	free(payload);
	if (req.op == OP_STDIN && req.root) {
		/* Input for an exec that has already ended: dropped, never answered. */
		log_debug("stdin frame after its exec ended: dropped");
		agent_request_free(&req);
		return 0;
	}
	/* The frame's share is held since its header; ops that read a lot add theirs. */
	if (ret == 0)
		ret = mem_reserve(mem_frame_cost(len) + mem_op_cost(&req), ctx->conn_fd, &e);
	if (ret == 0) {
		log_debug("request %s", agent_op_name(req.op));
		reply = reply_ok(req.id);
		ret = reply ? dispatch(ctx, &req, reply, &e)
			    : errmsg(&e, -ENOMEM, "allocate reply: %s", strerror(ENOMEM));
	}
	if (ret < 0) {
		json_decref(reply);
		reply = reply_error(req.id, e.msg);
	}
	ret = io_send_json(ctx->conn_fd, reply ? reply : json_null());
	if (ret == -EMSGSIZE) {
		/* Cannot happen within the documented limits, but the client must hear back. */
		json_decref(reply);
		reply = reply_error(req.id, "reply exceeds the frame size limit");
		ret = io_send_json(ctx->conn_fd, reply);
	}
	if (ret == 0 && req.op == OP_SHUTDOWN && json_is_true(json_object_get(reply, "ok")))
		ret = op_shutdown_finish(ctx, req.shutdown_reboot);
	json_decref(reply);
	agent_request_free(&req);
	return ret;
}

static void send_error(int fd, const char *msg)
{
	io_send_reply(fd, reply_error(NULL, msg));
}

/*
 * The header of a frame is in: reserve what its payload will cost before buffering it. A
 * frame the budget cannot take gets an error reply and is read and dropped, so the
 * connection stays usable. Returns 0, or -ECONNRESET when the client hung up meanwhile.
 */
static int admit_frame(const struct op_ctx *ctx, struct frame_decoder *dec)
{
	struct fvm_err e = FVM_ERR_INIT;
	char msg[sizeof(e.msg) + 64];
	int ret;

	ret = mem_reserve(mem_frame_cost(dec->need), ctx->conn_fd, &e);
	if (ret == 0 || ret == -ECONNRESET)
		return ret;
	snprintf(msg, sizeof(msg), "frame of %zu bytes refused: %s", dec->need, e.msg);
	send_error(ctx->conn_fd, msg);
	return frame_decoder_skip(dec);
}

int conn_serve(int fd, const struct agent_config *cfg, uint64_t agent_start_ms)
{
	static uint8_t rbuf[64 * 1024];
	struct conn_in in = { .fd = fd, .buf = rbuf, .cap = sizeof(rbuf) };
	const struct op_ctx ctx = { .conn_fd = fd, .in = &in, .cfg = cfg,
				    .agent_start_ms = agent_start_ms };
	struct frame_decoder dec;
	size_t used, avail;
	bool admitted = false;	/* the current frame's header went through admit_frame */
	char msg[160];
	int ret = 0;

	frame_decoder_init(&dec, AGENT_MAX_FRAME);
	for (;;) {
		if (in.pos == in.len) {
			ssize_t n = read(fd, rbuf, sizeof(rbuf));

			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0) {
				ret = -errno;
				if (ret != -ECONNRESET)
					log_errno(ret, "read from client fd %d", fd);
				goto out;
			}
			if (n == 0) {
				if (frame_decoder_partial(&dec)) {
					/* The peer may only have shut down its write side: tell it. */
					snprintf(msg, sizeof(msg),
						 "frame cut off: stream ended after %zu of %zu bytes",
						 dec.hdr_have + dec.have,
						 dec.hdr_have < FRAME_HEADER ? (size_t)FRAME_HEADER
									     : FRAME_HEADER + dec.need);
					send_error(fd, msg);
				}
				goto out;
			}
			in.pos = 0;
			in.len = (size_t)n;
		}
		/* The header alone first, so the payload is admitted before it is buffered. */
		avail = in.len - in.pos;
		if (!frame_decoder_header_done(&dec) && avail > FRAME_HEADER - dec.hdr_have)
			avail = FRAME_HEADER - dec.hdr_have;
		ret = frame_decoder_feed(&dec, rbuf + in.pos, avail, &used);
		in.pos += used;
		if (ret == -EMSGSIZE) {
			snprintf(msg, sizeof(msg), "frame of %zu bytes exceeds the limit of %u bytes",
				 dec.need, AGENT_MAX_FRAME);
			send_error(fd, msg);
			goto out;
		}
		if (ret < 0) {
			snprintf(msg, sizeof(msg), "receive frame: %s", strerror(-ret));
			send_error(fd, msg);
			goto out;
		}
		if (ret == FRAME_MORE && !admitted && frame_decoder_header_done(&dec)) {
			admitted = true;
			ret = admit_frame(&ctx, &dec);
			if (ret < 0)
				goto out;
		}
		if (ret == FRAME_SKIPPED)
			admitted = false;
		if (ret == FRAME_READY) {
			size_t len;
			uint8_t *payload = frame_decoder_take(&dec, &len);

			admitted = false;
			ret = handle_frame(&ctx, payload, len);
			mem_release();
			if (ret != 0)
				goto out;
		}
	}
out:
	frame_decoder_free(&dec);
	return ret == AGENT_EXIT_SHUTDOWN ? AGENT_EXIT_SHUTDOWN : 0;
}
