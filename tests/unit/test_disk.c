/* Copy-on-write disks: reads through the chain, copy-up, sealing, reopening, corruption. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "disk/disk_impl.h"
#include "util/errmsg.h"

#define BASE_SIZE ((1u << 20) + 1000) /* not a multiple of 512: the disk rounds up */
#define CS DISK_CLUSTER_SIZE

static char dir[64], base[128], l0[128], l1[128], l2[128];
static struct fvm_err err = FVM_ERR_INIT;

static uint8_t base_byte(uint64_t off)
{
	return (uint8_t)(off * 7 + 3);
}

static void write_file(const char *path, uint64_t size, uint8_t (*fill)(uint64_t))
{
	uint8_t *buf = malloc(size);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);

	assert_non_null(buf);
	assert_true(fd >= 0);
	for (uint64_t i = 0; i < size; i++)
		buf[i] = fill(i);
	assert_int_equal(write(fd, buf, size), (ssize_t)size);
	close(fd);
	free(buf);
}

static void file_sha(const char *path, uint8_t out[SHA256_LEN])
{
	struct sha256_ctx c;
	int fd = open(path, O_RDONLY);

	assert_true(fd >= 0);
	uint8_t buf[65536];
	ssize_t n;
	assert_int_equal(sha256_init(&c), 0);
	while ((n = read(fd, buf, sizeof(buf))) > 0)
		sha256_update(&c, buf, (size_t)n);
	assert_int_equal(sha256_final(&c, out), 0);
	close(fd);
}

static int setup(void **state)
{
	char cmd[128];

	snprintf(dir, sizeof(dir), "/tmp/forkvm-test-disk-%d", (int)getpid());
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	if (system(cmd) != 0 || mkdir(dir, 0700) < 0)
		return -1;
	snprintf(base, sizeof(base), "%s/base.img", dir);
	snprintf(l0, sizeof(l0), "%s/l0.ovl", dir);
	snprintf(l1, sizeof(l1), "%s/l1.ovl", dir);
	snprintf(l2, sizeof(l2), "%s/l2.ovl", dir);
	write_file(base, BASE_SIZE, base_byte);
	*state = NULL;
	return 0;
}

static int teardown(void **state)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	return system(cmd) == 0 ? 0 : -1;
}

static struct disk *open_disk(const char *const *layers, int n, const char *create,
			      const char *reopen)
{
	struct disk_open_opts o = { .base = base, .layers = layers, .nlayers = n,
				    .create_top = create, .reopen_top = reopen };
	struct disk *d = NULL;
	int ret = disk_open(&o, &d, &err);

	if (ret)
		print_message("disk_open: %s\n", err.msg);
	assert_int_equal(ret, 0);
	return d;
}

static int open_fails(const char *const *layers, int n, const char *create, const char *reopen,
		      const char *needle)
{
	struct disk_open_opts o = { .base = base, .layers = layers, .nlayers = n,
				    .create_top = create, .reopen_top = reopen };
	struct disk *d = NULL;
	int ret;

	errclear(&err);
	ret = disk_open(&o, &d, &err);
	assert_true(ret < 0);
	assert_null(d);
	if (!strstr(err.msg, needle))
		fail_msg("expected '%s' in: %s", needle, err.msg);
	return ret;
}

static void rd(struct disk *d, uint64_t off, void *buf, uint64_t len)
{
	struct iovec iov = { buf, len };

	assert_int_equal(disk_read(d, off, &iov, 1, len), 0);
}

static void wr(struct disk *d, uint64_t off, const void *buf, uint64_t len)
{
	struct iovec iov = { (void *)buf, len };

	assert_int_equal(disk_write(d, off, &iov, 1, len), 0);
}

