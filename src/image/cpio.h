/* Reproducible newc cpio archives (the initramfs format) built in memory. */
#ifndef FORKVM_IMAGE_CPIO_H
#define FORKVM_IMAGE_CPIO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define CPIO_MTIME 0 /* fixed so the same inputs give the same bytes */

struct cpio_entry {
	char *path;	/* no leading "/" */
	uint32_t mode;	/* S_IFxxx | permissions */
	uint32_t rdev_major, rdev_minor;
	uint8_t *data;	/* file contents or symlink target */
	size_t size;
};

struct cpio_archive {
	struct cpio_entry *entries;
	size_t count, cap;
};

/* Each add copies its inputs; a duplicate path is -EEXIST. */
int cpio_add_dir(struct cpio_archive *ar, const char *path, mode_t perm);
int cpio_add_file(struct cpio_archive *ar, const char *path, mode_t perm, const void *data,
		  size_t size);
int cpio_add_symlink(struct cpio_archive *ar, const char *path, const char *target);
int cpio_add_chardev(struct cpio_archive *ar, const char *path, mode_t perm, unsigned major,
		     unsigned minor);
/* Entries sorted by path, inodes numbered in that order, uid/gid 0, mtime CPIO_MTIME. */
int cpio_write(struct cpio_archive *ar, uint8_t **out, size_t *out_len);
void cpio_free(struct cpio_archive *ar);

/* gzip (deflate level 9, no name, mtime 0) of buf into a malloc'd buffer. */
int gzip_compress(const uint8_t *buf, size_t len, uint8_t **out, size_t *out_len);

#endif
