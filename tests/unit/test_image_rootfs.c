/* Rootfs builder: --packages and apt-get -s parsing, .deb names, tar path safety, usr-merge,
 * staging inside the root, tar extraction rules, image sizing, dumpe2fs and mke2fs output,
 * the kernel command line and the /init root-disk section. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "image/cmdrun.h"
#include "image/fsutil.h"
#include "image/image.h"
#include "image/pkg.h"
#include "image/rootfs.h"
#include "image/stage.h"

/* ---- --packages ---- */

static void test_package_list(void **state)
{
	char list[] = "curl, git,,jq ,libfoo2.0+x-1";
	const char *names[8];
	int n = 0;

	assert_int_equal(rootfs_parse_package_list(list, names, &n, 8), 0);
	assert_int_equal(n, 4);
	assert_string_equal(names[0], "curl");
	assert_string_equal(names[1], "git");
	assert_string_equal(names[2], "jq");
	assert_string_equal(names[3], "libfoo2.0+x-1");
}

static void test_package_list_rejects(void **state)
{
	static const char *const bad[] = { "Curl", "a", "-x", "foo bar", "foo;rm", "x/y", "a=1",
					   "../x" };
	const char *names[8];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char list[32];
		int n = 0;

		snprintf(list, sizeof(list), "%s", bad[i]);
		if (rootfs_parse_package_list(list, names, &n, 8) != -EINVAL)
			fail_msg("\"%s\" was accepted", bad[i]);
	}
	char many[] = "aa,bb,cc";
	int n = 0;

	assert_int_equal(rootfs_parse_package_list(many, names, &n, 2), -E2BIG);
}

/* ---- apt-get -s ---- */

static const char sim_text[] =
	"NOTE: This is only a simulation!\n"
	"Reading package lists...\n"
	"The following NEW packages will be installed:\n"
	"  bash libc6 python3\n"
	"Inst libc6 (2.36-9+deb12u14 Debian:12.15/oldstable [amd64]) []\n"
	"Inst python3 (3.11.2-1+b1 Debian:12.15/oldstable [amd64])\n"
	"Inst libattr1 (1:2.5.1-4 Debian:12.15/oldstable [amd64])\n"
	"Inst ca-certificates (20250419~deb12u2 Debian-Security:12/oldstable-security [all])\n"
	"Inst libkrb5-3 (1.20.1-2+deb12u5 Debian:12.15/oldstable, Debian-Security:12/oldstable-security [amd64])\n"
	"Conf libc6 (2.36-9+deb12u14 Debian:12.15/oldstable [amd64])\n"
	"Inst bash [5.1-2] (5.2.15-2+b13 Debian:12.15/oldstable [amd64])\n";

static void test_parse_sim(void **state)
{
	struct rootfs_pkglist l = { 0 };
	const struct rootfs_pkg *p;

	assert_int_equal(rootfs_parse_sim(sim_text, &l), 0);
	assert_int_equal(l.count, 6);
	for (int i = 1; i < l.count; i++) /* sorted */
		assert_true(strcmp(l.pkgs[i - 1].name, l.pkgs[i].name) < 0);
	p = rootfs_pkglist_find(&l, "libattr1");
	assert_non_null(p);
	assert_string_equal(p->version, "1:2.5.1-4");
	assert_string_equal(p->arch, "amd64");
	p = rootfs_pkglist_find(&l, "ca-certificates");
	assert_string_equal(p->arch, "all");
	assert_string_equal(p->version, "20250419~deb12u2");
	assert_string_equal(rootfs_pkglist_find(&l, "libkrb5-3")->arch, "amd64");
	assert_string_equal(rootfs_pkglist_find(&l, "bash")->version, "5.2.15-2+b13");
	assert_null(rootfs_pkglist_find(&l, "dash"));
	rootfs_pkglist_free(&l);
}

static void test_parse_sim_errors(void **state)
{
	struct rootfs_pkglist l = { 0 };

	assert_int_equal(rootfs_parse_sim("Reading package lists...\n", &l), -ENOENT);
	assert_int_equal(rootfs_parse_sim("Inst broken\n", &l), -EINVAL);
	rootfs_pkglist_free(&l);
	assert_int_equal(rootfs_parse_sim("Inst x (1.0 Debian [amd64])\n", &l), -EINVAL); /* name */
	rootfs_pkglist_free(&l);
	assert_int_equal(rootfs_parse_sim("Inst xx (1.0 Debian amd64)\n", &l), -EINVAL); /* arch */
	rootfs_pkglist_free(&l);
}

