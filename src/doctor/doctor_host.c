/* `forkvm doctor`, confinement and devices: cgroup v2 and its controllers (the roots
 * src/jail/cgroup.c tries), /dev/net/tun, seccomp in the kernel and libseccomp, and whether
 * forkvmd answers. */
#include <errno.h>
#include <sched.h>
#include <fcntl.h>
#include <seccomp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemon/daemon.h"
#include "doctor/doctor_impl.h"
#include "jail/scope.h"
#include "util/unix_sock.h"

#ifndef CGROUP2_SUPER_MAGIC
#define CGROUP2_SUPER_MAGIC 0x63677270
#endif

#define CG_UNIFIED "/sys/fs/cgroup"
#define CG_HYBRID "/sys/fs/cgroup/unified"
#define TUN_PATH "/dev/net/tun"
#define SECCOMP_ACTIONS "/proc/sys/kernel/seccomp/actions_avail"
/* SCMP_ACT_KILL_PROCESS, the filters' default action, came with API level 4. */
#define SECCOMP_API_NEEDED 4u

/* FORKVM_CGROUP_ROOT when set and not empty, else NULL. */
static const char *cgroup_env(void)
{
	const char *env = getenv("FORKVM_CGROUP_ROOT");

	return env && *env ? env : NULL;
}

static bool is_cgroup2(const char *path)
{
	struct statfs sf;

	return statfs(path, &sf) == 0 && sf.f_type == CGROUP2_SUPER_MAGIC;
}

/* The cgroup2 root a VMM would use, tried in src/jail/cgroup.c's order; NULL when none. */
static const char *cgroup_root(void)
{
	const char *env = cgroup_env();

	if (env)
		return is_cgroup2(env) ? env : NULL;
	if (is_cgroup2(CG_UNIFIED))
		return CG_UNIFIED;
	return is_cgroup2(CG_HYBRID) ? CG_HYBRID : NULL;
}

/* Controllers missing from ROOT: how to bring them there depends on where ROOT is. */
static void fix_controllers(const char *root, const char *missing, struct doctor_result *res)
{
	if (!strcmp(root, CG_HYBRID))
		doctor_fix(res, "boot with systemd.unified_cgroup_hierarchy=1 on the kernel command "
			   "line (moves %s from cgroup v1 to v2)", missing);
	else if (!strcmp(root, CG_UNIFIED))
		doctor_fix(res, "unmount the cgroup v1 hierarchies of %s, or boot with "
			   "cgroup_no_v1=all", missing);
	else
		doctor_fix(res, "enable them in the parent: for c in %s; do echo +$c > "
			   "$(dirname %s)/cgroup.subtree_control; done", missing, root);
}

DOCTOR_CHECK(doctor_check_cgroup)
{
	static const char *const want[] = { "memory", "cpu", "pids" };
	const char *root = cgroup_root(), *env = cgroup_env();
	char path[1024], have[256] = "", missing[64] = "", *text = NULL;
	unsigned present;
	int err;

	if (!root) {
		doctor_raise(res, DOCTOR_WARN);
		doctor_found(res, "no cgroup2 hierarchy at %s: VMs run without per-VM cgroups (no "
			     "memory, CPU or pids limits)", env ?: CG_UNIFIED " or " CG_HYBRID);
		doctor_fix(res, "%s", env ? "point FORKVM_CGROUP_ROOT at a cgroup2 directory, or "
			   "unset it" : "mount -t cgroup2 none " CG_UNIFIED " (or boot with "
			   "systemd.unified_cgroup_hierarchy=1)");
		return 0;
	}
	doctor_found(res, "cgroup2 at %s (%s)", root, !strcmp(root, CG_UNIFIED) ? "unified" :
		     !strcmp(root, CG_HYBRID) ? "hybrid: v1 hierarchies beside it" :
		     "FORKVM_CGROUP_ROOT");
	snprintf(path, sizeof(path), "%s/cgroup.controllers", root);
	err = doctor_read_file(path, 4096, &text);
	if (err) {
		doctor_probe_error(res, path, err);
		return 0;
	}
	text[strcspn(text, "\n")] = '\0';
	snprintf(have, sizeof(have), "%s", text);
	present = doctor_words_present(text, want, 3);
	free(text);
	for (size_t i = 0; i < 3; i++)
		if (!(present & (1u << i)))
			snprintf(missing + strlen(missing), sizeof(missing) - strlen(missing), "%s%s",
				 missing[0] ? " " : "", want[i]);
	doctor_found(res, "controllers: %s", have[0] ? have : "none");
	if (missing[0]) {
		doctor_raise(res, DOCTOR_WARN);
		doctor_found(res, "missing %s: their limits (--mem-limit, --cpu-max, --cpu-weight, "
			     "--pids-max) are not applied", missing);
		fix_controllers(root, missing, res);
	}
	if (access(root, W_OK) < 0) {
		doctor_raise(res, DOCTOR_WARN);
		doctor_found(res, "%s is not writable by uid %u (%s): VMs run without per-VM "
			     "cgroups", root, (unsigned)geteuid(), strerror(errno));
		doctor_fix(res, "run forkvm as root, or set FORKVM_CGROUP_ROOT to a cgroup2 "
			   "directory delegated to this user");
	}
	return 0;
}

