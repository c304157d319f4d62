/* Pure mailbox encoding and validation for probe commands. */
#include <errno.h>

#include "devices/probe_dev.h"

#define barrier() __asm__ volatile("" ::: "memory")

int probe_request_check(const struct probe_mailbox *mb, const struct probe_request *req)
{
	switch (req->cmd) {
	case PROBE_CMD_PING:
	case PROBE_CMD_COUNTER:
	case PROBE_CMD_CRASH:
		return 0;
	case PROBE_CMD_FILL:
	case PROBE_CMD_CHECKSUM:
		return probe_range_ok(mb, req->arg[0], req->arg[1]) ? 0 : -ERANGE;
	case PROBE_CMD_VSOCK_STATS:
		return 0;
	case PROBE_CMD_VSOCK_LISTEN:
		return (req->arg[1] & 4095) == 0 && probe_range_ok(mb, req->arg[1], PROBE_VSOCK_AREA)
			       ? 0 : -ERANGE;
	case PROBE_CMD_BLK_IO:
		return probe_blk_args_ok(mb, req->arg[2], req->arg[3], req->arg[4]) ? 0 : -ERANGE;
	case PROBE_CMD_NET_UP:
		return probe_net_up_ok(mb, req->arg[0], req->arg[3], req->arg[4]) ? 0 : -ERANGE;
	case PROBE_CMD_NET_SEND:
		return req->arg[0] >= 1 && req->arg[0] <= PROBE_NET_SEND_MAX && req->arg[1] >= 14 &&
		       req->arg[1] <= PROBE_NET_FRAME_MAX && req->arg[3] <= 0xffff ? 0 : -ERANGE;
	case PROBE_CMD_NET_RECV:
		return probe_range_ok(mb, req->arg[0], req->arg[1]) && req->arg[2] <= PROBE_NET_QN
			       ? 0 : -ERANGE;
	case PROBE_CMD_NET_STATS:
		return 0;
	case PROBE_CMD_DIRTY: {
		uint64_t span = probe_dirty_span(req->arg[1], req->arg[2]);
		if (req->arg[1] == 0)
			return 0; /* stop */
		return span && probe_range_ok(mb, req->arg[0], span) ? 0 : -ERANGE;
	}
	default:
		return -EINVAL;
	}
}

uint64_t probe_request_encode(struct probe_mailbox *mb, const struct probe_request *req)
{
	/* Continue from the sequence in guest RAM so a restored guest keeps counting. */
	uint64_t seq = mb->cmd_seq + 1;

	mb->cmd = req->cmd;
	for (int i = 0; i < 6; i++)
		mb->arg[i] = req->arg[i];
	barrier();
	*(volatile uint64_t *)&mb->cmd_seq = seq;
	return seq;
}

int probe_result_decode(const struct probe_mailbox *mb, uint64_t seq, struct probe_result *res)
{
	if (*(const volatile uint64_t *)&mb->done_seq != seq)
		return -EAGAIN;
	barrier();
	res->status = mb->status;
	for (int i = 0; i < 4; i++)
		res->result[i] = mb->result[i];
	return 0;
}

const char *probe_cmd_name(uint32_t cmd)
{
	switch (cmd) {
	case PROBE_CMD_PING: return "ping";
	case PROBE_CMD_FILL: return "fill";
	case PROBE_CMD_CHECKSUM: return "checksum";
	case PROBE_CMD_DIRTY: return "dirty";
	case PROBE_CMD_COUNTER: return "counter";
	case PROBE_CMD_CRASH: return "crash";
	case PROBE_CMD_VSOCK_LISTEN: return "vsock_listen";
	case PROBE_CMD_VSOCK_STATS: return "vsock_stats";
	case PROBE_CMD_BLK_IO: return "blk_io";
	case PROBE_CMD_NET_UP: return "net_up";
	case PROBE_CMD_NET_SEND: return "net_send";
	case PROBE_CMD_NET_RECV: return "net_recv";
	case PROBE_CMD_NET_STATS: return "net_stats";
	default: return "unknown";
	}
}

const char *probe_status_name(uint32_t status)
{
	switch (status) {
	case PROBE_OK: return "ok";
	case PROBE_EINVAL: return "unknown command";
	case PROBE_ERANGE: return "range outside the work area";
	case PROBE_ENODEV: return "no such virtio device at that address";
	case PROBE_EIO: return "virtio negotiation failed, or the device stopped answering";
	case PROBE_ENOTUP: return "the NIC is not set up (net_up first)";
	default: return "unknown status";
	}
}

uint64_t probe_hash_memory(const uint8_t *host, uint64_t len)
{
	uint64_t h = PROBE_HASH_INIT;

	for (uint64_t off = 0; off + 4096 <= len; off += 4096)
		h = probe_hash_chain(h, probe_page_hash((const uint64_t *)(host + off)));
	return h;
}
