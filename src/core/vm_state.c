/* Save and restore the in-kernel interrupt controllers, PIT and kvmclock. */
#include "core/vm_state.h"

#include <string.h>
#include <sys/ioctl.h>

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

int vm_clock_read(struct vm *vm, uint64_t *clock, uint64_t *tsc, uint64_t *spread_ns)
{
	struct kvm_clock_data data = { 0 };
	int khz = vm->nvcpus > 0 ? ioctl(vm->vcpus[0].fd, KVM_GET_TSC_KHZ, 0) : -1;
	uint64_t a, b;
	int ret;

	if (khz <= 0)
		return khz < 0 ? log_errno(-errno, "KVM_GET_TSC_KHZ") : -EINVAL;
	/* A reading interrupted by preemption (spread above BRACKET_NS) is taken again. */
	for (int i = 0; i < BRACKET_TRIES; i++) {
		if ((ret = vcpu_get_tsc(&vm->vcpus[0], &a)))
			return ret;
		if (ioctl(vm->fd, KVM_GET_CLOCK, &data) < 0)
			return log_errno(-errno, "KVM_GET_CLOCK");
		if ((ret = vcpu_get_tsc(&vm->vcpus[0], &b)))
			return ret;
		*clock = data.clock;
		*tsc = a + (b - a) / 2;
		*spread_ns = (uint64_t)tsc_delta_ns(b, a, (uint64_t)khz);
		if (*spread_ns <= BRACKET_NS)
			break;
	}
	return khz;
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
