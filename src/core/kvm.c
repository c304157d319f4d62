/* Opening /dev/kvm and validating the host before any VM is created. */
#include "core/kvm.h"

#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "util/log.h"

const struct kvm_cap_req kvm_required_caps[] = {
	{ KVM_CAP_IRQCHIP, "KVM_CAP_IRQCHIP", "in-kernel PIC/IOAPIC/LAPIC" },
	{ KVM_CAP_PIT2, "KVM_CAP_PIT2", "in-kernel PIT" },
	{ KVM_CAP_SET_TSS_ADDR, "KVM_CAP_SET_TSS_ADDR", "TSS address for the VM" },
	{ KVM_CAP_USER_MEMORY, "KVM_CAP_USER_MEMORY", "guest RAM from host memory" },
	{ KVM_CAP_EXT_CPUID, "KVM_CAP_EXT_CPUID", "KVM_GET_SUPPORTED_CPUID" },
	{ KVM_CAP_IMMEDIATE_EXIT, "KVM_CAP_IMMEDIATE_EXIT", "exact pause of vCPUs" },
	{ KVM_CAP_XSAVE, "KVM_CAP_XSAVE", "saving FPU/SSE/AVX state" },
	{ KVM_CAP_XCRS, "KVM_CAP_XCRS", "saving XCR0" },
	{ KVM_CAP_VCPU_EVENTS, "KVM_CAP_VCPU_EVENTS", "saving pending events" },
	{ KVM_CAP_DEBUGREGS, "KVM_CAP_DEBUGREGS", "saving debug registers" },
	{ KVM_CAP_MP_STATE, "KVM_CAP_MP_STATE", "saving vCPU run state" },
	{ KVM_CAP_ADJUST_CLOCK, "KVM_CAP_ADJUST_CLOCK", "saving kvmclock" },
	{ KVM_CAP_IOEVENTFD, "KVM_CAP_IOEVENTFD", "virtio queue notify" },
	{ KVM_CAP_IRQFD, "KVM_CAP_IRQFD", "virtio interrupts" },
};
const size_t kvm_required_caps_count = sizeof(kvm_required_caps) / sizeof(kvm_required_caps[0]);

/* Asked for where they are used (mem/dirty_log.c, core/kvm_msrs.c, core/vcpu_state.c). */
const struct kvm_cap_req kvm_optional_caps[] = {
	{ KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, "KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2",
	  "dirty log: diff snapshots and diff branches" },
	{ KVM_CAP_XSAVE2, "KVM_CAP_XSAVE2", "XSAVE state beyond 4 KiB (AMX) in snapshots" },
	{ KVM_CAP_GET_TSC_KHZ, "KVM_CAP_GET_TSC_KHZ", "the TSC frequency recorded in snapshots" },
};
const size_t kvm_optional_caps_count = sizeof(kvm_optional_caps) / sizeof(kvm_optional_caps[0]);

int kvm_check_caps(int kvm_fd, const struct kvm_cap_req **missing)
{
	*missing = NULL;
	for (size_t i = 0; i < kvm_required_caps_count; i++) {
		int r = ioctl(kvm_fd, KVM_CHECK_EXTENSION, kvm_required_caps[i].cap);
		if (r <= 0) {
			*missing = &kvm_required_caps[i];
			return -ENOTSUP;
		}
	}
	return 0;
}

static int kvm_get_supported_cpuid(struct kvm *kvm)
{
	/* Grow the buffer until KVM stops answering E2BIG. */
	for (int n = 64; n <= 4096; n *= 2) {
		struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + n * sizeof(c->entries[0]));
		if (!c)
			return -ENOMEM;
		c->nent = (uint32_t)n;
		if (ioctl(kvm->fd, KVM_GET_SUPPORTED_CPUID, c) == 0) {
			kvm->supported_cpuid = c;
			return 0;
		}
		int err = -errno;
		free(c);
		if (err != -E2BIG)
			return log_errno(err, "KVM_GET_SUPPORTED_CPUID");
	}
	return log_errno(-E2BIG, "KVM_GET_SUPPORTED_CPUID");
}

int kvm_open(struct kvm *kvm, const char *path)
{
	const struct kvm_cap_req *missing;
	int err, version;

	*kvm = (struct kvm){ .fd = -1 };
	if (!path)
		path = "/dev/kvm";
	kvm->fd = open(path, O_RDWR | O_CLOEXEC);
	if (kvm->fd < 0) {
		err = -errno;
		if (err == -ENOENT)
			log_err("no %s: this host has no KVM (load kvm_intel/kvm_amd, or run on a host "
				"with hardware or PVM virtualization)", path);
		else
			log_err("open %s: %s", path, strerror(-err));
		return err;
	}
	version = ioctl(kvm->fd, KVM_GET_API_VERSION, 0);
	if (version != KVM_API_VERSION) {
		err = -ENOTSUP;
		log_err("%s: KVM API version %d, forkvm needs %d", path, version, KVM_API_VERSION);
		goto err;
	}
	err = kvm_check_caps(kvm->fd, &missing);
	if (err) {
		log_err("%s: missing capability %s (needed for %s)", path, missing->name, missing->why);
		goto err;
	}
	kvm->vcpu_mmap_size = ioctl(kvm->fd, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (kvm->vcpu_mmap_size < (int)sizeof(struct kvm_run)) {
		err = log_errno(kvm->vcpu_mmap_size < 0 ? -errno : -EINVAL, "KVM_GET_VCPU_MMAP_SIZE");
		goto err;
	}
	err = kvm_get_supported_cpuid(kvm);
	if (err)
		goto err;
	return 0;
err:
	kvm_close(kvm);
	return err;
}

void kvm_close(struct kvm *kvm)
{
	if (kvm->fd >= 0)
		close(kvm->fd);
	free(kvm->supported_cpuid);
	free(kvm->msr_list);
	kvm->supported_cpuid = NULL;
	kvm->msr_list = NULL;
	kvm->fd = -1;
}
