/* `forkvm run --rootfs IMAGE` / `--linux` with a cached rootfs: the image becomes disk 0 and the
 * command line gets forkvm.root=/dev/vda; the combinations that make no sense are usage errors. */
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

#include "cli/cli.h"
#include "cli/cli_vm.h"
#include "cli/run_opts.h"
#include "image/fsutil.h" /* run_cmd(), hence run_command below */

/* The CLI is not part of libforkvm.a: compile the units under test into this binary. */
#include "cli/cli_util.c"
#include "cli/run_opts.c"
#include "cli/run_linux.c"
#include "cli/run_tap.c"
#include "cli/run_net.c"

#define ARGC(a) ((int)(sizeof(a) / sizeof((a)[0])))

static const struct cli_command run_command = { "run", "create one VM", "forkvm run [options]\n", NULL };
static char dir[64], image[128], cached[256], disk[128];

static int setup(void **state)
{
	char sub[160];

	snprintf(dir, sizeof(dir), "/tmp/forkvm-run-rootfs-XXXXXX");
	if (!mkdtemp(dir))
		return -1;
	snprintf(image, sizeof(image), "%s/mine.ext4", dir);
	snprintf(disk, sizeof(disk), "%s/data.img", dir);
	snprintf(sub, sizeof(sub), "%s/cache/rootfs", dir);
	snprintf(cached, sizeof(cached), "%s/rootfs.ext4", sub);
	if (image_mkdir(sub, 0755) || image_write_file(image, "x", 1, 0644) ||
	    image_write_file(disk, "y", 1, 0644))
		return -1;
	setenv("FORKVM_RUN_DIR", dir, 1);
	snprintf(sub, sizeof(sub), "%s/cache", dir);
	setenv("FORKVM_CACHE", sub, 1);
	return 0;
}

static int teardown(void **state)
{
	unsetenv("FORKVM_RUN_DIR");
	unsetenv("FORKVM_CACHE");
	return remove_tree(dir);
}

static void test_rootfs_is_disk0_and_cmdline(void **state)
{
	char *argv[] = { "run", "--socket", "/tmp/forkvm-unit-rootfs.sock", "--rootfs", image,
			 "--disk", disk };
	struct run_opts o;

	assert_int_equal(run_opts_parse(&run_command, ARGC(argv), argv, &o), 0);
	assert_true(o.linux_image); /* --rootfs without --kernel boots the built image */
	assert_ptr_equal(o.kernel, o.image_kernel);
	assert_int_equal(o.vm.ndisks, 2);
	assert_string_equal(o.vm.disks[0].base, image);
	assert_false(o.vm.disks[0].read_only);
	assert_string_equal(o.vm.disks[1].base, disk);
	assert_string_equal(o.cmdline, LINUX_DEFAULT_CMDLINE " forkvm.root=/dev/vda");
}

static void test_rootfs_keeps_a_given_root(void **state)
{
	char *argv[] = { "run", "--socket", "/tmp/forkvm-unit-rootfs.sock", "--rootfs", image,
			 "--cmdline", "console=ttyS0 root=/dev/vdb" };
	struct run_opts o;

	assert_int_equal(run_opts_parse(&run_command, ARGC(argv), argv, &o), 0);
	assert_string_equal(o.cmdline, "console=ttyS0 root=/dev/vdb");
	assert_int_equal(o.vm.ndisks, 1);
}

static void test_cached_rootfs_with_linux(void **state)
{
	char *argv[] = { "run", "--socket", "/tmp/forkvm-unit-rootfs.sock", "--linux" };
	char *opt_out[] = { "run", "--socket", "/tmp/forkvm-unit-rootfs.sock", "--linux",
			    "--no-rootfs" };
	struct run_opts o;

	/* None built: the initramfs alone, as before. */
	assert_int_equal(run_opts_parse(&run_command, ARGC(argv), argv, &o), 0);
	assert_int_equal(o.vm.ndisks, 0);
	assert_null(o.cmdline);
	assert_int_equal(image_write_file(cached, "z", 1, 0644), 0);
	assert_int_equal(run_opts_parse(&run_command, ARGC(argv), argv, &o), 0);
	assert_int_equal(o.vm.ndisks, 1);
	assert_string_equal(o.vm.disks[0].base, cached);
	assert_non_null(strstr(o.cmdline, " forkvm.root=/dev/vda"));
	assert_int_equal(run_opts_parse(&run_command, ARGC(opt_out), opt_out, &o), 0);
	assert_int_equal(o.vm.ndisks, 0);
	assert_null(o.cmdline);
}

static void test_rootfs_usage_errors(void **state)
{
	char missing[160];
	char *both[] = { "run", "--socket", "/tmp/forkvm-unit-rootfs.sock", "--rootfs", image,
			 "--no-rootfs" };
	char *gone[] = { "run", "--socket", "/tmp/forkvm-unit-rootfs.sock", "--rootfs", missing };
	char *empty[] = { "run", "--socket", "/tmp/forkvm-unit-rootfs.sock", "--rootfs=" };
	char *restore[] = { "run", "--socket", "/tmp/forkvm-unit-rootfs.sock", "--rootfs", image,
			    "--restore", dir };
	struct run_opts o;

	snprintf(missing, sizeof(missing), "%s/nope.ext4", dir);
	assert_int_equal(run_opts_parse(&run_command, ARGC(both), both, &o), CLI_EXIT_USAGE);
	assert_int_equal(run_opts_parse(&run_command, ARGC(gone), gone, &o), CLI_EXIT_USAGE);
	assert_int_equal(run_opts_parse(&run_command, ARGC(empty), empty, &o), CLI_EXIT_USAGE);
	assert_int_equal(run_opts_parse(&run_command, ARGC(restore), restore, &o), CLI_EXIT_USAGE);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_rootfs_is_disk0_and_cmdline, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rootfs_keeps_a_given_root, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cached_rootfs_with_linux, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rootfs_usage_errors, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