/* ---- .deb names and cache paths ---- */

static void test_deb_names(void **state)
{
	char name[128], ver[128];
	struct pkg p;

	assert_int_equal(pkg_parse_deb_name("libattr1_1%3a2.5.1-4_amd64.deb", name, sizeof(name),
					    ver, sizeof(ver)), 0);
	assert_string_equal(name, "libattr1");
	assert_string_equal(ver, "1:2.5.1-4");
	assert_int_equal(pkg_parse_deb_name("python3-pip_23.0.1+dfsg-1_all.deb", name,
					    sizeof(name), ver, sizeof(ver)), 0);
	assert_string_equal(ver, "23.0.1+dfsg-1");
	assert_int_equal(pkg_parse_deb_name("a_b.deb", name, 128, ver, 128), -EINVAL);
	assert_int_equal(pkg_parse_deb_name("a_1_amd64.tar", name, 128, ver, 128), -EINVAL);
	assert_int_equal(pkg_parse_deb_name("_1_amd64.deb", name, 128, ver, 128), -EINVAL);
	assert_int_equal(pkg_parse_deb_name("a_1_x_amd64.deb", name, 128, ver, 128), -EINVAL);
	assert_int_equal(pkg_set(&p, "/c", "libattr1", "1:2.5.1-4", "amd64"), 0);
	assert_string_equal(p.deb, "/c/debs/libattr1_1_2.5.1-4_amd64.deb");
	assert_string_equal(p.root, "/c/pkgs/libattr1_1_2.5.1-4");
	assert_string_equal(p.version, "1:2.5.1-4");
}

/* ---- paths ---- */

static void test_tar_paths(void **state)
{
	static const struct { const char *in, *out; int ret; } cases[] = {
		{ "etc/passwd", "etc/passwd", 0 }, { "./etc/passwd", "etc/passwd", 0 },
		{ "usr//bin/./ls", "usr/bin/ls", 0 }, { "dir/", "dir", 0 }, { "./", "", 1 },
		{ ".", "", 1 }, { "...", "...", 0 }, { "a..b/..c", "a..b/..c", 0 },
		{ "../evil", NULL, -EINVAL }, { "a/../../b", NULL, -EINVAL }, { "a/..", NULL, -EINVAL },
		{ "/etc/passwd", NULL, -EINVAL }, { "", NULL, -EINVAL }, { "./../x", NULL, -EINVAL },
	};
	char out[64];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int ret = stage_tar_path(cases[i].in, out, sizeof(out));

		if (ret != cases[i].ret || (ret >= 0 && strcmp(out, cases[i].out)))
			fail_msg("\"%s\": %d \"%s\"", cases[i].in, ret, ret >= 0 ? out : "");
	}
	assert_int_equal(stage_tar_path("a/very/long/path/name", out, 8), -ENAMETOOLONG);
}

static void test_usrmerge_paths(void **state)
{
	static const struct { const char *in, *out; } cases[] = {
		{ "bin/ls", "usr/bin/ls" }, { "sbin", "usr/sbin" },
		{ "lib/x86_64-linux-gnu/libc.so.6", "usr/lib/x86_64-linux-gnu/libc.so.6" },
		{ "lib64/ld-linux-x86-64.so.2", "usr/lib64/ld-linux-x86-64.so.2" },
		{ "libexec/x", "libexec/x" }, { "binx/y", "binx/y" }, { "etc/bin/z", "etc/bin/z" },
		{ "usr/bin/python3", "usr/bin/python3" },
	};
	char out[64];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		assert_int_equal(stage_usrmerge_path(cases[i].in, out, sizeof(out)), 0);
		assert_string_equal(out, cases[i].out);
	}
	assert_int_equal(stage_usrmerge_path("bin/ls", out, 6), -ENAMETOOLONG);
}

/* ---- staging on a real filesystem ---- */

static char work[64];

static int work_setup(void **state)
{
	snprintf(work, sizeof(work), "/tmp/forkvm-rootfs-test-XXXXXX");
	return mkdtemp(work) ? 0 : -1;
}

static int work_teardown(void **state)
{
	return remove_tree(work);
}

static void put(const char *rel, const char *text)
{
	char path[256], dir[256];

	snprintf(path, sizeof(path), "%s/%s", work, rel);
	snprintf(dir, sizeof(dir), "%s", path);
	*strrchr(dir, '/') = 0;
	assert_int_equal(image_mkdir(dir, 0755), 0);
	assert_int_equal(image_write_file(path, text, strlen(text), 0644), 0);
}

