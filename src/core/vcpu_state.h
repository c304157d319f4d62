/* A vCPU's complete KVM state, captured and restored in the safe orders. */
#ifndef FORKVM_VCPU_STATE_H
#define FORKVM_VCPU_STATE_H

#include <linux/kvm.h>
#include <stdint.h>

struct vcpu;
struct kvm;

struct vcpu_state {
	struct kvm_cpuid2 *cpuid;	/* malloc'd */
	struct kvm_mp_state mp;
	struct kvm_regs regs;
	struct kvm_sregs sregs;
	struct kvm_xsave *xsave;	/* malloc'd, xsave_size bytes */
	uint32_t xsave_size;
	struct kvm_xcrs xcrs;
	struct kvm_debugregs debugregs;
	struct kvm_lapic_state lapic;
	struct kvm_msrs *msrs;		/* malloc'd, with entries */
	struct kvm_vcpu_events events;
	uint64_t tsc_khz;
};

/* Bytes of struct kvm_xsave this host needs (KVM_CAP_XSAVE2, at least 4096). */
uint32_t kvm_xsave_size(struct kvm *kvm);
/* The MSRs KVM lists that this vCPU can actually read back, TSC first, TSC deadline last. */
int kvm_msr_list(struct kvm *kvm, struct vcpu *probe_vcpu, uint32_t **list, uint32_t *n);

/* Save: MP state first, vcpu events last. The vCPU must be parked. */
int vcpu_save_state(struct vcpu *vcpu, struct vcpu_state *st);
/* Restore: CPUID → MP state → regs → sregs → xsave → xcrs → debugregs → LAPIC → MSRs → events. */
int vcpu_restore_state(struct vcpu *vcpu, const struct vcpu_state *st);
void vcpu_state_free(struct vcpu_state *st);
/* The guest TSC of this vCPU now (KVM_GET_MSRS of IA32_TSC). */
int vcpu_get_tsc(struct vcpu *vcpu, uint64_t *tsc);

#endif
