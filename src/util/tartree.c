/* Safe, bounded extraction of ustar archives into a directory, and archiving of a tree. */
#include "util/tartree.h"
#include "util/errmsg.h"
#include "util/fdio.h"
#include "util/ustar.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Permission bits applied to extracted members: never set-user-ID or set-group-ID. */
#define SAFE_MODE_BITS 01777

/* ------------------------------------------------------------------------- extraction */

/* Open name in dirfd as a directory without following a symlink; create it if asked. */
static int open_dir_in(int dirfd, const char *name, bool create, const char *what,
		       struct fvm_err *err)
{
	int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

	if (fd < 0 && errno == ENOENT && create) {
		if (mkdirat(dirfd, name, 0755) < 0 && errno != EEXIST)
			return errmsg(err, -errno, "mkdir %s: %s", what, strerror(errno));
		fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	}
	if (fd < 0 && (errno == ELOOP || errno == ENOTDIR))
		return errmsg(err, -ENOTDIR,
			      "%s: a symlink or a non-directory is in the way (not followed)", what);
	if (fd < 0)
		return errmsg(err, -errno, "open directory %s: %s", what, strerror(errno));
	return fd;
}

/*
 * Walk path (modified: components are cut at '/') from root, creating directories, and
 * return the fd of the directory that holds its last component, *leaf pointing at it.
 */
static int open_parent(int root, char *path, const char **leaf, struct fvm_err *err)
{
	int cur = fcntl(root, F_DUPFD_CLOEXEC, 0), next;
	char *p = path, *slash;

	if (cur < 0)
		return errmsg(err, -errno, "dup directory fd: %s", strerror(errno));
	while ((slash = strchr(p, '/'))) {
		*slash = '\0';
		next = open_dir_in(cur, p, true, path, err);
		*slash = '/';
		close(cur);
		if (next < 0)
			return next;
		cur = next;
		p = slash + 1;
	}
	*leaf = p;
	return cur;
}

/* Remove a non-directory at leaf so a file or symlink can take its place. */
static int clear_leaf(int parent, const char *leaf, const char *what, struct fvm_err *err)
{
	if (unlinkat(parent, leaf, 0) == 0 || errno == ENOENT)
		return 0;
	if (errno == EISDIR)
		return errmsg(err, -EISDIR, "%s: a directory is in the way", what);
	return errmsg(err, -errno, "remove %s: %s", what, strerror(errno));
}

static int put_dir(int parent, const char *leaf, const struct ustar_entry *e, struct fvm_err *err)
{
	int fd, ret = 0;

	if (mkdirat(parent, leaf, 0700) < 0 && errno != EEXIST)
		return errmsg(err, -errno, "mkdir %s: %s", e->path, strerror(errno));
	fd = open_dir_in(parent, leaf, false, e->path, err);
	if (fd < 0)
		return fd;
	/* Owner-writable, or the members below it could not be extracted. */
	if (fchmod(fd, (e->mode & SAFE_MODE_BITS) | S_IRWXU) < 0)
		ret = errmsg(err, -errno, "chmod %s: %s", e->path, strerror(errno));
	close(fd);
	return ret;
}

