/* Staging tree primitives: create/remove, resolve paths inside it, write and link entries. */
#include "image/stage.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "util/fdio.h"
#include "util/log.h"
#include "image/fsutil.h"

static const char *const merged_dirs[] = { "bin", "sbin", "lib", "lib32", "lib64", "libx32" };

int stage_usrmerge_path(const char *rel, char *out, size_t size)
{
	size_t first = strcspn(rel, "/");
	int n = -1;

	for (size_t i = 0; i < sizeof(merged_dirs) / sizeof(merged_dirs[0]); i++)
		if (first == strlen(merged_dirs[i]) && !strncmp(rel, merged_dirs[i], first))
			n = snprintf(out, size, "usr/%s", rel);
	if (n < 0)
		n = snprintf(out, size, "%s", rel);
	return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}

/* openat2 relative to the stage root with the stage as "/" for every symlink on the way. */
static int open_in(const struct stage *st, const char *rel, int flags, mode_t mode)
{
	struct open_how how = {
		.flags = (uint64_t)(flags | O_CLOEXEC),
		.mode = (flags & O_CREAT) ? mode : 0,
		.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
	};
	long fd = syscall(SYS_openat2, st->root_fd, *rel ? rel : ".", &how, sizeof(how));

	return fd < 0 ? -errno : (int)fd;
}

int stage_create(struct stage *st, const char *path)
{
	memset(st, 0, sizeof(*st));
	st->root_fd = -1;
	st->as_root = geteuid() == 0;
	if (snprintf(st->path, sizeof(st->path), "%s", path) >= (int)sizeof(st->path))
		return log_errno(-ENAMETOOLONG, "staging directory %s", path);
	if (mkdir(path, 0755) < 0)
		return log_errno(-errno, "create the staging directory %s", path);
	st->root_fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (st->root_fd < 0)
		return log_errno(-errno, "open %s", path);
	/* Probe openat2 once: Linux 5.6 and later. */
	int fd = open_in(st, "", O_RDONLY | O_DIRECTORY, 0);

	if (fd < 0)
		return log_errno(fd, "openat2 in %s (the rootfs builder needs Linux 5.6 or later)", path);
	close(fd);
	return 0;
}

void stage_destroy(struct stage *st, bool keep)
{
	if (st->root_fd >= 0)
		close(st->root_fd);
	st->root_fd = -1;
	if (!keep && st->path[0] && remove_tree(st->path))
		log_warn("could not remove the staging directory %s", st->path);
}

/* Split rel into its parent (opened, created if asked) and final name. */
static int open_parent(const struct stage *st, const char *rel, bool create, int *dfd,
		       const char **name)
{
	char parent[PATH_MAX];
	const char *slash = strrchr(rel, '/');
	size_t plen = slash ? (size_t)(slash - rel) : 0;

	if (plen >= sizeof(parent))
		return -ENAMETOOLONG;
	memcpy(parent, rel, plen);
	parent[plen] = 0;
	*name = slash ? slash + 1 : rel;
	if (!**name)
		return -EINVAL;
	return stage_open_dir(st, parent, create, dfd);
}

int stage_open_dir(const struct stage *st, const char *rel, bool create, int *fd)
{
	char prefix[PATH_MAX];
	size_t len = strlen(rel), pos = 0;
	int cur, ret;

	if (len >= sizeof(prefix))
		return -ENAMETOOLONG;
	cur = open_in(st, rel, O_RDONLY | O_DIRECTORY, 0);
	if (cur >= 0 || cur != -ENOENT || !create) {
		*fd = cur;
		return cur < 0 ? cur : 0;
	}
	/* Walk from the top, creating what is missing. */
	cur = open_in(st, "", O_RDONLY | O_DIRECTORY, 0);
	while (cur >= 0 && pos < len) {
		size_t end = pos + strcspn(rel + pos, "/");
		char comp[NAME_MAX + 1];
		int next;

		if (end - pos > NAME_MAX) {
			close(cur);
			return -ENAMETOOLONG;
		}
		memcpy(comp, rel + pos, end - pos);
		comp[end - pos] = 0;
		memcpy(prefix, rel, end);
		prefix[end] = 0;
		if (comp[0] && mkdirat(cur, comp, 0755) < 0 && errno != EEXIST) {
			ret = -errno;
			close(cur);
			return ret;
		}
		next = open_in(st, prefix, O_RDONLY | O_DIRECTORY, 0);
		close(cur);
		cur = next;
		pos = end + (rel[end] == '/');
	}
	*fd = cur;
	return cur < 0 ? cur : 0;
}

