/* `forkvm doctor`, guest RAM: userfaultfd and its features (src/mem/uffd_api.c's probe),
 * hugetlb pages, the THP mode, and memfd_create. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "doctor/doctor_impl.h"
#include "mem/uffd_api.h"

#define UFFD_DEV "/dev/userfaultfd"
#define UFFD_SYSCTL "/proc/sys/vm/unprivileged_userfaultfd"
#define FEATURE_PREFIX "UFFD_FEATURE_"
#define THP_ENABLED "/sys/kernel/mm/transparent_hugepage/enabled"
#define HUGE_2M_DIR "/sys/kernel/mm/hugepages/hugepages-2048kB"
#ifndef MFD_HUGE_2MB
#define MFD_HUGE_2MB (21U << 26) /* as src/mem/backend_hugetlb.c asks for them */
#endif

/* "A B C" for the feature bits of set, without the UFFD_FEATURE_ prefix. */
static void feature_names(uint64_t set, char *buf, size_t len)
{
	size_t at = 0;
	int n;

	buf[0] = '\0';
	for (int b = 0; b < 64 && at < len; b++) {
		uint64_t bit = 1ULL << b;
		const char *name = uffd_feature_name(bit);
		if (!(set & bit))
			continue;
		if (!strncmp(name, FEATURE_PREFIX, strlen(FEATURE_PREFIX)))
			n = snprintf(buf + at, len - at, "%s%s", at ? " " : "",
				     name + strlen(FEATURE_PREFIX));
		else
			n = snprintf(buf + at, len - at, "%sbit%d", at ? " " : "", b);
		at += n > 0 ? (size_t)n : len;
	}
}

/* The /dev/userfaultfd node and the sysctl, as facts (forkvm itself uses the syscall). */
static void uffd_facts(struct doctor_result *res)
{
	struct stat st;
	char *text = NULL;
	int err;

	if (stat(UFFD_DEV, &st) == 0)
		doctor_found(res, UFFD_DEV " present (mode %04o)", (unsigned)(st.st_mode & 07777));
	else if (errno == ENOENT)
		doctor_found(res, "no " UFFD_DEV " (forkvm uses the syscall)");
	else
		doctor_probe_error(res, UFFD_DEV, -errno);
	err = doctor_read_file(UFFD_SYSCTL, 64, &text);
	if (!err)
		doctor_found(res, "vm.unprivileged_userfaultfd=%.*s", (int)strcspn(text, "\n"), text);
	else if (err == -ENOENT)
		doctor_found(res, "no vm.unprivileged_userfaultfd sysctl");
	else
		doctor_probe_error(res, UFFD_SYSCTL, err);
	free(text);
}

/* The probe failed: why, and what fixes it. */
static void uffd_unavailable(struct doctor_result *res, int err)
{
	const char *mask = getenv(UFFD_FEATURES_MASK_ENV);

	doctor_raise(res, DOCTOR_FAIL);
	if (err == -EINVAL && mask && *mask) {
		doctor_found(res, UFFD_FEATURES_MASK_ENV "='%s' is not a feature mask", mask);
		doctor_fix(res, "unset " UFFD_FEATURES_MASK_ENV " (or give a mask, e.g. 0x1fff)");
		return;
	}
	doctor_found(res, "userfaultfd(2) for uid %u: %s: restore --backing uffd and live "
		     "branches cannot work", (unsigned)geteuid(), strerror(-err));
	if (err == -EPERM || err == -EACCES)
		doctor_fix(res, "sysctl -w vm.unprivileged_userfaultfd=1, or run forkvm as root");
	else if (err == -ENOSYS)
		doctor_fix(res, "a host kernel with CONFIG_USERFAULTFD=y (Linux 4.11+)");
	else
		doctor_fix(res, "check userfaultfd(2) on this host (strace forkvm doctor)");
}

