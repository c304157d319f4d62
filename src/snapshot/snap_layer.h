/* Diff layers: a snapshot whose memory is the pages dirtied since its parent. */
#ifndef FORKVM_SNAP_LAYER_H
#define FORKVM_SNAP_LAYER_H

#include <stdint.h>

#include "snapshot/snap_format.h"
#include "util/errmsg.h"
#include "util/fileio.h"

struct guest_mem;
struct vm;

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

struct stat;



/* Copy the pages set in `bitmap` out of guest RAM (call while paused); returns a malloc'd blob. */
int snap_layer_collect(const uint8_t *ram, uint64_t ram_size, const uint64_t *bitmap,
		       uint8_t **blob, uint64_t *blob_len, uint64_t *npages);
/* Write a layer directory atomically: vmstate, pages blob, parent link, memory symlink, meta,
 * and the disk layers vm's last capture recorded (vm NULL: none). */
int snap_layer_write(const char *dir, const char *parent, const uint8_t *vmstate,
		     uint64_t vmstate_len, const uint8_t *blob, uint64_t blob_len,
		     const char *meta_json, struct vm *vm, struct fvm_err *err);

/* Apply every layer of the chain ending at `dir` (oldest first) onto RAM already holding the
 * base. A plain snapshot (no `pages`) is a no-op. Errors name the layer and the problem. */
int snap_layers_apply(struct guest_mem *mem, const char *dir, struct fvm_err *err);

/*
 * What can be checked of the chain ending at `dir` without reading its pages: every parent
 * link resolves to an unchanged parent, every pages file is a regular file whose header and
 * size agree, with no more pages than mem_size holds. snap_open runs it, so `snapshot verify`
 * refuses these layers as restore does; page checksums and order are checked when applied.
 */
int snap_layers_check(const char *dir, uint64_t mem_size, struct fvm_err *err);

/* Merge the chain ending at `tip` into a full snapshot at `out`. */
int snap_compact(const char *tip, const char *out, struct fvm_err *err);

#endif
