/* forkvm doctor: the parsers of /proc/meminfo, THP mode, /proc/cpuinfo flags, cgroup.controllers
 * and image manifests on fixture strings; the result helpers and the check table. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "doctor/doctor.h"

static const char meminfo[] =
	"MemTotal:       131916868 kB\n"
	"MemFree:        101234568 kB\n"
	"AnonHugePages:   2424832 kB\n"
	"HugePages_Total:     264\n"
	"HugePages_Free:      200\n"
	"HugePages_Rsvd:        0\n"
	"Hugepagesize:       2048 kB\n"
	"Hugetlb:          540672 kB";	/* no newline at the end */

static void test_meminfo(void **state)
{
	uint64_t v = 0;

	assert_int_equal(doctor_meminfo_value(meminfo, "HugePages_Free", &v), 0);
	assert_int_equal(v, 200);
	assert_int_equal(doctor_meminfo_value(meminfo, "HugePages_Total", &v), 0);
	assert_int_equal(v, 264);
	assert_int_equal(doctor_meminfo_value(meminfo, "Hugepagesize", &v), 0);
	assert_int_equal(v, 2048);
	assert_int_equal(doctor_meminfo_value(meminfo, "MemTotal", &v), 0);
	assert_int_equal(v, 131916868ULL);
	/* The last line, without its newline. */
	assert_int_equal(doctor_meminfo_value(meminfo, "Hugetlb", &v), 0);
	assert_int_equal(v, 540672);
	/* A key is a whole name before ':', not a prefix of one. */
	assert_int_equal(doctor_meminfo_value(meminfo, "HugePages", &v), -ENOENT);
	assert_int_equal(doctor_meminfo_value(meminfo, "Mem", &v), -ENOENT);
	assert_int_equal(doctor_meminfo_value("", "MemTotal", &v), -ENOENT);
}

static void test_meminfo_malformed(void **state)
{
	uint64_t v = 7;

	assert_int_equal(doctor_meminfo_value("HugePages_Free: x\n", "HugePages_Free", &v), -EINVAL);
	assert_int_equal(doctor_meminfo_value("HugePages_Free:\n", "HugePages_Free", &v), -EINVAL);
	assert_int_equal(doctor_meminfo_value("HugePages_Free: -1\n", "HugePages_Free", &v),
			 -EINVAL);
	assert_int_equal(doctor_meminfo_value("HugePages_Free: 12x\n", "HugePages_Free", &v),
			 -EINVAL);
	assert_int_equal(doctor_meminfo_value("HugePages_Free: 99999999999999999999999\n",
					      "HugePages_Free", &v), -EINVAL);
	assert_int_equal(v, 7); /* untouched on errors */
	assert_int_equal(doctor_meminfo_value("HugePages_Free:\t5\n", "HugePages_Free", &v), 0);
	assert_int_equal(v, 5);
}

static void test_thp_mode(void **state)
{
	char mode[16];

	assert_int_equal(doctor_thp_mode("always [madvise] never\n", mode, sizeof(mode)), 0);
	assert_string_equal(mode, "madvise");
	assert_int_equal(doctor_thp_mode("[always] madvise never\n", mode, sizeof(mode)), 0);
	assert_string_equal(mode, "always");
	assert_int_equal(doctor_thp_mode("always madvise [never]", mode, sizeof(mode)), 0);
	assert_string_equal(mode, "never");
	/* Newer kernels: "always inherit madvise [never]". */
	assert_int_equal(doctor_thp_mode("always inherit [madvise] never\n", mode, sizeof(mode)),
			 0);
	assert_string_equal(mode, "madvise");
	assert_int_equal(doctor_thp_mode("always madvise never\n", mode, sizeof(mode)), -EINVAL);
	assert_int_equal(doctor_thp_mode("[] never\n", mode, sizeof(mode)), -EINVAL);
	assert_int_equal(doctor_thp_mode("[madvise never\n", mode, sizeof(mode)), -EINVAL);
	assert_int_equal(doctor_thp_mode("[mad vise]\n", mode, sizeof(mode)), -EINVAL);
	assert_int_equal(doctor_thp_mode("", mode, sizeof(mode)), -EINVAL);
	/* Does not fit: refused, not cut. */
	assert_int_equal(doctor_thp_mode("[madvise]", mode, 7), -EINVAL);
	assert_int_equal(doctor_thp_mode("[madvise]", mode, 8), 0);
}

