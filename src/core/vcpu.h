/* A vCPU: its KVM fd, shared kvm_run page, thread, and exit handling. */
#ifndef FORKVM_VCPU_H
#define FORKVM_VCPU_H

#include <linux/kvm.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

struct vm;

struct vcpu_stats {
	uint64_t exits_io, exits_mmio, exits_intr, exits_other;
};

struct vcpu {
	struct vm *vm;
	int id;
	int fd;
	struct kvm_run *run;
	int run_size;
	pthread_t thread;
	bool thread_started;
	uint32_t cpuid_nent;	/* entries of the CPUID last set: KVM_GET_CPUID2's first size */
	int tsc_khz;		/* vcpu_tsc_khz, asked once (0: not yet; forkvm never sets it) */

	/* Under vm->lock. */
	bool io_pending;   /* last exit was IO/MMIO: KVM completes it on the next KVM_RUN */
	bool idle;	   /* the guest waits for work (probe WAIT port, or HLT without irqchip) */
	bool wake_pending; /* work arrived; the next idle check falls through */
	bool parked;

	struct vcpu_stats stats;
};

int vcpu_create(struct vm *vm, int id, struct vcpu *vcpu);
void vcpu_destroy(struct vcpu *vcpu);
/* CPUID for this vCPU from the host's supported set and the VM's policy. */
int vcpu_set_cpuid(struct vcpu *vcpu);
/* The vCPU's TSC rate in kHz (KVM_GET_TSC_KHZ, asked once), or -errno. */
int vcpu_tsc_khz(struct vcpu *vcpu);
int vcpu_start_thread(struct vcpu *vcpu);
/* Post work to an idle vCPU (called with or without vm->lock held: see _locked). */
void vcpu_wake(struct vcpu *vcpu);
void vcpu_wake_locked(struct vcpu *vcpu);
/* Interrupt KVM_RUN on this vCPU; caller holds vm->lock and has set the reason. */
void vcpu_kick_locked(struct vcpu *vcpu);

/* Installs the no-op handler of the kick signal; once per process. */
int vcpu_signal_init(void);

#endif
