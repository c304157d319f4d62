/* Sleep control/status registers: writing S5 with SLP_EN ends the VM as a guest power-off. */
#include "devices/acpi_pm.h"

#include <stdint.h>
#include <string.h>

#include "util/log.h"
#include "core/vm.h"

static int acpi_pm_access(void *opaque, struct vcpu *vcpu, uint64_t offset, void *data, int len,
			  bool is_write)
{
	struct vm *vm = opaque;
	uint8_t v = *(uint8_t *)data;

	if (!is_write) {
		/* Status: "woken" at once, so a guest waiting for WAK_STS never spins. */
		memset(data, 0, (size_t)len);
		*(uint8_t *)data = offset == 1 ? ACPI_PM_WAK_STS : 0;
		return 0;
	}
	if (offset == 0 && (v & ACPI_PM_SLP_EN) && ACPI_PM_SLP_TYP(v) == ACPI_PM_S5_TYPE) {
		vm_request_end(vm, VM_END_GUEST_POWEROFF, "vcpu %d: guest powered off (ACPI S5)",
			       vcpu ? vcpu->id : -1);
		return -ESHUTDOWN;
	}
	return 0; /* other sleep states are not offered: the DSDT names only \_S5 */
}

int acpi_pm_create(struct vm *vm)
{
	struct bus_dev dev = { .name = "acpi-sleep", .base = ACPI_PM_SLEEP_CONTROL_PORT, .len = 2,
			       .opaque = vm, .access = acpi_pm_access };

	return bus_register(&vm->pio, &dev);
}
