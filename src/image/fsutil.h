/* File helpers for image building: whole-file reads, atomic writes, directories, commands. */
#ifndef FORKVM_IMAGE_FSUTIL_H
#define FORKVM_IMAGE_FSUTIL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* The util/fileio.h calls, each logging its error (the image builder reports by log):
 * a whole regular file (NUL-terminated for text use), a crash-safe write, mkdir -p. */
int file_read_all(const char *path, uint8_t **buf, size_t *len);
int image_write_file(const char *path, const void *buf, size_t len, mode_t mode);
int file_copy_atomic(const char *src, const char *dst, mode_t mode);
int image_mkdir(const char *path, mode_t mode);
/* Read fd until EOF (or a read error, which ends the data) into a malloc'd NUL-terminated
 * string: a child's stdout. Returns 0 or -ENOMEM. */
int fd_read_string(int fd, char **out);
/* Run argv (PATH lookup) in cwd (NULL: ours), stdout captured into *out when out != NULL;
 * stderr passes through. Returns 0, -errno, or -ECHILD when the command exits non-zero. */
int run_cmd(char *const argv[], const char *cwd, char **out);
/* Remove a directory tree (no symlink following). */
int remove_tree(const char *path);

#endif
