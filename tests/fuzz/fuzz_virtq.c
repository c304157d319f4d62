/* libFuzzer harness: split virtqueues, device side (src/devices/virtqueue.c). The fuzz input
 * is the guest: it programs the queue registers and fills guest RAM (descriptor table, avail
 * ring, buffers); the harness then does what a device does: activate, pop every chain, read
 * its readable part, fill its writable part, push it back (and once, unpop and pop again).
 *
 * Guest RAM: two 8 KiB regions, GPA 0 and GPA 0x10000 (mapping offsets 0 and 8 KiB), with the
 * VMM's dirty tracking on, so a buffer crossing a region edge or leaving RAM is exercised.
 * Input: u8 queue size (log2, low 4 bits) + max (high 4 bits), u32 desc/avail/used GPAs,
 * u16 last_avail, u16 used_idx, then up to 16 KiB copied over guest RAM. */
#include "fuzz_util.h"
#include "fuzz_mem.h"
#include "devices/virtqueue.h"
#include "mem/guest_mem.h"

#include <errno.h>

#define REGION FZ_MEM_REGION

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fz f = { data, size, 0 };
	static uint8_t ram[2 * REGION];
	static uint64_t dirty[1];
	static uint8_t scratch[64 * 1024];
	struct guest_mem mem = { 0 };
	struct virtq q;
	struct virtq_chain c;
	unsigned sel;
	uint16_t max;
	size_t got;
	const uint8_t *img;
	int ret, unpopped = 0;

	fz_guest_mem(&mem, ram, dirty);

	virtq_reset(&q);
	sel = (unsigned)fz_uint(&f, 1);
	q.s.num = (uint16_t)(1u << (sel & 15)); /* up to 32768: most fail activation */
	max = (uint16_t)(1u << ((sel >> 4) & 15));
	q.s.desc_gpa = fz_uint(&f, 4);
	q.s.avail_gpa = fz_uint(&f, 4);
	q.s.used_gpa = fz_uint(&f, 4);
	q.s.last_avail = (uint16_t)fz_uint(&f, 2);
	q.s.used_idx = (uint16_t)fz_uint(&f, 2);
	memset(ram, 0, sizeof(ram));
	dirty[0] = 0;
	img = fz_bytes(&f, sizeof(ram), &got);
	memcpy(ram, img, got);

	if (virtq_activate(&q, &mem, max)) {
		if (q.s.ready || virtq_has_avail(&q) || virtq_pop(&q, &c) != 0)
			abort(); /* an inactive queue offers nothing */
		return 0;
	}
	(void)virtq_avail_idx(&q);
	(void)virtq_wants_interrupt(&q);
	/* The avail index is in guest RAM and never changes here: at most num chains. */
	for (int i = 0; i <= q.s.num + 1 && (ret = virtq_pop(&q, &c)) != 0; i++) {
		size_t rd, wr;

		if (ret < 0) {
			if (ret != -EINVAL)
				abort();
			break; /* the device marks the queue broken */
		}
		if (c.nrd > VIRTQ_MAX_IOV || c.nwr > VIRTQ_MAX_IOV || c.head >= q.s.num)
			abort();
		if (!unpopped) {
			/* A device that cannot serve the chain yet gives it back. */
			unpopped = 1;
			virtq_unpop(&q);
			continue;
		}
		rd = virtq_chain_read(&c, 0, scratch, sizeof(scratch));
		if (rd != (c.rd_len < sizeof(scratch) ? c.rd_len : sizeof(scratch)))
			abort();
		/* Write a reply, skipping a few bytes in, as the vsock device writes a header later. */
		wr = virtq_chain_write(&c, 3, scratch, rd);
		if (wr > c.wr_len)
			abort();
		virtq_push(&q, c.head, (uint32_t)wr);
		(void)virtq_wants_interrupt(&q);
	}
	return 0;
}
