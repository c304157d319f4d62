/* vCPU creation, CPUID and the kick signal that interrupts KVM_RUN. */
#include "core/vcpu.h"

#include <signal.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "util/log.h"
#include "core/vm.h"

static void vcpu_kick_handler(int sig)
{
	(void)sig; /* its only job is to make KVM_RUN return EINTR */
}

int vcpu_signal_init(void)
{
	struct sigaction sa = { .sa_handler = vcpu_kick_handler };

	sigemptyset(&sa.sa_mask);
	/* No SA_RESTART: KVM_RUN must come back with EINTR. */
	if (sigaction(SIGRTMIN, &sa, NULL) < 0)
		return log_errno(-errno, "sigaction for the vCPU kick signal");
	return 0;
}

int vcpu_create(struct vm *vm, int id, struct vcpu *vcpu)
{
	*vcpu = (struct vcpu){ .vm = vm, .id = id, .fd = -1 };
	vcpu->fd = ioctl(vm->fd, KVM_CREATE_VCPU, (unsigned long)id);
	if (vcpu->fd < 0)
		return log_errno(-errno, "KVM_CREATE_VCPU %d", id);
	vcpu->run_size = vm->kvm.vcpu_mmap_size;
	vcpu->run = mmap(NULL, (size_t)vcpu->run_size, PROT_READ | PROT_WRITE, MAP_SHARED,
			 vcpu->fd, 0);
	if (vcpu->run == MAP_FAILED) {
		int err = log_errno(-errno, "mmap kvm_run of vcpu %d", id);
		vcpu->run = NULL;
		close(vcpu->fd);
		vcpu->fd = -1;
		return err;
	}
	return 0;
}

void vcpu_destroy(struct vcpu *vcpu)
{
	if (vcpu->run)
		munmap(vcpu->run, (size_t)vcpu->run_size);
	if (vcpu->fd >= 0)
		close(vcpu->fd);
	vcpu->run = NULL;
	vcpu->fd = -1;
}

int vcpu_set_cpuid(struct vcpu *vcpu)
{
	struct vm *vm = vcpu->vm;
	struct kvm_cpuid2 *cpuid =
		cpuid_build(vm->kvm.supported_cpuid, vcpu->id, vm->nvcpus, &vm->cfg.cpuid_policy);
	int err = 0;

	if (!cpuid)
		return log_errno(-ENOMEM, "build CPUID for vcpu %d", vcpu->id);
	if (ioctl(vcpu->fd, KVM_SET_CPUID2, cpuid) < 0)
		err = log_errno(-errno, "KVM_SET_CPUID2 on vcpu %d", vcpu->id);
	else
		vcpu->cpuid_nent = cpuid->nent;
	free(cpuid);
	return err;
}

int vcpu_tsc_khz(struct vcpu *vcpu)
{
	int khz = vcpu->tsc_khz ? vcpu->tsc_khz : ioctl(vcpu->fd, KVM_GET_TSC_KHZ, 0);

	if (khz < 0)
		return -errno;
	if (khz == 0)
		return -EINVAL;
	vcpu->tsc_khz = khz;
	return khz;
}

void vcpu_kick_locked(struct vcpu *vcpu)
{
	/* immediate_exit covers the window between the flag check and entering KVM_RUN. */
	vcpu->run->immediate_exit = 1;
	if (vcpu->thread_started)
		pthread_kill(vcpu->thread, SIGRTMIN);
}

void vcpu_wake_locked(struct vcpu *vcpu)
{
	vcpu->wake_pending = true;
	pthread_cond_broadcast(&vcpu->vm->cond);
}

void vcpu_wake(struct vcpu *vcpu)
{
	pthread_mutex_lock(&vcpu->vm->lock);
	vcpu_wake_locked(vcpu);
	pthread_mutex_unlock(&vcpu->vm->lock);
}
