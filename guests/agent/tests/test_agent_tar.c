/* Unit tests for the ustar codec (core/ustar.c) and safe extraction (core/tartree.c) behind
 * put_tree/get_tree and `forkvm cp`: malformed and hostile archives, path rules, symlinks
 * in the way, limits, and write-then-read round trips. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "util/errmsg.h"
#include "util/tartree.h"
#include "util/ustar.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_ARCHIVE (64 * USTAR_BLOCK)

/* A hand-made archive, so tests can say exactly what a hostile writer would. */
struct raw {
	uint8_t buf[MAX_ARCHIVE];
	size_t len;
};

static void raw_header(struct raw *r, const char *name, char type, size_t size, const char *link,
		       const char *magic)
{
	uint8_t *h = r->buf + r->len;
	unsigned int sum = 0;

	memset(h, 0, USTAR_BLOCK);
	memcpy(h, name, strnlen(name, 100));
	snprintf((char *)h + 100, 8, "%07o", 0644);
	snprintf((char *)h + 108, 8, "%07o", 0);
	snprintf((char *)h + 116, 8, "%07o", 0);
	snprintf((char *)h + 124, 12, "%011o", (unsigned int)size);
	snprintf((char *)h + 136, 12, "%011o", 1700000000);
	h[156] = (uint8_t)type;
	if (link)
		memcpy(h + 157, link, strnlen(link, 100));
	memcpy(h + 257, magic ? magic : "ustar\0" "00", 8);
	memset(h + 148, ' ', 8);
	for (int i = 0; i < USTAR_BLOCK; i++)
		sum += h[i];
	snprintf((char *)h + 148, 8, "%06o", sum);
	r->len += USTAR_BLOCK;
}

static void raw_data(struct raw *r, const void *data, size_t len)
{
	memcpy(r->buf + r->len, data, len);
	r->len += (len + USTAR_BLOCK - 1) / USTAR_BLOCK * USTAR_BLOCK;
}

static void raw_file(struct raw *r, const char *name, const char *text)
{
	raw_header(r, name, '0', strlen(text), NULL, NULL);
	raw_data(r, text, strlen(text));
}

static void raw_end(struct raw *r)
{
	r->len += 2 * USTAR_BLOCK; /* the buffer is zeroed by the caller */
}

/* Read every member; returns the first error or the count of members. */
static int read_all(const uint8_t *buf, size_t len, struct fvm_err *err)
{
	struct ustar_entry *e = malloc(sizeof(*e));
	struct ustar_reader r;
	int n = 0, ret;

	ustar_reader_init(&r, buf, len);
	while ((ret = ustar_next(&r, e, err)) > 0)
		n++;
	free(e);
	return ret < 0 ? ret : n;
}

static void expect_refused(struct raw *r, int want, const char *msg)
{
	struct fvm_err err = FVM_ERR_INIT;
	int ret = read_all(r->buf, r->len, &err);

	if (ret != want || !strstr(err.msg, msg))
		fail_msg("got %d '%s', wanted %d with '%s'", ret, err.msg, want, msg);
}

static void test_clean_path(void **state)
{
	static const char *const ok[][2] = {
		{ "a/b/c", "a/b/c" }, { "./a//b/", "a/b" }, { "./", "" }, { ".", "" },
		{ "a/./b", "a/b" },   { "...", "..." },     { "a..b/..c", "a..b/..c" },
	};
	static const char *const bad[] = { "/etc/passwd", "..", "../x", "a/../../x", "a/..", "//x" };
	char buf[64];
	struct fvm_err err = FVM_ERR_INIT;

	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		snprintf(buf, sizeof(buf), "%s", ok[i][0]);
		assert_int_equal(ustar_clean_path(buf, &err), 0);
		assert_string_equal(buf, ok[i][1]);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(buf, sizeof(buf), "%s", bad[i]);
		if (ustar_clean_path(buf, &err) != -EINVAL)
			fail_msg("'%s' accepted", bad[i]);
		assert_non_null(strstr(err.msg, bad[i]));
	}
}

