/* `forkvm doctor`, KVM: /dev/kvm and its API version, the flavour (hardware, nested, PVM), and
 * the capabilities of src/core/kvm.c's tables (required and optional). */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/kvm.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/kvm.h"
#include "doctor/doctor_impl.h"

#define KVM_DEFAULT "/dev/kvm"
#define CAP_PREFIX "KVM_CAP_"

/* What the CPU and the loaded modules say about this host's KVM. */
struct flavour {
	unsigned cpu;		/* DOCTOR_CPU_* */
	bool pvm, intel, amd;	/* kvm_pvm, kvm_intel, kvm_amd in /sys/module */
};

/* Probe errors become warnings in res; the flavour is then what could be read. */
static void probe_flavour(struct flavour *f, struct doctor_result *res)
{
	const struct { const char *name; bool *present; } mods[] = {
		{ "kvm_pvm", &f->pvm }, { "kvm_intel", &f->intel }, { "kvm_amd", &f->amd },
	};
	char *text = NULL, path[64];
	int err;

	*f = (struct flavour){ 0 };
	err = doctor_read_file("/proc/cpuinfo", 1 << 16, &text);
	if (!err)
		err = doctor_cpuinfo_flags(text, &f->cpu);
	if (err)
		doctor_probe_error(res, "/proc/cpuinfo", err);
	free(text);
	for (size_t i = 0; i < sizeof(mods) / sizeof(mods[0]); i++) {
		err = doctor_module_present(mods[i].name, mods[i].present);
		if (err) {
			snprintf(path, sizeof(path), "/sys/module/%s", mods[i].name);
			doctor_probe_error(res, path, err);
		}
	}
}

/* /dev/kvm is missing: which module would make it, from what the CPU shows. */
static void fix_missing(const struct flavour *f, struct doctor_result *res)
{
	if (f->cpu & DOCTOR_CPU_VMX)
		doctor_fix(res, "modprobe kvm_intel");
	else if (f->cpu & DOCTOR_CPU_SVM)
		doctor_fix(res, "modprobe kvm_amd");
	else if (f->cpu & DOCTOR_CPU_HYPERVISOR)
		doctor_fix(res, "this VM's CPU shows no VMX/SVM: enable nested virtualization on its "
			   "hypervisor, then modprobe kvm_intel (or kvm_amd); or boot a PVM host "
			   "kernel and modprobe kvm_pvm");
	else
		doctor_fix(res, "enable VT-x/AMD-V in the firmware, then modprobe kvm_intel (or "
			   "kvm_amd)");
}

/* /dev/kvm is there but not ours to open: the group that would let us. */
static void fix_access(const char *path, const struct stat *st, struct doctor_result *res)
{
	struct passwd *pw = getpwuid(geteuid());
	struct group *gr = st->st_gid ? getgrgid(st->st_gid) : NULL;
	const char *user = pw ? pw->pw_name : "$USER";

	if (gr && (st->st_mode & (S_IRGRP | S_IWGRP)) == (S_IRGRP | S_IWGRP))
		doctor_fix(res, "usermod -aG %s %s (then log in again)", gr->gr_name, user);
	else
		doctor_fix(res, "run forkvm as root, or: groupadd -f kvm && chgrp kvm %s && chmod "
			   "0660 %s && usermod -aG kvm %s (then log in again)", path, path, user);
}

static void report_flavour(const struct flavour *f, struct doctor_result *res)
{
	const char *ext = f->cpu & DOCTOR_CPU_VMX ? "VMX" : f->cpu & DOCTOR_CPU_SVM ? "SVM" : NULL;
	const char *mod = f->intel ? "kvm_intel" : f->amd ? "kvm_amd" : NULL;

	if (f->pvm) {
		doctor_raise(res, DOCTOR_WARN);
		doctor_found(res, "flavour PVM (kvm_pvm loaded): guest CPL0 is emulated, so Linux "
			     "guests cannot run here directly; the probe guest runs natively");
		doctor_fix(res, "for Linux guests use the nested rig: tests/nested/rig.sh "
			   "(docs/TESTING.md)");
	} else if (ext && mod && (f->cpu & DOCTOR_CPU_HYPERVISOR)) {
		doctor_found(res, "flavour nested (%s under a hypervisor, %s loaded): Linux guests "
			     "run, slower than on bare metal", ext, mod);
	} else if (ext && mod) {
		doctor_found(res, "flavour hardware (%s, %s loaded)", ext, mod);
	} else {
		doctor_found(res, "flavour unknown (CPU %s VMX/SVM; none of kvm_intel, kvm_amd, "
			     "kvm_pvm in /sys/module)", ext ? "shows" : "does not show");
	}
}

