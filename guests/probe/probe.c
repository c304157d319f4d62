/* The probe guest: runs at CPL3, serves mailbox commands, and can keep dirtying memory. */
#include "blk_drv.h"
#include "net_drv.h"
#include "probe_abi.h"
#include "vsock_drv.h"

#define barrier() __asm__ volatile("" ::: "memory")


static inline void outl(uint16_t port, uint32_t value)
{
	__asm__ volatile("outl %0, %1" : : "a"(value), "Nd"(port) : "memory");
}

struct dirty_state {
	uint64_t gpa, pages, stride, seed;
};

static void log_text(mailbox_t *mb, const char *a, uint64_t num)
{
	char *out = (char *)mb->log;
	uint32_t n = 0;
	char digits[20];
	int nd = 0;

	while (*a && n < PROBE_LOG_MAX - 24)
		out[n++] = *a++;
	do {
		digits[nd++] = (char)('0' + num % 10);
		num /= 10;
	} while (num);
	while (nd)
		out[n++] = digits[--nd];
	mb->log_len = n;
	outl(PROBE_PORT_LOG, 0);
}

static void do_fill(mailbox_t *mb, uint64_t gpa, uint64_t len, uint64_t seed)
{
	for (uint64_t page = gpa; page < gpa + len; page += 4096) {
		uint64_t *w = (uint64_t *)page;
		for (int i = 0; i < 512; i++)
			w[i] = probe_fill_word(seed, page + (uint64_t)i * 8);
		mb->counter++;
	}
}

static uint64_t do_checksum(mailbox_t *mb, uint64_t gpa, uint64_t len)
{
	uint64_t h = PROBE_HASH_INIT;

	for (uint64_t page = gpa; page < gpa + len; page += 4096) {
		h = probe_hash_chain(h, probe_page_hash((const uint64_t *)page));
		mb->counter++;
	}
	return h;
}

/* One dirty iteration: body, then the stamp, then the counter, so a pause sees them in order. */
static void dirty_step(mailbox_t *mb, const struct dirty_state *d)
{
	uint64_t iter = mb->dirty_iters;
	uint64_t *w = (uint64_t *)(d->gpa + (iter % d->pages) * d->stride * 4096);
	uint64_t stamp = mb->counter;

	for (int i = 2; i < 512; i++)
		w[i] = probe_dirty_word(d->seed, stamp, (uint64_t)i);
	w[1] = d->seed;
	barrier();
	w[0] = stamp;
	barrier();
	mb->counter = stamp + 1;
	mb->dirty_iters = iter + 1;
}

static void handle(mailbox_t *mb, struct dirty_state *d)
{
	uint64_t a0 = mb->arg[0], a1 = mb->arg[1], a2 = mb->arg[2], a3 = mb->arg[3];

	mb->status = PROBE_OK;
	switch (mb->cmd) {
	case PROBE_CMD_PING:
		mb->result[0] = PROBE_MAGIC ^ a0;
		break;
	case PROBE_CMD_FILL:
		if (!probe_range_ok(mb, a0, a1))
			mb->status = PROBE_ERANGE;
		else
			do_fill(mb, a0, a1, a2);
		break;
	case PROBE_CMD_CHECKSUM:
		if (!probe_range_ok(mb, a0, a1))
			mb->status = PROBE_ERANGE;
		else
			mb->result[0] = do_checksum(mb, a0, a1);
		break;
	case PROBE_CMD_DIRTY:
		if (a1 == 0) {
			mb->dirty_active = 0;
		} else if (!probe_dirty_span(a1, a2) || !probe_range_ok(mb, a0, probe_dirty_span(a1, a2))) {
			mb->status = PROBE_ERANGE;
		} else {
			*d = (struct dirty_state){ .gpa = a0, .pages = a1, .stride = a2, .seed = a3 };
			mb->dirty_iters = 0;
			mb->dirty_active = 1;
		}
		break;
	case PROBE_CMD_COUNTER:
		break;
	case PROBE_CMD_VSOCK_LISTEN:
		if (mb->vsock_area || !probe_range_ok(mb, a1, PROBE_VSOCK_AREA) || (a1 & 4095))
			mb->status = mb->vsock_area ? PROBE_EINVAL : PROBE_ERANGE;
		else
		{
			uint64_t cid = 0;
			mb->status = vsock_start(mb, a0, a1, a2, &cid);
			mb->result[0] = cid;
		}
		break;
	case PROBE_CMD_VSOCK_STATS:
		mb->result[0] = mb->vsock_accepted;
		mb->result[3] = mb->vsock_echoed;
		break;
	case PROBE_CMD_BLK_IO:
		if (!probe_blk_args_ok(mb, a2, mb->arg[3], mb->arg[4]))
			mb->status = PROBE_ERANGE;
		else {
			uint64_t status = 0, used = 0;
			mb->status = blk_io(a0, a1, a2, mb->arg[3], mb->arg[4], mb->arg[5], &status, &used);
			mb->result[0] = status;
			mb->result[3] = used;
		}
		break;
	case PROBE_CMD_NET_UP:
		if (!probe_net_up_ok(mb, a0, a3, mb->arg[4]))
			mb->status = PROBE_ERANGE;
		else
			mb->status = net_up(mb, a0, a1 ? a1 : PROBE_VSOCK_MMIO_DEFAULT, a2, a3, mb->arg[4],
					    (uint64_t *)&mb->result[0], (uint64_t *)&mb->result[3]);
		break;
	case PROBE_CMD_NET_SEND:
		if (a0 == 0 || a0 > PROBE_NET_SEND_MAX || a1 < 14 || a1 > PROBE_NET_FRAME_MAX)
			mb->status = PROBE_ERANGE;
		else
			mb->status = net_send(mb, a0, a1, a2, a3, (uint64_t *)&mb->result[0],
					      (uint64_t *)&mb->result[3]);
		break;
	case PROBE_CMD_NET_RECV:
		if (!probe_range_ok(mb, a0, a1) || a2 > PROBE_NET_QN)
			mb->status = PROBE_ERANGE;
		else
			mb->status = net_recv(mb, a0, a1, a2, a3, (uint64_t *)&mb->result[0],
					      (uint64_t *)&mb->result[3]);
		break;
	case PROBE_CMD_NET_STATS:
		mb->status = net_stats(mb, (uint64_t *)&mb->result[0], (uint64_t *)&mb->result[3]);
		break;
	case PROBE_CMD_CRASH:
		__asm__ volatile("ud2");
		break;
	default:
		mb->status = PROBE_EINVAL;
		break;
	}
	mb->counter++;
	mb->result[1] = mb->counter;
	mb->result[2] = mb->dirty_iters;
}

void probe_main(uint64_t vcpu_id, mailbox_t *mb)
{
	struct dirty_state dirty = { 0 };

	mb->vcpu_id = (uint32_t)vcpu_id;
	mb->abi_version = PROBE_ABI_VERSION;
	barrier();
	mb->magic = PROBE_MAGIC;
	log_text(mb, "forkvm probe guest up on vcpu ", vcpu_id);
	for (;;) {
		uint64_t seq = mb->cmd_seq;
		barrier();
		if (seq != mb->done_seq) {
			handle(mb, &dirty);
			barrier();
			mb->done_seq = seq;
			outl(PROBE_PORT_DONE, 0);
		} else if (mb->vsock_area && vsock_poll(mb)) {
			continue; /* did work: look again before idling */
		} else if (mb->dirty_active) {
			dirty_step(mb, &dirty);
		} else {
			outl(PROBE_PORT_WAIT, 0);
		}
	}
}
