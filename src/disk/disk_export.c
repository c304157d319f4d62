/* Giving a sealed layer a name in a snapshot directory: a hard link, else a sparse copy. */
#include "disk/disk_impl.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/fileio.h"
#include "util/log.h"

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

static int copy_layer(const struct disk_layer *l, int dirfd, const char *dirname,
		      const char *name)
{
	struct stat st;
	int out = -1, ret = 0;

	if (fstat(l->fd, &st) < 0)
		ret = -errno;
	else if ((out = openat(dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW,
			       0600)) < 0)
		ret = -errno;
	if (!ret)
		ret = file_copy_sparse(l->fd, out, (uint64_t)st.st_size);
	if (!ret && fsync(out) < 0)
		ret = -errno;
	if (out >= 0)
		close(out);
	if (ret && out >= 0)
		unlinkat(dirfd, name, 0);
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