int stage_lstat(const struct stage *st, const char *rel, struct stat *sb)
{
	const char *name;
	int dfd, ret = open_parent(st, rel, false, &dfd, &name);

	if (ret)
		return ret;
	ret = fstatat(dfd, name, sb, AT_SYMLINK_NOFOLLOW) < 0 ? -errno : 0;
	close(dfd);
	return ret;
}

int stage_open_file(const struct stage *st, const char *rel, int *fd)
{
	*fd = open_in(st, rel, O_RDONLY, 0);
	return *fd < 0 ? *fd : 0;
}

int stage_stat(const struct stage *st, const char *rel, struct stat *sb)
{
	int fd = open_in(st, rel, O_PATH, 0), ret;

	if (fd < 0)
		return fd;
	ret = fstat(fd, sb) < 0 ? -errno : 0;
	close(fd);
	return ret;
}

int stage_write(const struct stage *st, const char *rel, const void *data, size_t len,
		mode_t mode, int64_t epoch)
{
	struct timespec ts[2] = { { epoch, 0 }, { epoch, 0 } };
	char tmp[NAME_MAX + 32];
	const char *name;
	int dfd, fd = -1, ret = open_parent(st, rel, true, &dfd, &name);

	if (ret)
		return log_errno(ret, "staging: create the directory of %s", rel);
	snprintf(tmp, sizeof(tmp), ".forkvm-tmp.%d", (int)getpid());
	unlinkat(dfd, tmp, 0);
	fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		ret = -errno;
	ret = ret ?: fd_write_all(fd, data, len);
	if (!ret && (fchmod(fd, mode) < 0 || futimens(fd, ts) < 0))
		ret = -errno;
	if (fd >= 0 && close(fd) < 0 && !ret)
		ret = -errno;
	if (!ret && renameat(dfd, tmp, dfd, name) < 0)
		ret = -errno;
	if (ret) {
		unlinkat(dfd, tmp, 0);
		ret = log_errno(ret, "staging: write %s in %s", rel, st->path);
	}
	close(dfd);
	return ret;
}

int stage_put_file(const struct stage *st, const char *rel, const char *host_path, mode_t mode,
		   int64_t epoch)
{
	uint8_t *buf = NULL;
	size_t len;
	int ret = file_read_all(host_path, &buf, &len);

	ret = ret ?: stage_write(st, rel, buf, len, mode, epoch);
	free(buf);
	return ret;
}

int stage_symlink(const struct stage *st, const char *rel, const char *target)
{
	const char *name;
	int dfd, ret = open_parent(st, rel, true, &dfd, &name);

	if (ret)
		return log_errno(ret, "staging: create the directory of %s", rel);
	if (unlinkat(dfd, name, 0) < 0 && errno != ENOENT)
		ret = -errno;
	if (!ret && symlinkat(target, dfd, name) < 0)
		ret = -errno;
	if (ret)
		ret = log_errno(ret, "staging: symlink %s -> %s", rel, target);
	close(dfd);
	return ret;
}

int stage_mkdir(const struct stage *st, const char *rel, mode_t mode)
{
	int fd, ret = stage_open_dir(st, rel, true, &fd);

	if (ret)
		return log_errno(ret, "staging: create directory %s", rel);
	if (fchmod(fd, mode) < 0)
		ret = log_errno(-errno, "staging: chmod %s", rel);
	close(fd);
	return ret;
}
