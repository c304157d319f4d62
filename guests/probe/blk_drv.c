/* The probe's virtio-blk driver: set the device up, post one chain, poll the used ring. */
#include "blk_drv.h"

#define barrier() __asm__ volatile("" ::: "memory")
#define QN 4
#define OFF_AVAIL 0x1000
#define OFF_USED 0x2000
#define OFF_HDR 0x3000
#define OFF_STATUS 0x3010
#define POLL_MAX 2000000000ULL /* a device that never answers is an error, not a hang */

struct desc {
	uint64_t addr;
	uint32_t len;
	uint16_t flags, next;
};

static inline uint32_t rd(uint64_t mmio, uint32_t off) { return *(volatile uint32_t *)(mmio + off); }
static inline void wr(uint64_t mmio, uint32_t off, uint32_t v) { *(volatile uint32_t *)(mmio + off) = v; }

static uint32_t setup(uint64_t mmio, uint64_t area)
{
	if (rd(mmio, 0x000) != 0x74726976 || rd(mmio, 0x004) != 2 || rd(mmio, 0x008) != PROBE_VIRTIO_ID_BLOCK)
		return PROBE_ENODEV;
	wr(mmio, 0x070, 0);	/* reset */
	wr(mmio, 0x070, 1 | 2); /* ACKNOWLEDGE | DRIVER */
	wr(mmio, 0x024, 0);
	wr(mmio, 0x020, 0);
	wr(mmio, 0x024, 1);
	wr(mmio, 0x020, 1);	/* VIRTIO_F_VERSION_1 only */
	wr(mmio, 0x070, 1 | 2 | 8);
	if (!(rd(mmio, 0x070) & 8))
		return PROBE_EIO;
	for (uint64_t *p = (uint64_t *)area; p < (uint64_t *)(area + PROBE_BLK_AREA); p++)
		*p = 0;
	wr(mmio, 0x030, 0);
	if (rd(mmio, 0x034) < QN)
		return PROBE_EIO;
	wr(mmio, 0x038, QN);
	wr(mmio, 0x080, (uint32_t)area);
	wr(mmio, 0x084, (uint32_t)(area >> 32));
	wr(mmio, 0x090, (uint32_t)(area + OFF_AVAIL));
	wr(mmio, 0x094, (uint32_t)((area + OFF_AVAIL) >> 32));
	wr(mmio, 0x0a0, (uint32_t)(area + OFF_USED));
	wr(mmio, 0x0a4, (uint32_t)((area + OFF_USED) >> 32));
	wr(mmio, 0x044, 1);
	if (rd(mmio, 0x044) != 1)
		return PROBE_EIO;
	wr(mmio, 0x070, 1 | 2 | 8 | 4); /* DRIVER_OK */
	return PROBE_OK;
}

uint32_t blk_io(uint64_t type, uint64_t sector, uint64_t buf, uint64_t len, uint64_t area,
		uint64_t mmio, uint64_t *status, uint64_t *used)
{
	volatile struct desc *d = (volatile struct desc *)area;
	volatile uint16_t *avail = (volatile uint16_t *)(area + OFF_AVAIL);
	volatile uint16_t *used_idx = (volatile uint16_t *)(area + OFF_USED + 2);
	volatile uint64_t *hdr = (volatile uint64_t *)(area + OFF_HDR);
	volatile uint8_t *st = (volatile uint8_t *)(area + OFF_STATUS);
	uint16_t device_writes = type == 1 ? 0 : 2; /* VIRTQ_DESC_F_WRITE except for OUT */
	uint32_t ret = setup(mmio, area);
	int n = 0;

	if (ret != PROBE_OK)
		return ret;
	hdr[0] = (uint32_t)type; /* type, ioprio 0 */
	hdr[1] = sector;
	*st = 0xff;
	d[n] = (struct desc){ area + OFF_HDR, 16, 1, (uint16_t)(n + 1) };
	n++;
	if (len) {
		d[n] = (struct desc){ buf, (uint32_t)len, (uint16_t)(1 | device_writes), (uint16_t)(n + 1) };
		n++;
	}
	d[n] = (struct desc){ area + OFF_STATUS, 1, 2, 0 };
	avail[2] = 0;
	barrier();
	avail[1] = 1;
	barrier();
	wr(mmio, 0x050, 0); /* QueueNotify */
	for (uint64_t i = 0; *used_idx == 0; i++)
		if (i == POLL_MAX)
			return PROBE_EIO;
	barrier();
	*status = *st;
	*used = *(volatile uint32_t *)(area + OFF_USED + 8);
	return PROBE_OK;
}
