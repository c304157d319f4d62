/* Giving a sealed layer a name in a snapshot directory: a hard link, else a sparse copy. */
#include "disk/disk_impl.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/log.h"

#define COPY_CHUNK (1u << 20)

/* Link the open file itself (its name may be gone or replaced): then check it is the same. */
static int try_link(const struct disk_layer *l, int dirfd, const char *name)
{
	char proc[64];
	struct stat a, b;

	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", l->fd);
	if (linkat(AT_FDCWD, proc, dirfd, name, AT_SYMLINK_FOLLOW) < 0)
		return -errno;
	if (fstat(l->fd, &a) == 0 && fstatat(dirfd, name, &b, AT_SYMLINK_NOFOLLOW) == 0 &&
	    a.st_dev == b.st_dev && a.st_ino == b.st_ino)
		return 0;
	unlinkat(dirfd, name, 0);
	return -ESTALE;
}

static bool all_zero(const uint8_t *p, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (p[i])
			return false;
	return true;
}

/* Copy [off, end) of in to out, leaving all-zero chunks as holes. */
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

/* Data extents only (SEEK_DATA/SEEK_HOLE); a filesystem without them is copied whole. */
static int copy_sparse(int in, int out, uint8_t *buf, uint64_t size)
{
	off_t off = 0, end;
	int ret;

	for (;;) {
		off = lseek(in, off, SEEK_DATA);
		if (off < 0 && errno == ENXIO)
			return 0;
		if (off < 0 && errno == EINVAL)
			return copy_range(in, out, buf, 0, size);
		if (off < 0)
			return -errno;
		end = lseek(in, off, SEEK_HOLE);
		if (end < 0)
			return -errno;
		ret = copy_range(in, out, buf, (uint64_t)off, (uint64_t)end);
		if (ret)
			return ret;
		off = end;
	}
}

static int copy_layer(const struct disk_layer *l, int dirfd, const char *dirname,
		      const char *name)
{
	uint8_t *buf = malloc(COPY_CHUNK);
	struct stat st;
	int out = -1, ret = 0;

	if (!buf)
		return log_errno(-ENOMEM, "copying overlay %s", l->path);
	if (fstat(l->fd, &st) < 0)
		ret = -errno;
	else if ((out = openat(dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW,
			       0600)) < 0)
		ret = -errno;
	if (!ret)
		ret = copy_sparse(l->fd, out, buf, (uint64_t)st.st_size);
	if (!ret && (ftruncate(out, st.st_size) < 0 || fsync(out) < 0))
		ret = -errno;
	if (out >= 0)
		close(out);
	if (ret && out >= 0)
		unlinkat(dirfd, name, 0);
	free(buf);
	if (ret)
		return log_errno(ret, "copying overlay %s to %s/%s", l->path, dirname, name);
	return 0;
}

int disk_layer_export(struct disk *d, int k, int dirfd, const char *dirname, const char *name)
{
	int ret;

	if (k < 0 || k >= d->nlayers || !d->layers[k]->sealed)
		return log_errno(-EINVAL, "exporting layer %d of disk %s: not a sealed layer", k,
				 d->base_path);
	ret = try_link(d->layers[k], dirfd, name);
	if (ret == 0)
		return 0;
	log_debug("overlay %s: no hard link into %s (%s); copying it", d->layers[k]->path, dirname,
		  strerror(-ret));
	return copy_layer(d->layers[k], dirfd, dirname, name);
}
