/* The vCPU thread: park/idle gate, KVM_RUN, and one handler per exit reason. */
#include <inttypes.h>
#include <signal.h>
#include <sys/ioctl.h>

#include "util/log.h"
#include "util/clock.h"
#include "util/thread.h"
#include "core/vcpu.h"
#include "core/vm.h"
#include "jail/seccomp.h"

/* Let KVM finish an IO/MMIO instruction without running guest code (KVM API: immediate_exit). */
static int vcpu_complete_io(struct vcpu *vcpu)
{
	vcpu->run->immediate_exit = 1;
	if (ioctl(vcpu->fd, KVM_RUN, 0) == 0 || errno != EINTR)
		return log_errno(errno ? -errno : -EIO, "completing pending IO on vcpu %d", vcpu->id);
	vcpu->run->immediate_exit = 0;
	return 0;
}

/*
 * Block until this vCPU may enter the guest. Returns false when the thread must exit.
 * Called and returns with vm->lock held.
 */
static bool vcpu_gate(struct vcpu *vcpu)
{
	struct vm *vm = vcpu->vm;

	for (;;) {
		if (vm->stop_requested)
			return false;
		if (vm->pause_requested) {
			if (vcpu->io_pending) {
				/* Guest state is consistent only after KVM completes the exit. */
				pthread_mutex_unlock(&vm->lock);
				int err = vcpu_complete_io(vcpu);
				pthread_mutex_lock(&vm->lock);
				if (err) {
					vm_request_end_locked(vm, VM_END_ERROR, "vcpu %d: %s",
							      vcpu->id, strerror(-err));
					return false;
				}
				vcpu->io_pending = false;
				continue;
			}
			vcpu->parked = true;
			if (vm->parked++ == 0) { /* the guest-visible pause window opens */
				vm->first_parked_ns = monotonic_ns();
				vm->all_running_ns = 0;
			}
			pthread_cond_broadcast(&vm->cond);
			while (vm->pause_requested && !vm->stop_requested)
				pthread_cond_wait(&vm->cond, &vm->lock);
			vcpu->parked = false;
			if (--vm->parked == 0) { /* ... and closes (vm_resume_window waits for it) */
				vm->all_running_ns = monotonic_ns();
				pthread_cond_broadcast(&vm->cond);
			}
			continue;
		}
		if (vcpu->idle && !vcpu->wake_pending) {
			pthread_cond_wait(&vm->cond, &vm->lock);
			continue;
		}
		vcpu->idle = false;
		vcpu->wake_pending = false;
		vcpu->io_pending = false; /* the coming KVM_RUN completes it */
		vcpu->run->immediate_exit = 0;
		return true;
	}
}

static int vcpu_handle_io(struct vcpu *vcpu)
{
	struct kvm_run *run = vcpu->run;
	uint8_t *data = (uint8_t *)run + run->io.data_offset;
	bool is_write = run->io.direction == KVM_EXIT_IO_OUT;
	int ret = 0;

	vcpu->stats.exits_io++;
	/* String IO (rep outsb) arrives as `count` elements in one exit. */
	for (uint32_t i = 0; i < run->io.count; i++) {
		int r = bus_dispatch(&vcpu->vm->pio, vcpu, run->io.port, data, run->io.size,
				     is_write);
		if (r < 0)
			return r;
		if (r == BUS_WAIT)
			ret = BUS_WAIT;
		data += run->io.size;
	}
	return ret;
}

static int vcpu_handle_mmio(struct vcpu *vcpu)
{
	struct kvm_run *run = vcpu->run;

	vcpu->stats.exits_mmio++;
	return bus_dispatch(&vcpu->vm->mmio, vcpu, run->mmio.phys_addr, run->mmio.data,
			    (int)run->mmio.len, run->mmio.is_write);
}

static void vcpu_report_crash(struct vcpu *vcpu, const char *what)
{
	struct kvm_regs regs = { 0 };
	struct kvm_sregs sregs = { 0 };

	ioctl(vcpu->fd, KVM_GET_REGS, &regs);
	ioctl(vcpu->fd, KVM_GET_SREGS, &sregs);
	vm_request_end(vcpu->vm, VM_END_GUEST_RESET,
		       "vcpu %d: %s at rip=0x%llx rsp=0x%llx cr2=0x%llx cs=0x%x", vcpu->id, what,
		       regs.rip, regs.rsp, sregs.cr2, sregs.cs.selector);
}

