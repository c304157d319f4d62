/* Run control across threads: pause/resume all vCPUs exactly, and ending the VM. */
#include <stdarg.h>
#include <stdio.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "util/log.h"
#include "core/vm.h"
#include "util/clock.h"

#define PAUSE_TIMEOUT_S 10

static int vm_wait_locked(struct vm *vm, const struct timespec *deadline)
{
	int err = pthread_cond_timedwait(&vm->cond, &vm->lock, deadline);
	return err == ETIMEDOUT ? -ETIMEDOUT : 0;
}

int vm_pause(struct vm *vm)
{
	uint64_t t0 = monotonic_ns();
	struct timespec deadline;
	int err = 0;

	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += PAUSE_TIMEOUT_S;
	pthread_mutex_lock(&vm->lock);
	if (vm->stop_requested) {
		err = -ESHUTDOWN;
		goto out;
	}
	if (vm->pause_requested) {
		err = -EALREADY;
		goto out;
	}
	vm->pause_requested = true;
	vm->first_parked_ns = vm->all_running_ns = 0; /* no window yet (vm_resume_window) */
	for (int i = 0; i < vm->nvcpus; i++)
		vcpu_kick_locked(&vm->vcpus[i]);
	pthread_cond_broadcast(&vm->cond);
	/* Parked means: out of KVM_RUN, pending IO completed, waiting for resume. */
	while (vm->started && vm->parked < vm->live_threads && !vm->stop_requested) {
		if (vm_wait_locked(vm, &deadline)) {
			err = -ETIMEDOUT;
			log_err("pause: only %d of %d vCPUs parked within %d s", vm->parked,
				vm->live_threads, PAUSE_TIMEOUT_S);
			vm->pause_requested = false;
			pthread_cond_broadcast(&vm->cond);
			goto out;
		}
	}
	if (vm->stop_requested) {
		err = -ESHUTDOWN;
		goto out;
	}
	vm->pause_count++;
	vm->last_pause_ns = monotonic_ns() - t0;
out:
	pthread_mutex_unlock(&vm->lock);
	return err;
}

int vm_resume(struct vm *vm)
{
	int err = 0;

	pthread_mutex_lock(&vm->lock);
	if (!vm->pause_requested)
		err = -EALREADY;
	vm->pause_requested = false;
	pthread_cond_broadcast(&vm->cond);
	pthread_mutex_unlock(&vm->lock);
	return err;
}

uint64_t vm_resume_window(struct vm *vm)
{
	struct timespec deadline;
	uint64_t window = 0;

	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += 1;
	pthread_mutex_lock(&vm->lock);
	if (vm->pause_requested) {
		vm->pause_requested = false;
		pthread_cond_broadcast(&vm->cond);
		while (vm->parked > 0 && !vm->stop_requested && !vm_wait_locked(vm, &deadline))
			;
		if (vm->parked == 0 && vm->all_running_ns > vm->first_parked_ns)
			window = vm->all_running_ns - vm->first_parked_ns;
	}
	pthread_mutex_unlock(&vm->lock);
	return window;
}

bool vm_is_paused(struct vm *vm)
{
	pthread_mutex_lock(&vm->lock);
	bool paused = vm->pause_requested;
	pthread_mutex_unlock(&vm->lock);
	return paused;
}

void vm_request_end_locked(struct vm *vm, enum vm_end_reason reason, const char *fmt, ...)
{
	uint64_t one = 1;
	va_list ap;

	if (vm->end_reason == VM_END_NONE) {
		vm->end_reason = reason;
		va_start(ap, fmt);
		vsnprintf(vm->end_detail, sizeof(vm->end_detail), fmt, ap);
		va_end(ap);
		if (reason != VM_END_STOPPED)
			log_info("VM ending: %s", vm->end_detail);
	}
	if (!vm->stop_requested) {
		vm->stop_requested = true;
		for (int i = 0; i < vm->nvcpus; i++)
			vcpu_kick_locked(&vm->vcpus[i]);
		pthread_cond_broadcast(&vm->cond);
		if (write(vm->end_eventfd, &one, sizeof(one)) != sizeof(one))
			log_warn("signalling VM end: %s", strerror(errno));
	}
}

void vm_request_end(struct vm *vm, enum vm_end_reason reason, const char *fmt, ...)
{
	char detail[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(detail, sizeof(detail), fmt, ap);
	va_end(ap);
	pthread_mutex_lock(&vm->lock);
	vm_request_end_locked(vm, reason, "%s", detail);
	pthread_mutex_unlock(&vm->lock);
}

void vm_join(struct vm *vm)
{
	for (int i = 0; i < vm->nvcpus; i++) {
		if (vm->vcpus[i].thread_started) {
			pthread_join(vm->vcpus[i].thread, NULL);
			vm->vcpus[i].thread_started = false;
		}
	}
}

const char *vm_end_reason_name(enum vm_end_reason reason)
{
	switch (reason) {
	case VM_END_NONE: return "running";
	case VM_END_STOPPED: return "stopped";
	case VM_END_GUEST_RESET: return "guest-reset";
	case VM_END_GUEST_POWEROFF: return "guest-poweroff";
	default: return "error";
	}
}