static void expect_base(const uint8_t *buf, uint64_t off, uint64_t len)
{
	for (uint64_t i = 0; i < len; i++) {
		uint8_t want = off + i < BASE_SIZE ? base_byte(off + i) : 0;
		if (buf[i] != want)
			fail_msg("byte %llu: 0x%02x, expected base 0x%02x", (unsigned long long)(off + i),
				 buf[i], want);
	}
}

static void test_base_only(void **state)
{
	struct disk *d = open_disk(NULL, 0, NULL, NULL);
	uint8_t buf[3 * CS];
	struct iovec iov = { buf, 512 };

	assert_int_equal(d->size, (BASE_SIZE + 511) / 512 * 512);
	/* Across the base's end: the base, then zeros. */
	rd(d, d->size - sizeof(buf), buf, sizeof(buf));
	expect_base(buf, d->size - sizeof(buf), sizeof(buf));
	/* Read-only: writes are refused; out of range is refused. */
	assert_int_equal(disk_write(d, 0, &iov, 1, 512), -EROFS);
	assert_int_equal(disk_read(d, d->size, &iov, 1, 512), -EINVAL);
	assert_int_equal(disk_read(d, UINT64_MAX - 100, &iov, 1, 512), -EINVAL);
	assert_int_equal(disk_flush(d), 0);
	disk_close(d, true);
}

static void test_write_read_copy_up(void **state)
{
	uint8_t before[SHA256_LEN], after[SHA256_LEN], buf[4 * CS], pat[CS];
	struct disk *d;
	struct stat st;

	file_sha(base, before);
	d = open_disk(NULL, 0, l0, NULL);
	memset(pat, 0xaa, sizeof(pat));
	wr(d, 3 * CS, pat, CS); /* a whole cluster: no copy-up */
	memset(pat, 0xbb, 100);
	wr(d, 5 * CS + 37, pat, 100); /* partial: copied up first */
	rd(d, 2 * CS, buf, sizeof(buf));
	expect_base(buf, 2 * CS, CS);
	for (int i = 0; i < CS; i++)
		assert_int_equal(buf[CS + i], 0xaa);
	expect_base(buf + 2 * CS, 4 * CS, CS);
	expect_base(buf + 3 * CS, 5 * CS, 37);
	for (int i = 0; i < 100; i++)
		assert_int_equal(buf[3 * CS + 37 + i], 0xbb);
	expect_base(buf + 3 * CS + 137, 5 * CS + 137, CS - 137);
	assert_int_equal(d->layers[0]->nalloc, 2);
	/* A scattered read over several iovecs. */
	uint8_t a[100], b[CS];
	struct iovec iov[2] = { { a, sizeof(a) }, { b, sizeof(b) } };
	assert_int_equal(disk_read(d, 3 * CS - 100, iov, 2, sizeof(a) + sizeof(b)), 0);
	expect_base(a, 3 * CS - 100, 100);
	assert_int_equal(b[0], 0xaa);
	/* The last, partial cluster (past the base: zeros below). */
	memset(pat, 0xcc, 512);
	wr(d, d->size - 512, pat, 512);
	rd(d, d->size - 1024, buf, 1024);
	expect_base(buf, d->size - 1024, 512);
	assert_int_equal(buf[512], 0xcc);
	assert_int_equal(disk_flush(d), 0);
	disk_close(d, true);
	assert_int_equal(stat(l0, &st), -1); /* an owned top is removed */
	file_sha(base, after);
	assert_memory_equal(before, after, SHA256_LEN);
}

/* L0 <- L1 <- L2 (top): each layer overrides the one below, partial writes merge. */
static struct disk *build_chain(void)
{
	uint8_t pat[CS];
	struct disk *d = open_disk(NULL, 0, l0, NULL);