static int exists(const char *fmt, const char *arg)
{
	char path[256];
	struct stat sb;

	snprintf(path, sizeof(path), fmt, arg);
	return lstat(path, &sb) == 0;
}

static void test_stage_packages_stay_inside(void **state)
{
	char a[128], b[128], stage_path[128], link[128];
	struct stage st;

	put("a/bin/tool", "#!/bin/sh\n");
	put("a/etc/conf", "x\n");
	put("a/usr/lib/.keep", "");
	snprintf(link, sizeof(link), "%s/a/usr/lib/escape", work);
	assert_int_equal(symlink("/etc", link), 0); /* absolute: the stage's /etc, not ours */
	put("b/usr/lib/escape/forkvm-test-marker", "inside\n");
	put("b/etc/conf", "later package wins\n");
	snprintf(link, sizeof(link), "%s/b/fifo", work);
	assert_int_equal(mkfifo(link, 0644), 0);
	snprintf(a, sizeof(a), "%s/a", work);
	snprintf(b, sizeof(b), "%s/b", work);
	snprintf(stage_path, sizeof(stage_path), "%s/stage", work);
	assert_int_equal(stage_create(&st, stage_path), 0);
	assert_int_equal(stage_add_tree(&st, a, true), 0);
	assert_int_equal(stage_add_tree(&st, b, true), 0);
	assert_true(exists("%s/stage/usr/bin/tool", work));
	assert_false(exists("%s/stage/bin", work));
	assert_true(exists("%s/stage/etc/forkvm-test-marker", work));
	assert_false(exists("%s", "/etc/forkvm-test-marker"));
	assert_false(exists("%s/stage/fifo", work));
	assert_int_equal(st.skipped, 1);
	{
		char path[160];
		uint8_t *buf;
		size_t len;

		snprintf(path, sizeof(path), "%s/stage/etc/conf", work);
		assert_int_equal(file_read_all(path, &buf, &len), 0);
		assert_string_equal((char *)buf, "later package wins\n");
		free(buf);
	}
	/* Writing through the stage replaces the file; the package tree keeps its content. */
	assert_int_equal(stage_write(&st, "etc/conf", "new\n", 4, 0600, 1000), 0);
	{
		char path[160];
		uint8_t *buf;
		size_t len;

		snprintf(path, sizeof(path), "%s/b/etc/conf", work);
		assert_int_equal(file_read_all(path, &buf, &len), 0);
		assert_string_equal((char *)buf, "later package wins\n");
		free(buf);
	}
	assert_int_equal(stage_finish(&st, 1000), 0);
	assert_true(st.entries >= 6);
	stage_destroy(&st, false);
	assert_false(exists("%s/stage", work));
}

static void test_stage_fingerprint_is_stable(void **state)
{
	char src[128], s1[128], s2[128];
	struct stage a, b;

	put("src/usr/share/doc/x", "doc\n");
	put("src/etc/y", "y\n");
	snprintf(src, sizeof(src), "%s/src", work);
	snprintf(s1, sizeof(s1), "%s/s1", work);
	snprintf(s2, sizeof(s2), "%s/s2", work);
	assert_int_equal(stage_create(&a, s1), 0);
	assert_int_equal(stage_add_tree(&a, src, false), 0);
	assert_int_equal(stage_finish(&a, 1234), 0);
	sleep(1); /* directory times would differ without the epoch */
	assert_int_equal(stage_create(&b, s2), 0);
	assert_int_equal(stage_add_tree(&b, src, false), 0);
	assert_int_equal(stage_finish(&b, 1234), 0);
	assert_memory_equal(a.fingerprint, b.fingerprint, sizeof(a.fingerprint));
	assert_int_equal(a.entries, b.entries);
	assert_int_equal(stage_write(&b, "etc/z", "z", 1, 0644, 1234), 0);
	assert_int_equal(stage_finish(&b, 1234), 0);
	assert_memory_not_equal(a.fingerprint, b.fingerprint, sizeof(a.fingerprint));
	stage_destroy(&a, false);
	stage_destroy(&b, false);
}

/* ---- tar ---- */

struct member {
	const char *path;
	mode_t type;
	const char *data; /* file content, or link target */
};

