/* Capture and restore one vCPU's KVM state (Firecracker's ordering). */
#include "core/vcpu_state.h"

#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "util/log.h"
#include "core/vcpu.h"
#include "core/vm.h"
#include "x86/boot_cpu.h"

#define VCPU_IOCTL(vcpu, req, arg, what)                                                    \
	do {                                                                                 \
		if (ioctl((vcpu)->fd, req, arg) < 0) {                                       \
			err = log_errno(-errno, "%s on vcpu %d", what, (vcpu)->id);          \
			goto err;                                                            \
		}                                                                            \
	} while (0)

static struct kvm_cpuid2 *vcpu_get_cpuid(struct vcpu *vcpu)
{
	/* First the size last set: one ioctl, not an E2BIG and a second (in the pause window). */
	for (uint32_t n = vcpu->cpuid_nent ? vcpu->cpuid_nent : 64; n <= 4096; n *= 2) {
		struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + n * sizeof(c->entries[0]));
		if (!c)
			return NULL;
		c->nent = n;
		if (ioctl(vcpu->fd, KVM_GET_CPUID2, c) == 0)
			return c;
		free(c);
		if (errno != E2BIG)
			return NULL;
	}
	return NULL;
}

int vcpu_save_state(struct vcpu *vcpu, struct vcpu_state *st)
{
	struct vm *vm = vcpu->vm;
	uint32_t *msr_list, nmsrs;
	int err, n;

	memset(st, 0, sizeof(*st));
	VCPU_IOCTL(vcpu, KVM_GET_MP_STATE, &st->mp, "KVM_GET_MP_STATE");
	st->cpuid = vcpu_get_cpuid(vcpu);
	if (!st->cpuid) {
		err = log_errno(-errno ? -errno : -ENOMEM, "KVM_GET_CPUID2 on vcpu %d", vcpu->id);
		goto err;
	}
	VCPU_IOCTL(vcpu, KVM_GET_REGS, &st->regs, "KVM_GET_REGS");
	VCPU_IOCTL(vcpu, KVM_GET_SREGS, &st->sregs, "KVM_GET_SREGS");
	st->xsave_size = kvm_xsave_size(&vm->kvm);
	st->xsave = calloc(1, st->xsave_size);
	if (!st->xsave) {
		err = -ENOMEM;
		goto err;
	}
	VCPU_IOCTL(vcpu, st->xsave_size > sizeof(struct kvm_xsave) ? KVM_GET_XSAVE2 : KVM_GET_XSAVE,
		   st->xsave, "KVM_GET_XSAVE");
	VCPU_IOCTL(vcpu, KVM_GET_XCRS, &st->xcrs, "KVM_GET_XCRS");
	VCPU_IOCTL(vcpu, KVM_GET_DEBUGREGS, &st->debugregs, "KVM_GET_DEBUGREGS");
	VCPU_IOCTL(vcpu, KVM_GET_LAPIC, &st->lapic, "KVM_GET_LAPIC");
	err = kvm_msr_list(&vm->kvm, vcpu, &msr_list, &nmsrs);
	if (err)
		goto err;
	st->msrs = calloc(1, sizeof(*st->msrs) + nmsrs * sizeof(st->msrs->entries[0]));
	if (!st->msrs) {
		err = -ENOMEM;
		goto err;
	}
	st->msrs->nmsrs = nmsrs;
	for (uint32_t i = 0; i < nmsrs; i++)
		st->msrs->entries[i].index = msr_list[i];
	n = ioctl(vcpu->fd, KVM_GET_MSRS, st->msrs);
	if (n < 0 || (uint32_t)n != nmsrs) {
		err = log_errno(n < 0 ? -errno : -EIO, "KVM_GET_MSRS on vcpu %d (read %d of %u, stopped at 0x%x)",
				vcpu->id, n, nmsrs, n >= 0 && (uint32_t)n < nmsrs ? msr_list[n] : 0);
		goto err;
	}
	n = vcpu_tsc_khz(vcpu);
	st->tsc_khz = n > 0 ? (uint64_t)n : 0;
	/* Last: the events must describe the state everything above was read in. */
	VCPU_IOCTL(vcpu, KVM_GET_VCPU_EVENTS, &st->events, "KVM_GET_VCPU_EVENTS");
	return 0;
err:
	vcpu_state_free(st);
	return err;
}

int vcpu_restore_state(struct vcpu *vcpu, const struct vcpu_state *st)
{
	struct kvm_vcpu_events events = st->events;
	int err, n;

	VCPU_IOCTL(vcpu, KVM_SET_CPUID2, st->cpuid, "KVM_SET_CPUID2");
	vcpu->cpuid_nent = st->cpuid->nent;
	VCPU_IOCTL(vcpu, KVM_SET_MP_STATE, &st->mp, "KVM_SET_MP_STATE");
	VCPU_IOCTL(vcpu, KVM_SET_REGS, &st->regs, "KVM_SET_REGS");
	VCPU_IOCTL(vcpu, KVM_SET_SREGS, &st->sregs, "KVM_SET_SREGS");
	VCPU_IOCTL(vcpu, KVM_SET_XSAVE, st->xsave, "KVM_SET_XSAVE");
	VCPU_IOCTL(vcpu, KVM_SET_XCRS, &st->xcrs, "KVM_SET_XCRS");
	VCPU_IOCTL(vcpu, KVM_SET_DEBUGREGS, &st->debugregs, "KVM_SET_DEBUGREGS");
	VCPU_IOCTL(vcpu, KVM_SET_LAPIC, &st->lapic, "KVM_SET_LAPIC");
	n = ioctl(vcpu->fd, KVM_SET_MSRS, st->msrs);
	if (n < 0 || (uint32_t)n != st->msrs->nmsrs) {
		err = log_errno(n < 0 ? -errno : -EINVAL,
				"KVM_SET_MSRS on vcpu %d (set %d of %u, MSR 0x%x refused)", vcpu->id, n,
				st->msrs->nmsrs,
				n >= 0 && (uint32_t)n < st->msrs->nmsrs ? st->msrs->entries[n].index : 0);
		goto err;
	}
	/* Only the fields the saved struct describes; SMM and the like are left as captured. */
	events.flags &= KVM_VCPUEVENT_VALID_NMI_PENDING | KVM_VCPUEVENT_VALID_SIPI_VECTOR |
			KVM_VCPUEVENT_VALID_SHADOW | KVM_VCPUEVENT_VALID_SMM |
			KVM_VCPUEVENT_VALID_PAYLOAD;
	VCPU_IOCTL(vcpu, KVM_SET_VCPU_EVENTS, &events, "KVM_SET_VCPU_EVENTS");
	return 0;
err:
	return err;
}

int vcpu_get_tsc(struct vcpu *vcpu, uint64_t *tsc)
{
	struct {
		struct kvm_msrs hdr;
		struct kvm_msr_entry e;
	} m = { .hdr.nmsrs = 1, .e.index = MSR_IA32_TSC };

	if (ioctl(vcpu->fd, KVM_GET_MSRS, &m) != 1)
		return log_errno(errno ? -errno : -EIO, "reading the TSC of vcpu %d", vcpu->id);
	*tsc = m.e.data;
	return 0;
}

void vcpu_state_free(struct vcpu_state *st)
{
	free(st->cpuid);
	free(st->xsave);
	free(st->msrs);
	st->cpuid = NULL;
	st->xsave = NULL;
	st->msrs = NULL;
}
