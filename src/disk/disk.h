/* Copy-on-write disks: a read-only base image plus a chain of overlay layers (docs/DISK.md). */
#ifndef FORKVM_DISK_H
#define FORKVM_DISK_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "util/errmsg.h"
#include "util/sha256.h"

#define DISK_SECTOR 512
#define DISK_CLUSTER_SIZE 4096	/* one bit of an overlay's bitmap */
#define DISK_MAX_LAYERS 64	/* sealed layers + the writable top */
#define DISK_ID_LEN 16
#define DISK_MAX_IOV 64		/* iovec entries of one read or write */
#define DISK_ID_SUFFIX ".forkvm-id" /* the base's cached identity: BASE.forkvm-id */

/* What a base is: its content hash and size. Overlays record it; a mismatch is refused. */
struct disk_base_id {
	uint8_t sha256[SHA256_LEN];
	uint64_t size;
};

/* One overlay file of the chain (layers[0] sits on the base). */
struct disk_layer {
	int fd;
	char path[PATH_MAX];
	uint8_t id[DISK_ID_LEN], parent[DISK_ID_LEN];
	uint8_t *bitmap;	/* one bit per cluster, bitmap_len bytes */
	uint8_t *dirty;		/* top only: one flag per 4 KiB chunk of the bitmap to write */
	uint64_t nalloc;	/* clusters present in this layer */
	uint32_t depth;		/* place in the chain: 0 sits on the base */
	bool sealed;
	bool owned;		/* created by this disk: disk_close(d, true) removes its name */
	bool alloc_unsynced;	/* top: clusters allocated since the last flush */
};

struct disk {
	int base_fd;
	char base_path[PATH_MAX];
	struct disk_base_id base;
	uint64_t size;		/* what the guest sees: the base size rounded up to 512 bytes */
	uint64_t nclusters, bitmap_len, data_off;
	int nlayers;		/* sealed layers, then the top if there is one */
	bool has_top;		/* layers[nlayers - 1] is the private writable top */
	struct disk_layer *layers[DISK_MAX_LAYERS];
	uint8_t *bounce;	/* one cluster, for copy-up */
	unsigned logged;	/* error kinds already logged once (DISK_LOGGED_*) */
};

struct disk_open_opts {
	const char *base;		/* raw image, opened O_RDONLY, never written */
	const char *const *layers;	/* sealed overlays, oldest first */
	int nlayers;
	const uint8_t (*expect_ids)[DISK_ID_LEN]; /* optional: the id each layer must carry */
	const struct disk_base_id *expect_base;	  /* optional: the base the caller recorded */
	const char *create_top;	/* create a new private writable top here; NULL: read-only */
	const char *reopen_top;	/* or reopen an existing unsealed top (tools and tests) */
	bool keep_id_cache;	/* never (re)write BASE.forkvm-id: checking a snapshot that may
				 * not be ours must not create files next to the path it names */
};

/*
 * Open a disk: identify the base (cached in BASE.forkvm-id), check every layer's header,
 * bitmap and place in the chain, create or reopen the top. 0, or -errno with one message
 * naming the step and the file in err (logged instead when err is NULL).
 */
int disk_open(const struct disk_open_opts *o, struct disk **out, struct fvm_err *err);
/* Close every file; remove_owned: also remove the names of the layers this disk created. */
void disk_close(struct disk *d, bool remove_owned);

/*
 * len bytes at byte offset off, scattered over iov (which must hold at least len bytes).
 * Reads go top-down to the first layer holding the cluster, else the base (zeros past its
 * end). Writes go to the top; a cluster the write only partly covers is first copied up.
 * -EINVAL out of range, -EROFS without a writable top, -ENOSPC, -EIO...; logged.
 */
int disk_read(struct disk *d, uint64_t off, const struct iovec *iov, int iovcnt, uint64_t len);
int disk_write(struct disk *d, uint64_t off, const struct iovec *iov, int iovcnt, uint64_t len);
/* Make every completed write durable: data, then the top's bitmap. */
int disk_flush(struct disk *d);

/* The top holds no cluster: sealing it would only lengthen the chain. */
bool disk_top_empty(const struct disk *d);
/* Number of sealed layers (the chain a snapshot records). */
int disk_nsealed(const struct disk *d);
/*
 * Flush and seal the top (it becomes part of the chain, never written again) and continue on
 * a new empty top created at new_top (its parent is the sealed layer). On failure nothing
 * changed (except possibly the old top's sealed flag on disk) and the old top stays writable.
 */
int disk_seal_top_and_push_new(struct disk *d, const char *new_top);
/*
 * Give sealed layer k a name in directory dirfd (dirname for messages): a hard link to the
 * open file when the filesystem allows, else a sparse copy (SEEK_DATA/SEEK_HOLE) + fsync.
 */
int disk_layer_export(struct disk *d, int k, int dirfd, const char *dirname, const char *name);

/*
 * The base's identity: from BASE.forkvm-id when its size, mtime, ctime and inode still
 * match the base, else sha256 of the content, then the cache is rewritten (temp file, fsync,
 * rename; a read-only directory only costs the hash next time; not with write_cache false).
 * fd is the open base.
 */
int disk_base_identify(const char *path, int fd, bool write_cache, struct disk_base_id *out,
		       struct fvm_err *err);

#endif
