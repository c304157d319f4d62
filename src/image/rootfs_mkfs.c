/* The ext4 image of a staged tree: size, mkfs.ext4 -d with a pinned configuration, fixed
 * timestamps and owners through debugfs, then fsync + rename so no half image is ever seen. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "util/log.h"
#include "image/cmdrun.h"
#include "image/fsutil.h"
#include "image/rootfs.h"

/* Host /etc/mke2fs.conf must not change the image: these are bookworm's ext4 defaults. */
static const char mke2fs_conf[] =
	"[defaults]\n"
	"\tbase_features = sparse_super,large_file,filetype,resize_inode,dir_index,ext_attr\n"
	"\tdefault_mntopts = acl,user_xattr\n"
	"\tenable_periodic_fsck = 0\n"
	"\tblocksize = 4096\n"
	"\tinode_size = 256\n"
	"\tinode_ratio = 16384\n"
	"[fs_types]\n"
	"\text4 = {\n"
	"\t\tfeatures = has_journal,extent,huge_file,flex_bg,metadata_csum,64bit,dir_nlink,extra_isize\n"
	"\t}\n";

#define MIB ((uint64_t)1 << 20)

/* e2fsprogs' ext2fs_default_journal_size, in 4 KiB blocks. */
static uint64_t journal_blocks(uint64_t blocks)
{
	static const struct { uint64_t below, size; } table[] = {
		{ 2048, 0 }, { 32768, 1024 }, { 256 * 1024, 4096 }, { 512 * 1024, 8192 },
		{ 4096 * 1024, 16384 }, { 8192 * 1024, 32768 }, { 16384 * 1024, 65536 },
		{ 32768 * 1024, 131072 },
	};

	for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++)
		if (blocks < table[i].below)
			return table[i].size;
	return 262144;
}

uint64_t rootfs_inode_count(uint64_t size_mib, uint64_t entries)
{
	uint64_t by_ratio = size_mib * (MIB / 16384), need = entries + entries / 4 + 1024;

	return by_ratio > need ? by_ratio : need;
}

uint64_t rootfs_auto_size_mib(uint64_t used_bytes, uint64_t entries, uint64_t free_mib)
{
	uint64_t bytes = used_bytes + used_bytes * 3 / 10 + free_mib * MIB, mib;

	bytes += (entries + entries / 4 + 1024) * 256;	/* inode tables for the entries */
	bytes += bytes / 64;				/* and for one inode per 16 KiB */
	bytes += journal_blocks(bytes / 4096) * 4096 + 4 * MIB; /* journal, bitmaps, GDT */
	mib = (bytes + MIB - 1) / MIB;
	return mib < 16 ? 16 : mib;
}

enum rootfs_mkfs_failure rootfs_mkfs_classify(const char *text)
{
	if (strstr(text, "Could not allocate") || strstr(text, "too small") ||
	    strstr(text, "No free space in the directory"))
		return MKFS_FAIL_IMAGE_FULL;
	if (strstr(text, "No space left on device"))
		return MKFS_FAIL_HOST_FULL;
	return MKFS_FAIL_OTHER;
}

/* "a-b, c, d-e" (inode numbers, 1-based) cleared in used[]. */
static int clear_ranges(const char *s, uint32_t count, uint8_t *used)
{
	while (*s && *s != '\n') {
		char *end;
		unsigned long a = strtoul(s, &end, 10), b = a;

		if (end == s)
			return -EINVAL;
		if (*end == '-') {
			s = end + 1;
			b = strtoul(s, &end, 10);
			if (end == s)
				return -EINVAL;
		}
		if (a == 0 || b < a || b > count)
			return -EINVAL;
		memset(used + a, 0, b - a + 1);
		s = end;
		while (*s == ',' || *s == ' ')
			s++;
	}
	return 0;
}

