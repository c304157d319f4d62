/* "forkvm image build": Debian kernel + busybox + agent -> vmlinux, initramfs, manifest. */
#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util/log.h"
#include "image/fsutil.h"
#include "image/image.h"
#include "image/initramfs.h"
#include "image/moddep.h"
#include "image/pkg.h"
#include "image/sha256.h"
#include "loader/kernel.h"

/* virtio-mmio transport + virtio vsock; dependencies are added by the resolver. On 6.12
 * virtio_ring and virtio are built in (modules.builtin) and skipped. virtio_blk and ext4 let
 * /init mount a root disk (forkvm.root=); Debian builds ext4 (and crc32c, jbd2) in.
 * virtio_net (with failover, net_failover) drives the NIC of `forkvm run --net`. */
static const char *const default_modules[] = {
	"virtio_ring", "virtio", "virtio_mmio", "vsock",
	"vmw_vsock_virtio_transport_common", "vmw_vsock_virtio_transport",
	"virtio_blk", "ext4", "virtio_net",
};
#define NDEFAULT (int)(sizeof(default_modules) / sizeof(default_modules[0]))

struct build {
	char cache[PATH_MAX], out[PATH_MAX], agent[PATH_MAX];
	char kver[128], moddir[PATH_MAX + 160], bzimage[PATH_MAX + 160], busybox[PATH_MAX + 16];
	struct pkg meta, kernel, busybox_pkg;
	bool has_meta;	/* meta is a metapackage naming kernel; else meta == kernel */
	struct moddep deps;
	const struct moddep_module **order;
	int norder;
};

int image_default_agent(char *buf, size_t size)
{
	char exe[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);

	if (n < 0)
		return log_errno(-errno, "readlink /proc/self/exe");
	exe[n] = 0;
	snprintf(buf, size, "%s/forkvm-agent", dirname(exe));
	return 0;
}

static int setup_paths(struct build *b, const struct image_build_opts *opts)
{
	int ret = 0;

	if (opts->cache_dir)
		snprintf(b->cache, sizeof(b->cache), "%s", opts->cache_dir);
	else
		ret = image_default_cache(b->cache, sizeof(b->cache));
	if (!ret && opts->out_dir)
		snprintf(b->out, sizeof(b->out), "%s", opts->out_dir);
	else if (!ret)
		snprintf(b->out, sizeof(b->out), "%.4000s/image", b->cache);
	if (!ret && opts->agent_path)
		snprintf(b->agent, sizeof(b->agent), "%s", opts->agent_path);
	else if (!ret)
		ret = image_default_agent(b->agent, sizeof(b->agent));
	if (!ret && access(b->agent, F_OK) < 0) {
		log_err("agent %s: not found; build the guest agent first or pass --agent PATH",
			b->agent);
		return -ENOENT;
	}
	return ret ?: elf_check_static(b->agent, "agent");
}

int image_kernel_package_valid(const char *name)
{
	size_t n = strlen(name);

	/* Debian policy: lower-case letters, digits, '+', '-', '.'; we want a kernel's. */
	if (n <= 12 || n >= sizeof(((struct pkg *)0)->name) || strncmp(name, "linux-image-", 12))
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!islower((unsigned char)name[i]) && !isdigit((unsigned char)name[i]) &&
		    !strchr("+-.", name[i]))
			return 0;
	return 1;
}

/* A metapackage (linux-image-cloud-amd64, linux-image-6.12-cloud-amd64) depends first on
 * linux-image-<kver>, which holds boot/vmlinuz-<kver>; a kernel package may be named directly. */
static int fetch_packages(struct build *b, const struct image_build_opts *opts)
{
	const char *name = opts->kernel_package ? opts->kernel_package : IMAGE_KERNEL_PACKAGE;
	int ret;

	if (!image_kernel_package_valid(name)) {
		log_err("kernel package \"%s\": not a linux-image-* Debian package name", name);
		return -EINVAL;
	}
	ret = pkg_fetch(b->cache, name, &b->meta);
	if (ret)
		return ret;
	b->has_meta = !strncmp(b->meta.depends, "linux-image-", 12);
	if (b->has_meta)
		ret = pkg_fetch(b->cache, b->meta.depends, &b->kernel);
	else
		b->kernel = b->meta;
	if (ret)
		return ret;
	snprintf(b->kver, sizeof(b->kver), "%s", b->kernel.name + 12);
	snprintf(b->moddir, sizeof(b->moddir), "%s/lib/modules/%s", b->kernel.root, b->kver);
	snprintf(b->bzimage, sizeof(b->bzimage), "%s/boot/vmlinuz-%s", b->kernel.root, b->kver);
	if (access(b->bzimage, R_OK) < 0) {
		ret = -errno;
		log_err("%s %s: no boot/vmlinuz-%s in the package (%s); is it a kernel image package?",
			b->kernel.name, b->kernel.version, b->kver, strerror(-ret));
		return ret;
	}
	ret = pkg_fetch(b->cache, IMAGE_BUSYBOX_PKG, &b->busybox_pkg);
	snprintf(b->busybox, sizeof(b->busybox), "%s/bin/busybox", b->busybox_pkg.root);
	return ret;
}

