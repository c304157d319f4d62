/* CLI helpers: size/number parsing, VM socket paths, and `forkvm run` option parsing. */
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

/* The CLI is not part of libforkvm.a: compile the two units under test into this binary. */
#include "cli/cli_util.c"
#include "cli/run_opts.c"
#include "cli/run_linux.c"
#include "cli/run_tap.c"
#include "cli/run_net.c"

#define ARGC(a) ((int)(sizeof(a) / sizeof((a)[0])))

static const struct cli_command run_cmd = { "run", "create one VM", "forkvm run [options]\n", NULL };

/* ---- cli_parse_size ---- */

static void assert_size(const char *text, unsigned long long want)
{
	unsigned long long v = 0xdeadbeef;
	int ret = cli_parse_size(text, &v);

	if (ret != 0 || v != want)
		fail_msg("cli_parse_size(\"%s\") = %d, %llu; want 0, %llu", text, ret, v, want);
}

static void assert_size_bad(const char *text)
{
	unsigned long long v = 0xdeadbeef;
	int ret = cli_parse_size(text, &v);

	if (ret != -EINVAL)
		fail_msg("cli_parse_size(\"%s\") = %d, %llu; want -EINVAL", text, ret, v);
	assert_int_equal(v, 0xdeadbeef); /* output untouched on error */
}

static void test_parse_size_suffixes(void **state)
{
	assert_size("256M", 256ULL << 20);
	assert_size("1G", 1ULL << 30);
	assert_size("4K", 4096);
	assert_size("4k", 4096);
	assert_size("2m", 2ULL << 20);
	assert_size("3g", 3ULL << 30);
	assert_size("1T", 1ULL << 40);
	assert_size("1GiB", 1ULL << 30);
	assert_size("512MiB", 512ULL << 20);
	assert_size("8KB", 8192);
	assert_size("1gb", 1ULL << 30);
}

static void test_parse_size_plain_and_hex(void **state)
{
	assert_size("4096", 4096);
	assert_size("0", 0);
	assert_size("0x1000", 0x1000);
	assert_size("0x10M", 16ULL << 20);
	assert_size("18446744073709551615", ~0ULL);
}

static void test_parse_size_rejects_garbage(void **state)
{
	assert_size_bad("");
	assert_size_bad(NULL);
	assert_size_bad("-1");
	assert_size_bad("-1M");
	assert_size_bad("12Q");
	assert_size_bad("M");
	assert_size_bad("1.5G");
	assert_size_bad("1G ");
	assert_size_bad("1GiBx");
	assert_size_bad("1MM");
	assert_size_bad("4B");	/* a bare 'B' needs a multiplier */
	assert_size_bad("4iB");
	assert_size_bad("0x");
}

static void test_parse_size_rejects_overflow(void **state)
{
	assert_size_bad("99999999999T");
	assert_size_bad("16777216T");	/* exactly 2^64 */
	assert_size("16777215T", 16777215ULL << 40);
	assert_size_bad("18446744073709551616");
	assert_size_bad("17179869184G");
}

static void test_parse_size_rejects_negative_after_whitespace(void **state)
{
	/* strtoull skips leading blanks and then accepts '-': " -1" must not become 2^64-1. */
	assert_size_bad(" -1");
	assert_size_bad("\t-4K");
}

/* ---- cli_parse_u64 ---- */

static void test_parse_u64_valid(void **state)
{
	unsigned long long v;

	assert_int_equal(cli_parse_u64("0", &v), 0);
	assert_int_equal(v, 0);
	assert_int_equal(cli_parse_u64("42", &v), 0);
	assert_int_equal(v, 42);
	assert_int_equal(cli_parse_u64("0x10", &v), 0);
	assert_int_equal(v, 16);
	assert_int_equal(cli_parse_u64("18446744073709551615", &v), 0);
	assert_int_equal(v, ~0ULL);
}

static void test_parse_u64_invalid(void **state)
{
	const char *bad[] = { "", "-1", "-0", "12a", "4K", "1.0", "18446744073709551616", "x" };
	unsigned long long v;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (cli_parse_u64(bad[i], &v) != -EINVAL)
			fail_msg("cli_parse_u64(\"%s\") accepted: %llu", bad[i], v);
	assert_int_equal(cli_parse_u64(NULL, &v), -EINVAL);
}

