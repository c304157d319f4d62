/* The guest initramfs: busybox, the forkvm agent, vsock modules and an /init script. */
#ifndef FORKVM_IMAGE_INITRAMFS_H
#define FORKVM_IMAGE_INITRAMFS_H

#include <stddef.h>
#include <stdint.h>

#include "image/moddep.h"

struct initramfs_spec {
	const char *busybox;	/* host path of a static busybox */
	const char *agent;	/* host path of the static forkvm-agent */
	const char *moddir;	/* host lib/modules/<version> */
	const struct moddep_module *const *modules; /* load order */
	int nmodules;
};

/* Error unless path is an x86-64 ELF executable without an interpreter (the initramfs
 * has no libc). */
int elf_check_static(const char *path, const char *role);
/* Assemble the newc archive and gzip it. */
int initramfs_build(const struct initramfs_spec *spec, uint8_t **gz, size_t *gz_len);

#endif