static void make_tar(const char *path, const struct member *m, int n)
{
	struct archive *a = archive_write_new();
	struct archive_entry *e = archive_entry_new();

	archive_write_set_format_pax_restricted(a);
	assert_int_equal(archive_write_open_filename(a, path), ARCHIVE_OK);
	for (int i = 0; i < n; i++) {
		archive_entry_clear(e);
		archive_entry_set_pathname(e, m[i].path);
		archive_entry_set_filetype(e, m[i].type);
		archive_entry_set_perm(e, m[i].type == AE_IFDIR ? 0755 : 0644);
		archive_entry_set_mtime(e, 1700000000, 0);
		if (m[i].type == AE_IFLNK)
			archive_entry_set_symlink(e, m[i].data);
		if (m[i].type == AE_IFREG)
			archive_entry_set_size(e, (la_int64_t)strlen(m[i].data));
		if (m[i].type == AE_IFCHR)
			archive_entry_set_rdev(e, makedev(1, 3));
		assert_int_equal(archive_write_header(a, e), ARCHIVE_OK);
		if (m[i].type == AE_IFREG)
			assert_int_equal(archive_write_data(a, m[i].data, strlen(m[i].data)),
					 (la_ssize_t)strlen(m[i].data));
	}
	archive_entry_free(e);
	assert_int_equal(archive_write_close(a), ARCHIVE_OK);
	archive_write_free(a);
}

static int tar_into_stage(const struct member *m, int n, struct stage *st)
{
	char tar[128], stage_path[128];
	int ret;

	snprintf(tar, sizeof(tar), "%s/t.tar", work);
	snprintf(stage_path, sizeof(stage_path), "%s/tstage", work);
	make_tar(tar, m, n);
	remove_tree(stage_path);
	assert_int_equal(stage_create(st, stage_path), 0);
	ret = stage_add_tar(st, tar);
	return ret;
}

static void test_tar_good_and_skips_devices(void **state)
{
	static const struct member m[] = {
		{ "./", AE_IFDIR, NULL }, { "./etc", AE_IFDIR, NULL },
		{ "./etc/hostname", AE_IFREG, "box\n" }, { "./dev/null", AE_IFCHR, NULL },
		{ "./bin", AE_IFLNK, "usr/bin" }, { "./usr/bin/sh", AE_IFREG, "elf" },
		{ "./abs", AE_IFLNK, "/etc/hostname" },
	};
	struct stage st;

	assert_int_equal(tar_into_stage(m, 7, &st), 0);
	assert_true(exists("%s/tstage/etc/hostname", work));
	assert_true(exists("%s/tstage/usr/bin/sh", work));
	assert_true(exists("%s/tstage/abs", work));
	assert_false(exists("%s/tstage/dev/null", work));
	assert_int_equal(st.skipped, 1);
	stage_destroy(&st, false);
}

static void test_tar_rejects_escapes(void **state)
{
	static const struct member dotdot[] = { { "etc/ok", AE_IFREG, "ok" },
						{ "../evil", AE_IFREG, "x" } };
	static const struct member nested[] = { { "a/../../evil", AE_IFREG, "x" } };
	static const struct member abs[] = { { "/etc/evil", AE_IFREG, "x" } };
	static const struct member through[] = { { "l", AE_IFLNK, "/tmp" },
						 { "l/forkvm-evil", AE_IFREG, "x" } };
	struct stage st;

	assert_int_equal(tar_into_stage(dotdot, 2, &st), -EINVAL);
	stage_destroy(&st, false);
	assert_int_equal(tar_into_stage(nested, 1, &st), -EINVAL);
	stage_destroy(&st, false);
	assert_int_equal(tar_into_stage(abs, 1, &st), -EINVAL);
	stage_destroy(&st, false);
	assert_true(tar_into_stage(through, 2, &st) < 0);
	stage_destroy(&st, false);
	assert_false(exists("%s", "/tmp/forkvm-evil"));
}

