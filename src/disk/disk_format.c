/* Overlay format: geometry, header encoding and its strict check, bitmap helpers, full I/O. */
#include "disk/disk_impl.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

#include "util/errmsg.h"
#include "util/log.h"

int disk_fail(struct fvm_err *e, int ret, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (e)
		errmsg(e, ret, "%s", msg);
	else
		log_err("%s", msg);
	return ret;
}

static uint64_t round_up(uint64_t v, uint64_t a)
{
	return (v + a - 1) / a * a;
}

void disk_geometry(uint64_t size, uint64_t *nclusters, uint64_t *bitmap_len, uint64_t *data_off)
{
	*nclusters = (size + DISK_CLUSTER_SIZE - 1) / DISK_CLUSTER_SIZE;
	*bitmap_len = round_up((*nclusters + 7) / 8, DISK_BITMAP_CHUNK);
	if (*bitmap_len == 0)
		*bitmap_len = DISK_BITMAP_CHUNK;
	*data_off = round_up(DISK_OVL_BITMAP_OFF + *bitmap_len, DISK_OVL_DATA_ALIGN);
}

void disk_header_fill(const struct disk *d, const struct disk_layer *l, uint32_t depth,
		      uint32_t flags, uint64_t bitmap_xxh64, struct disk_ovl_header *h)
{
	memset(h, 0, sizeof(*h));
	memcpy(h->magic, DISK_OVL_MAGIC, 8);
	h->version = DISK_OVL_VERSION;
	h->header_size = DISK_OVL_HEADER_SIZE;
	h->virtual_size = d->size;
	h->cluster_size = DISK_CLUSTER_SIZE;
	h->flags = flags;
	h->nclusters = d->nclusters;
	h->bitmap_off = DISK_OVL_BITMAP_OFF;
	h->bitmap_len = d->bitmap_len;
	h->data_off = d->data_off;
	memcpy(h->base_sha256, d->base.sha256, SHA256_LEN);
	h->base_size = d->base.size;
	memcpy(h->id, l->id, DISK_ID_LEN);
	memcpy(h->parent_id, l->parent, DISK_ID_LEN);
	h->depth = depth;
	h->bitmap_xxh64 = bitmap_xxh64;
	h->header_xxh64 = XXH64(h, offsetof(struct disk_ovl_header, header_xxh64), 0);
}

/* The format itself: magic, version, checksum, a geometry this forkvm writes. */
static int check_format(const struct disk_ovl_header *h, const char *path,
			struct fvm_err *e)
{
	uint64_t nc, bl, doff;

	if (memcmp(h->magic, DISK_OVL_MAGIC, 8) != 0)
		return disk_fail(e, -EINVAL, "overlay %s: bad magic (not a forkvm overlay)", path);
	if (h->version != DISK_OVL_VERSION)
		return disk_fail(e, -EINVAL, "overlay %s: format version %u is not supported (this "
				 "forkvm reads version %u)", path, h->version, DISK_OVL_VERSION);
	if (h->header_size != DISK_OVL_HEADER_SIZE ||
	    h->header_xxh64 != XXH64(h, offsetof(struct disk_ovl_header, header_xxh64), 0))
		return disk_fail(e, -EINVAL, "overlay %s: header checksum mismatch (corrupt header)",
				 path);
	if (h->flags & ~DISK_OVL_SEALED)
		return disk_fail(e, -EINVAL, "overlay %s: unknown flags 0x%x", path, h->flags);
	disk_geometry(h->virtual_size, &nc, &bl, &doff);
	if (h->cluster_size != DISK_CLUSTER_SIZE || h->virtual_size == 0 ||
	    h->virtual_size % DISK_SECTOR || h->nclusters != nc ||
	    h->bitmap_off != DISK_OVL_BITMAP_OFF || h->bitmap_len != bl || h->data_off != doff)
		return disk_fail(e, -EINVAL, "overlay %s: inconsistent geometry (size %llu, cluster %u, "
				 "bitmap %llu bytes at %llu, data at %llu)", path,
				 (unsigned long long)h->virtual_size, h->cluster_size,
				 (unsigned long long)h->bitmap_len, (unsigned long long)h->bitmap_off,
				 (unsigned long long)h->data_off);
	return 0;
}

int disk_header_check(const struct disk *d, const struct disk_ovl_header *h, const char *path,
		      struct fvm_err *e)
{
	char want[65], have[65];
	int ret = check_format(h, path, e);

	if (ret)
		return ret;
	if (h->base_size != d->base.size || memcmp(h->base_sha256, d->base.sha256, SHA256_LEN)) {
		sha256_to_hex(d->base.sha256, want);
		sha256_to_hex(h->base_sha256, have);
		return disk_fail(e, -EINVAL, "overlay %s belongs to another base (it records %llu bytes, "
				 "sha256 %s; base %s is %llu bytes, sha256 %s)", path,
				 (unsigned long long)h->base_size, have, d->base_path,
				 (unsigned long long)d->base.size, want);
	}
	if (h->virtual_size != d->size)
		return disk_fail(e, -EINVAL, "overlay %s: size mismatch (%llu bytes, the disk has %llu)",
				 path, (unsigned long long)h->virtual_size, (unsigned long long)d->size);
	return 0;
}

uint64_t disk_bitmap_count(const uint8_t *bm, uint64_t nbits)
{
	uint64_t n = 0, i = 0;

	for (; i + 64 <= nbits; i += 64) {
		uint64_t w;
		memcpy(&w, bm + i / 8, 8);
		n += (uint64_t)__builtin_popcountll(w);
	}
	for (; i < nbits; i++)
		n += disk_bit(bm, i);
	return n;
}