/* Handle one exit; returns 0 to keep running, BUS_WAIT to idle, <0 to end the VM. */
static int vcpu_handle_exit(struct vcpu *vcpu)
{
	struct kvm_run *run = vcpu->run;

	switch (run->exit_reason) {
	case KVM_EXIT_IO:
		return vcpu_handle_io(vcpu);
	case KVM_EXIT_MMIO:
		return vcpu_handle_mmio(vcpu);
	case KVM_EXIT_INTR:
		vcpu->stats.exits_intr++;
		return 0;
	case KVM_EXIT_HLT:
		return BUS_WAIT; /* only without an in-kernel LAPIC */
	case KVM_EXIT_SHUTDOWN:
		vcpu_report_crash(vcpu, "shutdown exit (triple fault)");
		return -ESHUTDOWN;
	case KVM_EXIT_SYSTEM_EVENT:
		if (run->system_event.type == KVM_SYSTEM_EVENT_SHUTDOWN) {
			vm_request_end(vcpu->vm, VM_END_GUEST_POWEROFF, "vcpu %d: guest powered off",
				       vcpu->id);
		} else if (run->system_event.type == KVM_SYSTEM_EVENT_RESET) {
			vm_request_end(vcpu->vm, VM_END_GUEST_RESET, "vcpu %d: guest reset", vcpu->id);
		} else {
			vm_request_end(vcpu->vm, VM_END_ERROR, "vcpu %d: system event %u", vcpu->id,
				       run->system_event.type);
		}
		return -ESHUTDOWN;
	case KVM_EXIT_FAIL_ENTRY:
		vm_request_end(vcpu->vm, VM_END_ERROR, "vcpu %d: entry failed, reason 0x%llx",
			       vcpu->id,
			       (unsigned long long)run->fail_entry.hardware_entry_failure_reason);
		return -EIO;
	case KVM_EXIT_INTERNAL_ERROR:
		vm_request_end(vcpu->vm, VM_END_ERROR, "vcpu %d: KVM internal error, suberror %u",
			       vcpu->id, run->internal.suberror);
		return -EIO;
	default:
		vcpu->stats.exits_other++;
		vm_request_end(vcpu->vm, VM_END_ERROR, "vcpu %d: unexpected exit reason %u", vcpu->id,
			       run->exit_reason);
		return -EIO;
	}
}

static void *vcpu_thread(void *arg)
{
	struct vcpu *vcpu = arg;
	struct vm *vm = vcpu->vm;
	int jailed = jail_seccomp_apply(JAIL_ROLE_VCPU);

	if (jailed < 0)
		vm_request_end(vm, VM_END_ERROR, "vcpu %d: seccomp filter not loaded", vcpu->id);
	pthread_mutex_lock(&vm->lock);
	while (jailed == 0 && vcpu_gate(vcpu)) {
		pthread_mutex_unlock(&vm->lock);
		int r = ioctl(vcpu->fd, KVM_RUN, 0);
		int err = r < 0 ? -errno : 0;
		int ret = 0;

		if (err == 0) {
			ret = vcpu_handle_exit(vcpu);
		} else if (err != -EINTR && err != -EAGAIN) {
			vm_request_end(vm, VM_END_ERROR, "KVM_RUN on vcpu %d: %s", vcpu->id,
				       strerror(-err));
			ret = err;
		}
		pthread_mutex_lock(&vm->lock);
		if (err == 0 && (vcpu->run->exit_reason == KVM_EXIT_IO ||
				 vcpu->run->exit_reason == KVM_EXIT_MMIO))
			vcpu->io_pending = true;
		if (err == -EINTR)
			vcpu->run->immediate_exit = 0;
		if (ret == BUS_WAIT)
			vcpu->idle = true;
		else if (ret < 0)
			break;
	}
	vm->live_threads--;
	pthread_cond_broadcast(&vm->cond);
	pthread_mutex_unlock(&vm->lock);
	return NULL;
}

int vcpu_start_thread(struct vcpu *vcpu)
{
	int err = thread_start(&vcpu->thread, vcpu_thread, vcpu);

	if (err)
		return log_errno(-err, "starting the thread of vcpu %d", vcpu->id);
	vcpu->thread_started = true;
	return 0;
}
