/* Save and restore the in-kernel interrupt controllers, PIT and kvmclock. */
#include "core/vm_state.h"

#include <string.h>
#include <sys/ioctl.h>

#include "core/log.h"
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