static void test_parse_u64_rejects_negative_after_whitespace(void **state)
{
	unsigned long long v = 0;
	int ret = cli_parse_u64(" -1", &v);

	if (ret != -EINVAL)
		fail_msg("cli_parse_u64(\" -1\") = %d, %llu; want -EINVAL", ret, v);
}

/* ---- cli_vm_socket ---- */

static void test_vm_socket_name_uses_run_dir_env(void **state)
{
	char path[512];

	setenv("FORKVM_RUN_DIR", "/tmp/forkvm-unit-dir", 1);
	assert_string_equal(cli_run_dir(), "/tmp/forkvm-unit-dir");
	assert_int_equal(cli_vm_socket("vm1", path, sizeof(path)), 0);
	assert_string_equal(path, "/tmp/forkvm-unit-dir/vm1.sock");
	unsetenv("FORKVM_RUN_DIR");
}

static void test_vm_socket_path_is_used_as_is(void **state)
{
	char path[512];

	setenv("FORKVM_RUN_DIR", "/tmp/forkvm-unit-dir", 1);
	assert_int_equal(cli_vm_socket("/srv/a.sock", path, sizeof(path)), 0);
	assert_string_equal(path, "/srv/a.sock");
	assert_int_equal(cli_vm_socket("./b.sock", path, sizeof(path)), 0);
	assert_string_equal(path, "./b.sock");
	unsetenv("FORKVM_RUN_DIR");
}

static void test_vm_socket_default_run_dir(void **state)
{
	char path[512], want[512];

	unsetenv("FORKVM_RUN_DIR");
	if (geteuid() == 0)
		snprintf(want, sizeof(want), "/run/forkvm/web.sock");
	else
		snprintf(want, sizeof(want), "/tmp/forkvm-%u/web.sock", (unsigned)geteuid());
	assert_int_equal(cli_vm_socket("web", path, sizeof(path)), 0);
	assert_string_equal(path, want);
	/* An empty variable means the default too. */
	setenv("FORKVM_RUN_DIR", "", 1);
	assert_int_equal(cli_vm_socket("web", path, sizeof(path)), 0);
	assert_string_equal(path, want);
	unsetenv("FORKVM_RUN_DIR");
}

static void test_vm_socket_rejects_empty(void **state)
{
	char path[64];

	assert_int_equal(cli_vm_socket("", path, sizeof(path)), -EINVAL);
	assert_int_equal(cli_vm_socket(NULL, path, sizeof(path)), -EINVAL);
}

static void test_vm_socket_too_long_for_buffer(void **state)
{
	char path[24];

	setenv("FORKVM_RUN_DIR", "/tmp/forkvm-unit-dir", 1);
	/* "/tmp/forkvm-unit-dir/ab.sock" is 28 bytes. */
	assert_int_equal(cli_vm_socket("ab", path, sizeof(path)), -ENAMETOOLONG);
	assert_int_equal(cli_vm_socket("/a/very/long/socket/path.sock", path, sizeof(path)),
			 -ENAMETOOLONG);
	/* Exactly fitting (23 chars + NUL) is fine. */
	assert_int_equal(cli_vm_socket("/abcdefghijklmnopqrstuv", path, sizeof(path)), 0);
	unsetenv("FORKVM_RUN_DIR");
}

static void test_vm_socket_long_run_dir_not_truncated(void **state)
{
	char dir[301], path[1024];
	int ret;

	dir[0] = '/';
	memset(dir + 1, 'd', sizeof(dir) - 2);
	dir[sizeof(dir) - 1] = '\0';
	setenv("FORKVM_RUN_DIR", dir, 1);
	ret = cli_vm_socket("vm", path, sizeof(path));
	unsetenv("FORKVM_RUN_DIR");
	/* Either the full path or an error: never a socket in a different (truncated) directory. */
	if (ret == 0 && (strncmp(path, dir, strlen(dir)) != 0 || strcmp(path + strlen(dir), "/vm.sock")))
		fail_msg("FORKVM_RUN_DIR of %zu bytes: cli_vm_socket returned 0 with a %zu-byte path "
			 "in another directory", strlen(dir), strlen(path));
}

/* ---- run_opts_parse ---- */

static char tmpdir[64];

static int run_setup(void **state)
{
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/forkvm-cli-test-XXXXXX");
	if (!mkdtemp(tmpdir))
		return -1;
	setenv("FORKVM_RUN_DIR", tmpdir, 1);
	return 0;
}

