/* The staging tree of a rootfs: every path is resolved inside it (openat2 RESOLVE_IN_ROOT), so
 * absolute or ".." symlinks in packages or user trees never reach the host's files. */
#ifndef FORKVM_IMAGE_STAGE_H
#define FORKVM_IMAGE_STAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

struct stage {
	int root_fd;		/* O_DIRECTORY of path; -1 when closed */
	char path[4096];
	bool as_root;		/* euid 0: owners are copied */
	uint64_t skipped;	/* device nodes, FIFOs, sockets left out */
	/* stage_finish: */
	uint64_t bytes, entries;
	uint8_t fingerprint[32];
};

/* Create path (it must not exist yet) and open it. */
int stage_create(struct stage *st, const char *path);
/* Close, and remove the tree unless keep. */
void stage_destroy(struct stage *st, bool keep);

/* Package path -> staging path under usr-merge: "bin/ls" -> "usr/bin/ls", also sbin, lib,
 * lib32, lib64, libx32; other paths unchanged. -ENAMETOOLONG when out is too small. */
int stage_usrmerge_path(const char *rel, char *out, size_t size);

/* Add the tree at src (a directory) to the stage: directories merged, files hard-linked where
 * the filesystem allows (the stage never writes into a file, it only replaces them) or copied,
 * symlinks recreated, device nodes/FIFOs/sockets skipped with a message. usrmerge maps the
 * top-level bin, sbin, lib* into usr/ (Debian 12 packages still ship /bin). */
int stage_add_tree(struct stage *st, const char *src, bool usrmerge);

/* A tar member's path made relative and clean ("./a//b" -> "a/b"): 0, 1 for the root itself
 * ("." or "./"), -EINVAL for an absolute path or a ".." component (it could leave the root). */
int stage_tar_path(const char *in, char *out, size_t size);
/* Extract a tar stream (file, or "-" for stdin; gzip/xz/zstd/bzip2 filters recognised) into the
 * stage: absolute or ".." paths and extraction through symlinks are refused, device nodes,
 * FIFOs and sockets skipped with a message; a corrupt or empty archive is an error. */
int stage_add_tar(struct stage *st, const char *tar);

/* Open directory rel (resolved inside the stage), creating missing components (0755). */
int stage_open_dir(const struct stage *st, const char *rel, bool create, int *fd);
/* lstat of rel inside the stage (the final component is not followed); -ENOENT if absent. */
int stage_lstat(const struct stage *st, const char *rel, struct stat *sb);
/* stat of rel inside the stage, following symlinks within it. */
int stage_stat(const struct stage *st, const char *rel, struct stat *sb);
/* Open rel for reading, following symlinks within the stage. */
int stage_open_file(const struct stage *st, const char *rel, int *fd);
/* Write a new file (parent directories created), replacing rel by rename; mtime = epoch. */
int stage_write(const struct stage *st, const char *rel, const void *data, size_t len,
		mode_t mode, int64_t epoch);
/* Copy a host file into the stage as rel (same replacement rule). */
int stage_put_file(const struct stage *st, const char *rel, const char *host_path, mode_t mode,
		   int64_t epoch);
/* Create (or replace) symlink rel -> target. */
int stage_symlink(const struct stage *st, const char *rel, const char *target);
/* mkdir -p rel, then chmod it to mode. */
int stage_mkdir(const struct stage *st, const char *rel, mode_t mode);

/* Names in the directory dfd (no "." and ".."), sorted bytewise; free with stage_free_names. */
int stage_list_dir(int dfd, char ***names, size_t *count);
void stage_free_names(char **names, size_t count);

/* Walk the finished tree in sorted order: count entries and bytes, set every directory's mtime
 * to epoch, and hash each entry's path, type, mode, owner, size, mtime and link target. */
int stage_finish(struct stage *st, int64_t epoch);

#endif