int rootfs_parse_used_inodes(const char *text, uint32_t *count, uint8_t **used)
{
	const char *p = strstr(text, "Inode count:");
	unsigned long n;
	uint8_t *map;
	int ret = 0;

	if (!p || (n = strtoul(p + 12, NULL, 10)) == 0 || n > (1UL << 28))
		return -EINVAL;
	map = malloc(n + 1);
	if (!map)
		return -ENOMEM;
	map[0] = 0;
	memset(map + 1, 1, n);
	for (p = text; !ret && (p = strstr(p, "\n  Free inodes: ")); p += 16)
		ret = clear_ranges(p + 16, (uint32_t)n, map);
	if (ret) {
		free(map);
		return ret;
	}
	*count = (uint32_t)n;
	*used = map;
	return 0;
}

/* debugfs commands: the given times (and owner) on every inode in use. */
static int write_fix_script(const char *path, const uint8_t *used, uint32_t count,
			    const struct rootfs_mkfs_spec *s)
{
	static const char *const fields[] = { "atime", "ctime", "crtime" };
	FILE *f = fopen(path, "we");
	int ret = 0;

	if (!f)
		return log_errno(-errno, "create %s", path);
	for (uint32_t ino = 2; ino <= count; ino++) {
		if (!used[ino] || (ino > 2 && ino < 11)) /* reserved inodes keep mkfs's values */
			continue;
		for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
			fprintf(f, "sif <%" PRIu32 "> %s @%lld\n", ino, fields[i], (long long)s->epoch);
		if (s->chown_root)
			fprintf(f, "sif <%" PRIu32 "> uid 0\nsif <%" PRIu32 "> gid 0\n", ino, ino);
	}
	if (ferror(f))
		ret = -EIO;
	if (fclose(f) != 0 && !ret)
		ret = -errno;
	return ret ? log_errno(ret, "write %s", path) : 0;
}

/* debugfs exits 0 even when a command fails: anything on stderr but its banner is an error. */
static int debugfs_ok(const struct cmd_result *r)
{
	const char *t = r->tail;

	if (!strncmp(t, "debugfs ", 8))
		t += strcspn(t, "\n");
	t += strspn(t, "\n");
	if (!*t)
		return 0;
	log_err("debugfs (fixing timestamps): %s", t);
	return -EIO;
}

static int fix_inodes(const struct rootfs_mkfs_spec *s, const char *tmp, char *const *env)
{
	char script[PATH_MAX], *dump = NULL;
	char *dump_argv[] = { "dumpe2fs", (char *)tmp, NULL };
	char *fix_argv[] = { "debugfs", "-w", "-f", script, (char *)tmp, NULL };
	struct cmd_spec dump_spec = { .argv = dump_argv, .env_add = env };
	struct cmd_spec fix_spec = { .argv = fix_argv, .env_add = env, .quiet = true };
	struct cmd_result res;
	uint8_t *used = NULL;
	uint32_t count = 0;
	int ret;

	snprintf(script, sizeof(script), "%s.debugfs", s->conf);
	ret = cmd_run(&dump_spec, "reading the new image's inode bitmaps", &dump, &res);
	if (!ret && rootfs_parse_used_inodes(dump, &count, &used)) {
		log_err("dumpe2fs %s: no inode count or free inode ranges in its output", tmp);
		ret = -EINVAL;
	}
	ret = ret ?: write_fix_script(script, used, count, s);
	ret = ret ?: cmd_run(&fix_spec, "fixing the image's timestamps", NULL, &res);
	ret = ret ?: debugfs_ok(&res);
	unlink(script);
	free(used);
	free(dump);
	return ret;
}

static int space_check(const char *image, uint64_t need)
{
	char dir[PATH_MAX];
	const char *slash = strrchr(image, '/');
	struct statvfs vfs;

	snprintf(dir, sizeof(dir), "%.*s", slash ? (int)(slash - image) : 1, slash ? image : ".");
	if (!dir[0])
		snprintf(dir, sizeof(dir), "/");
	if (statvfs(dir, &vfs) < 0)
		return log_errno(-errno, "statvfs %s", dir);
	if ((uint64_t)vfs.f_bavail * vfs.f_frsize >= need)
		return 0;
	log_err("%s: no space left on device for the image: the tree needs about %" PRIu64
		" MiB, the filesystem holding it has %" PRIu64 " MiB free", dir, need / MIB,
		(uint64_t)vfs.f_bavail * vfs.f_frsize / MIB);
	return -ENOSPC;
}