/* A user of userfaultfd (what) that needs need: fail when the kernel or the mask lacks it. */
static void uffd_need(struct doctor_result *res, uint64_t offered, uint64_t hidden, uint64_t need,
		      const char *what)
{
	uint64_t missing = need & ~offered;
	const char *since = "?";
	char names[512] = "";
	size_t at = 0;
	int n;

	if (!missing)
		return;
	for (int b = 0; b < 64 && at < sizeof(names); b++) {
		uint64_t bit = 1ULL << b;
		if (!(missing & bit))
			continue;
		since = uffd_feature_since(bit); /* bits grow with the kernel: the last is newest */
		n = snprintf(names + at, sizeof(names) - at, "%s%s (Linux %s+)", at ? ", " : "",
			     uffd_feature_name(bit), since);
		at += n > 0 ? (size_t)n : sizeof(names);
	}
	doctor_raise(res, DOCTOR_FAIL);
	doctor_found(res, "%s need %s, which %s", what, names, missing & hidden ?
		     UFFD_FEATURES_MASK_ENV " hides" : "this kernel does not offer");
	if (missing & hidden)
		doctor_fix(res, "unset " UFFD_FEATURES_MASK_ENV);
	else
		doctor_fix(res, "a host kernel of Linux %s or newer", since);
}

DOCTOR_CHECK(doctor_check_uffd)
{
	uint64_t offered = 0, hidden = 0;
	char names[1024];
	int err;

	uffd_facts(res);
	err = uffd_probe_features_quiet(&offered, &hidden);
	if (err) {
		uffd_unavailable(res, err);
		return 0;
	}
	feature_names(offered, names, sizeof(names));
	doctor_found(res, "userfaultfd(2) works; features: %s", names[0] ? names : "none");
	if (hidden) {
		feature_names(hidden, names, sizeof(names));
		doctor_found(res, UFFD_FEATURES_MASK_ENV " hides: %s", names);
	}
	uffd_need(res, offered, hidden, UFFD_NEED_BACKING, "restores with --backing uffd");
	uffd_need(res, offered, hidden, UFFD_NEED_LIVE, "live branches");
	return 0;
}

DOCTOR_CHECK(doctor_check_uffd_wp)
{
	uint64_t offered = 0, hidden = 0;
	const char *since = uffd_feature_since(UFFD_WANT_LIVE);

	if (uffd_probe_features_quiet(&offered, &hidden)) {
		doctor_raise(res, DOCTOR_WARN);
		doctor_found(res, "not checked: userfaultfd is unavailable");
		doctor_fix(res, "make userfaultfd usable first (the userfaultfd check says how)");
	} else if (offered & UFFD_WANT_LIVE) {
		doctor_found(res, "%s present: live branches write-protect guest RAM as it is",
			     uffd_feature_name(UFFD_WANT_LIVE));
	} else {
		doctor_raise(res, DOCTOR_WARN);
		doctor_found(res, "%s (Linux %s+) %s: live branches fall back to making all guest "
			     "RAM present before write-protecting it (slower, more memory)",
			     uffd_feature_name(UFFD_WANT_LIVE), since,
			     hidden & UFFD_WANT_LIVE ? "hidden by " UFFD_FEATURES_MASK_ENV : "absent");
		if (hidden & UFFD_WANT_LIVE)
			doctor_fix(res, "unset " UFFD_FEATURES_MASK_ENV);
		else
			doctor_fix(res, "a host kernel of Linux %s or newer", since);
	}
	return 0;
}

/* A sysfs file holding one number. */
static int read_u64(const char *path, uint64_t *v)
{
	char *text = NULL, *end;
	int err = doctor_read_file(path, 64, &text);

	if (!err) {
		errno = 0;
		*v = strtoull(text, &end, 10);
		if (errno || end == text || (*end && *end != '\n'))
			err = -EINVAL;
	}
	free(text);
	return err;
}

/* Free and total 2 MiB pages: /proc/meminfo when 2 MiB is the default size, else sysfs.
 * A probe error is reported in res; a kernel without hugetlb is -ENOPROTOOPT, unreported. */
static int huge_2m(uint64_t *free_pages, uint64_t *total, struct doctor_result *res)
{
	const char *path = "/proc/meminfo";
	uint64_t size_kb = 0;
	char *text = NULL;
	int err;

	err = doctor_read_file(path, 1 << 16, &text);
	if (!err) {
		err = doctor_meminfo_value(text, "Hugepagesize", &size_kb);
		if (err == -ENOENT) {
			err = -ENOPROTOOPT;
			goto out;
		}
	}
	if (!err && size_kb == 2048) {
		err = doctor_meminfo_value(text, "HugePages_Free", free_pages);
		if (!err)
			err = doctor_meminfo_value(text, "HugePages_Total", total);
	} else if (!err) {
		path = HUGE_2M_DIR "/free_hugepages";
		err = read_u64(path, free_pages);
		if (!err) {
			path = HUGE_2M_DIR "/nr_hugepages";
			err = read_u64(path, total);
		}
	}
	if (err)
		doctor_probe_error(res, path, err);
out:
	free(text);
	return err;
}

