/* Save and restore the in-kernel interrupt controllers, PIT and kvmclock. */
#include "core/vm_state.h"

#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <x86intrin.h>

#include "util/log.h"
#include "core/vcpu_state.h"
#include "core/vm.h"

static int irqchip_get(struct vm *vm, struct kvm_irqchip *chip, uint32_t id)
{
	memset(chip, 0, sizeof(*chip));
	chip->chip_id = id;
	if (ioctl(vm->fd, KVM_GET_IRQCHIP, chip) < 0)
		return log_errno(-errno, "KVM_GET_IRQCHIP chip %u", id);
	return 0;
}

int vm_save_arch_state(struct vm *vm, struct vm_arch_state *st)
{
	int err;

	memset(st, 0, sizeof(*st));
	if ((err = irqchip_get(vm, &st->pic_master, KVM_IRQCHIP_PIC_MASTER)) ||
	    (err = irqchip_get(vm, &st->pic_slave, KVM_IRQCHIP_PIC_SLAVE)) ||
	    (err = irqchip_get(vm, &st->ioapic, KVM_IRQCHIP_IOAPIC)))
		return err;
	if (ioctl(vm->fd, KVM_GET_PIT2, &st->pit) < 0)
		return log_errno(-errno, "KVM_GET_PIT2");
	if (ioctl(vm->fd, KVM_GET_CLOCK, &st->clock) < 0)
		return log_errno(-errno, "KVM_GET_CLOCK");
	return 0;
}

/* Nanoseconds in (now - then) cycles of a tsc_khz clock; negative when now is before then. */
static int64_t tsc_delta_ns(uint64_t now, uint64_t then, uint64_t tsc_khz)
{
	__int128 cycles = (__int128)now - (__int128)then;

	return (int64_t)(cycles * 1000000 / (__int128)tsc_khz);
}

/* Tries at reading the clock between two TSC readings less than BRACKET_NS apart. */
#define BRACKET_TRIES 5
#define BRACKET_NS 20000

/*
 * kvmclock and vCPU i's TSC at one instant: the clock read between two readings of that TSC
 * (*tsc their midpoint, *spread_ns their distance), again when preempted. Returns the TSC
 * rate in kHz, or -errno.
 */
static int clock_at_vcpu_tsc(struct vm *vm, int i, uint64_t *clock, uint64_t *tsc,
			     uint64_t *spread_ns)
{
	struct kvm_clock_data data = { 0 };
	int khz = vcpu_tsc_khz(&vm->vcpus[i]);
	uint64_t a, b;
	int ret;

	if (khz < 0)
		return log_errno(khz, "KVM_GET_TSC_KHZ of vcpu %d", i);
	for (int t = 0; t < BRACKET_TRIES; t++) {
		if ((ret = vcpu_get_tsc(&vm->vcpus[i], &a)))
			return ret;
		if (ioctl(vm->fd, KVM_GET_CLOCK, &data) < 0)
			return log_errno(-errno, "KVM_GET_CLOCK");
		if ((ret = vcpu_get_tsc(&vm->vcpus[i], &b)))
			return ret;
		*clock = data.clock;
		*tsc = a + (b - a) / 2;
		*spread_ns = (uint64_t)tsc_delta_ns(b, a, (uint64_t)khz);
		if (*spread_ns <= BRACKET_NS)
			break;
	}
	return khz;
}

int vm_clock_read(struct vm *vm, uint64_t *clock, uint64_t *tsc, uint64_t *spread_ns)
{
	return vm->nvcpus > 0 ? clock_at_vcpu_tsc(vm, 0, clock, tsc, spread_ns) : -EINVAL;
}

/* The cycles of ns nanoseconds at tsc_khz (ns may be negative). */
static int64_t ns_to_cycles(int64_t ns, uint64_t tsc_khz)
{
	return (int64_t)((__int128)ns * (__int128)tsc_khz / 1000000);
}

int vm_clock_capture(struct vm *vm, uint64_t *clock, uint64_t *tsc)
{
	uint64_t c0 = 0;

	for (int i = 0; i < vm->nvcpus; i++) {
		uint64_t c, spread;
		int khz = clock_at_vcpu_tsc(vm, i, &c, &tsc[i], &spread);

		if (khz < 0)
			return khz;
		if (i == 0)
			c0 = c;
		/* vCPU i's TSC at vCPU 0's clock reading. */
		tsc[i] -= (uint64_t)ns_to_cycles((int64_t)(c - c0), (uint64_t)khz);
	}
	*clock = c0;
	return 0;
}

