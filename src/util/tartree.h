/*
 * Directory trees to and from in-memory ustar archives (util/ustar.h), for the guest agent's
 * put_tree/get_tree and `forkvm cp`. Extraction never leaves its target directory: member
 * names are cleaned (no absolute paths, no ".."), and every path component is opened relative
 * to the target with O_NOFOLLOW, so no symlink, whether from the archive or already on disk,
 * is ever followed. Both directions are bounded in bytes and entries.
 */
#ifndef FORKVM_TARTREE_H
#define FORKVM_TARTREE_H

#include <stddef.h>
#include <stdint.h>

#include "util/errmsg.h"

/* Directory levels below the root that archive/extract will walk. */
#define TARTREE_MAX_DEPTH 64

struct tartree_limits {
	size_t max_bytes;	/* the archive, headers and padding included */
	size_t max_entries;	/* members */
};

struct tartree_stats {
	size_t entries;		/* members written or extracted */
	uint64_t bytes;		/* file contents, in bytes */
	size_t skipped;		/* (archive) sockets, FIFOs and devices left out */
};

enum tartree_kind { TARTREE_DIR, TARTREE_FILE };

/*
 * Extract the archive into the directory dirfd: directories are created (or kept), files and
 * symlinks replace whatever non-directory was at their name. Permission bits are applied
 * without set-user-ID/set-group-ID, and directories stay owner-writable; files keep their
 * mtime. The whole archive is checked first, so a malformed (-EBADMSG), unsafe or
 * unsupported (-EINVAL) archive, or one past a limit (-E2BIG), changes nothing. Errors met
 * while writing (-ENOTDIR when a symlink or a file stands where a directory is needed,
 * -EISDIR, I/O) leave the members before the failing one extracted. err says which.
 */
int tartree_extract(int dirfd, const uint8_t *tar, size_t len, const struct tartree_limits *lim,
		    struct tartree_stats *st, struct fvm_err *err);

/*
 * Archive path: a directory's contents (member names relative to it, sorted, symlinks kept
 * as symlinks, other special files skipped and counted) or one regular file (named by its
 * basename); *kind says which. *out is malloc'd. Returns 0, or -errno with err set (-E2BIG
 * past a limit, -ELOOP past TARTREE_MAX_DEPTH, errors of open/read).
 */
int tartree_archive(const char *path, const struct tartree_limits *lim, uint8_t **out,
		    size_t *out_len, enum tartree_kind *kind, struct tartree_stats *st, struct fvm_err *err);

/* The last component of path, trailing slashes ignored, into out (cap bytes, truncated). */
void tartree_base_name(const char *path, char *out, size_t cap);

#endif
