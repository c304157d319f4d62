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
 * kvmclock and the guest TSC must keep the distance they had in the source: a guest's clocksource
 * watchdog compares the two, and a clone in which they moved apart by a millisecond marks its TSC
 * unstable (and live-patches its kernel to stop using it). They are read and set with separate
 * ioctls, so each reading is tied to vCPU 0's TSC instead:
 *  - capture: read the clock again between two readings of vCPU 0's TSC and move it back by
 *    the cycles since saved_tsc (vCPU 0's saved TSC), to the value it had then;
 *  - restore, once every vCPU has its TSC: set the clock to the saved one plus the cycles vCPU 0
 *    has run since its TSC was set, again between two TSC readings.
 * A pair whose readings are more than 20 us apart (preempted) is taken again, up to 5 times.
 * tsc_khz is vCPU 0's guest TSC rate. Both leave the clock as it is when the TSC cannot be read.
 */
int vm_clock_at_tsc(struct vm *vm, uint64_t saved_tsc, uint64_t tsc_khz, uint64_t *clock);
int vm_clock_follow_tsc(struct vm *vm, uint64_t clock, uint64_t saved_tsc, uint64_t tsc_khz);
/* kvmclock and vCPU 0's TSC at one instant (within *spread_ns); vCPUs must not be in KVM_RUN.
 * Returns vCPU 0's TSC rate in kHz, or -errno. */
int vm_clock_read(struct vm *vm, uint64_t *clock, uint64_t *tsc, uint64_t *spread_ns);

#endif