static void test_hostile_archives(void **state)
{
	struct raw *r = calloc(1, sizeof(*r));

	raw_file(r, "../evil", "x");
	raw_end(r);
	expect_refused(r, -EINVAL, "'..' component");

	memset(r, 0, sizeof(*r));
	raw_file(r, "/etc/evil", "x");
	raw_end(r);
	expect_refused(r, -EINVAL, "absolute path");

	memset(r, 0, sizeof(*r));
	raw_header(r, "link", '1', 0, "/etc/shadow", NULL);
	raw_end(r);
	expect_refused(r, -EINVAL, "hard links are not supported");

	memset(r, 0, sizeof(*r));
	raw_header(r, "dev", '3', 0, NULL, NULL);
	raw_end(r);
	expect_refused(r, -EINVAL, "device and FIFO");

	/* A pax path overrides a harmless header name: the override is checked too. */
	memset(r, 0, sizeof(*r));
	raw_header(r, "././@PaxHeader", 'x', 19, NULL, NULL);
	raw_data(r, "19 path=../../oops\n", 19);
	raw_file(r, "harmless", "x");
	raw_end(r);
	expect_refused(r, -EINVAL, "'..' component");

	/* So is a GNU long name. */
	memset(r, 0, sizeof(*r));
	raw_header(r, "././@LongLink", 'L', 8, NULL, "ustar  \0");
	raw_data(r, "/abs/x\0", 8);
	raw_file(r, "harmless", "x");
	raw_end(r);
	expect_refused(r, -EINVAL, "absolute path");

	memset(r, 0, sizeof(*r));
	raw_header(r, "sym", '2', 0, "", NULL);
	raw_end(r);
	expect_refused(r, -EINVAL, "has no target");
	free(r);
}

static void test_malformed_archives(void **state)
{
	struct raw *r = calloc(1, sizeof(*r));

	raw_file(r, "f", "hello");
	r->buf[0] ^= 1; /* checksum no longer matches */
	raw_end(r);
	expect_refused(r, -EBADMSG, "bad header checksum");

	memset(r, 0, sizeof(*r));
	raw_header(r, "f", '0', 4096, NULL, NULL); /* data announced, not there */
	expect_refused(r, -EBADMSG, "truncated archive");

	memset(r, 0, sizeof(*r));
	raw_file(r, "f", "hello");
	raw_file(r, "g", "hello");
	r->len = 2 * USTAR_BLOCK + 300; /* the second header is cut */
	expect_refused(r, -EBADMSG, "truncated header at offset 1024");

	memset(r, 0, sizeof(*r));
	raw_file(r, "f", "x");
	raw_end(r);
	memcpy(r->buf + 257, "nope!", 5);
	memset(r->buf + 148, ' ', 8);
	{
		unsigned int sum = 0;

		for (int i = 0; i < USTAR_BLOCK; i++)
			sum += r->buf[i];
		snprintf((char *)r->buf + 148, 8, "%06o", sum);
	}
	expect_refused(r, -EBADMSG, "not a ustar header");

	memset(r, 0, sizeof(*r));
	raw_header(r, "././@PaxHeader", 'x', 9, NULL, NULL);
	raw_data(r, "99 path=x", 9); /* length beyond the record */
	raw_file(r, "f", "x");
	raw_end(r);
	expect_refused(r, -EBADMSG, "malformed 'x' header");

	memset(r, 0, sizeof(*r));
	raw_header(r, "././@PaxHeader", 'x', 12, NULL, NULL);
	raw_data(r, "12 path=abc\n", 12);
	raw_end(r); /* the member it describes never comes */
	expect_refused(r, -EBADMSG, "extended header without a member");
	free(r);
}

