/* virtio-blk against an in-memory guest driver: config, I/O, GET_ID, hostile requests, seal. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "devices/virtio_blk.h"
#include "disk/disk.h"
#include "virtio_testvm.h"

#define QN 16
#define RING 0x100000ULL
#define HDR 0x200000ULL	 /* request headers */
#define DATA 0x300000ULL /* data buffers */
#define STAT 0x280000ULL /* status bytes */
#define BASE_SIZE (4u << 20)

struct fixture {
	struct vm vm;
	struct virtio_blk *b;
	char dir[96], base[128], prefix[128];
	uint8_t *ram;
	uint16_t avail_idx, used_seen;
};

static struct virtq_desc *desc(struct fixture *f, int i)
{
	return (struct virtq_desc *)(f->ram + RING) + i;
}
static uint16_t *avail(struct fixture *f) { return (uint16_t *)(f->ram + RING + 0x1000); }
static uint16_t *used(struct fixture *f) { return (uint16_t *)(f->ram + RING + 0x2000); }

static uint8_t base_byte(uint64_t off)
{
	return (uint8_t)(off * 13 + 5);
}

static int make_base(const char *path)
{
	uint8_t *buf = malloc(BASE_SIZE);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644), ret;

	if (!buf || fd < 0)
		return -1;
	for (uint64_t i = 0; i < BASE_SIZE; i++)
		buf[i] = base_byte(i);
	ret = write(fd, buf, BASE_SIZE) == BASE_SIZE ? 0 : -1;
	close(fd);
	free(buf);
	return ret;
}

static int start(struct fixture *f, bool read_only)
{
	char top[160];
	struct disk_open_opts o = { .base = f->base, .create_top = read_only ? NULL : top };
	struct disk *d;

	snprintf(top, sizeof(top), "%s.ovl", f->prefix);
	if (tvm_init(&f->vm) || disk_open(&o, &d, NULL) ||
	    virtio_blk_create(&f->vm, 1, d, "forkvm-serial-0123456789", read_only ? NULL : f->prefix,
			      &f->b) || virtio_blk_start(f->b))
		return -1;
	f->ram = f->vm.mem.host;
	f->vm.started = true; /* the device runs requests only once the vCPUs would */
	f->vm.mem.host_dirty = calloc(TVM_MEM / 4096 / 64, 8);
	tvm_negotiate(f->b->mmio);
	tvm_queue(f->b->mmio, 0, QN, RING);
	tvm_wr(f->b->mmio, VMMIO_STATUS, 0xf);
	return 0;
}

static int setup_dir(struct fixture *f)
{
	memset(f, 0, sizeof(*f));
	snprintf(f->dir, sizeof(f->dir), "/tmp/forkvm-test-blk-%d", (int)getpid());
	snprintf(f->base, sizeof(f->base), "%s/base.img", f->dir);
	snprintf(f->prefix, sizeof(f->prefix), "%s/vm.disk1", f->dir);
	return mkdir(f->dir, 0700) < 0 || make_base(f->base) ? -1 : 0;
}

static int setup(void **state)
{
	static struct fixture f;

	if (setup_dir(&f) || start(&f, false))
		return -1;
	*state = &f;
	return 0;
}

static int setup_ro(void **state)
{
	static struct fixture f;

	if (setup_dir(&f) || start(&f, true))
		return -1;
	*state = &f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	char cmd[160];

	virtio_blk_destroy(f->b);
	free(f->vm.mem.host_dirty);
	f->vm.mem.host_dirty = NULL;
	guest_mem_destroy(&f->vm.mem);
	snprintf(cmd, sizeof(cmd), "%s.ovl", f->prefix);
	if (access(cmd, F_OK) == 0)
		return -1; /* the top must be gone with the device */
	snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
	return system(cmd) == 0 ? 0 : -1;
}

