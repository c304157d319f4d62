/* i8042 stub: reads say "empty", other writes are ignored, command 0xFE ends the VM as a reset. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "devices/acpi_pm.h"
#include "devices/i8042.h"
#include "virtio_testvm.h"

static void test_reset_command(void **state)
{
	struct vm vm;
	uint8_t v = 0xaa;

	assert_int_equal(tvm_init(&vm), 0);
	vm.end_eventfd = eventfd(0, EFD_CLOEXEC);
	assert_int_equal(i8042_create(&vm), 0);
	assert_int_equal(bus_dispatch(&vm.pio, NULL, I8042_CMD_PORT, &v, 1, false), 0);
	assert_int_equal(v, 0); /* status: no data, input buffer empty */
	assert_null(bus_find(&vm.pio, 0x61, 1)); /* KVM's PIT speaker port stays KVM's */
	v = 0xd1;					  /* "write output port": ignored */
	assert_int_equal(bus_dispatch(&vm.pio, NULL, I8042_CMD_PORT, &v, 1, true), 0);
	v = I8042_CMD_RESET;
	assert_int_equal(bus_dispatch(&vm.pio, NULL, I8042_DATA_PORT, &v, 1, true), 0);
	assert_int_equal(vm.end_reason, VM_END_NONE); /* 0xFE on the data port is data */
	assert_int_equal(bus_dispatch(&vm.pio, NULL, I8042_CMD_PORT, &v, 1, true), -ESHUTDOWN);
	assert_int_equal(vm.end_reason, VM_END_GUEST_RESET);
	assert_true(vm.stop_requested);
	close(vm.end_eventfd);
	guest_mem_destroy(&vm.mem);
}

/* ACPI sleep registers: only S5 with SLP_EN powers off; status reads WAK_STS. */
static void test_acpi_poweroff(void **state)
{
	struct vm vm;
	uint8_t v;

	assert_int_equal(tvm_init(&vm), 0);
	vm.end_eventfd = eventfd(0, EFD_CLOEXEC);
	assert_int_equal(acpi_pm_create(&vm), 0);
	assert_int_equal(bus_dispatch(&vm.pio, NULL, ACPI_PM_SLEEP_STATUS_PORT, &v, 1, false), 0);
	assert_int_equal(v, ACPI_PM_WAK_STS);
	v = ACPI_PM_S5_TYPE << 2; /* S5 without SLP_EN: nothing happens */
	assert_int_equal(bus_dispatch(&vm.pio, NULL, ACPI_PM_SLEEP_CONTROL_PORT, &v, 1, true), 0);
	v = (3 << 2) | ACPI_PM_SLP_EN; /* S3 is not offered */
	assert_int_equal(bus_dispatch(&vm.pio, NULL, ACPI_PM_SLEEP_CONTROL_PORT, &v, 1, true), 0);
	assert_int_equal(vm.end_reason, VM_END_NONE);
	v = (ACPI_PM_S5_TYPE << 2) | ACPI_PM_SLP_EN;
	assert_int_equal(bus_dispatch(&vm.pio, NULL, ACPI_PM_SLEEP_CONTROL_PORT, &v, 1, true),
			 -ESHUTDOWN);
	assert_int_equal(vm.end_reason, VM_END_GUEST_POWEROFF);
	close(vm.end_eventfd);
	guest_mem_destroy(&vm.mem);
}

int main(void)
{
	const struct CMUnitTest tests[] = { cmocka_unit_test(test_reset_command),
					    cmocka_unit_test(test_acpi_poweroff) };
	return cmocka_run_group_tests(tests, NULL, NULL);
}
