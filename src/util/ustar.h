/*
 * ustar archives in memory: a bounded reader and writer, and the member path rules that keep
 * an extraction inside its target directory. Pure (no I/O); util/tartree.h puts archives on
 * and takes them off a filesystem. Used by the guest agent's put_tree/get_tree and by
 * `forkvm cp`, so both sides read what the other writes, and neither trusts the other.
 *
 * Read: POSIX ustar and GNU headers; pax extended headers ('x': path, linkpath, size) and GNU
 * long names ('L', 'K'); global pax headers ('g') are skipped. Members are regular files,
 * directories and symbolic links; anything else (hard links, devices, FIFOs) is refused.
 * Write: ustar, with a pax header for a name or link target that does not fit.
 */
#ifndef FORKVM_USTAR_H
#define FORKVM_USTAR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/errmsg.h"

#define USTAR_BLOCK 512
/* Longest member name or link target accepted (pax and GNU long names included). */
#define USTAR_PATH_MAX 4096

enum ustar_type { USTAR_FILE, USTAR_DIR, USTAR_SYMLINK };

struct ustar_entry {
	enum ustar_type type;
	/* Clean (ustar_clean_path): relative, no ".", ".." or empty components, no trailing
	 * '/'. Empty only for a directory naming the archive's root ("./"). */
	char path[USTAR_PATH_MAX];
	char link[USTAR_PATH_MAX];	/* symlink target, verbatim (never followed) */
	unsigned int mode;		/* permission bits, 07777 */
	int64_t mtime;
	const uint8_t *data;		/* file contents, inside the reader's buffer */
	size_t size;
};

struct ustar_reader {
	const uint8_t *buf;
	size_t len, pos;
	bool done;
};

void ustar_reader_init(struct ustar_reader *r, const uint8_t *buf, size_t len);

/*
 * The next member: 1 with *e filled, 0 at the end of the archive (a zero block, or the end of
 * the buffer on a block boundary), or an error with err set: -EBADMSG for a malformed or
 * truncated archive (bad checksum, bad number, data past the end), -EINVAL for a member that
 * would leave the target (absolute path, ".." component) or whose type is not supported.
 */
int ustar_next(struct ustar_reader *r, struct ustar_entry *e, struct fvm_err *err);

/*
 * Make path a clean relative member name in place (see struct ustar_entry). Returns 0, or
 * -EINVAL with err set for an absolute path or a ".." component. "." and "./" become "".
 */
int ustar_clean_path(char *path, struct fvm_err *err);

struct ustar_writer {
	uint8_t *buf;
	size_t len, cap, max;	/* max: the largest archive allowed, trailer included */
};

void ustar_writer_init(struct ustar_writer *w, size_t max);
void ustar_writer_free(struct ustar_writer *w);

/*
 * Append one member (path relative, without a trailing '/'; link only for symlinks; data
 * only for files). Returns 0, -E2BIG when the archive (with its trailer) would pass max,
 * -ENAMETOOLONG past USTAR_PATH_MAX, -EINVAL for an empty path, -ENOMEM.
 */
int ustar_add(struct ustar_writer *w, enum ustar_type type, const char *path, const char *link,
	      unsigned int mode, int64_t mtime, const uint8_t *data, size_t size);

/* Append the two zero blocks that end an archive; -E2BIG past max, -ENOMEM. */
int ustar_finish(struct ustar_writer *w);

#endif