static int explain_mkfs(const struct rootfs_mkfs_spec *s, const struct cmd_result *r)
{
	switch (rootfs_mkfs_classify(r->tail)) {
	case MKFS_FAIL_IMAGE_FULL:
		log_err("the image (%" PRIu64 " MiB) is too small for the tree (%" PRIu64 " MiB in %"
			PRIu64 " entries): give a larger --size, or leave it out to size it "
			"automatically", s->size_mib, s->used_bytes / MIB, s->entries);
		return -EFBIG;
	case MKFS_FAIL_HOST_FULL:
		log_err("%s: no space left on device while writing the image; free some space or "
			"write it elsewhere (--out DIR)", s->image);
		return -ENOSPC;
	default:
		return -EIO;
	}
}

static int make_fs(const struct rootfs_mkfs_spec *s, const char *tmp, char *const *env)
{
	char size[32], nodes[32], ext[128];
	char *argv[] = { "mke2fs", "-q", "-F", "-t", "ext4", "-T", "default", "-b", "4096",
			 "-m", "0", "-N", nodes, "-L", ROOTFS_LABEL, "-U", (char *)s->uuid,
			 "-E", ext, "-d", (char *)s->stage, (char *)tmp, size, NULL };
	struct cmd_spec spec = { .argv = argv, .env_add = env, .quiet = true };
	struct cmd_result res;
	int ret;

	snprintf(size, sizeof(size), "%" PRIu64 "M", s->size_mib);
	snprintf(nodes, sizeof(nodes), "%" PRIu64, rootfs_inode_count(s->size_mib, s->entries));
	snprintf(ext, sizeof(ext), "root_owner=0:0,hash_seed=%s", s->uuid);
	ret = cmd_run(&spec, "making the ext4 image", NULL, &res);
	if (ret == -ECHILD)
		ret = explain_mkfs(s, &res);
	return ret;
}

int rootfs_mkfs(const struct rootfs_mkfs_spec *s)
{
	char tmp[PATH_MAX], conf_env[PATH_MAX + 16], time_env[48];
	char *env[] = { conf_env, time_env, NULL };
	int fd = -1, ret;

	if (snprintf(tmp, sizeof(tmp), "%s.tmp.%d", s->image, (int)getpid()) >= (int)sizeof(tmp))
		return log_errno(-ENAMETOOLONG, "image path %s", s->image);
	snprintf(conf_env, sizeof(conf_env), "MKE2FS_CONFIG=%s", s->conf);
	snprintf(time_env, sizeof(time_env), "E2FSPROGS_FAKE_TIME=%lld", (long long)s->epoch);
	ret = space_check(s->image, s->used_bytes);
	ret = ret ?: image_write_file(s->conf, mke2fs_conf, sizeof(mke2fs_conf) - 1, 0644);
	if (ret)
		return ret;
	fd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		ret = log_errno(-errno, "create %s", tmp);
		unlink(s->conf);
		return ret;
	}
	if (ftruncate(fd, (off_t)(s->size_mib * MIB)) < 0)
		ret = log_errno(-errno, "size %s to %" PRIu64 " MiB", tmp, s->size_mib);
	ret = ret ?: make_fs(s, tmp, env);
	ret = ret ?: fix_inodes(s, tmp, env);
	if (!ret && fsync(fd) < 0)
		ret = log_errno(-errno, "fsync %s", tmp);
	if (close(fd) < 0 && !ret)
		ret = log_errno(-errno, "close %s", tmp);
	if (!ret && rename(tmp, s->image) < 0)
		ret = log_errno(-errno, "rename %s to %s", tmp, s->image);
	if (ret)
		unlink(tmp);
	unlink(s->conf);
	return ret;
}