DOCTOR_CHECK(doctor_check_tun)
{
	struct stat st;
	int fd;

	if (stat(TUN_PATH, &st) < 0) {
		doctor_raise(res, DOCTOR_WARN);
		doctor_found(res, TUN_PATH ": %s: no TAP devices for guest networking",
			     strerror(errno));
		doctor_fix(res, errno == ENOENT ? "modprobe tun" :
			   "run forkvm doctor as root to see " TUN_PATH);
		return 0;
	}
	if (!S_ISCHR(st.st_mode)) {
		doctor_raise(res, DOCTOR_WARN);
		doctor_found(res, TUN_PATH " is not a character device");
		doctor_fix(res, "rm " TUN_PATH " && mknod " TUN_PATH " c 10 200 && modprobe tun");
		return 0;
	}
	fd = open(TUN_PATH, O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		doctor_raise(res, DOCTOR_WARN);
		doctor_found(res, TUN_PATH " cannot be opened by uid %u: %s", (unsigned)geteuid(),
			     strerror(errno));
		doctor_fix(res, errno == ENODEV ? "modprobe tun" : "run forkvm as root");
		return 0;
	}
	close(fd);
	doctor_found(res, TUN_PATH " present and opens (TAP networking)");
	return 0;
}

/* The kernel's seccomp: filters at all, then the actions the filters use. */
static void seccomp_kernel(struct doctor_result *res)
{
	static const char *const actions[] = { "kill_process", "log" };
	char *text = NULL;
	unsigned have;
	int mode = prctl(PR_GET_SECCOMP, 0, 0, 0, 0), err;

	if (mode < 0) {
		doctor_raise(res, DOCTOR_FAIL);
		doctor_found(res, "PR_GET_SECCOMP: %s: this kernel has no seccomp, VMMs cannot "
			     "load their filters", strerror(errno));
		doctor_fix(res, "a host kernel with CONFIG_SECCOMP_FILTER (FORKVM_SECCOMP=0 runs "
			   "unconfined: development only)");
		return;
	}
	doctor_found(res, "kernel seccomp available%s", mode == 2 ? " (this process already "
		     "runs under a filter)" : "");
	err = doctor_read_file(SECCOMP_ACTIONS, 1024, &text);
	if (err) {
		doctor_probe_error(res, SECCOMP_ACTIONS, err);
		return;
	}
	have = doctor_words_present(text, actions, 2);
	free(text);
	if (have == 3)
		doctor_found(res, "actions kill_process and log");
	if (!(have & 1)) {
		doctor_raise(res, DOCTOR_FAIL);
		doctor_found(res, "no kill_process action: the filters' default action is missing");
		doctor_fix(res, "a host kernel of Linux 4.14 or newer");
	}
	if (!(have & 2)) {
		doctor_raise(res, DOCTOR_WARN);
		doctor_found(res, "no log action: FORKVM_SECCOMP=log does not work");
		doctor_fix(res, "a host kernel of Linux 4.14 or newer");
	}
}

DOCTOR_CHECK(doctor_check_seccomp)
{
	const struct scmp_version *v = seccomp_version();
	const char *env = getenv("FORKVM_SECCOMP");
	unsigned api = seccomp_api_get();

	seccomp_kernel(res);
	if (v)
		doctor_found(res, "libseccomp %u.%u.%u", v->major, v->minor, v->micro);
	doctor_found(res, "libseccomp API level %u", api);
	if (api < SECCOMP_API_NEEDED) {
		doctor_raise(res, DOCTOR_FAIL);
		doctor_found(res, "the filters need API level %u (SCMP_ACT_KILL_PROCESS)",
			     SECCOMP_API_NEEDED);
		doctor_fix(res, "apt-get install libseccomp2 (2.4 or newer) on a Linux 4.14+ kernel");
	}
	if (env && *env && strcmp(env, "1") && strcmp(env, "kill")) {
		doctor_raise(res, DOCTOR_WARN);
		doctor_found(res, "FORKVM_SECCOMP=%s in this environment: VMMs started from it do "
			     "not kill on a filter violation", env);
		doctor_fix(res, "unset FORKVM_SECCOMP");
	}
	return 0;
}

