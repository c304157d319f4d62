/* Files, once: regular-file opens, bounded whole-file reads, crash-safe writes, mkdir -p, rm -r. */
#include "util/fileio.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/errmsg.h"
#include "util/fdio.h"

int file_open_regular(const char *path, int flags, struct stat *st, struct fvm_err *err)
{
	int fd, fl, ret;

	fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | flags);
	if (fd < 0)
		return errmsg(err, -errno, "open %s: %s", path,
			      errno == ELOOP ? "a symbolic link where a file was expected" :
			      strerror(errno));
	if (fstat(fd, st) < 0) {
		ret = errmsg(err, -errno, "stat %s: %s", path, strerror(errno));
		goto err;
	}
	if (!S_ISREG(st->st_mode)) {
		ret = errmsg(err, -EINVAL, "%s is not a regular file", path);
		goto err;
	}
	fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0) {
		ret = errmsg(err, -errno, "clearing O_NONBLOCK on %s: %s", path,
			     strerror(errno));
		goto err;
	}
	return fd;
err:
	close(fd);
	return ret;
}

int file_read(const char *path, uint64_t max, unsigned flags, uint8_t **data, size_t *len,
	      struct fvm_err *err)
{
	bool upto = flags & FILE_UPTO_MAX;
	struct stat st;
	uint8_t *buf = NULL;
	size_t got = 0, size;
	ssize_t n;
	int fd, ret = 0;

	*data = NULL;
	*len = 0;
	fd = file_open_regular(path, flags & FILE_NOFOLLOW ? O_NOFOLLOW : 0, &st, err);
	if (fd < 0)
		return fd;
	if (max >= SIZE_MAX)
		max = SIZE_MAX - 1;
	if (!upto && (uint64_t)st.st_size > max) {
		ret = errmsg(err, -EFBIG, "%s is %llu bytes, above the limit of %llu", path,
			     (unsigned long long)st.st_size, (unsigned long long)max);
		goto out;
	}
	size = upto ? (size_t)max : (size_t)st.st_size;
	/* One spare byte: room for a NUL, and it tells a file that grew from one that did not. */
	buf = malloc(size + 1);
	if (!buf) {
		ret = errmsg(err, -ENOMEM, "%s: out of memory for %zu bytes", path, size);
		goto out;
	}
	while (got < size + (upto ? 0 : 1)) {
		n = read(fd, buf + got, size + (upto ? 0 : 1) - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			ret = errmsg(err, -errno, "read %s: %s", path, strerror(errno));
			goto out;
		}
		if (n == 0)
			break;
		got += (size_t)n;
	}
	if (!upto && got != size) {
		ret = errmsg(err, -EIO, "%s changed size while being read (%zu bytes, then "
			     "%s%zu)", path, size, got > size ? "more than " : "", got);
		goto out;
	}
	buf[got] = '\0';
out:
	close(fd);
	if (ret) {
		free(buf);
		return ret;
	}
	*data = buf;
	*len = got;
	return 0;
}

static int fsync_dir_of(const char *path, struct fvm_err *err)
{
	char copy[PATH_MAX];
	int fd, ret = 0;

	snprintf(copy, sizeof(copy), "%s", path);
	fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return errmsg(err, -errno, "open the directory of %s: %s", path,
			      strerror(errno));
	if (fsync(fd) < 0)
		ret = errmsg(err, -errno, "fsync the directory of %s: %s", path,
			     strerror(errno));
	close(fd);
	return ret;
}

int file_write_atomic(const char *path, const void *buf, size_t len, mode_t mode,
		      struct fvm_err *err)
{
	char tmp[PATH_MAX];
	size_t done = 0;
	int fd, ret = 0;