DOCTOR_CHECK(doctor_check_hugepages)
{
	uint64_t free_pages = 0, total = 0;
	int fd, err = huge_2m(&free_pages, &total, res);

	if (err == -ENOPROTOOPT) {
		doctor_raise(res, DOCTOR_WARN);
		doctor_found(res, "no hugetlb in this kernel (no Hugepagesize in /proc/meminfo)");
		doctor_fix(res, "a host kernel with CONFIG_HUGETLBFS for --backing hugetlb");
	}
	if (err)
		return 0;
	fd = memfd_create("forkvm-doctor", MFD_CLOEXEC | MFD_HUGETLB | MFD_HUGE_2MB);
	if (fd < 0) {
		doctor_raise(res, DOCTOR_WARN);
		doctor_found(res, "memfd_create(MFD_HUGETLB | MFD_HUGE_2MB): %s", strerror(errno));
		doctor_fix(res, "a host kernel with CONFIG_HUGETLBFS for --backing hugetlb");
	} else {
		close(fd);
	}
	doctor_found(res, "%llu of %llu 2 MiB hugetlb pages free (%llu MiB)",
		     (unsigned long long)free_pages, (unsigned long long)total,
		     (unsigned long long)free_pages * 2);
	if (!free_pages) {
		doctor_raise(res, DOCTOR_WARN);
		doctor_found(res, "--backing hugetlb cannot allocate guest RAM");
		doctor_fix(res, "echo 512 > " HUGE_2M_DIR "/nr_hugepages (1 GiB; size it to the "
			   "hugetlb VMs' RAM)");
	}
	return 0;
}

DOCTOR_CHECK(doctor_check_thp)
{
	char *text = NULL, mode[32];
	int err = doctor_read_file(THP_ENABLED, 256, &text);

	if (err == -ENOENT) {
		doctor_raise(res, DOCTOR_WARN);
		doctor_found(res, "no " THP_ENABLED ": anon guest RAM gets 4 KiB pages only");
		doctor_fix(res, "a host kernel with CONFIG_TRANSPARENT_HUGEPAGE");
		goto out;
	}
	if (!err)
		err = doctor_thp_mode(text, mode, sizeof(mode));
	if (err) {
		doctor_probe_error(res, THP_ENABLED, err);
		goto out;
	}
	if (!strcmp(mode, "never")) {
		doctor_raise(res, DOCTOR_WARN);
		doctor_found(res, "THP mode never: anon guest RAM gets 4 KiB pages only");
		doctor_fix(res, "echo madvise > " THP_ENABLED);
	} else {
		doctor_found(res, "THP mode %s: anon guest RAM gets huge pages (MADV_HUGEPAGE)",
			     mode);
	}
out:
	free(text);
	return 0;
}

DOCTOR_CHECK(doctor_check_memfd)
{
	const size_t len = 2u << 20;
	const char *step = "memfd_create";
	void *map = MAP_FAILED;
	int fd, err = 0;

	fd = memfd_create("forkvm-doctor", MFD_CLOEXEC);
	if (fd < 0) {
		err = -errno;
		goto out;
	}
	step = "ftruncate";
	if (ftruncate(fd, (off_t)len) < 0) {
		err = -errno;
		goto out;
	}
	step = "mmap MAP_SHARED";
	map = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (map == MAP_FAILED) {
		err = -errno;
		goto out;
	}
	((volatile char *)map)[len - 1] = 1;
out:
	if (map != MAP_FAILED)
		munmap(map, len);
	if (fd >= 0)
		close(fd);
	if (err) {
		doctor_raise(res, DOCTOR_FAIL);
		doctor_found(res, "%s: %s: the memfd backing, restores and cow branches cannot "
			     "work", step, strerror(-err));
		doctor_fix(res, "a host kernel with memfd_create and shmem (Linux 3.17+)");
	} else {
		doctor_found(res, "memfd_create, ftruncate and a shared mapping work");
	}
	return 0;
}