	memset(pat, 1, CS);
	wr(d, 0, pat, CS);
	wr(d, 10 * CS, pat, CS);
	assert_int_equal(disk_seal_top_and_push_new(d, l1), 0);
	memset(pat, 2, CS);
	wr(d, 10 * CS + 100, pat, 200); /* over L0's cluster: copy-up from L0 */
	wr(d, 20 * CS + 5, pat, 10);	/* over the base */
	assert_int_equal(disk_seal_top_and_push_new(d, l2), 0);
	memset(pat, 3, CS);
	wr(d, 0, pat, 512);
	assert_int_equal(disk_flush(d), 0);
	return d;
}

static void check_chain(struct disk *d)
{
	uint8_t buf[CS];

	rd(d, 0, buf, CS);
	for (int i = 0; i < CS; i++)
		assert_int_equal(buf[i], i < 512 ? 3 : 1);
	rd(d, 10 * CS, buf, CS);
	for (int i = 0; i < CS; i++)
		assert_int_equal(buf[i], i >= 100 && i < 300 ? 2 : 1);
	rd(d, 20 * CS, buf, CS);
	for (int i = 0; i < CS; i++)
		if (i >= 5 && i < 15)
			assert_int_equal(buf[i], 2);
		else
			expect_base(buf + i, 20 * CS + i, 1);
	rd(d, 30 * CS, buf, CS);
	expect_base(buf, 30 * CS, CS);
}

static void test_chain_seal_reopen(void **state)
{
	const char *sealed[] = { l0, l1 }, *all[] = { l0, l1, l2 }, *swapped[] = { l1, l0 };
	struct disk *d = build_chain();
	uint8_t ids[2][DISK_ID_LEN];

	check_chain(d);
	assert_int_equal(disk_nsealed(d), 2);
	assert_false(disk_top_empty(d));
	memcpy(ids[0], d->layers[0]->id, DISK_ID_LEN);
	memcpy(ids[1], d->layers[1]->id, DISK_ID_LEN);
	disk_close(d, false); /* keep the files */

	d = open_disk(sealed, 2, NULL, l2);
	check_chain(d);
	disk_close(d, false);
	/* The sealed chain alone, read-only, with the ids checked. */
	struct disk_open_opts o = { .base = base, .layers = sealed, .nlayers = 2,
				    .expect_ids = (const uint8_t(*)[DISK_ID_LEN])ids };
	assert_int_equal(disk_open(&o, &d, &err), 0);
	uint8_t buf[512];
	rd(d, 0, buf, 512);
	assert_int_equal(buf[0], 1);
	disk_close(d, true); /* nothing owned: nothing removed */
	ids[1][0] ^= 1;
	assert_int_equal(disk_open(&o, &d, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "not the recorded layer"));

	open_fails(all, 3, NULL, NULL, "is not sealed");
	open_fails(swapped, 2, NULL, NULL, "is layer 1 of its chain, expected layer 0");
	open_fails(sealed, 1, NULL, l1, "is sealed and is never written again");
	open_fails(sealed + 1, 1, NULL, NULL, "is layer 1 of its chain");
	/* A stale top (its VM gone) is replaced; one in use is not. */
	struct disk *a = open_disk(sealed, 2, l2, NULL);
	open_fails(sealed, 2, l2, NULL, "in use by a running VM");
	disk_close(a, true);
	unlink(l0);
	unlink(l1);
}

