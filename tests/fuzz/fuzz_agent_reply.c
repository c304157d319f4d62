/* libFuzzer harness: the host side of the guest agent (src/agent/agent_client.c), which reads
 * what a guest sends back: the vsock "OK <port>\n" answer line, and length-prefixed JSON reply
 * frames. The guest is untrusted, so these are parsers of untrusted bytes in the VMM's CLI.
 * Input: byte 0, bit 0 picks the exchange (0: one request/reply, 1: CONNECT answer line); the
 * rest is everything the guest side sends, after which it closes. Runs over a socketpair. */
#include "fuzz_util.h"
#include "agent/agent_client.h"
#include "util/clock.h"
#include "util/errmsg.h"

#include <errno.h>
#include <sys/socket.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	int sv[2], ret;
	struct fvm_err err = FVM_ERR_INIT;
	json_t *req, *reply = NULL;
	size_t off = 0;

	if (size < 1 || size > 64 * 1024)
		return 0; /* fits the socket buffer: the guest side is written before the call */
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv))
		abort();
	while (off < size - 1) {
		ssize_t n = write(sv[1], data + 1 + off, size - 1 - off);

		if (n <= 0)
			abort();
		off += (size_t)n;
	}
	shutdown(sv[1], SHUT_WR);
	err.msg[0] = '\0';
	if (data[0] & 1) {
		ret = agent_vsock_connect(sv[0], "fuzz.vsock", 52, deadline_after_ms(2000), -1,
					  &err);
	} else {
		req = json_pack("{s:s,s:i}", "op", "ping", "id", 1);
		if (!req)
			abort();
		ret = agent_request(sv[0], req, &reply, deadline_after_ms(2000), -1, &err);
		json_decref(req);
		if (ret == 0 && !json_is_object(reply))
			abort();
		json_decref(reply);
	}
	if (ret == -ETIMEDOUT)
		abort(); /* everything was sent and the peer closed: waiting longer is a hang */
	if (ret && !err.msg[0])
		abort(); /* every failure says why */
	close(sv[0]);
	close(sv[1]);
	return 0;
}