static int run_teardown(void **state)
{
	char sub[128];

	snprintf(sub, sizeof(sub), "%s/run", tmpdir);
	rmdir(sub);
	rmdir(tmpdir);
	unsetenv("FORKVM_RUN_DIR");
	return 0;
}

static void test_run_defaults(void **state)
{
	char *argv[] = { "run", "--socket", "/tmp/forkvm-unit.sock" };
	struct run_opts o;
	char want[64];

	assert_int_equal(run_opts_parse(&run_cmd, ARGC(argv), argv, &o), 0);
	assert_int_equal(o.vm.mem_size, 256ULL << 20);
	assert_int_equal(o.vm.nvcpus, 1);
	assert_int_equal(o.vm.mem.backing, GUEST_MEM_ANON);
	assert_false(o.vm.mem.no_hugepage);
	assert_int_equal(o.vm.cpuid_policy.nhidden, 0);
	assert_null(o.vm.kvm_path);
	assert_false(o.detach);
	assert_int_equal(o.ready_fd, -1);
	assert_string_equal(o.socket, "/tmp/forkvm-unit.sock");
	snprintf(want, sizeof(want), "vm-%d", (int)getpid());
	assert_string_equal(o.name, want);
}

static void test_run_good_args_fill_config(void **state)
{
	int fds[2];
	char fdtext[16];
	struct run_opts o;

	assert_int_equal(pipe(fds), 0);
	snprintf(fdtext, sizeof(fdtext), "%d", fds[1]);
	char *argv[] = { "run", "--mem", "1G", "--vcpus", "4", "--backing", "memfd",
			 "--no-hugepage", "--name", "web", "--socket", "/tmp/forkvm-unit-web.sock",
			 "--console", "/tmp/console.log", "--cpu-features", "-cx16,-xsave",
			 "--ready-fd", fdtext, "--kvm-device", "/dev/null" };

	assert_int_equal(run_opts_parse(&run_cmd, ARGC(argv), argv, &o), 0);
	assert_int_equal(o.vm.mem_size, 1ULL << 30);
	assert_int_equal(o.vm.nvcpus, 4);
	assert_int_equal(o.vm.mem.backing, GUEST_MEM_MEMFD);
	assert_true(o.vm.mem.no_hugepage);
	assert_string_equal(o.name, "web");
	assert_string_equal(o.socket, "/tmp/forkvm-unit-web.sock");
	assert_string_equal(o.vm.console_path, "/tmp/console.log");
	assert_int_equal(o.vm.cpuid_policy.nhidden, 2);
	assert_string_equal(o.vm.cpuid_policy.hidden[0]->name, "cx16");
	assert_string_equal(o.vm.cpuid_policy.hidden[1]->name, "xsave");
	assert_int_equal(o.ready_fd, fds[1]);
	assert_string_equal(o.vm.kvm_path, "/dev/null");
	assert_false(o.detach);
	close(fds[0]);
	close(fds[1]);
}

static void test_run_equals_syntax_and_limits(void **state)
{
	char *argv[] = { "run", "--mem=8M", "--vcpus=16", "--socket=/tmp/s.sock" };
	struct run_opts o;

	assert_int_equal(run_opts_parse(&run_cmd, ARGC(argv), argv, &o), 0);
	assert_int_equal(o.vm.mem_size, 8ULL << 20);
	assert_int_equal(o.vm.nvcpus, 16);
}

static void test_run_socket_from_name_and_run_dir(void **state)
{
	char dir[128], want[160];
	struct stat st;
	struct run_opts o;

	snprintf(dir, sizeof(dir), "%s/run", tmpdir);
	setenv("FORKVM_RUN_DIR", dir, 1);
	char *argv[] = { "run", "--name", "db" };
	assert_int_equal(run_opts_parse(&run_cmd, ARGC(argv), argv, &o), 0);
	snprintf(want, sizeof(want), "%s/db.sock", dir);
	assert_string_equal(o.socket, want);
	/* The run directory is created (private). */
	assert_int_equal(stat(dir, &st), 0);
	assert_true(S_ISDIR(st.st_mode));
	assert_int_equal(st.st_mode & 0777, 0700);
	setenv("FORKVM_RUN_DIR", tmpdir, 1);
}