static void test_two_tops(void **state)
{
	const char *sealed[] = { l0 };
	char ta[160], tb[160];
	uint8_t x[512], y[512], buf[512];
	struct disk *d = open_disk(NULL, 0, l0, NULL), *a, *b;

	memset(x, 9, sizeof(x));
	wr(d, 0, x, 512);
	assert_int_equal(disk_seal_top_and_push_new(d, l1), 0);
	disk_close(d, false);
	snprintf(ta, sizeof(ta), "%s/a.ovl", dir);
	snprintf(tb, sizeof(tb), "%s/b.ovl", dir);
	a = open_disk(sealed, 1, ta, NULL);
	b = open_disk(sealed, 1, tb, NULL);
	memset(x, 0x11, sizeof(x));
	memset(y, 0x22, sizeof(y));
	wr(a, 512, x, 512);
	wr(b, 512, y, 512);
	rd(a, 512, buf, 512);
	assert_memory_equal(buf, x, 512);
	rd(b, 512, buf, 512);
	assert_memory_equal(buf, y, 512);
	rd(b, 0, buf, 512);
	assert_int_equal(buf[0], 9);
	/* A second VM cannot take a top that is in use; a stale one (VM gone) is replaced. */
	open_fails(sealed, 1, ta, NULL, "in use by a running VM");
	disk_close(a, false);
	a = open_disk(sealed, 1, ta, NULL);
	rd(a, 512, buf, 512);
	expect_base(buf, 512, 512); /* a new, empty top */
	disk_close(a, true);
	disk_close(b, true);
	/* A file that is not an overlay is never replaced. */
	write_file(ta, 100, base_byte);
	open_fails(sealed, 1, ta, NULL, "not a forkvm overlay");
	unlink(ta);
	unlink(l0);
	unlink(l1);
}

static void corrupt(const char *path, uint64_t off, uint8_t x)
{
	uint8_t b;
	int fd = open(path, O_RDWR);

	assert_true(fd >= 0);
	assert_int_equal(pread(fd, &b, 1, (off_t)off), 1);
	b ^= x;
	assert_int_equal(pwrite(fd, &b, 1, (off_t)off), 1);
	close(fd);
}

static void copy_file(const char *from, const char *to)
{
	char cmd[512];

	snprintf(cmd, sizeof(cmd), "cp --sparse=always %s %s", from, to);
	assert_int_equal(system(cmd), 0);
}

static void test_corruption(void **state)
{
	const char *one[] = { l1 };
	char good[160];
	struct disk *d = build_chain();
	struct disk_ovl_header h;
	int fd;

	disk_close(d, false);
	snprintf(good, sizeof(good), "%s/good.ovl", dir);
	copy_file(l0, good);
	one[0] = l0;
	corrupt(l0, 0, 0x20);
	open_fails(one, 1, NULL, NULL, "bad magic");
	copy_file(good, l0);
	corrupt(l0, 40, 1);
	open_fails(one, 1, NULL, NULL, "header checksum mismatch");
	copy_file(good, l0);
	corrupt(l0, DISK_OVL_BITMAP_OFF, 0x80); /* a cluster the layer does not hold */
	open_fails(one, 1, NULL, NULL, "bitmap checksum mismatch");
	copy_file(good, l0);
	assert_int_equal(truncate(l0, 100), 0);
	open_fails(one, 1, NULL, NULL, "truncated header");
	copy_file(good, l0);
	assert_int_equal(truncate(l0, 8192), 0);
	open_fails(one, 1, NULL, NULL, "truncated bitmap");
	copy_file(good, l0);
	fd = open(l0, O_RDONLY);
	assert_int_equal(pread(fd, &h, sizeof(h), 0), (ssize_t)sizeof(h));
	close(fd);
	assert_int_equal(truncate(l0, (off_t)(h.data_off + 2 * CS)), 0); /* cluster 10 is gone */
	open_fails(one, 1, NULL, NULL, "truncated data");
	/* A version this forkvm does not read, with a valid checksum. */
	copy_file(good, l0);
	h.version = 7;
	h.header_xxh64 = XXH64(&h, offsetof(struct disk_ovl_header, header_xxh64), 0);
	fd = open(l0, O_RDWR);
	assert_int_equal(pwrite(fd, &h, sizeof(h), 0), (ssize_t)sizeof(h));
	close(fd);
	open_fails(one, 1, NULL, NULL, "format version 7 is not supported");
	copy_file(good, l0);
	/* A FIFO in a layer's place is refused, not waited on. */
	unlink(l1);
	assert_int_equal(mkfifo(l1, 0600), 0);
	const char *two[] = { l0, l1 };
	open_fails(two, 2, NULL, NULL, "not a regular file");
	unlink(l1);
	open_fails(two, 2, NULL, NULL, "No such file");
	unlink(l0);
	unlink(l2);
	unlink(good);
}

