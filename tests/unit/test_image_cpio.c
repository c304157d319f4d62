/* newc writer: parse the archive back and check order, fields, contents and determinism. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "image/cpio.h"
#include "loader/payload.h"

struct parsed {
	char name[64];
	unsigned long f[13]; /* ino mode uid gid nlink mtime size devmaj devmin rdevmaj rdevmin namesz check */
	const uint8_t *data;
};

static unsigned long hex8(const uint8_t *p)
{
	char buf[9];

	memcpy(buf, p, 8);
	buf[8] = 0;
	return strtoul(buf, NULL, 16);
}

/* Parse until TRAILER!!!; returns the number of entries before it. */
static int parse(const uint8_t *buf, size_t len, struct parsed *out, int max)
{
	size_t pos = 0;
	int n = 0;

	while (pos + 110 <= len && n < max) {
		struct parsed *e = &out[n];

		assert_memory_equal(buf + pos, "070701", 6);
		for (int i = 0; i < 13; i++)
			e->f[i] = hex8(buf + pos + 6 + 8 * i);
		snprintf(e->name, sizeof(e->name), "%s", (const char *)buf + pos + 110);
		assert_int_equal(strlen(e->name) + 1, e->f[11]);
		pos = (pos + 110 + e->f[11] + 3) & ~3UL;
		e->data = buf + pos;
		pos = (pos + e->f[6] + 3) & ~3UL;
		if (!strcmp(e->name, "TRAILER!!!")) {
			assert_int_equal(pos, len);
			return n;
		}
		n++;
	}
	fail_msg("no trailer");
	return -1;
}

static void fill(struct cpio_archive *ar)
{
	assert_int_equal(cpio_add_file(ar, "init", 0755, "#!/bin/sh\n", 10), 0);
	assert_int_equal(cpio_add_dir(ar, "bin", 0755), 0);
	assert_int_equal(cpio_add_symlink(ar, "bin/sh", "busybox"), 0);
	assert_int_equal(cpio_add_file(ar, "bin/busybox", 0755, "ELF!!", 5), 0);
	assert_int_equal(cpio_add_dir(ar, "/dev", 0755), 0); /* leading slash dropped */
	assert_int_equal(cpio_add_chardev(ar, "dev/console", 0600, 5, 1), 0);
}

static void test_roundtrip(void **state)
{
	struct cpio_archive ar = { 0 };
	struct parsed e[16];
	uint8_t *buf;
	size_t len;

	fill(&ar);
	assert_int_equal(cpio_write(&ar, &buf, &len), 0);
	assert_int_equal(len % 4, 0);
	assert_int_equal(parse(buf, len, e, 16), 6);
	assert_string_equal(e[0].name, "bin");
	assert_string_equal(e[1].name, "bin/busybox");
	assert_string_equal(e[2].name, "bin/sh");
	assert_string_equal(e[3].name, "dev");
	assert_string_equal(e[4].name, "dev/console");
	assert_string_equal(e[5].name, "init");
	assert_int_equal(e[0].f[1], S_IFDIR | 0755);
	assert_int_equal(e[0].f[4], 2);			/* nlink of a directory */
	assert_int_equal(e[1].f[6], 5);
	assert_memory_equal(e[1].data, "ELF!!", 5);
	assert_int_equal(e[2].f[1], S_IFLNK | 0777);
	assert_memory_equal(e[2].data, "busybox", 7);
	assert_int_equal(e[4].f[1], S_IFCHR | 0600);
	assert_int_equal(e[4].f[9], 5);
	assert_int_equal(e[4].f[10], 1);
	for (int i = 0; i < 6; i++) {
		assert_int_equal(e[i].f[0], (unsigned long)i + 1); /* inode */
		assert_int_equal(e[i].f[2], 0);			   /* uid */
		assert_int_equal(e[i].f[5], CPIO_MTIME);
	}
	free(buf);
	cpio_free(&ar);
}

static void test_reproducible_gzip(void **state)
{
	struct cpio_archive a = { 0 }, b = { 0 };
	uint8_t *ba, *bb, *ga, *gb, *raw;
	size_t la, lb, gla, glb, rawlen;

	fill(&a);
	assert_int_equal(cpio_add_file(&b, "init", 0755, "#!/bin/sh\n", 10), 0);
	assert_int_equal(cpio_add_dir(&b, "dev", 0755), 0);
	assert_int_equal(cpio_add_chardev(&b, "dev/console", 0600, 5, 1), 0);
	assert_int_equal(cpio_add_file(&b, "bin/busybox", 0755, "ELF!!", 5), 0);
	assert_int_equal(cpio_add_dir(&b, "bin", 0755), 0);
	assert_int_equal(cpio_add_symlink(&b, "bin/sh", "busybox"), 0);
	assert_int_equal(cpio_write(&a, &ba, &la), 0);
	assert_int_equal(cpio_write(&b, &bb, &lb), 0);
	assert_int_equal(la, lb);
	assert_memory_equal(ba, bb, la); /* insertion order does not matter */
	assert_int_equal(gzip_compress(ba, la, &ga, &gla), 0);
	assert_int_equal(gzip_compress(bb, lb, &gb, &glb), 0);
	assert_int_equal(gla, glb);
	assert_memory_equal(ga, gb, gla);
	assert_int_equal(ga[4] | ga[5] | ga[6] | ga[7], 0); /* gzip mtime */
	assert_int_equal(gzip_decode(ga, gla, &raw, &rawlen), 0);
	assert_int_equal(rawlen, la);
	assert_memory_equal(raw, ba, la);
	free(raw); free(ba); free(bb); free(ga); free(gb);
	cpio_free(&a);
	cpio_free(&b);
}

static void test_errors(void **state)
{
	struct cpio_archive ar = { 0 };
	uint8_t *buf;
	size_t len;

	assert_int_equal(cpio_add_dir(&ar, "bin", 0755), 0);
	assert_int_equal(cpio_add_dir(&ar, "bin", 0755), -EEXIST);
	assert_int_equal(cpio_add_file(&ar, "/", 0644, "", 0), -EINVAL);
	assert_int_equal(cpio_add_file(&ar, "lib/modules/x.ko", 0644, "x", 1), 0);
	assert_int_equal(cpio_write(&ar, &buf, &len), -ENOENT); /* lib, lib/modules missing */
	cpio_free(&ar);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_roundtrip),
		cmocka_unit_test(test_reproducible_gzip),
		cmocka_unit_test(test_errors),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