static void test_run_detach_defaults_next_to_socket(void **state)
{
	char *argv[] = { "run", "--detach", "--socket", "/tmp/forkvm-unit-d.sock" };
	char *dash[] = { "run", "--detach", "--console", "-", "--socket", "/tmp/forkvm-unit-d.sock" };
	char *given[] = { "run", "--detach", "--console", "/tmp/c.txt", "--log", "/tmp/l.txt",
			  "--socket", "/tmp/forkvm-unit-d.sock" };
	struct run_opts o;

	assert_int_equal(run_opts_parse(&run_cmd, ARGC(argv), argv, &o), 0);
	assert_true(o.detach);
	/* A detached VM never writes to the caller's terminal: console and log go by the socket. */
	assert_string_equal(o.vm.console_path, "/tmp/forkvm-unit-d.sock.console");
	assert_string_equal(o.log_path, "/tmp/forkvm-unit-d.sock.log");
	assert_int_equal(run_opts_parse(&run_cmd, ARGC(dash), dash, &o), 0);
	assert_string_equal(o.vm.console_path, "/tmp/forkvm-unit-d.sock.console");
	assert_int_equal(run_opts_parse(&run_cmd, ARGC(given), given, &o), 0);
	assert_string_equal(o.vm.console_path, "/tmp/c.txt");
	assert_string_equal(o.log_path, "/tmp/l.txt");
}

static void expect_usage(int argc, char **argv)
{
	struct run_opts o;
	int ret = run_opts_parse(&run_cmd, argc, argv, &o);

	if (ret != CLI_EXIT_USAGE) {
		char line[512] = "";
		for (int i = 0; i < argc; i++) {
			strncat(line, argv[i], sizeof(line) - strlen(line) - 2);
			strcat(line, " ");
		}
		fail_msg("run_opts_parse(%s) = %d, want %d", line, ret, CLI_EXIT_USAGE);
	}
}

#define EXPECT_USAGE(...)                                    \
	do {                                                 \
		char *argv_[] = { "run", __VA_ARGS__ };      \
		expect_usage(ARGC(argv_), argv_);            \
	} while (0)

static void test_run_bad_mem(void **state)
{
	EXPECT_USAGE("--mem", "lots", "--socket", "/tmp/s.sock");
	EXPECT_USAGE("--mem", "4M", "--socket", "/tmp/s.sock");	      /* below 8M */
	EXPECT_USAGE("--mem", "8388609", "--socket", "/tmp/s.sock");  /* not 4K aligned */
	EXPECT_USAGE("--mem", "-1G", "--socket", "/tmp/s.sock");
	EXPECT_USAGE("--mem", "", "--socket", "/tmp/s.sock");
	EXPECT_USAGE("--socket", "/tmp/s.sock", "--mem");	      /* missing argument */
}

static void test_run_bad_vcpus(void **state)
{
	EXPECT_USAGE("--vcpus", "0", "--socket", "/tmp/s.sock");
	EXPECT_USAGE("--vcpus", "17", "--socket", "/tmp/s.sock");
	EXPECT_USAGE("--vcpus", "two", "--socket", "/tmp/s.sock");
	EXPECT_USAGE("--vcpus", "-1", "--socket", "/tmp/s.sock");
	EXPECT_USAGE("--vcpus", "4294967297", "--socket", "/tmp/s.sock");
}

static void test_run_bad_backing(void **state)
{
	EXPECT_USAGE("--backing", "bogus", "--socket", "/tmp/s.sock");
	/* Known backings that `run` cannot create. */
	EXPECT_USAGE("--backing", "file", "--socket", "/tmp/s.sock");
	EXPECT_USAGE("--backing", "uffd", "--socket", "/tmp/s.sock");
}

static void test_run_unexpected_positional(void **state)
{
	EXPECT_USAGE("--socket", "/tmp/s.sock", "extra");
	EXPECT_USAGE("extra", "--socket", "/tmp/s.sock");
}

static void test_run_unknown_option(void **state)
{
	EXPECT_USAGE("--warp", "--socket", "/tmp/s.sock");
	EXPECT_USAGE("-x", "--socket", "/tmp/s.sock");
}