static const char cpuinfo_intel_vm[] =
	"processor\t: 0\n"
	"vendor_id\t: GenuineIntel\n"
	"model name\t: Intel(R) Xeon(R) Processor\n"
	"flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic vmx ssse3 hypervisor lahf_lm\n"
	"vmx flags\t: vnmi preemption_timer invvpid ept_x_only\n"
	"bugs\t\t: spectre_v1\n"
	"\n"
	"processor\t: 1\n"
	"flags\t\t: fpu svm\n";

static const char cpuinfo_amd[] =
	"processor\t: 0\n"
	"vendor_id\t: AuthenticAMD\n"
	"flags\t\t: fpu vme de pse svm extapic cr8_legacy abm sse4a\n";

static void test_cpuinfo_flags(void **state)
{
	unsigned f = 99;

	/* The first processor's flags line only; "vmx flags" is not it. */
	assert_int_equal(doctor_cpuinfo_flags(cpuinfo_intel_vm, &f), 0);
	assert_int_equal(f, DOCTOR_CPU_VMX | DOCTOR_CPU_HYPERVISOR);
	assert_int_equal(doctor_cpuinfo_flags(cpuinfo_amd, &f), 0);
	assert_int_equal(f, DOCTOR_CPU_SVM);
	/* Whole words: svm_lock, vmxe and nonhypervisor are other flags. */
	assert_int_equal(doctor_cpuinfo_flags("flags : fpu svm_lock vmxe nonhypervisor\n", &f), 0);
	assert_int_equal(f, 0);
	/* The last line without a newline; PVM hosts show neither VMX nor SVM to the guest. */
	assert_int_equal(doctor_cpuinfo_flags("flags\t: fpu hypervisor", &f), 0);
	assert_int_equal(f, DOCTOR_CPU_HYPERVISOR);
	assert_int_equal(doctor_cpuinfo_flags("processor : 0\nvendor_id : X\n", &f), -ENOENT);
	assert_int_equal(doctor_cpuinfo_flags("", &f), -ENOENT);
	assert_int_equal(doctor_cpuinfo_flags("flagsxyz : vmx\n", &f), -ENOENT);
	assert_int_equal(doctor_cpuinfo_flags("flags vmx\n", &f), -EINVAL);
}

static void test_cgroup_controllers(void **state)
{
	static const char *const want[] = { "memory", "cpu", "pids" };

	assert_int_equal(doctor_words_present("cpuset cpu io memory hugetlb pids rdma misc\n",
					      want, 3), 7);
	/* This host's hybrid layout: cgroup2 holds hugetlb only. */
	assert_int_equal(doctor_words_present("hugetlb\n", want, 3), 0);
	/* cpuset is not cpu. */
	assert_int_equal(doctor_words_present("cpuset memory\n", want, 3), 1);
	assert_int_equal(doctor_words_present("pids", want, 3), 4);
	assert_int_equal(doctor_words_present("", want, 3), 0);
	assert_int_equal(doctor_words_present("\n", want, 3), 0);
	assert_int_equal(doctor_words_present("  cpu\tpids  \n", want, 3), 6);
}

static void test_manifest(void **state)
{
	char kver[32];

	assert_int_equal(doctor_manifest_has_module(
		"{\"kernel_version\": \"6.12.48+deb12-cloud-amd64\", \"modules\": [\"virtio_mmio\","
		" \"virtio_blk\", \"ext4\"]}", "virtio_blk", kver, sizeof(kver)), 1);
	assert_string_equal(kver, "6.12.48+deb12-cloud-amd64");
	/* An image built before root disks. */
	assert_int_equal(doctor_manifest_has_module(
		"{\"kernel_version\": \"6.1.0-56-cloud-amd64\", \"modules\": [\"virtio_mmio\","
		" \"vsock\"]}", "virtio_blk", kver, sizeof(kver)), 0);
	assert_string_equal(kver, "6.1.0-56-cloud-amd64");
	assert_int_equal(doctor_manifest_has_module("{\"modules\": []}", "virtio_blk", kver,
						    sizeof(kver)), 0);
	assert_string_equal(kver, "");
	assert_int_equal(doctor_manifest_has_module("{\"modules\": [1, null, \"virtio_blk\"]}",
						    "virtio_blk", NULL, 0), 1);
	assert_int_equal(doctor_manifest_has_module("{\"modules\": \"virtio_blk\"}", "virtio_blk",
						    kver, sizeof(kver)), -EINVAL);
	assert_int_equal(doctor_manifest_has_module("[\"virtio_blk\"]", "virtio_blk", kver,
						    sizeof(kver)), -EINVAL);
	assert_int_equal(doctor_manifest_has_module("not json", "virtio_blk", kver, sizeof(kver)),
			 -EINVAL);
	assert_int_equal(doctor_manifest_has_module("", "virtio_blk", kver, sizeof(kver)), -EINVAL);
}

