/* Snapshot files read whole: FIFOs, links and huge sparse files are refused without waiting. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "snapshot/snap_format.h"
#include "snapshot/snap_layer.h"
#include "uffd/hotlist.h"
#include "util/errmsg.h"

static char dir[64];

static int setup(void **state)
{
	snprintf(dir, sizeof(dir), "/tmp/forkvm-snapfiles-XXXXXX");
	return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	return system(cmd) == 0 ? 0 : -1;
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void path_of(char *buf, size_t len, const char *name)
{
	snprintf(buf, len, "%s/%s", dir, name);
}

static void expect_in(const char *err, const char *want)
{
	if (!strstr(err, want))
		fail_msg("error '%s' does not mention '%s'", err, want);
}

/* A FIFO nobody writes to: a blocking open would wait forever. */
static void test_fifo_refused_at_once(void **state)
{
	char path[PATH_MAX];
	struct fvm_err err = FVM_ERR_INIT;
	uint8_t *data = NULL;
	size_t len;
	double t0;

	path_of(path, sizeof(path), "vmstate");
	assert_int_equal(mkfifo(path, 0600), 0);
	t0 = now();
	assert_int_equal(file_read(path, 1 << 20, FILE_NOFOLLOW, &data, &len, &err),
			 -EINVAL);
	expect_in(err.msg, "not a regular file");
	expect_in(err.msg, path);
	assert_null(data);
	/* snap_open (restore, verify, the page server) goes through the same helper. */
	assert_int_not_equal(snap_open(dir, &(struct snapshot){ 0 }, &err), 0);
	expect_in(err.msg, "not a regular file");
	path_of(path, sizeof(path), HOTLIST_FILE);
	assert_int_equal(mkfifo(path, 0600), 0);
	assert_int_equal(file_read(path, 1 << 20, FILE_NOFOLLOW, &data, &len, &err),
			 -EINVAL);
	expect_in(err.msg, "not a regular file");
	path_of(path, sizeof(path), ACCESS_LOG_FILE);
	assert_int_equal(mkfifo(path, 0600), 0);
	assert_int_equal(file_read(path, 1 << 20, FILE_NOFOLLOW, &data, &len, &err),
			 -EINVAL);
	assert_true(now() - t0 < 1.0);
}

static void test_huge_sparse_file_refused_before_reading(void **state)
{
	char path[PATH_MAX];
	struct fvm_err err = FVM_ERR_INIT;
	uint8_t *data = NULL;
	size_t len;
	double t0;
	int fd;

	path_of(path, sizeof(path), HOTLIST_FILE);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, 1LL << 30), 0);
	close(fd);
	t0 = now();
	/* The bound a 64 MiB VM gets: 16384 pages. */
	assert_int_equal(file_read(path, HPL_MAX_BYTES(16384), FILE_NOFOLLOW, &data, &len, &err),
			 -EFBIG);
	assert_true(now() - t0 < 0.1);
	expect_in(err.msg, "1073741824 bytes");
	expect_in(err.msg, "above the limit of 180238");
	assert_null(data);
}

static void test_links_refused_regular_read(void **state)
{
	char path[PATH_MAX], target[PATH_MAX];
	struct fvm_err err = FVM_ERR_INIT;
	uint8_t *data = NULL;
	size_t len;
	int fd;

	path_of(target, sizeof(target), "real");
	fd = open(target, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "hello", 5), 5);
	close(fd);
	assert_int_equal(file_read(target, 5, FILE_NOFOLLOW, &data, &len, &err), 0);
	assert_int_equal(len, 5);
	assert_memory_equal(data, "hello\0", 6); /* NUL-terminated */
	free(data);
	data = NULL;
	assert_int_equal(file_read(target, 4, FILE_NOFOLLOW, &data, &len, &err), -EFBIG);
	path_of(path, sizeof(path), "link");
	assert_int_equal(symlink(target, path), 0);
	assert_int_equal(file_read(path, 100, FILE_NOFOLLOW, &data, &len, &err), -ELOOP);
	expect_in(err.msg, "symbolic link");
	/* The memory file may be a link (diff layers): file_open_regular follows on request. */
	struct stat st;
	fd = file_open_regular(path, 0, &st, &err);
	assert_true(fd >= 0);
	assert_int_equal(st.st_size, 5);
	assert_int_equal(fcntl(fd, F_GETFL) & O_NONBLOCK, 0);
	close(fd);
	path_of(path, sizeof(path), "missing");
	assert_int_equal(file_read(path, 100, FILE_NOFOLLOW, &data, &len, &err), -ENOENT);
	expect_in(err.msg, "missing");
}

static void put_file(const char *path, const void *data, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, data, len), (ssize_t)len);
	close(fd);
}

/* A layer whose pages file or parent is wrong is refused by snap_layers_check (snap_open). */
static void test_layer_chain_checked_without_reading_pages(void **state)
{
	char base[PATH_MAX], layer[PATH_MAX], path[PATH_MAX + 32], line[PATH_MAX + 64];
	struct fvm_err err = FVM_ERR_INIT;
	uint8_t pages[32] = "FKVMPGS1";
	uint32_t v32;

	path_of(base, sizeof(base), "base");
	path_of(layer, sizeof(layer), "layer");
	assert_int_equal(mkdir(base, 0700), 0);
	assert_int_equal(mkdir(layer, 0700), 0);
	snprintf(path, sizeof(path), "%s/vmstate", base);
	put_file(path, "base state", 10);
	snprintf(line, sizeof(line), "%s %016llx\n", base,
		 (unsigned long long)XXH64("base state", 10, 0));
	snprintf(path, sizeof(path), "%s/parent", layer);
	put_file(path, line, strlen(line));
	v32 = 1;
	memcpy(pages + 8, &v32, 4);
	v32 = 4096;
	memcpy(pages + 12, &v32, 4); /* count 0, then a checksum */
	snprintf(path, sizeof(path), "%s/pages", layer);
	put_file(path, pages, sizeof(pages));
	assert_int_equal(snap_layers_check(layer, 1 << 20, &err), 0);
	/* A base (no pages file) is a chain of none. */
	assert_int_equal(snap_layers_check(base, 1 << 20, &err), 0);
	/* Truncated pages. */
	put_file(path, pages, 31);
	assert_int_equal(snap_layers_check(layer, 1 << 20, &err), -EINVAL);
	expect_in(err.msg, "malformed or truncated");
	/* A FIFO in place of pages: refused at once. */
	assert_int_equal(unlink(path), 0);
	assert_int_equal(mkfifo(path, 0600), 0);
	assert_int_equal(snap_layers_check(layer, 1 << 20, &err), -EINVAL);
	expect_in(err.msg, "not a regular file");
	assert_int_equal(unlink(path), 0);
	put_file(path, pages, sizeof(pages));
	/* The parent changed since the layer was written. */
	snprintf(path, sizeof(path), "%s/vmstate", base);
	put_file(path, "base statf", 10);
	assert_int_equal(snap_layers_check(layer, 1 << 20, &err), -EINVAL);
	expect_in(err.msg, "changed since the layer was written");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_fifo_refused_at_once, setup, teardown),
		cmocka_unit_test_setup_teardown(test_huge_sparse_file_refused_before_reading, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_links_refused_regular_read, setup, teardown),
		cmocka_unit_test_setup_teardown(test_layer_chain_checked_without_reading_pages, setup,
						teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