/* Whether a child may make the namespaces a jail unshares (a container may forbid it). */
static int jail_namespaces(void)
{
	int status;
	pid_t pid = fork();

	if (pid < 0)
		return -errno;
	if (pid == 0)
		_exit(unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS) < 0 ? errno
										    : 0);
	if (waitpid(pid, &status, 0) < 0)
		return -errno;
	return WIFEXITED(status) ? -WEXITSTATUS(status) : -ECHILD;
}

/* Whether the VMMs this user starts are jailed (docs/SECURITY.md), and how much of it. */
DOCTOR_CHECK(doctor_check_jail)
{
	const char *env = getenv("FORKVM_JAIL");
	int abi = jail_landlock_abi(), ret;

	(void)ctx;
	if (env && (!strcmp(env, "0") || !strcmp(env, "off") || !strcmp(env, "no"))) {
		doctor_raise(res, DOCTOR_WARN);
		doctor_found(res, "FORKVM_JAIL=%s in this environment: VMMs started from it are not "
			     "jailed (JAIL DISABLED in their logs)", env);
		doctor_fix(res, "unset FORKVM_JAIL (development only)");
	}
	if (geteuid() != 0) {
		doctor_raise(res, DOCTOR_WARN);
		doctor_found(res, "not root (uid %u): VMMs you start run as you, not jailed (the "
			     "jail needs root)", (unsigned)geteuid());
		doctor_fix(res, "run forkvm as root, or use the daemon (forkvm daemon)");
	} else if ((ret = jail_namespaces()) < 0) {
		doctor_raise(res, DOCTOR_FAIL);
		doctor_found(res, "unshare(mount, network, IPC, UTS namespaces): %s: no VMM can be "
			     "jailed here", strerror(-ret));
		doctor_fix(res, "a host (or container) that allows namespaces to root; --no-jail "
			   "is for development only");
	} else {
		doctor_found(res, "root; the jail's namespaces can be made");
	}
	if (abi >= JAIL_LANDLOCK_ABI_SCOPE) {
		doctor_found(res, "Landlock ABI %d: a jailed VM signals only itself and the VMs it "
			     "branched", abi);
	} else {
		doctor_raise(res, DOCTOR_WARN);
		if (abi < 0)
			doctor_found(res, "no Landlock (%s): the VMs of a jailed family can signal "
				     "each other", strerror(-abi));
		else
			doctor_found(res, "Landlock ABI %d (signal scoping needs 6): the VMs of a "
				     "jailed family can signal each other", abi);
		doctor_fix(res, "a Linux 6.12 or newer host kernel with Landlock enabled (lsm=)");
	}
	return 0;
}

/* forkvmd answering on its API socket ($FORKVM_DAEMON_SOCKET or the default): optional. */
DOCTOR_CHECK(doctor_check_daemon)
{
	const char *path = getenv("FORKVM_DAEMON_SOCKET");
	static const char req[] = "GET /v1/healthz HTTP/1.0\r\nHost: forkvmd\r\n\r\n";
	char reply[512];
	size_t len = 0;
	int fd;

	(void)ctx;
	if (!path || !*path)
		path = DAEMON_DEFAULT_SOCKET;
	if (access(path, F_OK) < 0) {
		doctor_found(res, "no daemon socket at %s (forkvm works without one; `forkvm daemon` "
			     "starts it)", path);
		return 0;
	}
	fd = unix_connect(path, 0);
	if (fd < 0) {
		doctor_raise(res, DOCTOR_WARN);
		doctor_found(res, "%s: %s: the daemon is not running (a stale socket)", path,
			     strerror(-fd));
		doctor_fix(res, "forkvm daemon --state-dir %s (it replaces the stale socket)",
			   strcmp(path, DAEMON_DEFAULT_SOCKET) == 0 ? DAEMON_DEFAULT_STATE_DIR : "DIR");
		return 0;
	}
	struct timeval tv = { .tv_sec = 3 };
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (write(fd, req, sizeof(req) - 1) == (ssize_t)(sizeof(req) - 1)) {
		ssize_t n;
		while (len < sizeof(reply) - 1 && (n = read(fd, reply + len, sizeof(reply) - 1 - len)) > 0)
			len += (size_t)n;
	}
	close(fd);
	reply[len] = '\0';
	if (len < 7 || memcmp(reply, "HTTP/1.", 7) != 0 || !strstr(reply, " 200 ") ||
	    !strstr(reply, "\"ok\":true")) {
		doctor_raise(res, DOCTOR_WARN);
		doctor_found(res, "%s accepts connections but /v1/healthz did not answer ok (%.60s)",
			     path, len ? reply : "no reply within 3 s");
		doctor_fix(res, "look at the daemon's log; restart it (kill it, then forkvm daemon)");
		return 0;
	}
	doctor_found(res, "forkvmd answers on %s", path);
	return 0;
}
