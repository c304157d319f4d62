/* Which MSRs a snapshot carries: KVM's index list, filtered to what reads back, safely ordered. */
#include <stdlib.h>
#include <sys/ioctl.h>

#include "core/kvm.h"
#include "core/log.h"
#include "core/vcpu.h"
#include "core/vcpu_state.h"
#include "x86/boot_cpu.h"

uint32_t kvm_xsave_size(struct kvm *kvm)
{
#ifdef KVM_CAP_XSAVE2
	int size = ioctl(kvm->fd, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE2);
	if (size > (int)sizeof(struct kvm_xsave))
		return (uint32_t)size;
#endif
	return sizeof(struct kvm_xsave);
}

static int msr_rank(uint32_t index)
{
	/* The TSC first and the TSC deadline last: the deadline is relative to the TSC. */
	if (index == MSR_IA32_TSC)
		return 0;
	if (index == MSR_IA32_TSC_DEADLINE)
		return 2;
	return 1;
}

static int msr_cmp(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	int rx = msr_rank(x), ry = msr_rank(y);

	if (rx != ry)
		return rx - ry;
	return x < y ? -1 : x > y;
}

static bool msr_readable(struct vcpu *vcpu, uint32_t index)
{
	struct {
		struct kvm_msrs hdr;
		struct kvm_msr_entry e;
	} one = { .hdr.nmsrs = 1, .e.index = index };

	return ioctl(vcpu->fd, KVM_GET_MSRS, &one) == 1;
}

int kvm_msr_list(struct kvm *kvm, struct vcpu *vcpu, uint32_t **list, uint32_t *n)
{
	struct kvm_msr_list probe = { .nmsrs = 0 }, *all = NULL;
	uint32_t kept = 0;
	int err = 0;

	if (kvm->msr_list)
		goto out;
	/* First call learns the count (E2BIG), the second fetches the indices. */
	if (ioctl(kvm->fd, KVM_GET_MSR_INDEX_LIST, &probe) < 0 && errno != E2BIG)
		return log_errno(-errno, "KVM_GET_MSR_INDEX_LIST");
	all = calloc(1, sizeof(*all) + probe.nmsrs * sizeof(uint32_t));
	kvm->msr_list = calloc(probe.nmsrs + 1, sizeof(uint32_t));
	if (!all || !kvm->msr_list) {
		err = log_errno(-ENOMEM, "allocating the MSR list");
		goto err;
	}
	all->nmsrs = probe.nmsrs;
	if (ioctl(kvm->fd, KVM_GET_MSR_INDEX_LIST, all) < 0) {
		err = log_errno(-errno, "KVM_GET_MSR_INDEX_LIST");
		goto err;
	}
	/* KVM lists MSRs this CPU or configuration cannot read; a snapshot carries only real ones. */
	for (uint32_t i = 0; i < all->nmsrs; i++)
		if (msr_readable(vcpu, all->indices[i]))
			kvm->msr_list[kept++] = all->indices[i];
	qsort(kvm->msr_list, kept, sizeof(uint32_t), msr_cmp);
	kvm->nmsrs = kept;
	free(all);
out:
	*list = kvm->msr_list;
	*n = kvm->nmsrs;
	return 0;
err:
	free(all);
	free(kvm->msr_list);
	kvm->msr_list = NULL;
	return err;
}