/* Chain descriptors [0, n) from d[], post it, wait until used; the used length. */
static uint32_t submit(struct fixture *f, const struct virtq_desc *d, int n)
{
	uint16_t idx = f->avail_idx++;

	for (int i = 0; i < n; i++) {
		*desc(f, i) = d[i];
		if (i + 1 < n) {
			desc(f, i)->flags |= VIRTQ_DESC_F_NEXT;
			desc(f, i)->next = (uint16_t)(i + 1);
		}
	}
	avail(f)[2 + idx % QN] = 0;
	__atomic_store_n(&avail(f)[1], f->avail_idx, __ATOMIC_RELEASE);
	tvm_wr(f->b->mmio, VMMIO_QUEUE_NOTIFY, 0);
	for (int i = 0; i < 2000; i++) {
		if (__atomic_load_n(&used(f)[1], __ATOMIC_ACQUIRE) != f->used_seen) {
			uint32_t *e = (uint32_t *)((uint8_t *)used(f) + 4 + 8 * (f->used_seen % QN));
			f->used_seen++;
			assert_int_equal(e[0], 0);
			return e[1];
		}
		usleep(1000);
	}
	fail_msg("request not completed within 2 s");
	return 0;
}

static void set_hdr(struct fixture *f, uint32_t type, uint64_t sector)
{
	struct virtio_blk_req_hdr h = { .type = type, .sector = sector };

	memcpy(f->ram + HDR, &h, sizeof(h));
	f->ram[STAT] = 0xee;
}

/* header | data (one or two buffers) | status */
static uint32_t rw(struct fixture *f, uint32_t type, uint64_t sector, uint32_t len, int split)
{
	uint16_t dflag = type == VIRTIO_BLK_T_IN ? VIRTQ_DESC_F_WRITE : 0;
	struct virtq_desc d[4] = { { HDR, 16, 0, 0 } };
	int n = 1;

	set_hdr(f, type, sector);
	if (split && len > 512) {
		d[n++] = (struct virtq_desc){ DATA, 512, dflag, 0 };
		d[n++] = (struct virtq_desc){ DATA + 512, len - 512, dflag, 0 };
	} else if (len) {
		d[n++] = (struct virtq_desc){ DATA, len, dflag, 0 };
	}
	d[n++] = (struct virtq_desc){ STAT, 1, VIRTQ_DESC_F_WRITE, 0 };
	return submit(f, d, n);
}

static void test_config(void **state)
{
	struct fixture *f = *state;
	uint32_t lo, hi, v;

	assert_int_equal(tvm_rd(f->b->mmio, VMMIO_DEVICE_ID), VIRTIO_ID_BLOCK);
	lo = tvm_rd(f->b->mmio, VMMIO_CONFIG);
	hi = tvm_rd(f->b->mmio, VMMIO_CONFIG + 4);
	assert_int_equal(((uint64_t)hi << 32) | lo, BASE_SIZE / 512);
	assert_int_equal(tvm_rd(f->b->mmio, VMMIO_CONFIG + 12), VIRTIO_BLK_SEG_MAX);
	assert_int_equal(tvm_rd(f->b->mmio, VMMIO_CONFIG + 20), 512);
	v = tvm_rd(f->b->mmio, VMMIO_CONFIG + 24);
	assert_int_equal(v & 0xff, 3);	    /* 4 KiB physical blocks */
	assert_int_equal(v >> 16, 8);	    /* min_io_size in logical blocks */
	assert_int_equal(tvm_rd(f->b->mmio, VMMIO_CONFIG + 60), 0);
	assert_int_equal(tvm_rd(f->b->mmio, VMMIO_CONFIG + 200), 0);
	tvm_wr(f->b->mmio, VMMIO_DEV_FEATURES_SEL, 0);
	v = tvm_rd(f->b->mmio, VMMIO_DEV_FEATURES);
	assert_true(v & VIRTIO_BLK_F_FLUSH);
	assert_true(v & VIRTIO_BLK_F_SEG_MAX);
	assert_true(v & VIRTIO_BLK_F_BLK_SIZE);
	assert_false(v & VIRTIO_BLK_F_RO);
}

