/* Guest image tooling: kernel + initramfs built from Debian packages, payload extraction. */
#ifndef FORKVM_IMAGE_IMAGE_H
#define FORKVM_IMAGE_IMAGE_H

#include <stddef.h>
#include <stdint.h>

#define IMAGE_AGENT_VSOCK_PORT 52
/* Debian 12's 6.12 cloud kernel: CONFIG_VMGENID=y, so clones reseed their CRNG through the
 * VM generation ID device. "linux-image-cloud-amd64" is the 6.1 kernel (no VMGENID). */
#define IMAGE_KERNEL_PACKAGE "linux-image-6.12-cloud-amd64"
#define IMAGE_KERNEL_PACKAGE_61 "linux-image-cloud-amd64"
#define IMAGE_BUSYBOX_PKG "busybox-static"

struct image_build_opts {
	const char *cache_dir;	/* NULL: $FORKVM_CACHE, else ~/.cache/forkvm */
	const char *agent_path;	/* NULL: forkvm-agent beside the running forkvm binary */
	const char *out_dir;	/* NULL: <cache>/image */
	const char *kernel_package; /* NULL: IMAGE_KERNEL_PACKAGE; a metapackage or linux-image-<kver> */
	const char *const *extra_modules; /* loaded after the default virtio-mmio + vsock set */
	int nextra;
};

/* Whether name can be a --kernel-package: a Debian package name starting "linux-image-". */
int image_kernel_package_valid(const char *name);
/* Download (cached), unpack and assemble vmlinux, bzImage, initramfs.cpio.gz, manifest.json. */
int image_build(const struct image_build_opts *opts);
/* Decode a bzImage's compressed payload (the inner vmlinux ELF) into a malloc'd buffer. */
int image_bzimage_payload(const char *bzimage, uint8_t **out, size_t *len);
/* image_bzimage_payload + validate as vmlinux + atomic write to out_path. */
int image_extract_vmlinux(const char *bzimage, const char *out_path);
/* forkvm-agent beside the running forkvm binary. */
int image_default_agent(char *buf, size_t size);
/* $FORKVM_CACHE or $HOME/.cache/forkvm. */
int image_default_cache(char *buf, size_t size);
/* The /init shell script for the given module load order (names, no ".ko"). */
int image_init_script(const char *const *modules, int nmodules, char **out);

#endif