static int resolve_modules(struct build *b, const struct image_build_opts *opts)
{
	const char *roots[NDEFAULT + 64];
	char path[PATH_MAX + 200];
	uint8_t *text = NULL;
	size_t len;
	int nroots = 0, ret;

	if (opts->nextra > 64)
		return -E2BIG;
	for (int i = 0; i < NDEFAULT; i++)
		roots[nroots++] = default_modules[i];
	for (int i = 0; i < opts->nextra; i++)
		roots[nroots++] = opts->extra_modules[i];
	snprintf(path, sizeof(path), "%s/modules.builtin", b->moddir);
	ret = file_read_all(path, &text, &len);
	if (!ret)
		ret = moddep_parse_builtin(&b->deps, (char *)text);
	free(text);
	text = NULL;
	snprintf(path, sizeof(path), "%s/modules.dep", b->moddir);
	if (!ret && access(path, R_OK) == 0) {
		ret = file_read_all(path, &text, &len);
		if (!ret)
			ret = moddep_parse(&b->deps, (char *)text);
		free(text);
	} else if (!ret) {
		ret = moddep_scan(&b->deps, b->moddir, roots, nroots);
	}
	if (!ret)
		ret = moddep_resolve(&b->deps, roots, nroots, &b->order, &b->norder);
	return ret;
}

static int add_file_sum(json_t *files, const char *name, const char *path)
{
	uint8_t *buf = NULL;
	char hex[65];
	size_t len;
	int ret;

	ret = file_read_all(path, &buf, &len);
	if (ret)
		return ret;
	ret = sha256_hex(buf, len, hex);
	free(buf);
	if (ret)
		return log_errno(ret, "sha256 of %s", path);
	json_object_set_new(files, name, json_pack("{s:s, s:I}", "sha256", hex, "size", (json_int_t)len));
	return 0;
}

static int write_manifest(struct build *b, const struct kernel_info *vmlinux)
{
	static const char *const outputs[] = { "vmlinux", "bzImage", "initramfs.cpio.gz" };
	json_t *root, *mods = json_array(), *files = json_object(), *pkgs = json_object();
	char path[PATH_MAX + 32], pvh[32], *text = NULL;
	int ret = 0;

	for (int i = 0; i < b->norder; i++)
		json_array_append_new(mods, json_string(b->order[i]->name));
	for (size_t i = 0; i < sizeof(outputs) / sizeof(outputs[0]) && !ret; i++) {
		snprintf(path, sizeof(path), "%s/%s", b->out, outputs[i]);
		ret = add_file_sum(files, outputs[i], path);
	}
	ret = ret ?: add_file_sum(files, "forkvm-agent", b->agent);
	if (!mods || !files || !pkgs)
		ret = ret ?: -ENOMEM;
	if (pkgs && b->has_meta)
		json_object_set_new(pkgs, b->meta.name, json_string(b->meta.version));
	if (pkgs) {
		json_object_set_new(pkgs, b->kernel.name, json_string(b->kernel.version));
		json_object_set_new(pkgs, b->busybox_pkg.name, json_string(b->busybox_pkg.version));
	}
	snprintf(pvh, sizeof(pvh), "0x%x", vmlinux->pvh_entry);
	/* json_pack's "o" takes the references, also when it fails. */
	root = json_pack("{s:i, s:s, s:s, s:o, s:o, s:s, s:s, s:i, s:o}",
			 "format", 1, "kernel_package", b->meta.name, "kernel_version", b->kver,
			 "packages", pkgs, "modules", mods, "pvh_entry", pvh, "agent", b->agent,
			 "agent_vsock_port", IMAGE_AGENT_VSOCK_PORT, "files", files);
	text = root ? json_dumps(root, JSON_INDENT(2)) : NULL;
	if (!ret && !text)
		ret = -ENOMEM;
	snprintf(path, sizeof(path), "%s/manifest.json", b->out);
	if (!ret)
		ret = image_write_file(path, text, strlen(text), 0644);
	free(text);
	json_decref(root);
	return ret;
}

static int assemble(struct build *b)
{
	struct initramfs_spec spec = { b->busybox, b->agent, b->moddir, b->order, b->norder };
	struct kernel_info *info = calloc(1, sizeof(*info));
	char path[PATH_MAX + 32];
	uint8_t *gz = NULL;
	size_t gz_len;
	int ret = info ? image_mkdir(b->out, 0755) : -ENOMEM;

	snprintf(path, sizeof(path), "%s/bzImage", b->out);
	ret = ret ?: file_copy_atomic(b->bzimage, path, 0644);
	snprintf(path, sizeof(path), "%s/vmlinux", b->out);
	ret = ret ?: image_extract_vmlinux(b->bzimage, path);
	ret = ret ?: kernel_probe(path, info);
	if (!ret && !info->has_pvh)
		log_warn("%s: no PVH entry note; boot it with the linux64 protocol", path);
	ret = ret ?: initramfs_build(&spec, &gz, &gz_len);
	snprintf(path, sizeof(path), "%s/initramfs.cpio.gz", b->out);
	ret = ret ?: image_write_file(path, gz, gz_len, 0644);
	ret = ret ?: write_manifest(b, info);
	free(gz);
	free(info);
	return ret;
}

int image_build(const struct image_build_opts *opts)
{
	struct build *b = calloc(1, sizeof(*b));
	int ret = b ? 0 : -ENOMEM;

	ret = ret ?: setup_paths(b, opts);
	ret = ret ?: fetch_packages(b, opts);
	ret = ret ?: resolve_modules(b, opts);
	ret = ret ?: assemble(b);
	if (!ret) {
		printf("kernel %s (%s %s, from %s), busybox %s\nmodules:", b->kver, b->kernel.name,
		       b->kernel.version, b->meta.name, b->busybox_pkg.version);
		for (int i = 0; i < b->norder; i++)
			printf(" %s", b->order[i]->name);
		printf("\nwrote %s/{vmlinux,bzImage,initramfs.cpio.gz,manifest.json}\n", b->out);
	}
	if (b) {
		free(b->order);
		moddep_free(&b->deps);
	}
	free(b);
	return ret;
}
