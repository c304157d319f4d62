/* `forkvm run` options for Linux guests: kernel/initrd/cmdline, the cached image, vsock. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/run_opts.h"
#include "core/log.h"
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
	default: return cli_usage_error(self, "unknown option");
	}
}

int run_linux_finish(const struct cli_command *self, struct run_opts *o)
{
	const char *cache = getenv("FORKVM_CACHE"), *home = getenv("HOME");
	char dir[512];

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
				  (enum boot_protocol)o->protocol, o->vm.vsock_path ? 1 : 0,
				  o->vm.mem_size);
}
