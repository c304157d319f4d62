/* One overlay file: strict loading, creation (replacing only a stale overlay), flush, seal. */
#include "disk/disk_impl.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "util/errmsg.h"
#include "util/log.h"

static void id_hex(const uint8_t *id, char out[2 * DISK_ID_LEN + 1])
{
	for (int i = 0; i < DISK_ID_LEN; i++)
		snprintf(out + 2 * i, 3, "%02x", id[i]);
}

static const uint8_t *parent_of(const struct disk *d, int depth)
{
	static const uint8_t none[DISK_ID_LEN];

	return depth == 0 ? none : d->layers[depth - 1]->id;
}

/* Open a file that must be a regular file, never blocking on a FIFO in its place. */
static int open_regular(const char *path, int flags, struct stat *st, struct fvm_err *e)
{
	int fd = open(path, flags | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);

	if (fd < 0)
		return disk_fail(e, -errno, "opening overlay %s: %s", path, strerror(errno));
	if (fstat(fd, st) < 0) {
		int ret = -errno;
		close(fd);
		return disk_fail(e, ret, "overlay %s: fstat: %s", path, strerror(-ret));
	}
	if (!S_ISREG(st->st_mode)) {
		close(fd);
		return disk_fail(e, -EINVAL, "overlay %s is not a regular file", path);
	}
	if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) < 0) {
		int ret = -errno;
		close(fd);
		return disk_fail(e, ret, "overlay %s: fcntl: %s", path, strerror(-ret));
	}
	return fd;
}

/* The top is private to one VM: a second opener (another VM's stale name reused) fails. */
static int lock_top(int fd, const char *path, struct fvm_err *e)
{
	if (flock(fd, LOCK_EX | LOCK_NB) == 0)
		return 0;
	if (errno == EWOULDBLOCK)
		return disk_fail(e, -EBUSY, "overlay %s is in use by a running VM", path);
	return disk_fail(e, -errno, "locking overlay %s: %s", path, strerror(errno));
}

static struct disk_layer *layer_alloc(const struct disk *d, const char *path, bool top)
{
	struct disk_layer *l = calloc(1, sizeof(*l));

	if (!l)
		return NULL;
	l->fd = -1;
	snprintf(l->path, sizeof(l->path), "%s", path);
	l->bitmap = calloc(1, d->bitmap_len);
	l->dirty = top ? calloc(1, d->bitmap_len / DISK_BITMAP_CHUNK) : NULL;
	if (!l->bitmap || (top && !l->dirty)) {
		disk_layer_free(l, false);
		return NULL;
	}
	return l;
}

/* Where the layer sits: its depth, its parent, the id the caller expects, sealed or not. */
static int check_place(struct disk *d, const struct disk_ovl_header *h, const char *path,
		       bool writable, int depth, const uint8_t *expect_id, struct fvm_err *e)
{
	char a[33], b[33];

	if (h->depth != (uint32_t)depth)
		return disk_fail(e, -EINVAL, "overlay %s is layer %u of its chain, expected layer %d",
				 path, h->depth, depth);
	if (memcmp(h->parent_id, parent_of(d, depth), DISK_ID_LEN)) {
		id_hex(h->parent_id, a);
		id_hex(parent_of(d, depth), b);
		return disk_fail(e, -EINVAL, "overlay %s: parent mismatch (it was made on layer %s, the "
				 "layer below is %s)", path, a, depth ? b : "the base");
	}
	if (expect_id && memcmp(h->id, expect_id, DISK_ID_LEN)) {
		id_hex(h->id, a);
		id_hex(expect_id, b);
		return disk_fail(e, -EINVAL, "overlay %s is layer %s, not the recorded layer %s", path,
				 a, b);
	}
	if (!writable && !(h->flags & DISK_OVL_SEALED))
		return disk_fail(e, -EINVAL, "overlay %s is not sealed: only sealed layers can be "
				 "shared in a chain", path);
	if (writable && (h->flags & DISK_OVL_SEALED))
		return disk_fail(e, -EROFS, "overlay %s is sealed and is never written again", path);
	return 0;
}