static void test_write_read(void **state)
{
	struct fixture *f = *state;

	for (int i = 0; i < 4096; i++)
		f->ram[DATA + i] = (uint8_t)(i ^ 0x5a);
	assert_int_equal(rw(f, VIRTIO_BLK_T_OUT, 9, 4096, 1), 1);
	assert_int_equal(f->ram[STAT], VIRTIO_BLK_S_OK);
	memset(f->ram + DATA, 0, 8192);
	memset(f->vm.mem.host_dirty, 0, TVM_MEM / 4096 / 8);
	assert_int_equal(rw(f, VIRTIO_BLK_T_IN, 8, 8192, 1), 8193);
	assert_int_equal(f->ram[STAT], VIRTIO_BLK_S_OK);
	for (int i = 0; i < 512; i++)
		assert_int_equal(f->ram[DATA + i], base_byte(8 * 512 + i));
	for (int i = 0; i < 4096; i++)
		assert_int_equal(f->ram[DATA + 512 + i], (uint8_t)(i ^ 0x5a));
	for (int i = 4608; i < 8192; i++)
		assert_int_equal(f->ram[DATA + i], base_byte(8 * 512 + i));
	/* The VMM's writes into guest RAM are marked dirty for diff snapshots. */
	for (uint64_t p = DATA / 4096; p < (DATA + 8192) / 4096; p++)
		assert_true(f->vm.mem.host_dirty[p / 64] & (1ULL << (p % 64)));
	assert_true(f->vm.mem.host_dirty[(STAT / 4096) / 64] & (1ULL << ((STAT / 4096) % 64)));
	/* The base file is never written. */
	int fd = open(f->base, O_RDONLY);
	uint8_t b[512];
	assert_int_equal(pread(fd, b, 512, 9 * 512), 512);
	close(fd);
	assert_int_equal(b[0], base_byte(9 * 512));
}

static void test_flush_get_id_unsupp(void **state)
{
	struct fixture *f = *state;
	struct virtq_desc d[3] = { { HDR, 16, 0, 0 }, { DATA, 64, VIRTQ_DESC_F_WRITE, 0 },
				   { STAT, 1, VIRTQ_DESC_F_WRITE, 0 } };

	assert_int_equal(rw(f, VIRTIO_BLK_T_FLUSH, 0, 0, 0), 1);
	assert_int_equal(f->ram[STAT], VIRTIO_BLK_S_OK);
	set_hdr(f, VIRTIO_BLK_T_GET_ID, 0);
	memset(f->ram + DATA, 0xff, 64);
	assert_int_equal(submit(f, d, 3), 21);
	assert_int_equal(f->ram[STAT], VIRTIO_BLK_S_OK);
	assert_memory_equal(f->ram + DATA, "forkvm-serial-012345", 20); /* 20 bytes, no NUL */
	assert_int_equal(f->ram[DATA + 20], 0xff);
	assert_int_equal(rw(f, 11 /* DISCARD: not offered */, 0, 0, 0), 1);
	assert_int_equal(f->ram[STAT], VIRTIO_BLK_S_UNSUPP);
	assert_int_equal(rw(f, 0x12345, 0, 512, 0), 1);
	assert_int_equal(f->ram[STAT], VIRTIO_BLK_S_UNSUPP);
}

/* A hostile driver gets error statuses; the device goes on serving the next request. */
static void test_bad_requests(void **state)
{
	struct fixture *f = *state;
	uint64_t cap = BASE_SIZE / 512;
	struct virtq_desc d[3];

	assert_int_equal(rw(f, VIRTIO_BLK_T_IN, cap, 512, 0), 1); /* just past the end */
	assert_int_equal(f->ram[STAT], VIRTIO_BLK_S_IOERR);
	assert_int_equal(rw(f, VIRTIO_BLK_T_OUT, cap - 1, 1024, 0), 1);
	assert_int_equal(f->ram[STAT], VIRTIO_BLK_S_IOERR);
	assert_int_equal(rw(f, VIRTIO_BLK_T_IN, UINT64_MAX / 512 + 5, 512, 0), 1); /* overflow */
	assert_int_equal(f->ram[STAT], VIRTIO_BLK_S_IOERR);
	assert_int_equal(rw(f, VIRTIO_BLK_T_IN, UINT64_MAX, 512, 0), 1);
	assert_int_equal(f->ram[STAT], VIRTIO_BLK_S_IOERR);
	assert_int_equal(rw(f, VIRTIO_BLK_T_OUT, 0, 100, 0), 1); /* not whole sectors */
	assert_int_equal(f->ram[STAT], VIRTIO_BLK_S_IOERR);
	/* A header too short to read. */
	d[0] = (struct virtq_desc){ HDR, 8, 0, 0 };
	d[1] = (struct virtq_desc){ STAT, 1, VIRTQ_DESC_F_WRITE, 0 };
	f->ram[STAT] = 0xee;
	assert_int_equal(submit(f, d, 2), 1);
	assert_int_equal(f->ram[STAT], VIRTIO_BLK_S_IOERR);
	/* No writable byte for a status: handed back with nothing written. */
	set_hdr(f, VIRTIO_BLK_T_OUT, 0);
	d[0] = (struct virtq_desc){ HDR, 16, 0, 0 };
	d[1] = (struct virtq_desc){ DATA, 512, 0, 0 };
	assert_int_equal(submit(f, d, 2), 0);
	assert_int_equal(f->ram[STAT], 0xee);
	/* Any layout: data and status in one writable buffer. */
	set_hdr(f, VIRTIO_BLK_T_IN, 0);
	d[1] = (struct virtq_desc){ DATA, 513, VIRTQ_DESC_F_WRITE, 0 };
	assert_int_equal(submit(f, d, 2), 513);
	assert_int_equal(f->ram[DATA], base_byte(0));
	assert_int_equal(f->ram[DATA + 512], VIRTIO_BLK_S_OK);
	/* Still serving. */
	assert_int_equal(rw(f, VIRTIO_BLK_T_IN, 1, 512, 0), 513);
	assert_int_equal(f->ram[STAT], VIRTIO_BLK_S_OK);
	assert_false(tvm_rd(f->b->mmio, VMMIO_STATUS) & VIRTIO_STATUS_NEEDS_RESET);
}

