/* Which MSRs a snapshot carries: KVM's index list, filtered to what reads back, safely ordered. */
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "core/kvm.h"
#include "util/log.h"
#include "core/vcpu.h"
#include "core/vcpu_state.h"
#include "x86/boot_cpu.h"

/* Asked once per /dev/kvm (a capture asks twice, inside the pause window). */
uint32_t kvm_xsave_size(struct kvm *kvm)
{
	uint32_t size = sizeof(struct kvm_xsave);

	if (kvm->xsave_size)
		return kvm->xsave_size;
#ifdef KVM_CAP_XSAVE2
	int n = ioctl(kvm->fd, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE2);
	if (n > (int)sizeof(struct kvm_xsave))
		size = (uint32_t)n;
#endif
	kvm->xsave_size = size;
	return size;
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

/*
 * KVM_GET_MSRS stops at the first MSR it cannot read and returns how many it read: read the
 * whole list at once and skip only the failures, one ioctl per unreadable MSR, not per MSR.
 */
static int msr_filter_readable(struct vcpu *vcpu, const uint32_t *in, uint32_t n, uint32_t *out)
{
	struct kvm_msrs *batch = calloc(1, sizeof(*batch) + n * sizeof(batch->entries[0]));
	uint32_t kept = 0, i = 0;

	if (!batch)
		return -ENOMEM;
	while (i < n) {
		batch->nmsrs = n - i;
		for (uint32_t k = 0; k < n - i; k++)
			batch->entries[k].index = in[i + k];
		int got = ioctl(vcpu->fd, KVM_GET_MSRS, batch);
		if (got < 0) {
			free(batch);
			return log_errno(-errno, "KVM_GET_MSRS on vcpu %d", vcpu->id);
		}
		memcpy(out + kept, in + i, (size_t)got * sizeof(uint32_t));
		kept += (uint32_t)got;
		i += (uint32_t)got + 1; /* in[i + got] is the one KVM could not read */
	}
	free(batch);
	return (int)kept;
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
	err = msr_filter_readable(vcpu, all->indices, all->nmsrs, kvm->msr_list);
	if (err < 0)
		goto err;
	kept = (uint32_t)err;
	err = 0;
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
