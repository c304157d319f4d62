/*
 * What every vCPU is doing, in one line each: for the error of a guest that stopped answering
 * (a clone whose agent never replied). It tells a forkvm thread that never re-entered the guest
 * (not parked, not in KVM_RUN) from a guest that runs but is stuck (its RIP), from a vCPU that
 * is halted with an interrupt it never got (mp_state, IF, pending events).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>

#include "core/vm.h"

static const char *mp_state_name(uint32_t s)
{
	switch (s) {
	case KVM_MP_STATE_RUNNABLE: return "runnable";
	case KVM_MP_STATE_UNINITIALIZED: return "uninitialized";
	case KVM_MP_STATE_INIT_RECEIVED: return "init-received";
	case KVM_MP_STATE_HALTED: return "halted";
	case KVM_MP_STATE_SIPI_RECEIVED: return "sipi-received";
	default: return "other";
	}
}

static void put(char *buf, size_t len, size_t *at, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (*at >= len)
		return;
	va_start(ap, fmt);
	n = vsnprintf(buf + *at, len - *at, fmt, ap);
	va_end(ap);
	if (n > 0)
		*at = *at + (size_t)n < len ? *at + (size_t)n : len;
}

static uint64_t exits(const struct vcpu *v)
{
	return v->stats.exits_io + v->stats.exits_mmio + v->stats.exits_intr + v->stats.exits_other;
}

/* One parked vCPU's KVM state (the caller has paused the VM: KVM_RUN does not hold it). */
static void describe_parked(struct vcpu *v, char *buf, size_t len, size_t *at)
{
	struct kvm_mp_state mp = { 0 };
	struct kvm_regs regs = { 0 };
	struct kvm_vcpu_events ev = { 0 };

	if (ioctl(v->fd, KVM_GET_MP_STATE, &mp) < 0 || ioctl(v->fd, KVM_GET_REGS, &regs) < 0 ||
	    ioctl(v->fd, KVM_GET_VCPU_EVENTS, &ev) < 0) {
		put(buf, len, at, "reading its state: %s", strerror(errno));
		return;
	}
	/* rcx/rax/rdx: what a vCPU stuck at an MSR access or a port was asked to do. */
	put(buf, len, at, "%s, rip 0x%llx, IF %d, pending: NMI %u%s, IRQ %s, exception %s, "
	    "rcx 0x%llx rax 0x%llx rdx 0x%llx", mp_state_name(mp.mp_state), regs.rip,
	    (int)!!(regs.rflags & 0x200), ev.nmi.pending, ev.nmi.masked ? " (masked)" : "",
	    ev.interrupt.injected ? "injected" : "none",
	    ev.exception.injected || ev.exception.pending ? "yes" : "none", regs.rcx, regs.rax,
	    regs.rdx);
}

void vm_describe_vcpus(struct vm *vm, char *buf, size_t len)
{
	size_t at = 0;
	int err;

	if (len)
		buf[0] = '\0';
	err = vm_pause(vm);
	if (err && err != -EALREADY)
		put(buf, len, &at, "pausing the VM to look failed (%s): not every vCPU thread left "
		    "KVM_RUN or its exit handler within 10 s; ", strerror(-err));
	for (int i = 0; i < vm->nvcpus; i++) {
		struct vcpu *v = &vm->vcpus[i];

		put(buf, len, &at, "%svcpu %d (%" PRIu64 " exits to forkvm): ", i ? "; " : "", i,
		    exits(v));
		if (!v->thread_started)
			put(buf, len, &at, "no thread");
		else if (err && err != -EALREADY)
			put(buf, len, &at, "state not read");
		else
			describe_parked(v, buf, len, &at);
	}
	if (!err)
		vm_resume(vm);
}
