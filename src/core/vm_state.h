/* VM-wide KVM state: the two PICs, the IOAPIC, PIT2 and kvmclock. */
#ifndef FORKVM_VM_STATE_H
#define FORKVM_VM_STATE_H

#include <linux/kvm.h>

struct vm;

struct vm_arch_state {
	struct kvm_irqchip pic_master, pic_slave, ioapic;
	struct kvm_pit_state2 pit;
	struct kvm_clock_data clock;
};

int vm_save_arch_state(struct vm *vm, struct vm_arch_state *st);
/* Restore irqchips, then PIT, then the clock. */
int vm_restore_arch_state(struct vm *vm, const struct vm_arch_state *st);

#endif