/* A chain pointing outside guest RAM cannot be served: the device asks for a reset. */
static void test_malformed_chain(void **state)
{
	struct fixture *f = *state;
	struct virtq_desc d[3] = { { HDR, 16, 0, 0 }, { TVM_MEM - 100, 512, VIRTQ_DESC_F_WRITE, 0 },
				   { STAT, 1, VIRTQ_DESC_F_WRITE, 0 } };
	uint16_t idx = f->avail_idx++;

	set_hdr(f, VIRTIO_BLK_T_IN, 0);
	for (int i = 0; i < 3; i++) {
		*desc(f, i) = d[i];
		desc(f, i)->flags |= i < 2 ? VIRTQ_DESC_F_NEXT : 0;
		desc(f, i)->next = (uint16_t)(i + 1);
	}
	avail(f)[2 + idx % QN] = 0;
	__atomic_store_n(&avail(f)[1], f->avail_idx, __ATOMIC_RELEASE);
	tvm_wr(f->b->mmio, VMMIO_QUEUE_NOTIFY, 0);
	for (int i = 0; i < 2000 && !(tvm_rd(f->b->mmio, VMMIO_STATUS) & VIRTIO_STATUS_NEEDS_RESET); i++)
		usleep(1000);
	assert_true(tvm_rd(f->b->mmio, VMMIO_STATUS) & VIRTIO_STATUS_NEEDS_RESET);
	assert_true(tvm_rd(f->b->mmio, VMMIO_INT_STATUS) & VIRTIO_INT_CONFIG);
	assert_int_equal(f->ram[STAT], 0xee);
	/* A reset brings the device back. */
	tvm_wr(f->b->mmio, VMMIO_STATUS, 0);
	memset(f->ram + RING, 0, 0x3000);
	f->avail_idx = f->used_seen = 0;
	tvm_negotiate(f->b->mmio);
	tvm_queue(f->b->mmio, 0, QN, RING);
	tvm_wr(f->b->mmio, VMMIO_STATUS, 0xf);
	assert_int_equal(rw(f, VIRTIO_BLK_T_IN, 0, 512, 0), 513);
	assert_int_equal(f->ram[STAT], VIRTIO_BLK_S_OK);
}

/* Snapshot sealing: the written top becomes a sealed layer, a new top continues above it. */
static void test_seal(void **state)
{
	struct fixture *f = *state;
	char path[200];

	assert_int_equal(virtio_blk_snapshot_seal(f->b), 0);
	assert_int_equal(f->b->captured_layers, 0); /* an empty top is not sealed */
	memset(f->ram + DATA, 0x77, 512);
	assert_int_equal(rw(f, VIRTIO_BLK_T_OUT, 3, 512, 0), 1);
	assert_int_equal(virtio_blk_snapshot_seal(f->b), 0);
	assert_int_equal(f->b->captured_layers, 1);
	assert_true(f->b->disk->layers[0]->sealed);
	snprintf(path, sizeof(path), "%s.1.ovl", f->prefix);
	assert_int_equal(access(path, F_OK), 0);
	memset(f->ram + DATA, 0, 512);
	assert_int_equal(rw(f, VIRTIO_BLK_T_IN, 3, 512, 0), 513);
	assert_int_equal(f->ram[DATA], 0x77);
	memset(f->ram + DATA, 0x78, 512);
	assert_int_equal(rw(f, VIRTIO_BLK_T_OUT, 4, 512, 0), 1);
	assert_int_equal(f->b->disk->layers[1]->nalloc, 1);
}

