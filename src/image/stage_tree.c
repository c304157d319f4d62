/* Whole trees into the stage (link or copy, usr-merge for packages) and the final walk that
 * counts, normalises directory times and fingerprints the tree. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/log.h"
#include "util/sha256.h"
#include "image/stage.h"

#define STAGE_MAX_DEPTH 256
#define SKIP_LOG_MAX 5

static int cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

int stage_list_dir(int dfd, char ***names, size_t *count)
{
	size_t n = 0, cap = 0;
	char **v = NULL;
	struct dirent *de;
	int fd = dup(dfd), ret = 0;
	DIR *d = fd < 0 ? NULL : fdopendir(fd);

	if (!d) {
		ret = -errno;
		if (fd >= 0)
			close(fd);
		return ret;
	}
	rewinddir(d);
	while (!ret && (errno = 0, de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (n == cap) {
			char **nv = realloc(v, (cap = cap ? cap * 2 : 32) * sizeof(*v));

			if (!nv) {
				ret = -ENOMEM;
				break;
			}
			v = nv;
		}
		if (!(v[n] = strdup(de->d_name)))
			ret = -ENOMEM;
		else
			n++;
	}
	if (!ret && errno)
		ret = -errno;
	closedir(d);
	if (!ret && n)
		qsort(v, n, sizeof(*v), cmp_names); /* v is NULL for an empty directory */
	*names = v;
	*count = n;
	return ret;
}

void stage_free_names(char **names, size_t count)
{
	for (size_t i = 0; names && i < count; i++)
		free(names[i]);
	free(names);
}

/* ---- adding a tree ---- */

struct add_ctx {
	struct stage *st;
	const char *src_root;
	bool usrmerge;
	int depth;
};

static int copy_data(int in, int out)
{
	char buf[1 << 16];

	for (;;) {
		ssize_t n = copy_file_range(in, NULL, out, NULL, 1 << 30, 0);

		if (n == 0)
			return 0;
		if (n < 0 && (errno == EXDEV || errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP))
			break;
		if (n < 0 && errno != EINTR)
			return -errno;
	}
	for (;;) {
		ssize_t n = read(in, buf, sizeof(buf));

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : 0;
		for (ssize_t done = 0; done < n;) {
			ssize_t w = write(out, buf + done, (size_t)(n - done));

			if (w < 0 && errno != EINTR)
				return -errno;
			done += w > 0 ? w : 0;
		}
	}
}

