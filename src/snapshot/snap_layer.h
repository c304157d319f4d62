/* Diff layers: a snapshot whose memory is the pages dirtied since its parent. */
#ifndef FORKVM_SNAP_LAYER_H
#define FORKVM_SNAP_LAYER_H

#include <stdint.h>

#include "snapshot/snap_format.h"

struct guest_mem;

#define SNAP_FILE_PAGES "pages"
#define SNAP_FILE_PARENT "parent"
#define SNAP_PAGES_MAGIC "FKVMPGS1"
#define SNAP_MAX_CHAIN 256

/*
 * `pages`: magic[8] | u32 version (1) | u32 page size (4096) | u64 count |
 *          u64 page index[count] (ascending, offsets in the memory file / 4096) |
 *          page data[count][4096] | u64 XXH64 of everything before it.
 * `parent`: one line "<absolute parent dir> <XXH64 of the parent's vmstate, hex>".
 * `memory`: a symlink to the chain base's memory file, so the layer opens like any snapshot.
 */

/* Read a whole file of at most max bytes into a malloc'd buffer (one spare byte for a NUL). */
int snap_read_file(const char *path, uint8_t **data, size_t *len, size_t max);

/* Copy the pages set in `bitmap` out of guest RAM (call while paused); returns a malloc'd blob. */
int snap_layer_collect(const uint8_t *ram, uint64_t ram_size, const uint64_t *bitmap,
		       uint8_t **blob, uint64_t *blob_len, uint64_t *npages);
/* Write a layer directory atomically: vmstate, pages blob, parent link, memory symlink, meta. */
int snap_layer_write(const char *dir, const char *parent, const uint8_t *vmstate,
		     uint64_t vmstate_len, const uint8_t *blob, uint64_t blob_len,
		     const char *meta_json);

/* Apply every layer of the chain ending at `dir` (oldest first) onto RAM already holding the
 * base. A plain snapshot (no `pages`) is a no-op. Errors name the layer and the problem. */
int snap_layers_apply(struct guest_mem *mem, const char *dir, char *err, size_t errlen);

/* Merge the chain ending at `tip` into a full snapshot at `out`. */
int snap_compact(const char *tip, const char *out, char *err, size_t errlen);

#endif