static uint8_t other_byte(uint64_t off)
{
	return (uint8_t)(off * 11 + 1);
}

static void test_wrong_base_and_cache(void **state)
{
	const char *one[] = { l0 };
	char cache[160], saved[160];
	struct disk *d = open_disk(NULL, 0, l0, NULL);
	uint8_t x[512] = { 1 };
	struct stat st;

	wr(d, 0, x, 512);
	assert_int_equal(disk_seal_top_and_push_new(d, l1), 0);
	disk_close(d, true); /* removes both: owned */
	assert_int_equal(stat(l0, &st), -1);
	d = open_disk(NULL, 0, l0, NULL);
	wr(d, 0, x, 512);
	assert_int_equal(disk_seal_top_and_push_new(d, l1), 0);
	disk_close(d, false);
	snprintf(cache, sizeof(cache), "%s%s", base, DISK_ID_SUFFIX);
	snprintf(saved, sizeof(saved), "%s/saved.img", dir);
	assert_int_equal(stat(cache, &st), 0); /* the identity was cached */
	/* Same size, other content: the cache is stale (mtime), the hash differs. */
	assert_int_equal(rename(base, saved), 0);
	write_file(base, BASE_SIZE, other_byte);
	open_fails(one, 1, NULL, NULL, "belongs to another base");
	/* A wrong size. */
	write_file(base, BASE_SIZE + 4096, base_byte);
	open_fails(one, 1, NULL, NULL, "belongs to another base");
	assert_int_equal(rename(saved, base), 0);
	/* The cache is trusted while the file looks unchanged: a forged hash shows it is used. */
	d = open_disk(one, 1, NULL, NULL);
	disk_close(d, false);
	{
		FILE *f = fopen(cache, "r");
		char text[1024] = "", *p;
		assert_non_null(f);
		assert_true(fread(text, 1, sizeof(text) - 1, f) > 0);
		fclose(f);
		p = strstr(text, "\"sha256\":\"");
		assert_non_null(p);
		p[10] = p[10] == '0' ? '1' : '0';
		f = fopen(cache, "w");
		fputs(text, f);
		fclose(f);
	}
	open_fails(one, 1, NULL, NULL, "belongs to another base");
	/* A missing, empty or non-regular base. */
	unlink(cache);
	assert_int_equal(truncate(base, 0), 0);
	open_fails(NULL, 0, NULL, NULL, "is empty");
	write_file(base, BASE_SIZE, base_byte);
	{
		/* Checking a snapshot never creates files next to the base it names. */
		struct disk_open_opts o = { .base = base, .layers = one, .nlayers = 1,
					    .keep_id_cache = true };
		assert_int_equal(disk_open(&o, &d, &err), 0);
		disk_close(d, false);
		assert_int_equal(access(cache, F_OK), -1);
	}
	d = open_disk(one, 1, NULL, NULL); /* rehashed: the chain is valid again */
	disk_close(d, false);
	assert_int_equal(access(cache, F_OK), 0);
	{
		struct disk_open_opts o = { .base = dir };
		assert_int_equal(disk_open(&o, &d, &err), -EINVAL);
		assert_non_null(strstr(err.msg, "not a regular file"));
		o.base = "/nonexistent/base.img";
		assert_int_equal(disk_open(&o, &d, &err), -ENOENT);
	}
	unlink(l0);
	unlink(l1);
}

