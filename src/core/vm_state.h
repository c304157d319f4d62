/* VM-wide KVM state: the two PICs, the IOAPIC, PIT2 and kvmclock. */
#ifndef FORKVM_VM_STATE_H
#define FORKVM_VM_STATE_H

#include <linux/kvm.h>
#include <stdint.h>

struct vm;

struct vm_arch_state {
	struct kvm_irqchip pic_master, pic_slave, ioapic;
	struct kvm_pit_state2 pit;
	struct kvm_clock_data clock;
};

int vm_save_arch_state(struct vm *vm, struct vm_arch_state *st);
/* Restore irqchips, then PIT, then the clock. */
int vm_restore_arch_state(struct vm *vm, const struct vm_arch_state *st);

/*
 * kvmclock and vCPU 0's TSC at one instant (within *spread_ns; vCPUs must not be in KVM_RUN),
 * for the control command `clock`: how far apart a VM's two clocks are, e.g. in a clone and
 * its source (docs/SNAPSHOT.md). Returns vCPU 0's TSC rate in kHz, or -errno.
 */
int vm_clock_read(struct vm *vm, uint64_t *clock, uint64_t *tsc, uint64_t *spread_ns);

/*
 * Capture: kvmclock and every vCPU's guest TSC at one instant (vCPUs parked): *clock, and
 * tsc[i] for vCPU i. The snapshot stores these instead of values read a few ioctls apart.
 */
int vm_clock_capture(struct vm *vm, uint64_t *clock, uint64_t *tsc);
/*
 * Restore, after the clock and every vCPU's MSRs are set: give each vCPU the TSC offset that
 * makes its TSC read tsc[i] plus the cycles of the nanoseconds kvmclock has run since clock
 * (KVM_VCPU_TSC_OFFSET, no MSR write and so none of KVM's TSC-matching heuristics). 0 without
 * that attribute (kernels before 5.16): the MSR values stay. -errno, logged.
 */
int vm_clock_tie_tsc(struct vm *vm, uint64_t clock, const uint64_t *tsc);

#endif
