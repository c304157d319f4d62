/* Booting a Linux kernel: checks before the VM exists, then loading and vCPU 0 entry state. */
#ifndef FORKVM_BOOT_LINUX_H
#define FORKVM_BOOT_LINUX_H

#include <stddef.h>

#include "loader/kernel.h"

struct vm;

/* quiet: the console shows errors and worse (the rest stays in dmesg). Every console byte is a
 * port write that exits to the VMM: a default 6.12 boot writes ~17 KB, which took 5 of the 12 s
 * to the agent in the nested rig (docs/LINUX.md, "Command line"). */
#define LINUX_DEFAULT_CMDLINE "console=ttyS0 reboot=t panic=-1 noxsave quiet"
#define LINUX_CMDLINE_MAX 4096

struct linux_boot {
	struct kernel_info info;
	struct kernel_load_opts opts;
	char cmdline[LINUX_CMDLINE_MAX]; /* what the guest gets: base + virtio_mmio.device= */
	char initrd[512];
};

/*
 * Probe the kernel and check it, the initrd and the command line against the RAM size, so a
 * wrong or truncated image fails before any VM is created. cmdline NULL = the default;
 * nvirtio devices (slots 0..n-1) are appended as virtio_mmio.device=4K@ADDR:IRQ.
 */
int linux_boot_prepare(struct linux_boot *lb, const char *kernel, const char *initrd,
		       const char *cmdline, enum boot_protocol proto, int nvirtio,
		       uint64_t ram_size);
/* Append one " virtio_mmio.device=..." per slot; exposed for tests. */
int linux_cmdline_compose(char *out, size_t len, const char *base, int nvirtio);

/* Load kernel, initrd, boot structures and ACPI tables; set vCPU registers, MSRs, CPUID. */
int vm_boot_linux(struct vm *vm, struct linux_boot *lb);

#endif