static void test_run_bad_name_socket_features_fd(void **state)
{
	char longname[80], longsock[120];

	memset(longname, 'n', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	longsock[0] = '/';
	memset(longsock + 1, 's', sizeof(longsock) - 2);
	longsock[sizeof(longsock) - 1] = '\0';
	EXPECT_USAGE("--name", "a/b", "--socket", "/tmp/s.sock");
	EXPECT_USAGE("--name", "", "--socket", "/tmp/s.sock");
	EXPECT_USAGE("--name", longname, "--socket", "/tmp/s.sock");
	EXPECT_USAGE("--socket", longsock);
	EXPECT_USAGE("--cpu-features", "-warp", "--socket", "/tmp/s.sock");
	EXPECT_USAGE("--cpu-features", "+cx16", "--socket", "/tmp/s.sock");
	EXPECT_USAGE("--ready-fd", "999", "--socket", "/tmp/s.sock");
	EXPECT_USAGE("--ready-fd", "-1", "--socket", "/tmp/s.sock");
	EXPECT_USAGE("--ready-fd", "abc", "--socket", "/tmp/s.sock");
}

static void test_run_derived_socket_too_long(void **state)
{
	char padded[128];

	/* An existing run dir padded with "/." to 100+ bytes: RUN_DIR/NAME.sock exceeds sun_path. */
	snprintf(padded, sizeof(padded), "%s", tmpdir);
	while (strlen(padded) < 100)
		strcat(padded, "/.");
	setenv("FORKVM_RUN_DIR", padded, 1);
	EXPECT_USAGE("--name", "twenty-characters-xx");
	setenv("FORKVM_RUN_DIR", tmpdir, 1);
}

static void test_run_parses_repeatedly(void **state)
{
	char *a[] = { "run", "--vcpus", "3", "--socket", "/tmp/a.sock" };
	char *b[] = { "run", "--socket", "/tmp/b.sock", "--mem", "64M" };
	struct run_opts o;

	assert_int_equal(run_opts_parse(&run_cmd, ARGC(a), a, &o), 0);
	assert_int_equal(o.vm.nvcpus, 3);
	assert_int_equal(run_opts_parse(&run_cmd, ARGC(b), b, &o), 0);
	/* Nothing carries over from the previous parse. */
	assert_int_equal(o.vm.nvcpus, 1);
	assert_int_equal(o.vm.mem_size, 64ULL << 20);
	assert_string_equal(o.socket, "/tmp/b.sock");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_size_suffixes),
		cmocka_unit_test(test_parse_size_plain_and_hex),
		cmocka_unit_test(test_parse_size_rejects_garbage),
		cmocka_unit_test(test_parse_size_rejects_overflow),
		cmocka_unit_test(test_parse_size_rejects_negative_after_whitespace),
		cmocka_unit_test(test_parse_u64_valid),
		cmocka_unit_test(test_parse_u64_invalid),
		cmocka_unit_test(test_parse_u64_rejects_negative_after_whitespace),
		cmocka_unit_test(test_vm_socket_name_uses_run_dir_env),
		cmocka_unit_test(test_vm_socket_path_is_used_as_is),
		cmocka_unit_test(test_vm_socket_default_run_dir),
		cmocka_unit_test(test_vm_socket_rejects_empty),
		cmocka_unit_test(test_vm_socket_too_long_for_buffer),
		cmocka_unit_test(test_vm_socket_long_run_dir_not_truncated),
		cmocka_unit_test_setup_teardown(test_run_defaults, run_setup, run_teardown),
		cmocka_unit_test_setup_teardown(test_run_good_args_fill_config, run_setup, run_teardown),
		cmocka_unit_test_setup_teardown(test_run_equals_syntax_and_limits, run_setup, run_teardown),
		cmocka_unit_test_setup_teardown(test_run_socket_from_name_and_run_dir, run_setup,
						run_teardown),
		cmocka_unit_test_setup_teardown(test_run_detach_defaults_next_to_socket, run_setup,
						run_teardown),
		cmocka_unit_test_setup_teardown(test_run_bad_mem, run_setup, run_teardown),
		cmocka_unit_test_setup_teardown(test_run_bad_vcpus, run_setup, run_teardown),
		cmocka_unit_test_setup_teardown(test_run_bad_backing, run_setup, run_teardown),
		cmocka_unit_test_setup_teardown(test_run_unexpected_positional, run_setup, run_teardown),
		cmocka_unit_test_setup_teardown(test_run_unknown_option, run_setup, run_teardown),
		cmocka_unit_test_setup_teardown(test_run_bad_name_socket_features_fd, run_setup,
						run_teardown),
		cmocka_unit_test_setup_teardown(test_run_derived_socket_too_long, run_setup, run_teardown),
		cmocka_unit_test_setup_teardown(test_run_parses_repeatedly, run_setup, run_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
