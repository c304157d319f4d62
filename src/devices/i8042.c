/* i8042 stub: status reads "empty, ready", command 0xFE pulses the CPU reset line. */
#include "devices/i8042.h"

#include <stdint.h>
#include <string.h>

#include "util/log.h"
#include "core/vm.h"

static int i8042_access(struct vm *vm, struct vcpu *vcpu, void *data, int len, bool is_write,
			bool cmd_port)
{
	if (!is_write) {
		/* No keyboard: data reads 0, status has neither output nor input buffer full,
		 * so Linux's kb_wait() before the reset command returns at once. */
		memset(data, 0, (size_t)len);
		return 0;
	}
	if (cmd_port && *(uint8_t *)data == I8042_CMD_RESET) {
		vm_request_end(vm, VM_END_GUEST_RESET, "vcpu %d: guest reset through the i8042",
			       vcpu ? vcpu->id : -1);
		return -ESHUTDOWN;
	}
	return 0;
}

static int i8042_data(void *opaque, struct vcpu *vcpu, uint64_t offset, void *data, int len,
		      bool is_write)
{
	return i8042_access(opaque, vcpu, data, len, is_write, false);
}

static int i8042_cmd(void *opaque, struct vcpu *vcpu, uint64_t offset, void *data, int len,
		     bool is_write)
{
	return i8042_access(opaque, vcpu, data, len, is_write, true);
}

/* Two one-byte devices: port 0x61 between them belongs to KVM's in-kernel PIT speaker. */
int i8042_create(struct vm *vm)
{
	struct bus_dev data = { .name = "i8042-data", .base = I8042_DATA_PORT, .len = 1,
				.opaque = vm, .access = i8042_data };
	struct bus_dev cmd = { .name = "i8042-cmd", .base = I8042_CMD_PORT, .len = 1,
			       .opaque = vm, .access = i8042_cmd };
	int err = bus_register(&vm->pio, &data);

	return err ? err : bus_register(&vm->pio, &cmd);
}
