/* Linux boot helpers: the command line with virtio_mmio.device=, host CPUID defaults. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "builder/boot_linux.h"
#include "x86/cpuid_host.h"

static void test_cmdline_compose(void **state)
{
	char out[256];

	assert_int_equal(linux_cmdline_compose(out, sizeof(out), "console=ttyS0", 0), 0);
	assert_string_equal(out, "console=ttyS0");
	assert_int_equal(linux_cmdline_compose(out, sizeof(out), "a=b", 2), 0);
	assert_string_equal(out, "a=b virtio_mmio.device=4K@0xd0000000:5 "
				 "virtio_mmio.device=4K@0xd0001000:6");
	assert_int_equal(linux_cmdline_compose(out, 20, "a=b", 1), -E2BIG);
}

static void test_host_policy(void **state)
{
	char root[] = "/tmp/forkvm-cpuid-XXXXXX", path[128], why[256];
	struct cpuid_policy p;

	assert_non_null(mkdtemp(root));
	/* A host without the trait: nothing hidden. */
	assert_int_equal(cpuid_host_default_policy(root, &p, why, sizeof(why)), 0);
	assert_int_equal(p.nhidden, 0);
	assert_string_equal(why, "");
	/* A PVM host: cx16 hidden, and the reason names the trait. */
	snprintf(path, sizeof(path), "%s/sys", root);
	assert_int_equal(mkdir(path, 0755), 0);
	snprintf(path, sizeof(path), "%s/sys/module", root);
	assert_int_equal(mkdir(path, 0755), 0);
	snprintf(path, sizeof(path), "%s/sys/module/kvm_pvm", root);
	assert_int_equal(mkdir(path, 0755), 0);
	assert_int_equal(cpuid_host_default_policy(root, &p, why, sizeof(why)), 0);
	assert_int_equal(p.nhidden, 1);
	assert_string_equal(p.hidden[0]->name, "cx16");
	assert_non_null(strstr(why, "kvm_pvm"));
	rmdir(path);
	snprintf(path, sizeof(path), "%s/sys/module", root);
	rmdir(path);
	snprintf(path, sizeof(path), "%s/sys", root);
	rmdir(path);
	rmdir(root);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_cmdline_compose),
		cmocka_unit_test(test_host_policy),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