/* The bitmap: present, intact (sealed: its checksum), no bits past the end, data present. */
static int load_bitmap(struct disk *d, struct disk_layer *l, const struct disk_ovl_header *h,
		       uint64_t file_size, struct fvm_err *e)
{
	uint64_t hi = 0, need;
	int ret;

	if (file_size < d->data_off)
		return disk_fail(e, -EINVAL, "overlay %s: truncated bitmap (%llu bytes, need %llu)",
				 l->path, (unsigned long long)file_size, (unsigned long long)d->data_off);
	ret = fd_pread_full(l->fd, l->bitmap, d->bitmap_len, DISK_OVL_BITMAP_OFF);
	if (ret)
		return disk_fail(e, ret, "reading the bitmap of overlay %s: %s", l->path, strerror(-ret));
	if ((h->flags & DISK_OVL_SEALED) && XXH64(l->bitmap, d->bitmap_len, 0) != h->bitmap_xxh64)
		return disk_fail(e, -EINVAL, "overlay %s: bitmap checksum mismatch (corrupt bitmap)",
				 l->path);
	for (uint64_t i = d->nclusters; i < d->bitmap_len * 8; i++)
		if (disk_bit(l->bitmap, i))
			return disk_fail(e, -EINVAL, "overlay %s: bitmap marks cluster %llu past the end "
					 "(%llu clusters)", l->path, (unsigned long long)i,
					 (unsigned long long)d->nclusters);
	for (uint64_t i = 0; i < d->nclusters; i++)
		if (disk_bit(l->bitmap, i))
			hi = i + 1;
	need = hi ? d->data_off + (hi * DISK_CLUSTER_SIZE < d->size ? hi * DISK_CLUSTER_SIZE : d->size)
		  : 0;
	if (file_size < need)
		return disk_fail(e, -EINVAL, "overlay %s: truncated data (%llu bytes, its clusters need "
				 "%llu)", l->path, (unsigned long long)file_size, (unsigned long long)need);
	l->nalloc = disk_bitmap_count(l->bitmap, d->nclusters);
	return 0;
}

int disk_layer_load(struct disk *d, const char *path, bool writable, int depth,
		    const uint8_t *expect_id, struct fvm_err *e, struct disk_layer **out)
{
	struct disk_ovl_header h;
	struct stat st;
	struct disk_layer *l = layer_alloc(d, path, writable);
	int ret;

	if (!l)
		return disk_fail(e, -ENOMEM, "overlay %s: out of memory for its bitmap", path);
	l->fd = open_regular(path, writable ? O_RDWR : O_RDONLY, &st, e);
	if (l->fd < 0) {
		ret = l->fd;
		goto fail;
	}
	if ((uint64_t)st.st_size < sizeof(h)) {
		ret = disk_fail(e, -EINVAL, "overlay %s: truncated header (%lld bytes)", path,
				(long long)st.st_size);
		goto fail;
	}
	ret = fd_pread_full(l->fd, &h, sizeof(h), 0);
	if (ret) {
		disk_fail(e, ret, "reading the header of overlay %s: %s", path, strerror(-ret));
		goto fail;
	}
	ret = disk_header_check(d, &h, path, e);
	if (!ret)
		ret = check_place(d, &h, path, writable, depth, expect_id, e);
	if (!ret)
		ret = load_bitmap(d, l, &h, (uint64_t)st.st_size, e);
	if (!ret && writable)
		ret = lock_top(l->fd, path, e);
	if (ret)
		goto fail;
	memcpy(l->id, h.id, DISK_ID_LEN);
	memcpy(l->parent, h.parent_id, DISK_ID_LEN);
	l->depth = (uint32_t)depth;
	l->sealed = h.flags & DISK_OVL_SEALED;
	*out = l;
	return 0;
fail:
	disk_layer_free(l, false);
	return ret;
}

/* A leftover overlay of a VM that is gone (same socket name) is replaced; anything else not. */
static int remove_stale(const char *path, struct fvm_err *e)
{
	char magic[8] = { 0 };
	struct stat st;
	int fd = open_regular(path, O_RDWR, &st, e), ret;

	if (fd < 0)
		return fd;
	ret = lock_top(fd, path, e);
	if (!ret && (pread(fd, magic, sizeof(magic), 0) != (ssize_t)sizeof(magic) ||
		     memcmp(magic, DISK_OVL_MAGIC, 8)))
		ret = disk_fail(e, -EEXIST, "%s exists and is not a forkvm overlay: not replaced", path);
	if (!ret && unlink(path) < 0)
		ret = disk_fail(e, -errno, "removing stale overlay %s: %s", path, strerror(errno));
	if (!ret)
		log_warn("replaced stale overlay %s (its VM is gone)", path);
	close(fd);
	return ret;
}

static int create_file(const char *path, struct fvm_err *e)
{
	for (int attempt = 0;; attempt++) {
		int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600), ret;

		if (fd >= 0) {
			ret = lock_top(fd, path, e);
			if (!ret)
				return fd;
			close(fd);
			return ret;
		}
		if (errno != EEXIST || attempt)
			return disk_fail(e, -errno, "creating overlay %s: %s", path, strerror(errno));
		ret = remove_stale(path, e);
		if (ret)
			return ret;
	}
}

