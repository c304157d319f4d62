/* Root filesystem images for Linux guests: an ext4 image built from Debian packages, a directory
 * or a tar stream, with the forkvm agent inside; the pieces the builder is made of. */
#ifndef FORKVM_IMAGE_ROOTFS_H
#define FORKVM_IMAGE_ROOTFS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ROOTFS_FILE "rootfs.ext4"
#define ROOTFS_LABEL "forkvm-root"
#define ROOTFS_AGENT_PATH "usr/sbin/forkvm-agent" /* inside the image */
#define ROOTFS_FREE_MIB_DEFAULT 256
#define ROOTFS_MAX_PACKAGES 2048

/* Directory mtimes, ctimes/atimes and the filesystem's own times without SOURCE_DATE_EPOCH:
 * 2024-01-01 00:00:00 UTC (not 1970, which zip-based tools such as pip reject). */
#define ROOTFS_DEFAULT_EPOCH 1704067200LL

enum rootfs_source { ROOTFS_DEBIAN, ROOTFS_DIR, ROOTFS_TAR };

struct rootfs_build_opts {
	enum rootfs_source source;
	const char *src;	/* ROOTFS_DIR: the directory; ROOTFS_TAR: the file, "-" = stdin */
	const char *cache_dir;	/* NULL: $FORKVM_CACHE, else ~/.cache/forkvm */
	const char *out_dir;	/* NULL: <cache>/rootfs */
	const char *agent_path;	/* NULL: forkvm-agent beside the running forkvm binary */
	const char *const *packages; /* ROOTFS_DEBIAN: extra packages (--packages) */
	int npackages;
	uint64_t size_mib;	/* 0: computed from the tree */
	uint64_t free_mib;	/* free space of a computed size */
};

/* Build OUT/rootfs.ext4 + OUT/manifest.json (rootfs.c). A Debian build whose inputs (package
 * versions, agent, options) match the manifest reuses the image. */
int rootfs_build(const struct rootfs_build_opts *o);

/* ---- packages (rootfs_deps.c) ---- */

struct rootfs_pkg {
	char name[128], version[128], arch[16];
};

struct rootfs_pkglist {
	struct rootfs_pkg *pkgs;
	int count, cap;
};

/* Whether name is a Debian package name (policy 5.6.1: [a-z0-9][a-z0-9+.-]+). */
bool rootfs_pkg_name_valid(const char *name);
/* "a,b,c" (--packages) appended to names[*n] (at most max); empty items are skipped.
 * -EINVAL (logged) for a bad name, -E2BIG for too many. The names point into list (modified). */
int rootfs_parse_package_list(char *list, const char **names, int *n, int max);
/* "Inst NAME (VERSION ARCHIVES [ARCH])" lines of "apt-get -s install" into out (sorted by
 * name); other lines are ignored. -EINVAL for a malformed Inst line, -ENOENT for none. */
int rootfs_parse_sim(const char *text, struct rootfs_pkglist *out);
/* The dependency closure of names (Depends and Pre-Depends, no Recommends), as apt's own
 * solver picks it against an empty system (virtual packages get one provider). */
int rootfs_resolve(const char *const *names, int n, struct rootfs_pkglist *out);
const struct rootfs_pkg *rootfs_pkglist_find(const struct rootfs_pkglist *l, const char *name);
void rootfs_pkglist_free(struct rootfs_pkglist *l);

/* ---- image size (rootfs_mkfs.c) ---- */

/* MiB for a tree of used_bytes in entries files: used * 1.3 + inode tables + journal + free. */
uint64_t rootfs_auto_size_mib(uint64_t used_bytes, uint64_t entries, uint64_t free_mib);
/* Inodes for an image: the usual one per 16 KiB, at least entries * 1.25 + 1024. */
uint64_t rootfs_inode_count(uint64_t size_mib, uint64_t entries);
/* Used inode numbers from dumpe2fs's "Inode count:" and per-group "Free inodes: a-b, c" lines:
 * *used (malloc'd, one byte per inode number 0..*count) is 1 for every inode in use. */
int rootfs_parse_used_inodes(const char *dumpe2fs, uint32_t *count, uint8_t **used);

enum rootfs_mkfs_failure {
	MKFS_FAIL_OTHER,
	MKFS_FAIL_IMAGE_FULL,	/* the image is too small for the tree (blocks or inodes) */
	MKFS_FAIL_HOST_FULL,	/* the filesystem holding the image is full (ENOSPC) */
};
/* Classify mke2fs's stderr. */
enum rootfs_mkfs_failure rootfs_mkfs_classify(const char *stderr_text);

struct rootfs_mkfs_spec {
	const char *stage;	/* the tree to copy in (mkfs.ext4 -d) */
	const char *image;	/* final path; written as image.tmp.PID, renamed when complete */
	const char *conf;	/* where to write the mke2fs.conf used */
	uint64_t size_mib, entries, used_bytes;
	char uuid[37];		/* filesystem UUID and directory hash seed */
	int64_t epoch;		/* every inode's ctime/atime/crtime, the fs timestamps */
	bool chown_root;	/* set every inode's owner to 0:0 (a build run without root) */
};
/* mkfs.ext4 -d, timestamps and owners fixed with debugfs, fsync, rename. */
int rootfs_mkfs(const struct rootfs_mkfs_spec *s);

/* ---- guest boot with root on a disk (rootfs_run.c, used by forkvm run) ---- */

#define ROOTFS_CMDLINE_ARG "forkvm.root=/dev/vda"
/* base (a kernel command line) plus " forkvm.root=/dev/vda" unless base already names a root
 * (forkvm.root= or root=). -ENAMETOOLONG when it does not fit size. */
int rootfs_cmdline(const char *base, char *out, size_t size);
/* CACHE/rootfs/rootfs.ext4 (CACHE = $FORKVM_CACHE or ~/.cache/forkvm). */
int rootfs_default_image(char *buf, size_t size);

#endif