static int put_file(int parent, const char *leaf, const struct ustar_entry *e, struct fvm_err *err)
{
	struct timespec times[2] = { { .tv_sec = e->mtime }, { .tv_sec = e->mtime } };
	int fd, ret;

	ret = clear_leaf(parent, leaf, e->path, err);
	if (ret < 0)
		return ret;
	fd = openat(parent, leaf, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		return errmsg(err, -errno, "create %s: %s", e->path, strerror(errno));
	ret = fd_write_all(fd, e->data, e->size);
	if (ret < 0)
		errmsg(err, ret, "write %s: %s", e->path, strerror(-ret));
	else if (fchmod(fd, e->mode & SAFE_MODE_BITS) < 0)
		ret = errmsg(err, -errno, "chmod %s: %s", e->path, strerror(errno));
	else if (futimens(fd, times) < 0)
		ret = errmsg(err, -errno, "set mtime of %s: %s", e->path, strerror(errno));
	if (close(fd) < 0 && ret == 0)
		ret = errmsg(err, -errno, "close %s: %s", e->path, strerror(errno));
	return ret;
}

static int put_symlink(int parent, const char *leaf, const struct ustar_entry *e,
		       struct fvm_err *err)
{
	int ret = clear_leaf(parent, leaf, e->path, err);

	if (ret < 0)
		return ret;
	if (symlinkat(e->link, parent, leaf) < 0)
		return errmsg(err, -errno, "symlink %s: %s", e->path, strerror(errno));
	return 0;
}

/* Extract one member under root. */
static int put_entry(int root, struct ustar_entry *e, struct fvm_err *err)
{
	char *rel = strdup(e->path);
	const char *leaf = NULL;
	int parent, ret;

	if (!rel)
		return errmsg(err, -ENOMEM, "%s", strerror(ENOMEM));
	parent = open_parent(root, rel, &leaf, err);
	if (parent < 0) {
		free(rel);
		return parent;
	}
	if (e->type == USTAR_DIR)
		ret = put_dir(parent, leaf, e, err);
	else if (e->type == USTAR_FILE)
		ret = put_file(parent, leaf, e, err);
	else
		ret = put_symlink(parent, leaf, e, err);
	close(parent);
	free(rel);
	return ret;
}

/* Read every member once without writing: a malformed or unsafe archive, or one past the
 * entry limit, is refused before anything lands on disk. */
static int check_archive(const uint8_t *tar, size_t len, const struct tartree_limits *lim,
			 struct ustar_entry *e, struct fvm_err *err)
{
	struct ustar_reader r;
	size_t entries = 0;
	int ret;

	ustar_reader_init(&r, tar, len);
	while ((ret = ustar_next(&r, e, err)) > 0)
		if (!(e->type == USTAR_DIR && !e->path[0]) && ++entries > lim->max_entries)
			return errmsg(err, -E2BIG, "archive has more than %zu entries",
				      lim->max_entries);
	return ret;
}

int tartree_extract(int dirfd, const uint8_t *tar, size_t len, const struct tartree_limits *lim,
		    struct tartree_stats *st, struct fvm_err *err)
{
	struct ustar_reader r;
	struct ustar_entry *e;
	int ret;

	memset(st, 0, sizeof(*st));
	if (len > lim->max_bytes)
		return errmsg(err, -E2BIG, "archive of %zu bytes exceeds the limit of %zu",
			      len, lim->max_bytes);
	e = malloc(sizeof(*e));
	if (!e)
		return errmsg(err, -ENOMEM, "%s", strerror(ENOMEM));
	ret = check_archive(tar, len, lim, e, err);
	ustar_reader_init(&r, tar, len);
	while (ret == 0 && (ret = ustar_next(&r, e, err)) > 0) {
		if (e->type == USTAR_DIR && !e->path[0])
			continue; /* "./": the target itself */
		ret = put_entry(dirfd, e, err);
		if (ret == 0) {
			st->entries++;
			st->bytes += e->size;
		}
	}
	free(e);
	return ret < 0 ? ret : 0;
}

/* ------------------------------------------------------------------------- archiving */

struct archiver {
	struct ustar_writer w;
	const struct tartree_limits *lim;
	struct tartree_stats *st;
	const char *root;	/* the path given, for messages */
	char rel[USTAR_PATH_MAX];	/* member name being added */
	struct fvm_err *err;
};

static int add_failed(struct archiver *a, int ret)
{
	if (ret == -E2BIG)
		return errmsg(a->err, ret, "%s: the archive exceeds the limit of %zu bytes",
			      a->root, a->lim->max_bytes);
	if (ret == -ENAMETOOLONG)
		return errmsg(a->err, ret, "%s/%.200s...: name longer than %d bytes",
			      a->root, a->rel, USTAR_PATH_MAX - 1);
	return errmsg(a->err, ret, "%s: archive %s: %s", a->root, a->rel,
		      strerror(-ret));
}

static int count_entry(struct archiver *a)
{
	if (a->st->entries >= a->lim->max_entries)
		return errmsg(a->err, -E2BIG, "%s: more than %zu entries", a->root,
			      a->lim->max_entries);
	a->st->entries++;
	return 0;
}

/* Read the regular file open on fd into the archive as member a->rel. */
static int add_file_fd(struct archiver *a, int fd)
{
	uint8_t *buf = NULL;
	size_t size, len = 0;
	struct stat sb;
	int ret = 0;

	if (fstat(fd, &sb) < 0 || !S_ISREG(sb.st_mode))
		return errmsg(a->err, -EAGAIN, "%s/%s changed while being archived",
			      a->root, a->rel);
	if ((uint64_t)sb.st_size > a->lim->max_bytes)
		return add_failed(a, -E2BIG);
	size = (size_t)sb.st_size;
	buf = malloc(size ? size : 1);
	if (!buf)
		return errmsg(a->err, -ENOMEM, "%s: %s", a->rel, strerror(ENOMEM));
	/* Up to the size seen: a file that grows meanwhile is cut there, one that shrinks ends early. */
	while (len < size) {
		ssize_t n = read(fd, buf + len, size - len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			ret = errmsg(a->err, -errno, "read %s/%s: %s", a->root, a->rel,
				     strerror(errno));
			goto out;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	ret = ustar_add(&a->w, USTAR_FILE, a->rel, NULL, sb.st_mode, sb.st_mtim.tv_sec, buf, len);
	if (ret < 0)
		ret = add_failed(a, ret);
	else
		a->st->bytes += len;
out:
	free(buf);
	return ret;
}

/* A regular file of the tree, opened without following a symlink swapped in meanwhile. */
static int add_file(struct archiver *a, int dirfd, const char *name)
{
	int fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
	int ret;

	if (fd < 0)
		return errmsg(a->err, -errno, "open %s/%s: %s", a->root, a->rel,
			      strerror(errno));
	ret = add_file_fd(a, fd);
	close(fd);
	return ret;
}

static int add_symlink(struct archiver *a, int dirfd, const char *name, const struct stat *sb)
{
	char target[USTAR_PATH_MAX];
	ssize_t n = readlinkat(dirfd, name, target, sizeof(target));
	int ret;

	if (n < 0)
		return errmsg(a->err, -errno, "readlink %s/%s: %s", a->root, a->rel,
			      strerror(errno));
	if ((size_t)n >= sizeof(target))
		return add_failed(a, -ENAMETOOLONG);
	target[n] = '\0';
	ret = ustar_add(&a->w, USTAR_SYMLINK, a->rel, target, 0777, sb->st_mtim.tv_sec, NULL, 0);
	return ret < 0 ? add_failed(a, ret) : 0;
}

static int compare_names(const void *x, const void *y)
{
	return strcmp(*(char *const *)x, *(char *const *)y);
}

/* The names in dirfd (without . and ..), sorted; *out is a malloc'd array of malloc'd names. */
static int list_dir(struct archiver *a, int dirfd, char ***out, size_t *count)
{
	int fd = fcntl(dirfd, F_DUPFD_CLOEXEC, 0), ret = 0;
	char **names = NULL, **grown;
	size_t n = 0, cap = 0;
	struct dirent *de;
	DIR *d;

	d = fd < 0 ? NULL : fdopendir(fd);
	if (!d) {
		ret = errmsg(a->err, -errno, "list %s/%s: %s", a->root, a->rel,
			     strerror(errno));
		if (fd >= 0)
			close(fd);
		return ret;
	}
	while ((errno = 0, de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 32;
			grown = realloc(names, cap * sizeof(*names));
			if (!grown) {
				ret = -ENOMEM;
				break;
			}
			names = grown;
		}
		names[n] = strdup(de->d_name);
		if (!names[n]) {
			ret = -ENOMEM;
			break;
		}
		n++;
	}
	if (ret == 0 && errno)
		ret = -errno;
	closedir(d);
	if (ret < 0) {
		for (size_t i = 0; i < n; i++)
			free(names[i]);
		free(names);
		return errmsg(a->err, ret, "list %s/%s: %s", a->root, a->rel,
			      strerror(-ret));
	}
	if (n)
		qsort(names, n, sizeof(*names), compare_names);
	*out = names;
	*count = n;
	return 0;
}

static int add_tree(struct archiver *a, int dirfd, int depth);

/* Add dirfd's member name (a->rel already names it) by its type. */
static int add_member(struct archiver *a, int dirfd, const char *name, int depth)
{
	struct stat sb;
	int ret, sub;

	if (fstatat(dirfd, name, &sb, AT_SYMLINK_NOFOLLOW) < 0)
		return errno == ENOENT ? 0 : errmsg(a->err, -errno, "stat %s/%s: %s",
						   a->root, a->rel, strerror(errno));
	if (!S_ISDIR(sb.st_mode) && !S_ISREG(sb.st_mode) && !S_ISLNK(sb.st_mode)) {
		a->st->skipped++;
		return 0;
	}
	ret = count_entry(a);
	if (ret < 0)
		return ret;
	if (S_ISREG(sb.st_mode))
		return add_file(a, dirfd, name);
	if (S_ISLNK(sb.st_mode))
		return add_symlink(a, dirfd, name, &sb);
	if (depth >= TARTREE_MAX_DEPTH)
		return errmsg(a->err, -ELOOP, "%s: deeper than %d levels at %s", a->root,
			      TARTREE_MAX_DEPTH, a->rel);
	ret = ustar_add(&a->w, USTAR_DIR, a->rel, NULL, sb.st_mode, sb.st_mtim.tv_sec, NULL, 0);
	if (ret < 0)
		return add_failed(a, ret);
	sub = open_dir_in(dirfd, name, false, a->rel, a->err);
	if (sub < 0)
		return sub;
	ret = add_tree(a, sub, depth + 1);
	close(sub);
	return ret;
}

static int add_tree(struct archiver *a, int dirfd, int depth)
{
	size_t base = strlen(a->rel), count = 0, i;
	char **names = NULL;
	int ret;

	ret = list_dir(a, dirfd, &names, &count);
	for (i = 0; ret == 0 && i < count; i++) {
		int n = snprintf(a->rel + base, sizeof(a->rel) - base, "%s%s", base ? "/" : "",
				 names[i]);

		if (n < 0 || (size_t)n >= sizeof(a->rel) - base)
			ret = add_failed(a, -ENAMETOOLONG);
		else
			ret = add_member(a, dirfd, names[i], depth);
		a->rel[base] = '\0';
	}
	for (i = 0; i < count; i++)
		free(names[i]);
	free(names);
	return ret;
}

void tartree_base_name(const char *path, char *out, size_t cap)
{
	size_t end = strlen(path), start;

	while (end > 1 && path[end - 1] == '/')
		end--;
	start = end;
	while (start > 0 && path[start - 1] != '/')
		start--;
	snprintf(out, cap, "%.*s", (int)(end - start), path + start);
}

int tartree_archive(const char *path, const struct tartree_limits *lim, uint8_t **out,
		    size_t *out_len, enum tartree_kind *kind, struct tartree_stats *st, struct fvm_err *err)
{
	struct archiver a = { .lim = lim, .st = st, .root = path, .err = err };
	int fd = -1, ret;
	struct stat sb;

	memset(st, 0, sizeof(*st));
	ustar_writer_init(&a.w, lim->max_bytes);
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0) {
		ret = errmsg(err, -errno, "open %s: %s", path, strerror(errno));
		goto out;
	}
	if (fstat(fd, &sb) < 0) {
		ret = errmsg(err, -errno, "stat %s: %s", path, strerror(errno));
		goto out;
	}
	if (S_ISDIR(sb.st_mode)) {
		*kind = TARTREE_DIR;
		ret = add_tree(&a, fd, 0);
	} else if (S_ISREG(sb.st_mode)) {
		*kind = TARTREE_FILE;
		tartree_base_name(path, a.rel, sizeof(a.rel));
		ret = count_entry(&a);
		if (ret == 0)
			ret = add_file_fd(&a, fd);
	} else {
		ret = errmsg(err, -EINVAL, "%s is neither a regular file nor a directory",
			     path);
	}
	if (ret == 0 && ustar_finish(&a.w) < 0)
		ret = add_failed(&a, -E2BIG);
	if (ret == 0) {
		*out = a.w.buf;
		*out_len = a.w.len;
		a.w.buf = NULL;
	}
out:
	if (fd >= 0)
		close(fd);
	ustar_writer_free(&a.w);
	return ret;
}