static void test_tar_corrupt(void **state)
{
	static const struct member m[] = { { "big", AE_IFREG, NULL } };
	char tar[128], data[20000];
	uint8_t *buf;
	size_t len;
	struct stage st;
	struct member big = m[0];

	memset(data, 'x', sizeof(data) - 1);
	data[sizeof(data) - 1] = 0;
	big.data = data;
	snprintf(tar, sizeof(tar), "%s/t.tar", work);
	assert_int_equal(tar_into_stage(&big, 1, &st), 0);
	stage_destroy(&st, false);
	/* Cut in the middle of the member's data. */
	assert_int_equal(file_read_all(tar, &buf, &len), 0);
	assert_int_equal(image_write_file(tar, buf, 10000, 0644), 0);
	free(buf);
	snprintf(data, sizeof(data), "%s/tstage", work);
	remove_tree(data);
	assert_int_equal(stage_create(&st, data), 0);
	assert_int_equal(stage_add_tar(&st, tar), -EINVAL);
	stage_destroy(&st, false);
	/* Not a tar at all. */
	assert_int_equal(image_write_file(tar, "garbage garbage garbage\n", 24, 0644), 0);
	assert_int_equal(stage_create(&st, data), 0);
	assert_int_equal(stage_add_tar(&st, tar), -EINVAL);
	stage_destroy(&st, false);
}

/* ---- image size, dumpe2fs, mke2fs ---- */

static void test_sizes(void **state)
{
	uint64_t small = rootfs_auto_size_mib(0, 0, 0), mib100 = 100ULL << 20;

	assert_int_equal(small, 16);
	/* 100 MiB of files and 256 MiB free: at least 130 + 256, not absurdly more. */
	assert_true(rootfs_auto_size_mib(mib100, 4000, 256) >= 386);
	assert_true(rootfs_auto_size_mib(mib100, 4000, 256) <= 450);
	assert_true(rootfs_auto_size_mib(mib100, 4000, 0) < rootfs_auto_size_mib(mib100, 4000, 1));
	assert_int_equal(rootfs_inode_count(1024, 10), 65536);
	assert_int_equal(rootfs_inode_count(16, 100000), 100000 + 25000 + 1024);
}

static const char dump_text[] =
	"Filesystem volume name:   forkvm-root\n"
	"Inode count:              4096\n"
	"Free inodes:              4080\n"
	"\n"
	"Group 0: (Blocks 0-32767) csum 0x1234 [ITABLE_ZEROED]\n"
	"  Free blocks: 2330-32767\n"
	"  Free inodes: 17-20, 22-2048\n"
	"Group 1: (Blocks 32768-65535) csum 0x5678 [INODE_UNINIT]\n"
	"  Free inodes: 2049-4096\n";

static void test_used_inodes(void **state)
{
	uint8_t *used = NULL;
	uint32_t count = 0;

	assert_int_equal(rootfs_parse_used_inodes(dump_text, &count, &used), 0);
	assert_int_equal(count, 4096);
	for (uint32_t i = 1; i <= 16; i++)
		assert_int_equal(used[i], 1);
	assert_int_equal(used[17], 0);
	assert_int_equal(used[21], 1);
	assert_int_equal(used[22], 0);
	assert_int_equal(used[4096], 0);
	free(used);
	assert_int_equal(rootfs_parse_used_inodes("nothing\n", &count, &used), -EINVAL);
	assert_int_equal(rootfs_parse_used_inodes("Inode count: 10\n  Free inodes: 5-11\n", &count,
						  &used), -EINVAL);
	assert_int_equal(rootfs_parse_used_inodes("Inode count: 10\n  Free inodes: x\n", &count,
						  &used), -EINVAL);
}

static void test_mkfs_classify(void **state)
{
	assert_int_equal(rootfs_mkfs_classify(
		"__populate_fs: Could not allocate block in ext2 filesystem while writing file \"f\"\n"
		"mkfs.ext4: Could not allocate block in ext2 filesystem while populating file system"),
		MKFS_FAIL_IMAGE_FULL);
	assert_int_equal(rootfs_mkfs_classify("Could not allocate inode in ext2 filesystem"),
			 MKFS_FAIL_IMAGE_FULL);
	assert_int_equal(rootfs_mkfs_classify(
		"f: No space left on device while looking up \"f\"\n"
		"mkfs.ext4: No space left on device while populating file system"),
		MKFS_FAIL_HOST_FULL);
	assert_int_equal(rootfs_mkfs_classify("mke2fs: invalid block size"), MKFS_FAIL_OTHER);
}

/* ---- forkvm run side, /init, commands ---- */

