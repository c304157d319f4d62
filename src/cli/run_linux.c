/* `forkvm run` options for Linux guests: kernel/initrd/cmdline, the cached image and rootfs,
 * vsock. */
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/run_opts.h"
#include "util/log.h"
#include "image/rootfs.h"
#include "x86/cpuid_host.h"

int run_linux_opt(const struct cli_command *self, int opt, const char *arg, struct run_opts *o)
{
	unsigned long long v;

	switch (opt) {
	case RUN_OPT_KERNEL: o->kernel = arg; return 0;
	case RUN_OPT_INITRD: o->initrd = arg; return 0;
	case RUN_OPT_CMDLINE: o->cmdline = arg; return 0;
	case RUN_OPT_LINUX: o->linux_image = true; return 0;
	case RUN_OPT_PROTOCOL:
		if (strcmp(arg, "auto") == 0)
			o->protocol = BOOT_PROTO_AUTO;
		else if (strcmp(arg, "pvh") == 0)
			o->protocol = BOOT_PROTO_PVH;
		else if (strcmp(arg, "linux64") == 0)
			o->protocol = BOOT_PROTO_LINUX64;
		else
			return cli_usage_error(self, "--protocol '%s': need auto, pvh or linux64", arg);
		return 0;
	case RUN_OPT_VSOCK:
		if (!*arg || strlen(arg) >= 108)
			return cli_usage_error(self, "--vsock: need a socket path of 1-107 bytes");
		o->vm.vsock_path = arg;
		return 0;
	case RUN_OPT_VSOCK_CID:
		/* 0-2 are reserved (hypervisor, local, host); -1U is VMADDR_CID_ANY. */
		if (cli_parse_u64(arg, &v) || v < 3 || v >= 0xffffffffULL)
			return cli_usage_error(self, "--vsock-cid '%s': need 3 to 4294967294", arg);
		o->vm.vsock_cid = (uint32_t)v;
		return 0;
	case RUN_OPT_NO_VSOCK: o->no_vsock = true; return 0;
	case RUN_OPT_ROOTFS:
		if (!*arg)
			return cli_usage_error(self, "--rootfs: need an image path");
		o->rootfs = arg;
		return 0;
	case RUN_OPT_NO_ROOTFS: o->no_rootfs = true; return 0;
	default: return cli_usage_error(self, "unknown option");
	}
}

/* An initramfs built before root disks existed has no virtio_blk and an /init that ignores
 * forkvm.root=: the guest would run from the initramfs. Its manifest says which it is. */
static void warn_old_initramfs(const char *initrd)
{
	char path[700];
	const char *slash = strrchr(initrd, '/');
	json_t *m, *mods;
	bool found = false;
	size_t i;
	json_t *v;

	snprintf(path, sizeof(path), "%.*s/manifest.json", slash ? (int)(slash - initrd) : 1,
		 slash ? initrd : ".");
	m = json_load_file(path, 0, NULL);
	mods = json_object_get(m, "modules");
	json_array_foreach(mods, i, v)
		found = found || !strcmp(json_string_value(v) ?: "", "virtio_blk");
	if (json_is_array(mods) && !found)
		log_warn("%s predates root disks (no virtio_blk): run `forkvm image build` again, "
			 "or the guest stays in the initramfs", initrd);
	json_decref(m);
}

/* The one place where a root filesystem image is handed to the VM: it becomes the first
 * virtio-blk disk (/dev/vda; writes go to the VMM's private overlay, docs/DISK.md) and
 * forkvm.root=/dev/vda tells the initramfs to switch_root into it (docs/IMAGE.md). With
 * --linux and no --rootfs, the image of `forkvm image build --rootfs` is used if there is one. */