DOCTOR_CHECK(doctor_check_kvm)
{
	const char *path = ctx->kvm_path ? ctx->kvm_path : KVM_DEFAULT;
	struct flavour f;
	struct stat st;
	int fd = -1, version;

	probe_flavour(&f, res);
	if (stat(path, &st) < 0) {
		doctor_raise(res, DOCTOR_FAIL);
		doctor_found(res, "%s: %s", path, strerror(errno));
		if (errno == ENOENT && ctx->kvm_path && strcmp(ctx->kvm_path, KVM_DEFAULT))
			doctor_fix(res, "give --kvm-device an existing KVM device (default "
				   KVM_DEFAULT ")");
		else if (errno == ENOENT)
			fix_missing(&f, res);
		else
			doctor_fix(res, "run forkvm as root");
		return 0;
	}
	fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		doctor_raise(res, DOCTOR_FAIL);
		doctor_found(res, "%s (mode %04o, uid %u, gid %u) cannot be opened by uid %u: %s",
			     path, (unsigned)(st.st_mode & 07777), (unsigned)st.st_uid,
			     (unsigned)st.st_gid, (unsigned)geteuid(), strerror(errno));
		if (errno == EACCES || errno == EPERM)
			fix_access(path, &st, res);
		else
			fix_missing(&f, res);
		goto out;
	}
	version = ioctl(fd, KVM_GET_API_VERSION, 0);
	if (version != KVM_API_VERSION) {
		doctor_raise(res, DOCTOR_FAIL);
		doctor_found(res, "%s: KVM API version %d, forkvm needs %d", path, version,
			     KVM_API_VERSION);
		doctor_fix(res, "a host kernel with a standard KVM (API %d)", KVM_API_VERSION);
		goto out;
	}
	doctor_found(res, "%s opened read-write, API version %d", path, version);
out:
	/* Whatever kept /dev/kvm from us, its flavour says what it would run. */
	report_flavour(&f, res);
	if (fd >= 0)
		close(fd);
	return 0;
}

/* The fd for the capability checks, or -1 with res failed ("see the kvm check"). */
static int open_for_caps(const struct doctor_ctx *ctx, struct doctor_result *res)
{
	const char *path = ctx->kvm_path ? ctx->kvm_path : KVM_DEFAULT;
	int fd = open(path, O_RDWR | O_CLOEXEC);

	if (fd < 0) {
		doctor_raise(res, DOCTOR_FAIL);
		doctor_found(res, "not checked: %s: %s", path, strerror(errno));
		doctor_fix(res, "make %s usable first (the kvm check says how)", path);
	} else if (ioctl(fd, KVM_GET_API_VERSION, 0) != KVM_API_VERSION) {
		doctor_raise(res, DOCTOR_FAIL);
		doctor_found(res, "not checked: %s is not a KVM device of API %d", path,
			     KVM_API_VERSION);
		doctor_fix(res, "make %s usable first (the kvm check says how)", path);
		close(fd);
		fd = -1;
	}
	return fd;
}

/* KVM_CHECK_EXTENSION: >0 present, 0 absent, -errno when the ioctl itself failed. */
static int has_cap(int fd, int cap)
{
	int r = ioctl(fd, KVM_CHECK_EXTENSION, cap);

	return r < 0 ? -errno : r;
}

static const char *short_name(const char *name)
{
	return strncmp(name, CAP_PREFIX, strlen(CAP_PREFIX)) ? name : name + strlen(CAP_PREFIX);
}

DOCTOR_CHECK(doctor_check_kvm_caps)
{
	int fd = open_for_caps(ctx, res), r, ret = 0;
	size_t missing = 0;

	if (fd < 0)
		return 0;
	for (size_t i = 0; i < kvm_required_caps_count; i++) {
		const struct kvm_cap_req *c = &kvm_required_caps[i];
		if ((r = has_cap(fd, c->cap)) < 0) {
			ret = r;
			goto out;
		}
		if (r == 0) {
			missing++;
			doctor_found(res, "missing %s (%s)", c->name, c->why);
		}
	}
	if (missing) {
		doctor_raise(res, DOCTOR_FAIL);
		doctor_fix(res, "a host kernel whose KVM has every capability of "
			   "src/core/kvm.c (Linux 5.x or newer on x86-64)");
	} else {
		char names[512] = "";
		size_t at = 0;
		int n;

		for (size_t i = 0; i < kvm_required_caps_count && at < sizeof(names); i++) {
			n = snprintf(names + at, sizeof(names) - at, "%s%s", at ? " " : "",
				     short_name(kvm_required_caps[i].name));
			at += n > 0 ? (size_t)n : sizeof(names);
		}
		doctor_found(res, "all %zu required: %s", kvm_required_caps_count, names);
	}
out:
	close(fd);
	return ret;
}

DOCTOR_CHECK(doctor_check_kvm_optional)
{
	int fd = open_for_caps(ctx, res), r, ret = 0;

	if (fd < 0)
		return 0;
	for (size_t i = 0; i < kvm_optional_caps_count; i++) {
		const struct kvm_cap_req *c = &kvm_optional_caps[i];
		if ((r = has_cap(fd, c->cap)) < 0) {
			ret = r;
			goto out;
		}
		if (r) {
			doctor_found(res, "%s yes", short_name(c->name));
			continue;
		}
		doctor_raise(res, DOCTOR_WARN);
		doctor_found(res, "%s no: %s unavailable", short_name(c->name), c->why);
		doctor_fix(res, "a newer host kernel for %s", c->name);
	}
out:
	close(fd);
	return ret;
}
