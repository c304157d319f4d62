/* cgroup v2 per VM: create, enter, limit, leave, reap (docs/SECURITY.md). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include "core/log.h"
#include "jail/cgroup.h"

#ifndef CGROUP2_SUPER_MAGIC
#define CGROUP2_SUPER_MAGIC 0x63677270
#endif

static char cg_root[256];	/* the cgroup2 mount */
static char cg_dir[512];	/* ROOT/forkvm/NAME-PID, "" when not in one */
static char cg_orig[1024];	/* the cgroup we came from */
static bool cg_mem_explicit;

const char *jail_cgroup_path(void)
{
	return cg_dir;
}

static int parse_u64(const char *s, uint64_t *v, bool size)
{
	char *end;
	unsigned long long n;

	errno = 0;
	n = strtoull(s, &end, 10);
	if (errno || end == s || *s == '-')
		return -EINVAL;
	if (size && *end) {
		const char *units = "KMGT";
		const char *u = strchr(units, *end);
		if (!u || end[1])
			return -EINVAL;
		for (int i = 0; i <= u - units; i++) {
			if (n > (UINT64_MAX >> 10))
				return -EINVAL;
			n <<= 10;
		}
	} else if (*end) {
		return -EINVAL;
	}
	*v = n;
	return 0;
}

int cgroup_opt(struct cgroup_opts *o, int opt, const char *arg, char *err, size_t errlen)
{
	uint64_t q, p = 100000;
	char *slash;

	switch (opt) {
	case CGROUP_OPT_NO_SECCOMP: o->no_seccomp = true; return 0;
	case CGROUP_OPT_NO_CGROUP: o->no_cgroup = true; return 0;
	case CGROUP_OPT_MEM_LIMIT:
		if (parse_u64(arg, &o->mem_limit, true) || o->mem_limit < (1ULL << 20))
			goto bad;
		return 0;
	case CGROUP_OPT_CPU_MAX: {
		char buf[48];
		snprintf(buf, sizeof(buf), "%s", arg);
		slash = strchr(buf, '/');
		if (slash)
			*slash = '\0';
		if (parse_u64(buf, &q, false) || q < 1000 || (slash && parse_u64(slash + 1, &p, false)) ||
		    p < 1000 || p > 1000000)
			goto bad;
		snprintf(o->cpu_max, sizeof(o->cpu_max), "%" PRIu64 " %" PRIu64, q, p);
		return 0;
	}
	case CGROUP_OPT_CPU_WEIGHT:
		if (parse_u64(arg, &o->cpu_weight, false) || !o->cpu_weight || o->cpu_weight > 10000)
			goto bad;
		return 0;
	case CGROUP_OPT_PIDS_MAX:
		if (parse_u64(arg, &o->pids_max, false) || !o->pids_max)
			goto bad;
		return 0;
	default:
		snprintf(err, errlen, "unknown option");
		return -EINVAL;
	}
bad:
	snprintf(err, errlen, "bad value '%s' for a cgroup option (--mem-limit SIZE >= 1M, "
		 "--cpu-max QUOTA[/PERIOD] in us >= 1000, --cpu-weight 1-10000, --pids-max N >= 1)",
		 arg);
	return -EINVAL;
}

/* Write VALUE to DIR/FILE; -errno. */
static int cg_write(const char *dir, const char *file, const char *value)
{
	char path[1200];
	int fd, ret = 0;
	size_t len = strlen(value);

	snprintf(path, sizeof(path), "%s/%s", dir, file);
	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (write(fd, value, len) != (ssize_t)len)
		ret = -errno;
	close(fd);
	return ret;
}

static bool is_cgroup2(const char *path)
{
	struct statfs sf;

	return statfs(path, &sf) == 0 && sf.f_type == CGROUP2_SUPER_MAGIC;
}

/* FORKVM_CGROUP_ROOT, else /sys/fs/cgroup, else the hybrid layout's /sys/fs/cgroup/unified. */
static int find_root(void)
{
	const char *env = getenv("FORKVM_CGROUP_ROOT");
	const char *cands[] = { env, "/sys/fs/cgroup", "/sys/fs/cgroup/unified" };

	for (size_t i = env ? 0 : 1; i < sizeof(cands) / sizeof(cands[0]); i++) {
		if (is_cgroup2(cands[i]) && access(cands[i], W_OK) == 0) {
			snprintf(cg_root, sizeof(cg_root), "%s", cands[i]);
			return 0;
		}
		if (env)
			break;
	}
	return -ENOENT;
}

/* The cgroup2 path of this process, from /proc/self/cgroup's "0::" line. */
static int current_cgroup(char *buf, size_t len)
{
	char line[600];
	FILE *f = fopen("/proc/self/cgroup", "re");
	int ret = -ENOENT;

	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f)) {
		if (strncmp(line, "0::", 3))
			continue;
		line[strcspn(line, "\n")] = '\0';
		/* Inherited from a forkvm parent (a branch, a template): leave to the root later. */
		if (!strncmp(line + 3, "/forkvm/", 8) || !strcmp(line + 3, "/"))
			snprintf(buf, len, "%s", cg_root);
		else
			snprintf(buf, len, "%s%s", cg_root, line + 3);
		ret = 0;
		break;
	}
	fclose(f);
	return ret;
}