static int rootfs_attach(const struct cli_command *self, struct run_opts *o)
{
	if (!o->rootfs && o->linux_image && !o->no_rootfs && !o->restore &&
	    rootfs_default_image(o->image_rootfs, sizeof(o->image_rootfs)) == 0 &&
	    access(o->image_rootfs, F_OK) == 0) {
		o->rootfs = o->image_rootfs;
		log_info("root filesystem %s (--no-rootfs boots the initramfs alone)", o->rootfs);
	}
	if (!o->rootfs)
		return 0;
	if (o->restore)
		return cli_usage_error(self, "--rootfs and --restore exclude each other (the "
				       "snapshot has its disks)");
	if (access(o->rootfs, R_OK) < 0)
		return cli_usage_error(self, "--rootfs %s: %s", o->rootfs, strerror(errno));
	if (o->vm.ndisks >= VM_MAX_DISKS)
		return cli_usage_error(self, "--rootfs: already %d disks", VM_MAX_DISKS);
	if (rootfs_cmdline(o->cmdline ? o->cmdline : LINUX_DEFAULT_CMDLINE, o->rootfs_cmdline,
			   sizeof(o->rootfs_cmdline)))
		return cli_usage_error(self, "--rootfs: the command line gets too long");
	o->cmdline = o->rootfs_cmdline;
	if (o->initrd == o->image_initrd)
		warn_old_initramfs(o->image_initrd);
	/* First, so that the guest names it vda whatever --disk options follow. */
	memmove(&o->vm.disks[1], &o->vm.disks[0], (size_t)o->vm.ndisks * sizeof(o->vm.disks[0]));
	o->vm.disks[0] = (struct vm_disk_config){ .base = o->rootfs, .read_only = false, .slot = -1 };
	o->vm.ndisks++;
	return 0;
}

int run_linux_finish(const struct cli_command *self, struct run_opts *o)
{
	const char *cache = getenv("FORKVM_CACHE"), *home = getenv("HOME");
	char dir[512];
	int ret;

	if (o->rootfs && o->no_rootfs)
		return cli_usage_error(self, "--rootfs and --no-rootfs exclude each other");
	if (o->rootfs && !o->kernel)
		o->linux_image = true;
	if (o->linux_image) {
		if (cache && *cache)
			snprintf(dir, sizeof(dir), "%s/image", cache);
		else
			snprintf(dir, sizeof(dir), "%s/.cache/forkvm/image", home ? home : "/root");
		snprintf(o->image_kernel, sizeof(o->image_kernel), "%s/vmlinux", dir);
		snprintf(o->image_initrd, sizeof(o->image_initrd), "%s/initramfs.cpio.gz", dir);
		if (!o->kernel) {
			o->kernel = o->image_kernel;
			if (!o->initrd)
				o->initrd = o->image_initrd;
		}
	}
	if (!o->kernel && (o->initrd || o->cmdline || o->protocol))
		return cli_usage_error(self, "--initrd, --cmdline and --protocol need --kernel or --linux");
	if (o->kernel && o->restore)
		return cli_usage_error(self, "--kernel/--linux and --restore exclude each other");
	ret = rootfs_attach(self, o);
	if (ret)
		return ret;
	if (o->no_vsock && o->vm.vsock_path)
		return cli_usage_error(self, "--vsock and --no-vsock exclude each other");
	if (o->kernel && !o->no_vsock && !o->vm.vsock_path) {
		snprintf(o->default_vsock, sizeof(o->default_vsock), "%s.vsock", o->socket);
		if (strlen(o->default_vsock) >= 108)
			return cli_usage_error(self, "vsock path %s is too long", o->default_vsock);
		o->vm.vsock_path = o->default_vsock;
	}
	if (o->no_vsock)
		o->vm.vsock_path = NULL;
	return 0;
}

int run_linux_prepare(struct run_opts *o, struct linux_boot *lb)
{
	char why[512];
	int err;

	/* The user's --cpu-features wins; otherwise hide what this host cannot run. */
	if (!o->cpu_features_set) {
		err = cpuid_host_default_policy("/", &o->vm.cpuid_policy, why, sizeof(why));
		if (err)
			return log_errno(err, "default CPUID policy for this host");
		if (why[0])
			log_info("CPUID default for this host: %s", why);
	}
	return linux_boot_prepare(lb, o->kernel, o->initrd, o->cmdline,
				  (enum boot_protocol)o->protocol,
				  (o->vm.vsock_path ? 1 : 0) + o->vm.ndisks,
				  o->vm.mem_size);
}