static void test_export(void **state)
{
	const char *sealed[2];
	char out[160], e0[200], e1[200];
	struct disk *d = build_chain(), *r;
	struct stat a, b;
	int dfd;

	snprintf(out, sizeof(out), "%s/snap", dir);
	assert_int_equal(mkdir(out, 0700), 0);
	dfd = open(out, O_RDONLY | O_DIRECTORY);
	assert_true(dfd >= 0);
	/* Same filesystem: a hard link. */
	assert_int_equal(disk_layer_export(d, 0, dfd, out, "d-0.ovl"), 0);
	snprintf(e0, sizeof(e0), "%s/d-0.ovl", out);
	assert_int_equal(stat(l0, &a), 0);
	assert_int_equal(stat(e0, &b), 0);
	assert_int_equal(a.st_ino, b.st_ino);
	/* The layer's name is gone: a sparse copy of the open file. */
	unlink(l1);
	assert_int_equal(disk_layer_export(d, 1, dfd, out, "d-1.ovl"), 0);
	snprintf(e1, sizeof(e1), "%s/d-1.ovl", out);
	assert_int_equal(stat(e1, &b), 0);
	assert_true(b.st_nlink == 1);
	assert_true((uint64_t)b.st_blocks * 512 < (uint64_t)b.st_size); /* holes stayed holes */
	assert_int_equal(disk_layer_export(d, 2, dfd, out, "d-2.ovl"), -EINVAL); /* the top */
	close(dfd);
	disk_close(d, true);
	sealed[0] = e0;
	sealed[1] = e1;
	r = open_disk(sealed, 2, l2, NULL);
	uint8_t buf[CS];
	rd(r, 10 * CS, buf, CS);
	for (int i = 0; i < CS; i++)
		assert_int_equal(buf[i], i >= 100 && i < 300 ? 2 : 1);
	disk_close(r, true);
	unlink(e0);
	unlink(e1);
	rmdir(out);
}

static void test_seal_empty_and_limits(void **state)
{
	struct disk *d = open_disk(NULL, 0, l0, NULL);
	char path[160];
	uint8_t x[CS] = { 5 };
	int i;

	assert_true(disk_top_empty(d));
	for (i = 1; i < DISK_MAX_LAYERS; i++) {
		snprintf(path, sizeof(path), "%s/t%d.ovl", dir, i);
		assert_int_equal(disk_seal_top_and_push_new(d, path), 0);
	}
	snprintf(path, sizeof(path), "%s/t%d.ovl", dir, i);
	assert_int_equal(disk_seal_top_and_push_new(d, path), -E2BIG);
	wr(d, 0, x, CS); /* the top still works */
	assert_false(disk_top_empty(d));
	disk_close(d, true);
	assert_int_equal(access(l0, F_OK), -1);
}

/* RLIMIT_FSIZE stands in for a full filesystem: the write fails, nothing is marked present. */
static void test_no_space(void **state)
{
	struct rlimit old, lim;
	struct disk *d = open_disk(NULL, 0, l0, NULL);
	uint8_t x[CS];
	struct iovec iov = { x, CS };

	memset(x, 0x5a, sizeof(x));
	signal(SIGXFSZ, SIG_IGN);
	assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
	lim = old;
	lim.rlim_cur = d->data_off + 4 * CS;
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
	wr(d, 0, x, CS);
	assert_int_equal(disk_write(d, 100 * CS, &iov, 1, CS), -EFBIG);
	assert_int_equal(disk_write(d, 100 * CS + 10, &iov, 1, 100), -EFBIG); /* copy-up too */
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
	assert_int_equal(d->layers[0]->nalloc, 1);
	rd(d, 100 * CS, x, CS);
	expect_base(x, 100 * CS, CS);
	disk_close(d, true);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_base_only),
		cmocka_unit_test(test_write_read_copy_up),
		cmocka_unit_test(test_chain_seal_reopen),
		cmocka_unit_test(test_two_tops),
		cmocka_unit_test(test_corruption),
		cmocka_unit_test(test_wrong_base_and_cache),
		cmocka_unit_test(test_export),
		cmocka_unit_test(test_seal_empty_and_limits),
		cmocka_unit_test(test_no_space),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