/* Remove empty NAME-PID cgroups whose VMM is gone (killed, or its exit path failed). */
static void reap_stale(const char *base)
{
	DIR *d = opendir(base);
	struct dirent *e;

	if (!d)
		return;
	while ((e = readdir(d))) {
		char path[700];
		const char *dash = strrchr(e->d_name, '-');
		long pid = dash ? strtol(dash + 1, NULL, 10) : 0;
		if (e->d_type != DT_DIR || e->d_name[0] == '.' || pid <= 0)
			continue;
		if (kill((pid_t)pid, 0) == 0 || errno != ESRCH)
			continue; /* its VMM still runs (or may) */
		snprintf(path, sizeof(path), "%s/%s", base, e->d_name);
		if (rmdir(path) == 0)
			log_info("removed the stale cgroup %s", path);
		else if (errno != ENOENT)
			log_warn("stale cgroup %s: rmdir: %s", path, strerror(errno));
	}
	closedir(d);
}

/* Enable CONTROLLER for the children of DIR if DIR has it; false when unavailable. */
static bool enable_controller(const char *dir, const char *controller)
{
	char path[700], buf[512] = "", plus[32];
	int fd;
	ssize_t n;

	snprintf(path, sizeof(path), "%s/cgroup.controllers", dir);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	buf[n > 0 ? n : 0] = '\0';
	for (char *save = NULL, *tok = strtok_r(buf, " \n", &save); tok;
	     tok = strtok_r(NULL, " \n", &save)) {
		if (strcmp(tok, controller))
			continue;
		snprintf(plus, sizeof(plus), "+%s", controller);
		return cg_write(dir, "cgroup.subtree_control", plus) == 0;
	}
	return false;
}

static int set_limit(const char *controller, const char *file, const char *value)
{
	int err = cg_write(cg_dir, file, value);

	if (err == -ENOENT)
		log_warn("cgroup %s: the %s controller is not available here; %s=%s not applied",
			 cg_dir, controller, file, value);
	else if (err)
		return log_errno(err, "cgroup %s: writing %s=%s", cg_dir, file, value);
	return 0;
}

int jail_cgroup_set_guest_ram(uint64_t guest_ram)
{
	char v[32];

	if (!cg_dir[0] || cg_mem_explicit || !guest_ram)
		return 0;
	snprintf(v, sizeof(v), "%" PRIu64, (uint64_t)(guest_ram + JAIL_MEM_OVERHEAD));
	return set_limit("memory", "memory.max", v);
}

int jail_cgroup_enter(const char *name, uint64_t guest_ram, const struct cgroup_opts *o)
{
	static const char *const controllers[] = { "memory", "cpu", "pids" };
	char base[300], pid[24], v[32];
	int err;

	cg_dir[0] = '\0';
	if (o && o->no_cgroup)
		return 0;
	if (find_root() < 0) {
		log_info("no writable cgroup v2 hierarchy (/sys/fs/cgroup, /sys/fs/cgroup/unified or "
			 "FORKVM_CGROUP_ROOT): running without a per-VM cgroup");
		return 0;
	}
	err = current_cgroup(cg_orig, sizeof(cg_orig));
	if (err)
		return log_errno(err, "reading /proc/self/cgroup");
	snprintf(base, sizeof(base), "%s/forkvm", cg_root);
	if (mkdir(base, 0755) < 0 && errno != EEXIST)
		return log_errno(-errno, "creating the cgroup %s", base);
	reap_stale(base);
	for (size_t i = 0; i < sizeof(controllers) / sizeof(controllers[0]); i++)
		if (enable_controller(cg_root, controllers[i]))
			enable_controller(base, controllers[i]);
	snprintf(cg_dir, sizeof(cg_dir), "%s/%s-%d", base, name, (int)getpid());
	if (mkdir(cg_dir, 0755) < 0 && errno != EEXIST) {
		err = log_errno(-errno, "creating the cgroup %s", cg_dir);
		goto fail;
	}
	snprintf(pid, sizeof(pid), "%d", (int)getpid());
	err = cg_write(cg_dir, "cgroup.procs", pid);
	if (err) {
		(void)log_errno(err, "moving the VMM into the cgroup %s", cg_dir);
		rmdir(cg_dir);
		goto fail;
	}
	cg_mem_explicit = o && o->mem_limit;
	if (cg_mem_explicit) {
		snprintf(v, sizeof(v), "%" PRIu64, o->mem_limit);
		err = set_limit("memory", "memory.max", v);
	} else {
		err = jail_cgroup_set_guest_ram(guest_ram);
	}
	if (!err && o && o->cpu_max[0])
		err = set_limit("cpu", "cpu.max", o->cpu_max);
	if (!err && o && o->cpu_weight) {
		snprintf(v, sizeof(v), "%" PRIu64, o->cpu_weight);
		err = set_limit("cpu", "cpu.weight", v);
	}
	if (!err && o && o->pids_max) {
		snprintf(v, sizeof(v), "%" PRIu64, o->pids_max);
		err = set_limit("pids", "pids.max", v);
	}
	if (err) {
		jail_cgroup_leave();
		return err;
	}
	log_debug("in the cgroup %s", cg_dir);
	return 0;
fail:
	cg_dir[0] = '\0';
	return err;
}

void jail_cgroup_leave(void)
{
	char pid[24];
	int err;

	if (!cg_dir[0])
		return;
	snprintf(pid, sizeof(pid), "%d", (int)getpid());
	err = cg_write(cg_orig, "cgroup.procs", pid);
	if (err)
		log_warn("leaving the cgroup %s for %s: %s (the next VMM start removes it)", cg_dir,
			 cg_orig, strerror(-err));
	else if (rmdir(cg_dir) < 0)
		log_warn("removing the cgroup %s: %s (the next VMM start removes it)", cg_dir,
			 strerror(errno));
	cg_dir[0] = '\0';
}