static void test_reader_formats(void **state)
{
	struct raw *r = calloc(1, sizeof(*r));
	struct ustar_entry *e = malloc(sizeof(*e));
	struct ustar_reader rd;
	struct fvm_err err = FVM_ERR_INIT;

	/* POSIX prefix + name, a GNU long name, a pax size, base-256 size, "./" root, and an
	 * archive that just ends on a block boundary (no trailer). */
	raw_header(r, "./", '5', 0, NULL, NULL);
	raw_header(r, "name", '0', 0, NULL, NULL);
	memcpy(r->buf + r->len - USTAR_BLOCK + 345, "pre/fix", 7);
	memset(r->buf + r->len - USTAR_BLOCK + 148, ' ', 8);
	{
		unsigned int sum = 0;

		for (int i = 0; i < USTAR_BLOCK; i++)
			sum += r->buf[r->len - USTAR_BLOCK + i];
		snprintf((char *)r->buf + r->len - USTAR_BLOCK + 148, 8, "%06o", sum);
	}
	raw_header(r, "././@LongLink", 'L', 12, NULL, "ustar  \0");
	raw_data(r, "long/name.x", 12);
	raw_file(r, "ignored", "gnu");
	raw_header(r, "b256", '0', 0, NULL, NULL);
	{
		uint8_t *h = r->buf + r->len - USTAR_BLOCK;
		unsigned int sum = 0;

		memset(h + 124, 0, 12);
		h[124] = 0x80;
		h[135] = 3;
		memset(h + 148, ' ', 8);
		for (int i = 0; i < USTAR_BLOCK; i++)
			sum += h[i];
		snprintf((char *)h + 148, 8, "%06o", sum);
		raw_data(r, "abc", 3);
	}

	ustar_reader_init(&rd, r->buf, r->len);
	assert_int_equal(ustar_next(&rd, e, &err), 1);
	assert_int_equal(e->type, USTAR_DIR);
	assert_string_equal(e->path, "");
	assert_int_equal(ustar_next(&rd, e, &err), 1);
	assert_string_equal(e->path, "pre/fix/name");
	assert_int_equal(ustar_next(&rd, e, &err), 1);
	assert_string_equal(e->path, "long/name.x");
	assert_int_equal(e->size, 3);
	assert_memory_equal(e->data, "gnu", 3);
	assert_int_equal(ustar_next(&rd, e, &err), 1);
	assert_string_equal(e->path, "b256");
	assert_int_equal(e->size, 3);
	assert_memory_equal(e->data, "abc", 3);
	assert_int_equal(ustar_next(&rd, e, &err), 0);
	assert_int_equal(ustar_next(&rd, e, &err), 0);
	free(e);
	free(r);
}

static void test_writer_round_trip(void **state)
{
	char longdir[200], longname[400], longlink[300];
	struct fvm_err err = FVM_ERR_INIT;
	struct ustar_entry *e = malloc(sizeof(*e));
	struct ustar_writer w;
	struct ustar_reader r;

	memset(longdir, 'd', sizeof(longdir) - 1);
	longdir[sizeof(longdir) - 1] = '\0';
	longdir[120] = '/'; /* 199 bytes: splits into prefix (120) and name (78) */
	/* 350 bytes, no split fits: a pax header carries it. */
	snprintf(longname, sizeof(longname), "%s/%0150d", longdir, 0);
	memset(longlink, 'l', sizeof(longlink) - 1);
	longlink[sizeof(longlink) - 1] = '\0';

	ustar_writer_init(&w, 1 << 20);
	assert_int_equal(ustar_add(&w, USTAR_DIR, "dir", NULL, 0755, 1, NULL, 0), 0);
	assert_int_equal(ustar_add(&w, USTAR_FILE, "dir/f", NULL, 0600, 2, (const uint8_t *)"abc",
				   3), 0);
	assert_int_equal(ustar_add(&w, USTAR_FILE, longdir, NULL, 0644, 3, NULL, 0), 0);
	assert_int_equal(ustar_add(&w, USTAR_FILE, longname, NULL, 0644, 4,
				   (const uint8_t *)"x", 1), 0);
	assert_int_equal(ustar_add(&w, USTAR_SYMLINK, "ln", longlink, 0777, 5, NULL, 0), 0);
	assert_int_equal(ustar_add(&w, USTAR_FILE, "", NULL, 0644, 0, NULL, 0), -EINVAL);
	assert_int_equal(ustar_finish(&w), 0);
	assert_int_equal(w.len % USTAR_BLOCK, 0);

	ustar_reader_init(&r, w.buf, w.len);
	assert_int_equal(ustar_next(&r, e, &err), 1);
	assert_true(e->type == USTAR_DIR && !strcmp(e->path, "dir") && e->mode == 0755);
	assert_int_equal(ustar_next(&r, e, &err), 1);
	assert_true(e->type == USTAR_FILE && !strcmp(e->path, "dir/f") && e->size == 3);
	assert_int_equal(e->mtime, 2);
	assert_int_equal(ustar_next(&r, e, &err), 1);
	assert_string_equal(e->path, longdir);
	assert_int_equal(ustar_next(&r, e, &err), 1);
	assert_string_equal(e->path, longname);
	assert_int_equal(ustar_next(&r, e, &err), 1);
	assert_true(e->type == USTAR_SYMLINK && !strcmp(e->link, longlink));
	assert_int_equal(ustar_next(&r, e, &err), 0);
	ustar_writer_free(&w);

	/* The bound holds the trailer back: finish never fails after a successful add. */
	ustar_writer_init(&w, 4 * USTAR_BLOCK);
	assert_int_equal(ustar_add(&w, USTAR_FILE, "a", NULL, 0644, 0, (const uint8_t *)"x", 1), 0);
	assert_int_equal(ustar_add(&w, USTAR_FILE, "b", NULL, 0644, 0, NULL, 0), -E2BIG);
	assert_int_equal(ustar_finish(&w), 0);
	assert_int_equal(w.len, 4 * USTAR_BLOCK);
	ustar_writer_free(&w);
	free(e);
}

