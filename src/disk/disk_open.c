/* Opening a disk (base, sealed chain, private top), closing it, and sealing its top. */
#include "disk/disk_impl.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/errmsg.h"
#include "util/log.h"

static int open_base(struct disk *d, const char *path, bool write_cache, struct fvm_err *e)
{
	struct stat st;

	if (!path || !*path)
		return disk_fail(e, -EINVAL, "no base image given");
	if (!realpath(path, d->base_path))
		return disk_fail(e, -errno, "base %s: %s", path, strerror(errno));
	d->base_fd = open(d->base_path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	if (d->base_fd < 0)
		return disk_fail(e, -errno, "opening base %s: %s", d->base_path, strerror(errno));
	if (fstat(d->base_fd, &st) < 0)
		return disk_fail(e, -errno, "base %s: fstat: %s", d->base_path, strerror(errno));
	if (!S_ISREG(st.st_mode))
		return disk_fail(e, -EINVAL, "base %s is not a regular file", d->base_path);
	if (fcntl(d->base_fd, F_SETFL, fcntl(d->base_fd, F_GETFL) & ~O_NONBLOCK) < 0)
		return disk_fail(e, -errno, "base %s: fcntl: %s", d->base_path, strerror(errno));
	return disk_base_identify(d->base_path, d->base_fd, write_cache, &d->base, e);
}

static int check_expected_base(const struct disk *d, const struct disk_base_id *want,
			       struct fvm_err *e)
{
	char a[65], b[65];

	if (!want || (want->size == d->base.size && !memcmp(want->sha256, d->base.sha256, SHA256_LEN)))
		return 0;
	sha256_to_hex(want->sha256, a);
	sha256_to_hex(d->base.sha256, b);
	return disk_fail(e, -EINVAL, "base %s is not the recorded base (recorded %llu bytes, sha256 "
			 "%s; found %llu bytes, sha256 %s)", d->base_path,
			 (unsigned long long)want->size, a, (unsigned long long)d->base.size, b);
}

static int open_top(struct disk *d, const struct disk_open_opts *o, struct fvm_err *e)
{
	int depth = d->nlayers, ret;

	if (!o->create_top && !o->reopen_top)
		return 0;
	ret = o->create_top ? disk_layer_create(d, o->create_top, depth, e, &d->layers[depth])
			    : disk_layer_load(d, o->reopen_top, true, depth, NULL, e, &d->layers[depth]);
	if (ret)
		return ret;
	d->nlayers++;
	d->has_top = true;
	return 0;
}

int disk_open(const struct disk_open_opts *o, struct disk **out, struct fvm_err *err)
{
	struct fvm_err *e = err;
	struct disk *d = calloc(1, sizeof(*d));
	int ntop = o->create_top || o->reopen_top ? 1 : 0, ret;

	if (!d)
		return disk_fail(e, -ENOMEM, "allocating a disk for %s", o->base ? o->base : "?");
	d->base_fd = -1;
	if (o->create_top && o->reopen_top) {
		ret = disk_fail(e, -EINVAL, "base %s: a new top or an existing one, not both",
				o->base ? o->base : "?");
		goto fail;
	}
	if (o->nlayers < 0 || o->nlayers + ntop > DISK_MAX_LAYERS) {
		ret = disk_fail(e, -E2BIG, "base %s: %d layers (at most %d with the top)",
				o->base ? o->base : "?", o->nlayers, DISK_MAX_LAYERS);
		goto fail;
	}
	ret = open_base(d, o->base, !o->keep_id_cache, e);
	if (!ret)
		ret = check_expected_base(d, o->expect_base, e);
	if (ret)
		goto fail;
	d->size = (d->base.size + DISK_SECTOR - 1) / DISK_SECTOR * DISK_SECTOR;
	disk_geometry(d->size, &d->nclusters, &d->bitmap_len, &d->data_off);
	d->bounce = malloc(DISK_CLUSTER_SIZE);
	if (!d->bounce) {
		ret = disk_fail(e, -ENOMEM, "allocating a disk for %s", d->base_path);
		goto fail;
	}
	for (int k = 0; k < o->nlayers; k++) {
		ret = disk_layer_load(d, o->layers[k], false, k, o->expect_ids ? o->expect_ids[k] : NULL,
				      e, &d->layers[k]);
		if (ret)
			goto fail;
		d->nlayers = k + 1;
	}
	ret = open_top(d, o, e);
	if (ret)
		goto fail;
	*out = d;
	return 0;
fail:
	disk_close(d, true);
	return ret;
}

void disk_close(struct disk *d, bool remove_owned)
{
	if (!d)
		return;
	for (int k = 0; k < d->nlayers; k++)
		disk_layer_free(d->layers[k], remove_owned);
	if (d->base_fd >= 0)
		close(d->base_fd);
	free(d->bounce);
	free(d);
}

bool disk_top_empty(const struct disk *d)
{
	return d->has_top && d->layers[d->nlayers - 1]->nalloc == 0;
}

int disk_nsealed(const struct disk *d)
{
	return d->has_top ? d->nlayers - 1 : d->nlayers;
}

int disk_seal_top_and_push_new(struct disk *d, const char *new_top)
{
	struct disk_layer *top, *next;
	int depth = d->nlayers, ret;

	if (!d->has_top)
		return log_errno(-EROFS, "sealing disk %s: it has no writable top", d->base_path);
	top = d->layers[depth - 1];
	ret = disk_layer_flush(d, top);
	if (ret)
		return ret;
	/* The new top first: if it cannot be made, nothing has changed. */
	ret = disk_layer_create(d, new_top, depth, NULL, &next);
	if (ret)
		return ret;
	ret = disk_layer_seal(d, top);
	if (ret) {
		disk_layer_free(next, true);
		return ret;
	}
	d->layers[depth] = next;
	d->nlayers++;
	return 0;
}