	if (snprintf(tmp, sizeof(tmp), "%s.tmp-%d", path, (int)getpid()) >= (int)sizeof(tmp))
		return errmsg(err, -ENAMETOOLONG, "write %s: %s", path,
			      strerror(ENAMETOOLONG));
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode);
	if (fd < 0)
		return errmsg(err, -errno, "create %s: %s", tmp, strerror(errno));
	while (done < len) {
		ssize_t n = write(fd, (const uint8_t *)buf + done, len - done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			ret = errmsg(err, -errno, "write %s: %s", tmp, strerror(errno));
			goto out;
		}
		done += (size_t)n;
	}
	/* fchmod: the mode asked for, whatever the umask took away at create. */
	if (fchmod(fd, mode) < 0 || fsync(fd) < 0) {
		ret = errmsg(err, -errno, "fsync %s: %s", tmp, strerror(errno));
		goto out;
	}
	ret = close(fd);
	fd = -1;
	if (ret < 0) {
		ret = errmsg(err, -errno, "close %s: %s", tmp, strerror(errno));
		goto out;
	}
	if (rename(tmp, path) < 0) {
		ret = errmsg(err, -errno, "rename %s to %s: %s", tmp, path, strerror(errno));
		goto out;
	}
	return fsync_dir_of(path, err);
out:
	if (fd >= 0)
		close(fd);
	unlink(tmp);
	return ret;
}

/* mkdir each prefix of buf ending at a '/' (and buf itself if whole). */
int path_split(const char *path, char *dir, size_t len, const char **base)
{
	const char *slash = strrchr(path, '/');
	size_t n = !slash ? 1 : slash == path ? 1 : (size_t)(slash - path);

	if (n >= len)
		return -ENAMETOOLONG;
	snprintf(dir, len, "%.*s", (int)n, !slash ? "." : slash == path ? "/" : path);
	*base = slash ? slash + 1 : path;
	return !**base || !strcmp(*base, ".") || !strcmp(*base, "..") ? -EINVAL : 0;
}