static void test_cmdline(void **state)
{
	char out[128];

	assert_int_equal(rootfs_cmdline("console=ttyS0 panic=-1", out, sizeof(out)), 0);
	assert_string_equal(out, "console=ttyS0 panic=-1 forkvm.root=/dev/vda");
	assert_int_equal(rootfs_cmdline("", out, sizeof(out)), 0);
	assert_string_equal(out, "forkvm.root=/dev/vda");
	assert_int_equal(rootfs_cmdline("console=ttyS0 root=/dev/vdb", out, sizeof(out)), 0);
	assert_string_equal(out, "console=ttyS0 root=/dev/vdb");
	assert_int_equal(rootfs_cmdline("forkvm.root=/dev/vdb quiet", out, sizeof(out)), 0);
	assert_string_equal(out, "forkvm.root=/dev/vdb quiet");
	assert_int_equal(rootfs_cmdline("noroot=1 xroot=2", out, sizeof(out)), 0);
	assert_string_equal(out, "noroot=1 xroot=2 forkvm.root=/dev/vda");
	assert_int_equal(rootfs_cmdline("console=ttyS0", out, 20), -ENAMETOOLONG);
}

static void test_default_image_path(void **state)
{
	char buf[256];

	setenv("FORKVM_CACHE", "/var/tmp/fc", 1);
	assert_int_equal(rootfs_default_image(buf, sizeof(buf)), 0);
	assert_string_equal(buf, "/var/tmp/fc/rootfs/rootfs.ext4");
	unsetenv("FORKVM_CACHE");
}

static void test_init_script_root_section(void **state)
{
	const char *mods[] = { "virtio_mmio", "virtio_blk" };
	char *s, *root, *fallback;

	assert_int_equal(image_init_script(mods, 2, &s), 0);
	root = strstr(s, "forkvm.root=*)");
	fallback = strstr(s, "exec /sbin/forkvm-agent --vsock-port 52\n");
	assert_non_null(root);
	assert_non_null(fallback);
	/* Modules first, then the root disk, then the initramfs agent as before. */
	assert_true(strstr(s, "insmod /lib/modules/virtio_blk.ko") < root);
	assert_true(root < fallback);
	assert_non_null(strstr(s, "mount -t ext4 -o rw \"$root\" /newroot"));
	assert_non_null(strstr(s, "exec switch_root /newroot /usr/sbin/forkvm-agent --vsock-port 52\n"));
	assert_non_null(strstr(s, "mount --move /$d /newroot/$d"));
	assert_null(strstr(s, "%d"));
	free(s);
}

static void test_cmd_tail(void **state)
{
	char tail[8];
	char *argv[] = { "sh", "-c", "echo out; echo first >&2; echo last-line >&2; exit 3", NULL };
	struct cmd_spec spec = { .argv = argv };
	struct cmd_result r;
	char *out = NULL;

	cmd_tail_of("hello\n\n", 7, tail, sizeof(tail));
	assert_string_equal(tail, "hello");
	cmd_tail_of("0123456789", 10, tail, sizeof(tail));
	assert_string_equal(tail, "3456789");
	assert_int_equal(cmd_run(&spec, "unit test", &out, &r), -ECHILD);
	assert_null(out);
	assert_int_equal(r.status, 3);
	assert_string_equal(r.tail, "first\nlast-line");
	argv[2] = "echo \"$FORKVM_T\"";
	spec.env_add = (char *[]){ "FORKVM_T=added", NULL };
	assert_int_equal(cmd_run(&spec, "unit test", &out, &r), 0);
	assert_string_equal(out, "added\n");
	free(out);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_package_list),
		cmocka_unit_test(test_package_list_rejects),
		cmocka_unit_test(test_parse_sim),
		cmocka_unit_test(test_parse_sim_errors),
		cmocka_unit_test(test_deb_names),
		cmocka_unit_test(test_tar_paths),
		cmocka_unit_test(test_usrmerge_paths),
		cmocka_unit_test_setup_teardown(test_stage_packages_stay_inside, work_setup,
						work_teardown),
		cmocka_unit_test_setup_teardown(test_stage_fingerprint_is_stable, work_setup,
						work_teardown),
		cmocka_unit_test_setup_teardown(test_tar_good_and_skips_devices, work_setup,
						work_teardown),
		cmocka_unit_test_setup_teardown(test_tar_rejects_escapes, work_setup, work_teardown),
		cmocka_unit_test_setup_teardown(test_tar_corrupt, work_setup, work_teardown),
		cmocka_unit_test(test_sizes),
		cmocka_unit_test(test_used_inodes),
		cmocka_unit_test(test_mkfs_classify),
		cmocka_unit_test(test_cmdline),
		cmocka_unit_test(test_default_image_path),
		cmocka_unit_test(test_init_script_root_section),
		cmocka_unit_test(test_cmd_tail),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