/* Before the vCPUs run (a restore) and while paused, queued requests wait; then they run. */
static void test_held_back(void **state)
{
	struct fixture *f = *state;
	struct virtq_desc d[3] = { { HDR, 16, 0, 0 }, { DATA, 512, VIRTQ_DESC_F_WRITE, 0 },
				   { STAT, 1, VIRTQ_DESC_F_WRITE, 0 } };
	uint16_t idx = f->avail_idx++;

	for (int round = 0; round < 2; round++) {
		if (round == 0)
			f->vm.started = false;
		else
			f->vm.pause_requested = true;
		set_hdr(f, VIRTIO_BLK_T_IN, 0);
		for (int i = 0; i < 3; i++) {
			*desc(f, i) = d[i];
			desc(f, i)->flags |= i < 2 ? VIRTQ_DESC_F_NEXT : 0;
			desc(f, i)->next = (uint16_t)(i + 1);
		}
		avail(f)[2 + idx % QN] = 0;
		__atomic_store_n(&avail(f)[1], f->avail_idx, __ATOMIC_RELEASE);
		tvm_wr(f->b->mmio, VMMIO_QUEUE_NOTIFY, 0);
		usleep(50000);
		assert_int_equal(__atomic_load_n(&used(f)[1], __ATOMIC_ACQUIRE), f->used_seen);
		assert_int_equal(f->ram[STAT], 0xee);
		__atomic_store_n(&f->vm.started, true, __ATOMIC_RELEASE);
		__atomic_store_n(&f->vm.pause_requested, false, __ATOMIC_RELEASE);
		for (int i = 0; i < 2000 && __atomic_load_n(&used(f)[1], __ATOMIC_ACQUIRE) == f->used_seen; i++)
			usleep(1000);
		assert_int_equal(__atomic_load_n(&used(f)[1], __ATOMIC_ACQUIRE), (uint16_t)(f->used_seen + 1));
		f->used_seen++;
		assert_int_equal(f->ram[STAT], VIRTIO_BLK_S_OK);
		idx = f->avail_idx++;
	}
	f->avail_idx--;
}

static void test_read_only(void **state)
{
	struct fixture *f = *state;

	tvm_wr(f->b->mmio, VMMIO_DEV_FEATURES_SEL, 0);
	assert_true(tvm_rd(f->b->mmio, VMMIO_DEV_FEATURES) & VIRTIO_BLK_F_RO);
	assert_int_equal(rw(f, VIRTIO_BLK_T_OUT, 0, 512, 0), 1);
	assert_int_equal(f->ram[STAT], VIRTIO_BLK_S_IOERR);
	assert_int_equal(rw(f, VIRTIO_BLK_T_IN, 0, 512, 0), 513);
	assert_int_equal(f->ram[STAT], VIRTIO_BLK_S_OK);
	assert_int_equal(rw(f, VIRTIO_BLK_T_FLUSH, 0, 0, 0), 1);
	assert_int_equal(f->ram[STAT], VIRTIO_BLK_S_OK);
	assert_int_equal(virtio_blk_snapshot_seal(f->b), 0);
	assert_int_equal(f->b->captured_layers, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_config, setup, teardown),
		cmocka_unit_test_setup_teardown(test_write_read, setup, teardown),
		cmocka_unit_test_setup_teardown(test_flush_get_id_unsupp, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_requests, setup, teardown),
		cmocka_unit_test_setup_teardown(test_malformed_chain, setup, teardown),
		cmocka_unit_test_setup_teardown(test_seal, setup, teardown),
		cmocka_unit_test_setup_teardown(test_held_back, setup, teardown),
		cmocka_unit_test_setup_teardown(test_read_only, setup_ro, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
