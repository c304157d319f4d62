/*
 * Files, once: opening a regular file without blocking on a FIFO in its place, reading a whole
 * file within a size bound, writing one crash-safe (temp file, fsync, rename, directory fsync),
 * and making directories. Errors are -errno with the message in err (NULL: none wanted).
 */
#ifndef FORKVM_UTIL_FILEIO_H
#define FORKVM_UTIL_FILEIO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "util/errmsg.h"

/* file_read flags */
#define FILE_NOFOLLOW (1u << 0) /* a symbolic link at path is an error (ELOOP) */
#define FILE_UPTO_MAX (1u << 1) /* /proc, /sys: the first max bytes, whatever st_size says */

/*
 * open(path, O_RDONLY | flags) that refuses anything but a regular file, opened O_NONBLOCK so a
 * FIFO or device in the file's place cannot block the open; blocking again once checked.
 * Returns the fd (st filled in) or -errno.
 */
int file_open_regular(const char *path, int flags, struct stat *st, struct fvm_err *err);

/*
 * The whole regular file at path into a malloc'd buffer with a NUL after its *len bytes.
 * A file above max bytes is refused before reading (a sparse file claims any size for free),
 * and so is one whose size changed while it was read -- unless FILE_UPTO_MAX: then the first
 * max bytes, read to EOF (pseudo-files report no true size). -EFBIG, -EIO, or the -errno of
 * the failing call.
 */
int file_read(const char *path, uint64_t max, unsigned flags, uint8_t **data, size_t *len,
	      struct fvm_err *err);

/* path written as PATH.tmp-PID, fsync'd, renamed over path, its directory fsync'd; on any
 * failure the temp file is removed and path is untouched. */
int file_write_atomic(const char *path, const void *buf, size_t len, mode_t mode,
		      struct fvm_err *err);

/* rm -r of name under dirfd (AT_FDCWD: a path); never follows symlinks; a missing name is
 * not an error. Returns 0 or -errno (-ELOOP deeper than 16 levels). */
int remove_tree_at(int dirfd, const char *name);

/*
 * Copy in's first size bytes to out at the same offsets, sparse: only in's data extents
 * (SEEK_DATA/SEEK_HOLE; all of it on a file system without them), and within them chunks of
 * zeros are left as holes. out is then truncated to size. Does not fsync. 0 or -errno.
 */
int file_copy_sparse(int in, int out, uint64_t size);

/*
 * Copy the tree under from_dirfd into the existing, empty directory to_dirfd: directories
 * (mode 0700) and regular files (0600, sparse copies, each fsync'd, each directory fsync'd
 * after its entries). Anything else (a symlink, a device, a FIFO, a socket) is refused, as is
 * a tree deeper than 16. On failure what was copied stays for the caller to remove. 0, or
 * -errno with err naming the entry and the step.
 */
int tree_copy_at(int from_dirfd, int to_dirfd, struct fvm_err *err);

/*
 * path's directory and last component, lexically: "/a/b/c" -> "/a/b", "c"; "/c" -> "/", "c";
 * "c" -> ".", "c". -ENAMETOOLONG when the directory does not fit dir, -EINVAL for an empty,
 * "." or ".." last component.
 */
int path_split(const char *path, char *dir, size_t len, const char **base);

/* mkdir -p: path and every missing parent, with mode (existing ones are left as they are). */
int mkdir_p(const char *path, mode_t mode);
/* mkdir -p of the parents of path, not path itself. */
int mkdir_parents(const char *path, mode_t mode);

#endif
