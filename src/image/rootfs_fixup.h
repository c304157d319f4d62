/* The fix-ups that make a staged tree a bootable root for the forkvm agent. */
#ifndef FORKVM_IMAGE_ROOTFS_FIXUP_H
#define FORKVM_IMAGE_ROOTFS_FIXUP_H

#include <stdbool.h>
#include <stdint.h>

#include "image/stage.h"

struct rootfs_fixup_opts {
	bool debian;		/* unpacked packages: usr-merge links, sh/awk, CA bundle, ld.so.cache */
	const char *agent;	/* host path of the static agent, installed as ROOTFS_AGENT_PATH */
	int64_t epoch;		/* mtime of every file written here */
	const char *const *check; /* programs (paths inside) whose ELF interpreter must resolve */
	int ncheck;
};

/* Missing pieces only: a user tree's own /etc/passwd, hostname, ... are kept. */
int rootfs_fixup(struct stage *st, const struct rootfs_fixup_opts *o);
/* rel (followed within the stage) is a 64-bit ELF whose PT_INTERP, if any, exists in the stage. */
int rootfs_check_elf(const struct stage *st, const char *rel);

#endif
