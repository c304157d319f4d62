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

#endif