/* A copy where a hard link is not possible (another filesystem, protected_hardlinks). */
static int copy_file(const struct add_ctx *c, int sfd, int dfd, const char *name,
		     const struct stat *sb)
{
	struct timespec ts[2] = { sb->st_atim, sb->st_mtim };
	int in = openat(sfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC), out = -1, ret = 0;

	if (in < 0)
		return -errno;
	out = openat(dfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (out < 0)
		ret = -errno;
	ret = ret ?: copy_data(in, out);
	if (!ret && c->st->as_root && fchown(out, sb->st_uid, sb->st_gid) < 0)
		ret = -errno;
	if (!ret && (fchmod(out, sb->st_mode & 07777) < 0 || futimens(out, ts) < 0))
		ret = -errno;
	if (out >= 0 && close(out) < 0 && !ret)
		ret = -errno;
	if (ret && out >= 0)
		unlinkat(dfd, name, 0);
	close(in);
	return ret;
}

/* Make room for a new entry: a later package's file replaces an earlier one (as dpkg would
 * with Replaces); a directory in the way is kept and the entry skipped (1). */
static int clear_slot(int dfd, const char *name, const char *rel)
{
	struct stat old;

	if (fstatat(dfd, name, &old, AT_SYMLINK_NOFOLLOW) < 0)
		return errno == ENOENT ? 0 : -errno;
	if (S_ISDIR(old.st_mode)) {
		log_warn("staging: %s is a directory already; not replacing it with a file", rel);
		return 1;
	}
	return unlinkat(dfd, name, 0) < 0 ? -errno : 0;
}

static int add_dir(struct add_ctx *c, int sfd, const char *rel);

static int add_entry(struct add_ctx *c, int sfd, int dfd, const char *name, const char *rel)
{
	char target[PATH_MAX];
	struct stat sb;
	ssize_t n;
	int ret;

	if (fstatat(sfd, name, &sb, AT_SYMLINK_NOFOLLOW) < 0)
		return -errno;
	if (S_ISDIR(sb.st_mode)) {
		int sub = openat(sfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

		if (sub < 0)
			return -errno;
		if (mkdirat(dfd, name, sb.st_mode & 07777) == 0) {
			if (c->st->as_root)
				fchownat(dfd, name, sb.st_uid, sb.st_gid, AT_SYMLINK_NOFOLLOW);
			fchmodat(dfd, name, sb.st_mode & 07777, 0);
		} else if (errno != EEXIST) {
			ret = -errno;
			close(sub);
			return ret;
		}
		ret = add_dir(c, sub, rel);
		close(sub);
		return ret;
	}
	if (!S_ISREG(sb.st_mode) && !S_ISLNK(sb.st_mode)) {
		if (c->st->skipped++ < SKIP_LOG_MAX)
			log_info("staging: skipping %s (device node, FIFO or socket; the guest's /dev "
				 "is devtmpfs)", rel);
		return 0;
	}
	ret = clear_slot(dfd, name, rel);
	if (ret)
		return ret > 0 ? 0 : ret;
	if (S_ISLNK(sb.st_mode)) {
		n = readlinkat(sfd, name, target, sizeof(target) - 1);
		if (n < 0)
			return -errno;
		target[n] = 0;
		if (symlinkat(target, dfd, name) < 0)
			return -errno;
		if (c->st->as_root)
			fchownat(dfd, name, sb.st_uid, sb.st_gid, AT_SYMLINK_NOFOLLOW);
		return 0;
	}
	/* The stage only ever replaces files, never writes into them: sharing the inode with the
	 * package cache (or the user's tree) is safe and costs no space. */
	if (linkat(sfd, name, dfd, name, 0) == 0)
		return 0;
	if (errno != EXDEV && errno != EPERM && errno != EMLINK && errno != EACCES)
		return -errno;
	return copy_file(c, sfd, dfd, name, &sb);
}

/* A package's top-level /bin, /lib, ... goes into usr/ (usr-merge); a symlink there is left
 * out, the stage has its own usr-merge links. */
static int add_merged_top(struct add_ctx *c, int sfd, const char *name, const char *dst)
{
	struct stat sb;
	int sub, ret;

	if (fstatat(sfd, name, &sb, AT_SYMLINK_NOFOLLOW) < 0)
		return -errno;
	if (!S_ISDIR(sb.st_mode))
		return 0;
	sub = openat(sfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (sub < 0)
		return -errno;
	ret = stage_mkdir(c->st, dst, 0755);
	ret = ret ?: add_dir(c, sub, name);
	close(sub);
	return ret;
}

static int add_dir(struct add_ctx *c, int sfd, const char *rel)
{
	char **names = NULL, child[PATH_MAX], dst[PATH_MAX];
	size_t count = 0;
	int dfd = -1, ret;

	if (c->depth >= STAGE_MAX_DEPTH)
		return log_errno(-ELOOP, "staging: %s nests deeper than %d directories", rel,
				 STAGE_MAX_DEPTH);
	ret = stage_list_dir(sfd, &names, &count);
	if (ret)
		ret = log_errno(ret, "staging: read directory %s/%s", c->src_root, rel);
	c->depth++;
	for (size_t i = 0; i < count && !ret; i++) {
		if (snprintf(child, sizeof(child), "%s%s%s", rel, *rel ? "/" : "", names[i]) >=
		    (int)sizeof(child)) {
			ret = log_errno(-ENAMETOOLONG, "staging: %s/%s", rel, names[i]);
			break;
		}
		ret = c->usrmerge ? stage_usrmerge_path(child, dst, sizeof(dst))
				  : (snprintf(dst, sizeof(dst), "%s", child), 0);
		if (!ret && c->usrmerge && c->depth == 1 && strcmp(dst, child)) {
			ret = add_merged_top(c, sfd, names[i], dst);
			continue;
		}
		if (dfd < 0 && !ret) {
			char parent[PATH_MAX];
			const char *slash = strrchr(dst, '/');

			snprintf(parent, sizeof(parent), "%.*s", slash ? (int)(slash - dst) : 0, dst);
			ret = stage_open_dir(c->st, parent, true, &dfd);
			if (ret)
				ret = log_errno(ret, "staging: open directory %s in %s", parent, c->st->path);
		}
		if (!ret) {
			ret = add_entry(c, sfd, dfd, names[i], child);
			if (ret < 0)
				ret = log_errno(ret, "staging: %s/%s into %s", c->src_root, child, c->st->path);
		}
	}
	c->depth--;
	stage_free_names(names, count);
	if (dfd >= 0)
		close(dfd);
	return ret;
}

int stage_add_tree(struct stage *st, const char *src, bool usrmerge)
{
	struct add_ctx c = { st, src, usrmerge, 0 };
	uint64_t skipped = st->skipped;
	int sfd = open(src, O_RDONLY | O_DIRECTORY | O_CLOEXEC), ret;

	if (sfd < 0)
		return log_errno(-errno, "open %s", src);
	ret = add_dir(&c, sfd, "");
	close(sfd);
	if (st->skipped - skipped > SKIP_LOG_MAX)
		log_info("staging: skipped %llu device nodes, FIFOs or sockets of %s in all",
			 (unsigned long long)(st->skipped - skipped), src);
	return ret;
}

/* ---- the finished tree ---- */

struct walk_ctx {
	struct stage *st;
	struct sha256_ctx hash;
	int64_t epoch;
	int depth;
};

static uint64_t round_block(uint64_t n)
{
	return (n + 4095) & ~(uint64_t)4095;
}

static int walk_entry(struct walk_ctx *w, int dfd, const char *name, const char *rel);

static int walk_dir(struct walk_ctx *w, int dfd, const char *rel)
{
	char **names = NULL, child[PATH_MAX];
	size_t count = 0;
	int ret;

	if (w->depth >= STAGE_MAX_DEPTH)
		return log_errno(-ELOOP, "staging: %s nests too deep", rel);
	ret = stage_list_dir(dfd, &names, &count);
	if (ret)
		ret = log_errno(ret, "staging: read directory %s", rel);
	w->depth++;
	for (size_t i = 0; i < count && !ret; i++) {
		if (snprintf(child, sizeof(child), "%s/%s", rel, names[i]) >= (int)sizeof(child))
			ret = log_errno(-ENAMETOOLONG, "staging: %s/%s", rel, names[i]);
		else
			ret = walk_entry(w, dfd, names[i], child);
	}
	w->depth--;
	stage_free_names(names, count);
	return ret;
}

static int walk_entry(struct walk_ctx *w, int dfd, const char *name, const char *rel)
{
	struct timespec ts[2] = { { w->epoch, 0 }, { w->epoch, 0 } };
	char line[PATH_MAX * 2 + 128], target[PATH_MAX] = "";
	struct stat sb;
	int len, ret = 0;

	if (fstatat(dfd, name, &sb, AT_SYMLINK_NOFOLLOW) < 0)
		return log_errno(-errno, "staging: stat %s", rel);
	w->st->entries++;
	if (S_ISREG(sb.st_mode))
		w->st->bytes += round_block((uint64_t)sb.st_size);
	else if (S_ISDIR(sb.st_mode))
		w->st->bytes += 4096;
	if (S_ISLNK(sb.st_mode)) {
		ssize_t n = readlinkat(dfd, name, target, sizeof(target) - 1);

		if (n < 0)
			return log_errno(-errno, "staging: readlink %s", rel);
		target[n] = 0;
		w->st->bytes += n >= 60 ? 4096 : 0; /* longer targets need a block */
		/* Recreated by the stage, so their own time is the build's: use the epoch. */
		if (utimensat(dfd, name, ts, AT_SYMLINK_NOFOLLOW) < 0)
			return log_errno(-errno, "staging: set the times of %s", rel);
		sb.st_mtim.tv_sec = w->epoch;
	}
	if (S_ISDIR(sb.st_mode)) {
		int sub = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

		if (sub < 0)
			return log_errno(-errno, "staging: open %s", rel);
		ret = walk_dir(w, sub, rel);
		/* After the children: adding them changed the time. */
		if (!ret && futimens(sub, ts) < 0)
			ret = log_errno(-errno, "staging: set the times of %s", rel);
		close(sub);
		sb.st_mtim.tv_sec = w->epoch;
	}
	len = snprintf(line, sizeof(line), "%s %o %u %u %llu %lld %s\n", rel, (unsigned)sb.st_mode,
		       (unsigned)sb.st_uid, (unsigned)sb.st_gid, (unsigned long long)sb.st_size,
		       (long long)sb.st_mtim.tv_sec, target);
	if (!ret && sha256_update(&w->hash, line, (size_t)len))
		ret = -EIO;
	return ret;
}

int stage_finish(struct stage *st, int64_t epoch)
{
	struct timespec ts[2] = { { epoch, 0 }, { epoch, 0 } };
	struct walk_ctx w = { .st = st, .epoch = epoch };
	int ret = sha256_init(&w.hash);

	st->bytes = 0;
	st->entries = 0;
	ret = ret ?: walk_dir(&w, st->root_fd, "");
	if (!ret && futimens(st->root_fd, ts) < 0)
		ret = log_errno(-errno, "staging: set the times of %s", st->path);
	if (!ret)
		ret = sha256_final(&w.hash, st->fingerprint);
	else
		sha256_abort(&w.hash);
	return ret;
}