static void test_result_helpers(void **state)
{
	struct doctor_result r = { 0 };

	doctor_found(&r, "one %d", 1);
	doctor_found(&r, "two");
	assert_string_equal(r.found, "one 1; two");
	doctor_fix(&r, "unset X");
	doctor_fix(&r, "unset X");	/* one remedy for two findings: named once */
	doctor_fix(&r, "modprobe tun");
	assert_string_equal(r.fix, "unset X; modprobe tun");
	assert_int_equal(r.status, DOCTOR_OK);
	doctor_raise(&r, DOCTOR_FAIL);
	doctor_raise(&r, DOCTOR_WARN);	/* never lowered */
	assert_int_equal(r.status, DOCTOR_FAIL);
	assert_string_equal(doctor_status_name(DOCTOR_OK), "ok");
	assert_string_equal(doctor_status_name(DOCTOR_WARN), "warn");
	assert_string_equal(doctor_status_name(DOCTOR_FAIL), "fail");
}

static void test_result_overflow(void **state)
{
	struct doctor_result r = { 0 };
	char big[4096];

	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	doctor_found(&r, "%s", big);
	assert_int_equal(strlen(r.found), sizeof(r.found) - 1);
	assert_string_equal(r.found + sizeof(r.found) - 4, "...");
	doctor_found(&r, "more");	/* full: ignored, still terminated */
	assert_int_equal(strlen(r.found), sizeof(r.found) - 1);
}

static void test_probe_error(void **state)
{
	struct doctor_result r = { 0 };

	doctor_probe_error(&r, "/proc/cpuinfo", -EACCES);
	assert_int_equal(r.status, DOCTOR_WARN);
	assert_non_null(strstr(r.found, "/proc/cpuinfo"));
	assert_non_null(strstr(r.found, "EACCES"));
	assert_non_null(strstr(r.fix, "/proc/cpuinfo"));
}

static void test_read_file(void **state)
{
	char path[256], *text = NULL;
	FILE *f;

	snprintf(path, sizeof(path), "%s/forkvm-doctor-%d", getenv("TMPDIR") ?: "/tmp",
		 (int)getpid());
	f = fopen(path, "w");
	assert_non_null(f);
	assert_int_equal(fputs("always [madvise] never\n", f) >= 0, 1);
	assert_int_equal(fclose(f), 0);
	assert_int_equal(doctor_read_file(path, 1024, &text), 0);
	assert_string_equal(text, "always [madvise] never\n");
	free(text);
	assert_int_equal(doctor_read_file(path, 6, &text), 0); /* cut at max */
	assert_string_equal(text, "always");
	free(text);
	unlink(path);
	assert_int_equal(doctor_read_file(path, 1024, &text), -ENOENT);
	assert_null(text);
}

static void test_table(void **state)
{
	assert_true(doctor_checks_count > 10);
	for (size_t i = 0; i < doctor_checks_count; i++) {
		assert_non_null(doctor_checks[i].name);
		assert_non_null(doctor_checks[i].run);
		for (size_t j = 0; j < i; j++)
			assert_string_not_equal(doctor_checks[i].name, doctor_checks[j].name);
	}
	/* The daemon check comes last: a host is checked before the service on it. */
	assert_string_equal(doctor_checks[doctor_checks_count - 1].name, "daemon");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_meminfo),
		cmocka_unit_test(test_meminfo_malformed),
		cmocka_unit_test(test_thp_mode),
		cmocka_unit_test(test_cpuinfo_flags),
		cmocka_unit_test(test_cgroup_controllers),
		cmocka_unit_test(test_manifest),
		cmocka_unit_test(test_result_helpers),
		cmocka_unit_test(test_result_overflow),
		cmocka_unit_test(test_probe_error),
		cmocka_unit_test(test_read_file),
		cmocka_unit_test(test_table),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