/* ------------------------------------------------------------------ on a filesystem */

static char tmp[64];

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	return remove(path);
}

static int setup_dir(void **state)
{
	snprintf(tmp, sizeof(tmp), "/tmp/forkvm-tartree-XXXXXX");
	return mkdtemp(tmp) ? 0 : -1;
}

static int teardown_dir(void **state)
{
	return nftw(tmp, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static int extract(struct raw *r, size_t max_entries, struct fvm_err *err)
{
	const struct tartree_limits lim = { MAX_ARCHIVE, max_entries };
	struct tartree_stats st;
	int fd = open(tmp, O_RDONLY | O_DIRECTORY), ret;

	assert_true(fd >= 0);
	ret = tartree_extract(fd, r->buf, r->len, &lim, &st, err);
	close(fd);
	return ret;
}

static const char *at(const char *rel)
{
	static char buf[256];

	snprintf(buf, sizeof(buf), "%s/%s", tmp, rel);
	return buf;
}

static void test_extract_stays_inside(void **state)
{
	struct raw *r = calloc(1, sizeof(*r));
	char target[64];
	struct fvm_err err = FVM_ERR_INIT;
	struct stat sb;

	/* A symlink member pointing out, then a file "through" it: the file is refused, the
	 * outside is untouched. */
	raw_header(r, "out", '2', 0, "/tmp", NULL);
	raw_file(r, "out/forkvm-tartree-escape", "pwned");
	raw_end(r);
	assert_int_equal(extract(r, 100, &err), -ENOTDIR);
	assert_non_null(strstr(err.msg, "not followed"));
	assert_int_equal(lstat("/tmp/forkvm-tartree-escape", &sb), -1);
	assert_int_equal(readlink(at("out"), target, sizeof(target)), 4);

	/* A symlink already on disk is not followed either. */
	assert_int_equal(symlink("/tmp", at("pre")), 0);
	memset(r, 0, sizeof(*r));
	raw_file(r, "pre/forkvm-tartree-escape", "pwned");
	raw_end(r);
	assert_int_equal(extract(r, 100, &err), -ENOTDIR);
	assert_int_equal(lstat("/tmp/forkvm-tartree-escape", &sb), -1);

	/* But a file member replaces a symlink at its own name (writing the link, not its target). */
	memset(r, 0, sizeof(*r));
	raw_file(r, "pre", "now a file");
	raw_end(r);
	assert_int_equal(extract(r, 100, &err), 0);
	assert_int_equal(lstat(at("pre"), &sb), 0);
	assert_true(S_ISREG(sb.st_mode));
	free(r);
}

static void test_extract_modes_and_limits(void **state)
{
	struct raw *r = calloc(1, sizeof(*r));
	struct fvm_err err = FVM_ERR_INIT;
	struct stat sb;

	raw_header(r, "d/", '5', 0, NULL, NULL);
	raw_file(r, "d/suid", "#!/bin/sh\n");
	r->buf[USTAR_BLOCK + 100 + 3] = '4'; /* mode 0004644 */
	{
		uint8_t *h = r->buf + USTAR_BLOCK;
		unsigned int sum = 0;

		memset(h + 148, ' ', 8);
		for (int i = 0; i < USTAR_BLOCK; i++)
			sum += h[i];
		snprintf((char *)h + 148, 8, "%06o", sum);
	}
	raw_end(r);
	assert_int_equal(extract(r, 100, &err), 0);
	assert_int_equal(stat(at("d/suid"), &sb), 0);
	assert_int_equal(sb.st_mode & 07777, 0644); /* set-uid dropped */
	assert_int_equal(sb.st_mtime, 1700000000);

	/* An existing directory where a file goes is an error, not a recursive delete. */
	memset(r, 0, sizeof(*r));
	raw_file(r, "d", "x");
	raw_end(r);
	assert_int_equal(extract(r, 100, &err), -EISDIR);
	assert_non_null(strstr(err.msg, "a directory is in the way"));

	memset(r, 0, sizeof(*r));
	raw_file(r, "1", "a");
	raw_file(r, "2", "b");
	raw_file(r, "3", "c");
	raw_end(r);
	assert_int_equal(extract(r, 2, &err), -E2BIG);
	assert_non_null(strstr(err.msg, "more than 2 entries"));
	free(r);
}

static void test_archive_round_trip(void **state)
{
	const struct tartree_limits lim = { 1 << 20, 100 };
	struct tartree_stats st;
	enum tartree_kind kind;
	char src[128], dst[128], link[64];
	struct fvm_err err = FVM_ERR_INIT;
	uint8_t *tar;
	size_t len;
	struct stat sb;
	int fd;

	snprintf(src, sizeof(src), "%s/src", tmp);
	snprintf(dst, sizeof(dst), "%s/dst", tmp);
	assert_int_equal(mkdir(src, 0755), 0);
	assert_int_equal(mkdir(at("src/sub"), 0750), 0);
	fd = open(at("src/sub/f"), O_WRONLY | O_CREAT, 0640);
	assert_int_equal(write(fd, "content", 7), 7);
	close(fd);
	assert_int_equal(symlink("../sub/f", at("src/ln")), 0);
	assert_int_equal(mkfifo(at("src/fifo"), 0644), 0);

	assert_int_equal(tartree_archive(src, &lim, &tar, &len, &kind, &st, &err), 0);
	assert_int_equal(kind, TARTREE_DIR);
	assert_int_equal(st.entries, 3); /* ln, sub, sub/f */
	assert_int_equal(st.skipped, 1); /* the FIFO */
	assert_int_equal(st.bytes, 7);
	assert_int_equal(mkdir(dst, 0755), 0);
	fd = open(dst, O_RDONLY | O_DIRECTORY);
	assert_int_equal(tartree_extract(fd, tar, len, &lim, &st, &err), 0);
	close(fd);
	free(tar);
	assert_int_equal(stat(at("dst/sub/f"), &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0640);
	assert_int_equal(sb.st_size, 7);
	assert_int_equal(readlink(at("dst/ln"), link, sizeof(link)), 8);

	/* One file archives as a single member named by its basename. */
	assert_int_equal(tartree_archive(at("src/sub/f"), &lim, &tar, &len, &kind, &st, &err), 0);
	assert_int_equal(kind, TARTREE_FILE);
	assert_int_equal(st.entries, 1);
	assert_int_equal(read_all(tar, len, &err), 1);
	free(tar);

	/* Bounds: bytes and entries. */
	{
		const struct tartree_limits small = { 3 * USTAR_BLOCK, 100 }, few = { 1 << 20, 2 };

		assert_int_equal(tartree_archive(src, &small, &tar, &len, &kind, &st, &err),
				 -E2BIG);
		assert_non_null(strstr(err.msg, "exceeds the limit"));
		assert_int_equal(tartree_archive(src, &few, &tar, &len, &kind, &st, &err), -E2BIG);
		assert_non_null(strstr(err.msg, "more than 2 entries"));
	}
	assert_int_equal(tartree_archive(at("nope"), &lim, &tar, &len, &kind, &st, &err), -ENOENT);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_clean_path),
		cmocka_unit_test(test_hostile_archives),
		cmocka_unit_test(test_malformed_archives),
		cmocka_unit_test(test_reader_formats),
		cmocka_unit_test(test_writer_round_trip),
		cmocka_unit_test_setup_teardown(test_extract_stays_inside, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_extract_modes_and_limits, setup_dir,
						teardown_dir),
		cmocka_unit_test_setup_teardown(test_archive_round_trip, setup_dir, teardown_dir),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
