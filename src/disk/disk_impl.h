/* Overlay file format and the helpers the disk files share (docs/DISK.md, "Overlay format"). */
#ifndef FORKVM_DISK_IMPL_H
#define FORKVM_DISK_IMPL_H

#include <stdarg.h>

#include "util/errmsg.h"
#include "util/fdio.h"	/* fd_pread_full, fd_pwrite_full */
#include "disk/disk.h"

#define DISK_OVL_MAGIC "FKVMOVL1"
#define DISK_OVL_VERSION 1
#define DISK_OVL_HEADER_SIZE 256
#define DISK_OVL_BITMAP_OFF 4096ULL
#define DISK_OVL_DATA_ALIGN (1ULL << 20)
#define DISK_OVL_SEALED 1u
#define DISK_BITMAP_CHUNK 4096ULL /* the bitmap is written in pieces of this size */

/* Bytes 0..255 of an overlay, little-endian (x86-64 writes and reads it as is). */
struct disk_ovl_header {
	char magic[8];
	uint32_t version;
	uint32_t header_size;
	uint64_t virtual_size;
	uint32_t cluster_size;
	uint32_t flags;
	uint64_t nclusters;
	uint64_t bitmap_off;
	uint64_t bitmap_len;
	uint64_t data_off;
	uint8_t base_sha256[SHA256_LEN];
	uint64_t base_size;
	uint8_t id[DISK_ID_LEN];
	uint8_t parent_id[DISK_ID_LEN];
	uint32_t depth;
	uint32_t reserved0;
	uint64_t bitmap_xxh64; /* sealed layers: XXH64 of the bitmap */
	uint8_t reserved[96];
	uint64_t header_xxh64; /* XXH64 of bytes 0..247 */
};
_Static_assert(sizeof(struct disk_ovl_header) == DISK_OVL_HEADER_SIZE, "overlay header size");

enum { DISK_LOGGED_ENOSPC = 1, DISK_LOGGED_EIO = 2 };

/* Where a message goes: the caller's buffer, or the log when there is none. */
int disk_fail(struct fvm_err *e, int ret, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Geometry every layer of a disk of `size` bytes must have. */
void disk_geometry(uint64_t size, uint64_t *nclusters, uint64_t *bitmap_len, uint64_t *data_off);

/* disk_format.c: header encode/check, bitmap bits. */
void disk_header_fill(const struct disk *d, const struct disk_layer *l, uint32_t depth,
		      uint32_t flags, uint64_t bitmap_xxh64, struct disk_ovl_header *h);
int disk_header_check(const struct disk *d, const struct disk_ovl_header *h, const char *path,
		      struct fvm_err *e);
static inline bool disk_bit(const uint8_t *bm, uint64_t i)
{
	return bm[i >> 3] & (1u << (i & 7));
}
uint64_t disk_bitmap_count(const uint8_t *bm, uint64_t nbits);

/* disk_layer.c: loading, creating and sealing one overlay file. */
int disk_layer_load(struct disk *d, const char *path, bool writable, int depth,
		    const uint8_t *expect_id, struct fvm_err *e, struct disk_layer **out);
int disk_layer_create(struct disk *d, const char *path, int depth, struct fvm_err *e,
		      struct disk_layer **out);
int disk_layer_flush(struct disk *d, struct disk_layer *l);
int disk_layer_seal(struct disk *d, struct disk_layer *l);
void disk_layer_free(struct disk_layer *l, bool remove_owned);

#endif
