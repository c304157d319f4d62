/* libFuzzer harness: virtio-blk requests (src/devices/virtio_blk_req.c) on a real copy-on-write
 * disk (src/disk/). The fuzz input is the guest: it is copied over guest RAM (two 8 KiB regions,
 * GPA 0 and GPA 0x10000, as in fuzz_virtq.c), whose queue is fixed: 8 entries, descriptors at
 * GPA 0, avail ring at 0x100, used ring at 0x200. The harness pops every chain and runs it as
 * the device thread does; whatever the request (type, sector, lengths, layout), it must end in
 * a status or an empty used entry, never a crash or an access outside its buffers.
 *
 * The disk (created once in a temporary directory, removed at exit): a 64 KiB base of a fixed
 * pattern and a private top, so reads, writes, copy-up and flushes all run. */
#include "fuzz_util.h"
#include "fuzz_mem.h"
#include "devices/virtio_blk.h"
#include "disk/disk.h"
#include "mem/guest_mem.h"

#include <unistd.h>

#define REGION FZ_MEM_REGION
#define QN 8
#define BASE_BYTES (64 * 1024)

static char dir[64], base[96], top[96], cache[128];
static struct disk *disk;

static void cleanup(void)
{
	disk_close(disk, true);
	unlink(base);
	unlink(cache);
	rmdir(dir);
}

static struct disk *disk_once(void)
{
	static uint8_t pattern[BASE_BYTES];
	struct disk_open_opts o = { .base = base, .create_top = top };

	if (disk)
		return disk;
	snprintf(dir, sizeof(dir), "/tmp/forkvm-fuzz-blk-XXXXXX");
	if (!mkdtemp(dir))
		abort();
	snprintf(base, sizeof(base), "%s/base.img", dir);
	snprintf(top, sizeof(top), "%s/top.ovl", dir);
	snprintf(cache, sizeof(cache), "%s%s", base, DISK_ID_SUFFIX);
	for (size_t i = 0; i < sizeof(pattern); i++)
		pattern[i] = (uint8_t)(i * 7 + 1);
	fz_write_file(base, pattern, sizeof(pattern));
	if (disk_open(&o, &disk, NULL))
		abort();
	atexit(cleanup);
	return disk;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint8_t ram[2 * REGION];
	static uint64_t dirty[1];
	struct fz f = { data, size, 0 };
	struct virtio_mmio mmio = { .slot = 1 };
	struct virtio_blk b = { .mmio = &mmio, .disk = disk_once(), .serial = "fuzz-serial" };
	struct guest_mem mem = { 0 };
	struct virtq q;
	struct virtq_chain c;
	const uint8_t *img;
	size_t got;
	int ret;

	fz_guest_mem(&mem, ram, dirty);
	memset(ram, 0, sizeof(ram));
	img = fz_bytes(&f, sizeof(ram), &got);
	memcpy(ram, img, got);

	virtq_reset(&q);
	q.s = (struct virtq_state){ .num = QN, .desc_gpa = 0, .avail_gpa = 0x100, .used_gpa = 0x200 };
	if (virtq_activate(&q, &mem, QN))
		abort(); /* the harness's own queue is valid */
	for (int i = 0; i <= QN + 1 && (ret = virtq_pop(&q, &c)) != 0; i++) {
		uint32_t used;

		if (ret < 0)
			break; /* the device asks for a reset */
		used = virtio_blk_request(&b, &c);
		if (used > c.wr_len || (c.wr_len && used == 0))
			abort(); /* a status whenever there is room for one, never past the buffers */
		virtq_push(&q, c.head, used);
	}
	return 0;
}