static int mkdir_prefixes(char *buf, mode_t mode, bool whole)
{
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(buf, mode) < 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (whole && mkdir(buf, mode) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

static int mkdir_path(const char *path, mode_t mode, bool whole)
{
	char buf[PATH_MAX];

	if (!path[0])
		return -EINVAL;
	if (snprintf(buf, sizeof(buf), "%s", path) >= (int)sizeof(buf))
		return -ENAMETOOLONG;
	return mkdir_prefixes(buf, mode, whole);
}

int mkdir_p(const char *path, mode_t mode)
{
	return mkdir_path(path, mode, true);
}

int mkdir_parents(const char *path, mode_t mode)
{
	return mkdir_path(path, mode, false);
}

#define RM_MAX_DEPTH 16

static int remove_tree_depth(int dirfd, const char *name, int depth)
{
	struct dirent *de;
	DIR *d = NULL;
	int fd, ret = 0;

	if (unlinkat(dirfd, name, 0) == 0 || errno == ENOENT)
		return 0;
	if (errno != EISDIR)
		return -errno;
	if (depth >= RM_MAX_DEPTH)
		return -ELOOP;
	fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	d = fdopendir(fd);
	if (!d) {
		ret = -errno;
		close(fd);
		goto out;
	}
	for (;;) {
		errno = 0;
		de = readdir(d);
		if (!de) {
			ret = -errno;
			break;
		}
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		ret = remove_tree_depth(fd, de->d_name, depth + 1);
		if (ret)
			break;
	}
out:
	if (d)
		closedir(d);
	if (!ret && unlinkat(dirfd, name, AT_REMOVEDIR) < 0 && errno != ENOENT)
		ret = -errno;
	return ret;
}

int remove_tree_at(int dirfd, const char *name)
{
	return remove_tree_depth(dirfd, name, 0);
}

#define COPY_CHUNK (1u << 20)

static bool all_zero(const uint8_t *p, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (p[i])
			return false;
	return true;
}

/* [off, end) of in to out, all-zero chunks left as holes. */
static int copy_range(int in, int out, uint8_t *buf, uint64_t off, uint64_t end)
{
	while (off < end) {
		size_t n = end - off < COPY_CHUNK ? (size_t)(end - off) : COPY_CHUNK;
		int ret = fd_pread_full(in, buf, n, off);

		if (!ret && !all_zero(buf, n))
			ret = fd_pwrite_full(out, buf, n, off);
		if (ret)
			return ret;
		off += n;
	}
	return 0;
}

int file_copy_sparse(int in, int out, uint64_t size)
{
	uint8_t *buf = malloc(COPY_CHUNK);
	off_t off = 0, end;
	int ret = 0;

	if (!buf)
		return -ENOMEM;
	while ((uint64_t)off < size) {
		off = lseek(in, off, SEEK_DATA);
		if (off < 0 && errno == ENXIO)
			break;
		if (off < 0 && errno == EINVAL) { /* no SEEK_DATA here: all of it */
			ret = copy_range(in, out, buf, 0, size);
			break;
		}
		if (off < 0 || (end = lseek(in, off, SEEK_HOLE)) < 0) {
			ret = -errno;
			break;
		}
		if ((uint64_t)end > size)
			end = (off_t)size;
		if ((ret = copy_range(in, out, buf, (uint64_t)off, (uint64_t)end)))
			break;
		off = end;
	}
	free(buf);
	if (!ret && ftruncate(out, (off_t)size) < 0)
		ret = -errno;
	return ret;
}

#define COPY_MAX_DEPTH 16

static int copy_file_at(int from, const char *name, int to, struct fvm_err *err)
{
	struct stat st;
	int in, out = -1, ret = 0;

	in = openat(from, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (in < 0)
		return errmsg(err, -errno, "opening %s: %s", name, strerror(errno));
	if (fstat(in, &st) < 0)
		ret = errmsg(err, -errno, "stat of %s: %s", name, strerror(errno));
	else if (!S_ISREG(st.st_mode))
		ret = errmsg(err, -EINVAL, "%s is not a regular file", name);
	else if ((out = openat(to, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
			       0600)) < 0)
		ret = errmsg(err, -errno, "creating %s: %s", name, strerror(errno));
	else if ((ret = file_copy_sparse(in, out, (uint64_t)st.st_size)))
		errmsg(err, ret, "copying %s: %s", name, strerror(-ret));
	else if (fsync(out) < 0)
		ret = errmsg(err, -errno, "fsync of %s: %s", name, strerror(errno));
	if (out >= 0)
		close(out);
	close(in);
	return ret;
}

static int tree_copy_depth(int from, int to, int depth, struct fvm_err *err)
{
	struct dirent *de;
	int dup_fd = dup(from), ret = 0;
	DIR *d = dup_fd >= 0 ? fdopendir(dup_fd) : NULL;

	if (!d) {
		ret = errmsg(err, -errno, "reading a directory: %s", strerror(errno));
		if (dup_fd >= 0)
			close(dup_fd);
		return ret;
	}
	rewinddir(d);
	while (!ret) {
		int sub_from, sub_to;

		errno = 0;
		if (!(de = readdir(d))) {
			if (errno)
				ret = errmsg(err, -errno, "reading a directory: %s", strerror(errno));
			break;
		}
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (de->d_type == DT_UNKNOWN) { /* file systems without d_type */
			struct stat st;
			if (fstatat(from, de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
			    S_ISDIR(st.st_mode))
				de->d_type = DT_DIR;
		}
		if (de->d_type != DT_DIR && de->d_type != DT_REG && de->d_type != DT_UNKNOWN) {
			ret = errmsg(err, -EINVAL, "%s is %s, not a regular file or directory",
				     de->d_name, de->d_type == DT_LNK ? "a symbolic link" : "special");
			break;
		}
		if (de->d_type != DT_DIR) {
			ret = copy_file_at(from, de->d_name, to, err);
			continue;
		}
		if (depth >= COPY_MAX_DEPTH) {
			ret = errmsg(err, -ELOOP, "%s: deeper than %d levels", de->d_name,
				     COPY_MAX_DEPTH);
			break;
		}
		sub_from = openat(from, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (sub_from < 0) {
			ret = errmsg(err, -errno, "opening %s: %s", de->d_name, strerror(errno));
			break;
		}
		if (mkdirat(to, de->d_name, 0700) < 0 ||
		    (sub_to = openat(to, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
				     O_CLOEXEC)) < 0) {
			ret = errmsg(err, -errno, "creating %s: %s", de->d_name, strerror(errno));
			close(sub_from);
			break;
		}
		ret = tree_copy_depth(sub_from, sub_to, depth + 1, err);
		close(sub_from);
		close(sub_to);
	}
	closedir(d);
	if (!ret && fsync(to) < 0)
		ret = errmsg(err, -errno, "fsync of a directory: %s", strerror(errno));
	return ret;
}

int tree_copy_at(int from_dirfd, int to_dirfd, struct fvm_err *err)
{
	return tree_copy_depth(from_dirfd, to_dirfd, 0, err);
}