/* The clock and the host's TSC at one instant (this thread's TSC is the one KVM uses). */
static int clock_at_host_tsc(struct vm *vm, uint64_t khz, uint64_t *clock, uint64_t *host)
{
	struct kvm_clock_data data = { 0 };
	uint64_t h1 = 0, h2 = 0, spread = UINT64_MAX;

	for (int t = 0; t < BRACKET_TRIES && spread > BRACKET_NS; t++) {
		h1 = __rdtsc();
		if (ioctl(vm->fd, KVM_GET_CLOCK, &data) < 0)
			return log_errno(-errno, "KVM_GET_CLOCK");
		h2 = __rdtsc();
		spread = (uint64_t)tsc_delta_ns(h2, h1, khz);
	}
	*clock = data.clock;
	*host = h1 + (h2 - h1) / 2;
	return 0;
}

/* Set every vCPU's TSC offset from the restored clock (no-op where KVM lacks the attribute). */
static int tie_by_offset(struct vm *vm, uint64_t clock, const uint64_t *tsc, uint64_t khz)
{
	struct kvm_device_attr attr = { .group = KVM_VCPU_TSC_CTRL, .attr = KVM_VCPU_TSC_OFFSET };
	uint64_t now = 0, host = 0;
	int ret;

	if (ioctl(vm->vcpus[0].fd, KVM_HAS_DEVICE_ATTR, &attr) < 0)
		return 0;
	if ((ret = clock_at_host_tsc(vm, khz, &now, &host)))
		return ret;
	for (int i = 0; i < vm->nvcpus; i++) {
		/* Guest TSC = host TSC + offset (no scaling: the rate was never set). */
		uint64_t want = tsc[i] + (uint64_t)ns_to_cycles((int64_t)(now - clock), khz);
		uint64_t offset = want - host;

		attr.addr = (uint64_t)(uintptr_t)&offset;
		if (ioctl(vm->vcpus[i].fd, KVM_SET_DEVICE_ATTR, &attr) < 0)
			return log_errno(-errno, "setting the TSC offset of vcpu %d", i);
	}
	return 0;
}

int vm_clock_tie_tsc(struct vm *vm, uint64_t clock, const uint64_t *tsc)
{
	struct kvm_clock_data data = { 0 };
	uint64_t a = 0, b = 0, spread = UINT64_MAX;
	int khz, ret;

	if (vm->nvcpus < 1)
		return 0;
	khz = vcpu_tsc_khz(&vm->vcpus[0]);
	if (khz < 0)
		return log_errno(khz, "KVM_GET_TSC_KHZ");
	ret = tie_by_offset(vm, clock, tsc, (uint64_t)khz);
	if (ret)
		return ret;
	/*
	 * Then kvmclock follows vCPU 0's TSC: the saved clock plus the time that TSC has run past
	 * its saved value, set between two readings of it. Where the offsets took, that is the
	 * clock as it is (to a few microseconds); where KVM cannot offset a guest's TSC (PVM: its
	 * guests run rdtsc natively, and it accepts an offset and ignores it), this is the step
	 * that ties the two.
	 */
	for (int t = 0; t < BRACKET_TRIES && spread > BRACKET_NS; t++) {
		if ((ret = vcpu_get_tsc(&vm->vcpus[0], &a)))
			return ret;
		data.clock = clock + (uint64_t)tsc_delta_ns(a, tsc[0], (uint64_t)khz);
		if (ioctl(vm->fd, KVM_SET_CLOCK, &data) < 0)
			return log_errno(-errno, "KVM_SET_CLOCK");
		if ((ret = vcpu_get_tsc(&vm->vcpus[0], &b)))
			return ret;
		spread = (uint64_t)tsc_delta_ns(b, a, (uint64_t)khz);
	}
	return 0;
}

int vm_restore_arch_state(struct vm *vm, const struct vm_arch_state *st)
{
	const struct kvm_irqchip *chips[] = { &st->pic_master, &st->pic_slave, &st->ioapic };
	struct kvm_clock_data clock = { .clock = st->clock.clock };

	for (int i = 0; i < 3; i++)
		if (ioctl(vm->fd, KVM_SET_IRQCHIP, chips[i]) < 0)
			return log_errno(-errno, "KVM_SET_IRQCHIP chip %u", chips[i]->chip_id);
	if (ioctl(vm->fd, KVM_SET_PIT2, &st->pit) < 0)
		return log_errno(-errno, "KVM_SET_PIT2");
	/* The guest clock continues from the instant of the snapshot (flags 0: no realtime jump). */
	if (ioctl(vm->fd, KVM_SET_CLOCK, &clock) < 0)
		return log_errno(-errno, "KVM_SET_CLOCK");
	return 0;
}