static int write_new_header(struct disk *d, struct disk_layer *l, struct fvm_err *e)
{
	struct disk_ovl_header h;
	int ret;

	disk_header_fill(d, l, l->depth, 0, 0, &h);
	ret = fd_pwrite_full(l->fd, &h, sizeof(h), 0);
	if (ret)
		return disk_fail(e, ret, "writing the header of overlay %s: %s", l->path, strerror(-ret));
	if (ftruncate(l->fd, (off_t)d->data_off) < 0 || fsync(l->fd) < 0)
		return disk_fail(e, -errno, "sizing overlay %s: %s", l->path, strerror(errno));
	return 0;
}

int disk_layer_create(struct disk *d, const char *path, int depth, struct fvm_err *e,
		      struct disk_layer **out)
{
	struct disk_layer *l = layer_alloc(d, path, true);
	int ret;

	if (!l)
		return disk_fail(e, -ENOMEM, "overlay %s: out of memory for its bitmap", path);
	if (depth >= DISK_MAX_LAYERS) {
		ret = disk_fail(e, -E2BIG, "overlay %s: the chain already has %d layers (at most %d)",
				path, depth, DISK_MAX_LAYERS);
		goto fail;
	}
	if (getrandom(l->id, sizeof(l->id), 0) != (ssize_t)sizeof(l->id)) {
		ret = disk_fail(e, -EIO, "overlay %s: no random id (getrandom)", path);
		goto fail;
	}
	memcpy(l->parent, parent_of(d, depth), DISK_ID_LEN);
	l->depth = (uint32_t)depth;
	l->fd = create_file(path, e);
	if (l->fd < 0) {
		ret = l->fd;
		goto fail;
	}
	l->owned = true;
	ret = write_new_header(d, l, e);
	if (ret)
		goto fail;
	*out = l;
	return 0;
fail:
	disk_layer_free(l, true);
	return ret;
}

/* Data first, then the bitmap that points at it: a crash never exposes unwritten clusters. */
int disk_layer_flush(struct disk *d, struct disk_layer *l)
{
	uint64_t nchunks = d->bitmap_len / DISK_BITMAP_CHUNK;
	int ret;

	if (l->sealed)
		return 0;
	if (l->alloc_unsynced) {
		if (fdatasync(l->fd) < 0)
			return log_errno(-errno, "flushing the data of overlay %s", l->path);
		for (uint64_t i = 0; i < nchunks; i++) {
			if (!l->dirty[i])
				continue;
			ret = fd_pwrite_full(l->fd, l->bitmap + i * DISK_BITMAP_CHUNK, DISK_BITMAP_CHUNK,
					       DISK_OVL_BITMAP_OFF + i * DISK_BITMAP_CHUNK);
			if (ret)
				return log_errno(ret, "writing the bitmap of overlay %s", l->path);
			l->dirty[i] = 0;
		}
		l->alloc_unsynced = false;
	}
	if (fdatasync(l->fd) < 0)
		return log_errno(-errno, "flushing overlay %s", l->path);
	return 0;
}

int disk_layer_seal(struct disk *d, struct disk_layer *l)
{
	struct disk_ovl_header h;
	int ret = disk_layer_flush(d, l);

	if (ret)
		return ret;
	disk_header_fill(d, l, l->depth, DISK_OVL_SEALED, XXH64(l->bitmap, d->bitmap_len, 0),
			 &h);
	ret = fd_pwrite_full(l->fd, &h, sizeof(h), 0);
	if (ret)
		return log_errno(ret, "sealing overlay %s: writing its header", l->path);
	if (fsync(l->fd) < 0)
		return log_errno(-errno, "sealing overlay %s: fsync", l->path);
	l->sealed = true;
	return 0;
}

void disk_layer_free(struct disk_layer *l, bool remove_owned)
{
	struct stat a, b;

	if (!l)
		return;
	/* Only our own file: the name may have been replaced since (never remove another's). */
	if (remove_owned && l->owned && l->fd >= 0 && fstat(l->fd, &a) == 0 &&
	    stat(l->path, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino &&
	    unlink(l->path) < 0)
		log_warn("removing overlay %s: %s", l->path, strerror(errno));
	if (l->fd >= 0)
		close(l->fd);
	free(l->bitmap);
	free(l->dirty);
	free(l);
}
