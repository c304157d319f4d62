/* `forkvm doctor`: the table of checks, running one, and the helpers every check shares. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "doctor/doctor_impl.h"
#include "util/fileio.h"

/* In the order they print: KVM first, then memory, confinement, disks, images. */
const struct doctor_check doctor_checks[] = {
	{ "kvm", doctor_check_kvm },
	{ "kvm-caps", doctor_check_kvm_caps },
	{ "kvm-caps-optional", doctor_check_kvm_optional },
	{ "userfaultfd", doctor_check_uffd },
	{ "uffd-wp-unpopulated", doctor_check_uffd_wp },
	{ "hugepages", doctor_check_hugepages },
	{ "thp", doctor_check_thp },
	{ "memfd", doctor_check_memfd },
	{ "cgroup", doctor_check_cgroup },
	{ "tun", doctor_check_tun },
	{ "seccomp", doctor_check_seccomp },
	{ "jail", doctor_check_jail },
	{ "disk-run-dir", doctor_check_disk_run },
	{ "disk-snapshots", doctor_check_disk_snapshots },
	{ "disk-cache", doctor_check_disk_cache },
	{ "image", doctor_check_image },
	{ "rootfs", doctor_check_rootfs },
	{ "image-tools", doctor_check_tools },
	{ "daemon", doctor_check_daemon },
};
const size_t doctor_checks_count = sizeof(doctor_checks) / sizeof(doctor_checks[0]);

const char *doctor_status_name(enum doctor_status status)
{
	switch (status) {
	case DOCTOR_OK: return "ok";
	case DOCTOR_WARN: return "warn";
	case DOCTOR_FAIL: return "fail";
	}
	return "?";
}

/* Append "; " (when buf has text) and the formatted text; a full buffer ends in "...". */
static void append(char *buf, size_t size, const char *fmt, va_list ap)
{
	size_t at = strlen(buf);
	int n;

	if (at && at + 2 < size) {
		memcpy(buf + at, "; ", 3);
		at += 2;
	}
	if (at + 1 >= size)
		return;
	n = vsnprintf(buf + at, size - at, fmt, ap);
	if (n >= 0 && (size_t)n >= size - at && size > 4)
		memcpy(buf + size - 4, "...", 4);
}

/* append() with the arguments here. */
static void __attribute__((format(printf, 3, 4))) append_fmt(char *buf, size_t size,
							       const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	append(buf, size, fmt, ap);
	va_end(ap);
}

void doctor_found(struct doctor_result *res, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	append(res->found, sizeof(res->found), fmt, ap);
	va_end(ap);
}

void doctor_fix(struct doctor_result *res, const char *fmt, ...)
{
	char fix[sizeof(res->fix)] = "";
	va_list ap;

	va_start(ap, fmt);
	append(fix, sizeof(fix), fmt, ap);
	va_end(ap);
	/* Two findings with one remedy (a mask that hides several features) name it once. */
	if (!strstr(res->fix, fix))
		append_fmt(res->fix, sizeof(res->fix), "%s", fix);
}

void doctor_raise(struct doctor_result *res, enum doctor_status status)
{
	if (status > res->status)
		res->status = status;
}

void doctor_probe_error(struct doctor_result *res, const char *path, int err)
{
	const char *name = strerrorname_np(-err);

	doctor_raise(res, DOCTOR_WARN);
	doctor_found(res, "cannot probe %s: %s (%s)", path, name ? name : "errno", strerror(-err));
	if (err == -EACCES || err == -EPERM)
		doctor_fix(res, "make %s readable to this user (or run forkvm doctor as root)",
			   path);
	else
		doctor_fix(res, "look at %s by hand: this kernel's format or error is unexpected",
			   path);
}

void doctor_run(const struct doctor_check *check, const struct doctor_ctx *ctx,
		struct doctor_result *res)
{
	int err;

	memset(res, 0, sizeof(*res));
	err = check->run(ctx, res);
	if (err) {
		const char *name = strerrorname_np(-err);

		doctor_raise(res, DOCTOR_WARN);
		doctor_found(res, "the check itself failed: %s (%s)", name ? name : "errno",
			     strerror(-err));
		doctor_fix(res, "run forkvm doctor again; if it persists, check this host's %s "
			   "by hand (docs/DOCTOR.md)", check->name);
	}
}

int doctor_read_file(const char *path, size_t max, char **text)
{
	size_t len;

	/* /proc and /sys files report no true size: the first max bytes, to EOF. */
	return file_read(path, max, FILE_UPTO_MAX, (uint8_t **)text, &len, NULL);
}

int doctor_module_present(const char *name, bool *present)
{
	char path[256];
	struct stat st;

	*present = false;
	if (snprintf(path, sizeof(path), "/sys/module/%s", name) >= (int)sizeof(path))
		return -ENAMETOOLONG;
	if (stat(path, &st) == 0) {
		*present = S_ISDIR(st.st_mode);
		return 0;
	}
	return errno == ENOENT ? 0 : -errno;
}
