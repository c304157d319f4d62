/* cgroup v2 per VM: create, enter, limit, leave, reap (docs/SECURITY.md). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/sched.h>
#include <sched.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <jansson.h>

#include "util/errmsg.h"
#include "util/fileio.h"
#include "util/log.h"
#include "jail/cgroup.h"
#include "jail/jail.h"

#ifndef CGROUP2_SUPER_MAGIC
#define CGROUP2_SUPER_MAGIC 0x63677270
#endif

/* The controllers a VM's limits need, in the order of enum cg_ctl. */
enum cg_ctl { CG_MEMORY, CG_CPU, CG_PIDS, CG_NCTL };

/*
 * What a VMM writes here after a fork (a cow child: jail_cgroup_adopt and its limits), on a
 * page of its own: every page of static data a forked child writes becomes a private copy,
 * 4 KiB per idle child (docs/PERFORMANCE.md, private memory per idle child). Spread among
 * the other variables of this file it took three pages.
 */
static struct {
	char dir[512];		/* ROOT/forkvm/NAME-PID, "" when not in one */
	char orig[1024];	/* the cgroup we came from */
	char missing[512];	/* "memory.max=..., pids.max=..." that could not be applied */
	struct cgroup_opts opts; /* what this VMM entered with: cow templates copy it */
	bool have_opts;
	bool mem_explicit;
	bool avail[CG_NCTL];	/* listed in our cgroup's cgroup.controllers */
	bool ctl_missing[CG_NCTL];
	char root[256];		/* the cgroup2 mount (a template finds it again per child) */
} cgs __attribute__((aligned(4096)));
_Static_assert(sizeof(cgs) <= 4096, "the state a forked child writes fits one page");

/* ROOT found, ROOT/forkvm made, its stale cgroups reaped and controllers enabled, by this
 * process or the one it was forked from: a cow template's children skip all of it (each
 * would otherwise scan every sibling's cgroup, docs/PERFORMANCE.md). */
static char cg_base_ready_root[256];	/* the cgs.root it was done for; "" none */
/*
 * A jailed family (docs/SECURITY.md, "cgroup v2 per VM"): root makes ROOT/forkvm/NAME-PID,
 * the family's cgroup, with the source's leaf NAME-PID and the shared leaf "leaving" in it,
 * and delegates it to the jail's uid, bound in the jail at ROOT's own path. Inside, ROOT is
 * the family's cgroup and VM cgroups are made right in it (not in ROOT/forkvm); leaving goes
 * to ROOT/leaving, since a cgroup that hands controllers to its children holds no process.
 */
static bool cg_family;			/* inside a jailed family: ROOT is its cgroup */
static char cg_family_dir[512];		/* root's side, before the jail: the family's cgroup */
static char cg_family_host[512];	/* inside: the family cgroup's host path, for messages */
#define FAMILY_ENV "FORKVM_CGROUP_FAMILY"	/* inherited by VMMs exec'd in the jail */
#define LEAVING "leaving"

const char *jail_cgroup_path(void)
{
	return cgs.dir;
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

int cgroup_opt(struct cgroup_opts *o, int opt, const char *arg, struct fvm_err *err)
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
	case CGROUP_OPT_FAMILY_BUDGET:
		if (parse_u64(arg, &o->family_budget, false) || !o->family_budget ||
		    o->family_budget > 4096)
			goto bad;
		return 0;
	default:
		errf(err, "unknown option");
		return -EINVAL;
	}
bad:
	errf(err, "bad value '%s' for a cgroup option (--mem-limit SIZE >= 1M, "
		 "--cpu-max QUOTA[/PERIOD] in us >= 1000, --cpu-weight 1-10000, --pids-max N >= 1, "
		 "--family-budget 1-4096)",
		 arg);
	return -EINVAL;
}

static bool is_cgroup2(const char *path);
static int find_root(void);

int cgroup_opts_argv(const struct cgroup_opts *o, struct cgroup_argv *buf, const char **argv)
{
	int n = 0;

	if (!o)
		return 0;
	if (o->no_cgroup) {
		argv[n++] = "--no-cgroup";
		return n;
	}
	if (o->mem_limit) {
		snprintf(buf->mem, sizeof(buf->mem), "%" PRIu64, o->mem_limit);
		argv[n++] = "--mem-limit";
		argv[n++] = buf->mem;
	}
	if (o->cpu_max[0]) { /* "QUOTA PERIOD" -> "QUOTA/PERIOD" */
		snprintf(buf->cpu, sizeof(buf->cpu), "%s", o->cpu_max);
		char *sp = strchr(buf->cpu, ' ');
		if (sp)
			*sp = '/';
		argv[n++] = "--cpu-max";
		argv[n++] = buf->cpu;
	}
	if (o->cpu_weight) {
		snprintf(buf->weight, sizeof(buf->weight), "%" PRIu64, o->cpu_weight);
		argv[n++] = "--cpu-weight";
		argv[n++] = buf->weight;
	}
	if (o->pids_max) {
		snprintf(buf->pids, sizeof(buf->pids), "%" PRIu64, o->pids_max);
		argv[n++] = "--pids-max";
		argv[n++] = buf->pids;
	}
	return n;
}

/* "max" or a number, the first word of DIR/FILE; -errno. */
static int read_limit(const char *dir, const char *file, uint64_t *v, uint64_t *second)
{
	char path[1200], text[64];
	unsigned long long a, b;
	uint8_t *data = NULL;
	size_t len = 0;

	snprintf(path, sizeof(path), "%s/%s", dir, file);
	int ret = file_read(path, sizeof(text) - 1, FILE_UPTO_MAX, &data, &len, NULL);
	if (ret < 0)
		return ret;
	snprintf(text, sizeof(text), "%s", (char *)data);
	free(data);
	if (strncmp(text, "max", 3) == 0) {
		*v = UINT64_MAX;
		if (second && sscanf(text + 3, " %llu", &b) == 1)
			*second = b;
		return 0;
	}
	if (second && sscanf(text, "%llu %llu", &a, &b) == 2) {
		*v = a;
		*second = b;
		return 0;
	}
	if (sscanf(text, "%llu", &a) != 1)
		return -EINVAL;
	*v = a;
	return 0;
}

/* The limits files of dir into out (path = dir); a controller it lacks leaves its default. */
static void read_limits_at(const char *dir, struct cgroup_limits *out)
{
	snprintf(out->path, sizeof(out->path), "%s", dir);
	out->memory_max = out->pids_max = out->cpu_quota = UINT64_MAX;
	out->cpu_period = 100000;
	out->cpu_weight = 0; /* unknown: no cpu controller there */
	read_limit(out->path, "memory.max", &out->memory_max, NULL);
	read_limit(out->path, "cpu.max", &out->cpu_quota, &out->cpu_period);
	read_limit(out->path, "cpu.weight", &out->cpu_weight, NULL);
	read_limit(out->path, "pids.max", &out->pids_max, NULL);
	out->found = true;
}

int cgroup_read_limits(int pid, struct cgroup_limits *out)
{
	char path[64], line[600], mount[256], dir[sizeof(out->path)];
	FILE *f;
	int ret = -ENOENT;

	memset(out, 0, sizeof(*out));
	snprintf(mount, sizeof(mount), "%s", "/sys/fs/cgroup");
	if (!is_cgroup2(mount))
		snprintf(mount, sizeof(mount), "%s", "/sys/fs/cgroup/unified");
	if (!is_cgroup2(mount))
		return -ENOENT;
	snprintf(path, sizeof(path), "/proc/%d/cgroup", pid);
	f = fopen(path, "re");
	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f)) {
		if (strncmp(line, "0::", 3) != 0)
			continue;
		line[strcspn(line, "\n")] = '\0';
		if (snprintf(dir, sizeof(dir), "%s%s", mount, line + 3) < (int)sizeof(dir))
			ret = 0;
		break;
	}
	fclose(f);
	if (ret)
		return ret;
	read_limits_at(dir, out);
	return 0;
}

int cgroup_family_limits(int pid, const char *name, struct cgroup_limits *out, char *family,
			 size_t len)
{
	char leaf[sizeof(out->path)];
	struct stat st;

	memset(out, 0, sizeof(*out));
	if (find_root() < 0)
		return -ENOENT;
	if (snprintf(family, len, "%s/forkvm/%s-%d", cgs.root, name, pid) >= (int)len ||
	    snprintf(leaf, sizeof(leaf), "%s/%s-%d", family, name, pid) >= (int)sizeof(leaf))
		return -ENAMETOOLONG;
	/* root's leaf: the jail's uid cannot have made it, nor changed its limits */
	if (stat(leaf, &st) < 0)
		return -errno;
	if (st.st_uid != 0)
		return -EPERM;
	read_limits_at(leaf, out);
	return 0;
}

static int cg_write(const char *dir, const char *file, const char *value);

int cgroup_write_limits(const struct cgroup_limits *l)
{
	char mem[32], cpu[64], pids[32];
	int ret = 0;

	if (l->memory_max == UINT64_MAX)
		snprintf(mem, sizeof(mem), "max");
	else
		snprintf(mem, sizeof(mem), "%" PRIu64, l->memory_max);
	if (l->cpu_quota == UINT64_MAX)
		snprintf(cpu, sizeof(cpu), "max %" PRIu64, l->cpu_period);
	else
		snprintf(cpu, sizeof(cpu), "%" PRIu64 " %" PRIu64, l->cpu_quota, l->cpu_period);
	if (l->pids_max == UINT64_MAX)
		snprintf(pids, sizeof(pids), "max");
	else
		snprintf(pids, sizeof(pids), "%" PRIu64, l->pids_max);
	const char *files[] = { "memory.max", "cpu.max", "pids.max" };
	const char *vals[] = { mem, cpu, pids };
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		int r = cg_write(l->path, files[i], vals[i]);
		if (r && r != -ENOENT && !ret)
			ret = r;
	}
	return ret;
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
			/* unchanged: not written again (a template's write, per child, would
			 * leave each child a private copy of this page) */
			if (strcmp(cgs.root, cands[i]))
				snprintf(cgs.root, sizeof(cgs.root), "%s", cands[i]);
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
			snprintf(buf, len, "%s", cgs.root);
		else
			snprintf(buf, len, "%s%s", cgs.root, line + 3);
		ret = 0;
		break;
	}
	fclose(f);
	return ret;
}

/* The cgroup directories in dir (not "." or ".."); -errno. leaving: whether LEAVING is one. */
static int count_subdirs(const char *dir, bool *leaving)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int n = 0;

	*leaving = false;
	if (!d)
		return -errno;
	while ((e = readdir(d)))
		if (e->d_type == DT_DIR && e->d_name[0] != '.') {
			n++;
			*leaving |= strcmp(e->d_name, LEAVING) == 0;
		}
	closedir(d);
	return n;
}

/*
 * A jailed family's cgroup whose source is gone: its members' stale cgroups, then, once
 * nothing but its leaving leaf is left (a member still running keeps it), that leaf and the
 * family's. 0 when removed, else the errno of the last step.
 */
static void reap_stale(const char *base, int depth);
static int reap_family(const char *fam)
{
	char leaving[760];
	bool has_leaving;
	int n;

	reap_stale(fam, 1);
	n = count_subdirs(fam, &has_leaving);
	if (n < 0)
		return -n;
	if (n > (has_leaving ? 1 : 0))
		return EBUSY; /* a member runs on: it leaves through leaving later */
	snprintf(leaving, sizeof(leaving), "%s/" LEAVING, fam);
	if (has_leaving && rmdir(leaving) < 0)
		return errno; /* someone is on the way out: next time */
	return rmdir(fam) < 0 ? errno : 0;
}

/* Remove empty NAME-PID cgroups whose VMM is gone (killed, or its exit path failed); a
 * jailed family's cgroup (ROOT/forkvm/NAME-PID holding its VMs' cgroups) once all of its are
 * gone. depth 1: inside a family, whose cgroups hold none (cgroup.max.depth 1). */
static void reap_stale(const char *base, int depth)
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
		int err = rmdir(path) < 0 ? errno : 0;
		if (err == EBUSY && depth == 0) /* a family's cgroup, or processes in it */
			err = reap_family(path);
		if (!err)
			log_info("removed the stale cgroup %s", path);
		else if (err != ENOENT && err != EBUSY) /* EBUSY: processes in it (a cow child
			 * whose template, named in its cgroup's name, is gone) */
			log_warn("stale cgroup %s: rmdir: %s", path, strerror(err));
	}
	closedir(d);
}

static const char *const cg_ctl_name[CG_NCTL] = { "memory", "cpu", "pids" };

static int cg_enable_err[CG_NCTL]; /* 0, -ENOENT: ROOT does not offer it, else enabling failed */
/* the cgroup.subtree_control that refused it */
static char cg_enable_at[CG_NCTL][sizeof(cg_family_dir)];
static char cg_offered[256];	/* ROOT's cgroup.controllers, for the message */

const struct cgroup_opts *jail_cgroup_opts(void)
{
	return cgs.have_opts ? &cgs.opts : NULL;
}

/* DIR/cgroup.controllers into buf (space-separated names, no newline); -errno. */
static int read_controllers(const char *dir, char *buf, size_t len)
{
	char path[700];
	ssize_t n;
	int fd;

	buf[0] = '\0';
	snprintf(path, sizeof(path), "%s/cgroup.controllers", dir);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	n = read(fd, buf, len - 1);
	close(fd);
	if (n < 0)
		return -errno;
	buf[n] = '\0';
	buf[strcspn(buf, "\n")] = '\0';
	return 0;
}

static bool has_word(const char *list, const char *word)
{
	size_t len = strlen(word);

	for (const char *p = list; (p = strstr(p, word)); p += len)
		if ((p == list || p[-1] == ' ') && (p[len] == ' ' || p[len] == '\0'))
			return true;
	return false;
}

/* Enable CONTROLLER for the children of DIR: 0, -ENOENT when DIR does not have it, or the
 * -errno of the write to DIR/cgroup.subtree_control. */
static int enable_controller(const char *dir, const char *controller)
{
	char buf[512], plus[32];
	int err = read_controllers(dir, buf, sizeof(buf));

	if (err)
		return err;
	if (!has_word(buf, controller))
		return -ENOENT;
	snprintf(plus, sizeof(plus), "+%s", controller);
	return cg_write(dir, "cgroup.subtree_control", plus);
}

/* Enable every controller in ROOT and ROOT/forkvm, noting for each why it is missing. */
static void enable_controllers(const char *base)
{
	/* Only quoted in the "not applied" line: unreadable leaves it empty. */
	(void)read_controllers(cgs.root, cg_offered, sizeof(cg_offered));
	for (int i = 0; i < CG_NCTL; i++) {
		const char *at = cgs.root;
		int err = enable_controller(cgs.root, cg_ctl_name[i]);

		if (!err) {
			at = base;
			err = enable_controller(base, cg_ctl_name[i]);
		}
		cg_enable_err[i] = err;
		snprintf(cg_enable_at[i], sizeof(cg_enable_at[i]), "%s", at);
	}
}

/* Append to the NUL-terminated text in buf (cut at its size), with sep unless it is empty. */
static void append(char *buf, size_t size, const char *sep, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static void append(char *buf, size_t size, const char *sep, const char *fmt, ...)
{
	size_t used = strlen(buf);
	va_list ap;

	if (used && used + 1 < size)
		used += (size_t)snprintf(buf + used, size - used, "%s", sep);
	if (used + 1 >= size)
		return;
	va_start(ap, fmt);
	vsnprintf(buf + used, size - used, fmt, ap);
	va_end(ap);
}

/* path as the host names it, as "%s%s" of SHOWN(path): inside a jailed family, ROOT is the
 * family's cgroup. No buffer: a cow child's stack stays within the pages it already has. */
static const char *shown_prefix(const char *path)
{
	return cg_family && cg_family_host[0] && !strncmp(path, cgs.root, strlen(cgs.root))
		       ? cg_family_host : "";
}
#define SHOWN(path) shown_prefix(path), (path) + (shown_prefix(path)[0] ? strlen(cgs.root) : 0)

/* Write FILE=VALUE if the controller is here, else add it to the "not applied" list. */
static int set_limit(enum cg_ctl ctl, const char *file, const char *value)
{
	int err = cgs.avail[ctl] ? cg_write(cgs.dir, file, value) : -ENOENT;

	if (err == -ENOENT) { /* the controller is missing, or the kernel lacks this file */
		append(cgs.missing, sizeof(cgs.missing), ", ", "%s=%s", file, value);
		cgs.ctl_missing[ctl] = true;
		return 0;
	}
	if (err)
		return log_errno(err, "cgroup %s%s: writing %s=%s", SHOWN(cgs.dir), file, value);
	return 0;
}

/* The one line that says which limits this VM runs without, and why; then forget them. */
static void report_missing(void)
{
	char absent[64] = "", why[2048] = "";

	if (!cgs.missing[0])
		return;
	for (int i = 0; i < CG_NCTL; i++) {
		if (!cgs.ctl_missing[i])
			continue;
		if (cg_enable_err[i] == -ENOENT)
			append(absent, sizeof(absent), ", ", "%s", cg_ctl_name[i]);
		else if (cg_enable_err[i])
			append(why, sizeof(why), "; ", "enabling %s in %s/cgroup.subtree_control failed: %s",
			       cg_ctl_name[i], cg_enable_at[i], strerror(-cg_enable_err[i]));
		else
			append(why, sizeof(why), "; ", "%s is enabled but the file is missing (kernel "
			       "configuration)", cg_ctl_name[i]);
	}
	if (absent[0])
		append(why, sizeof(why), "; ", "%s: not offered by %s, whose cgroup.controllers is "
		       "\"%s\"%s", absent, cgs.root, cg_offered,
		       strstr(cgs.root, "/unified") ? "; a cgroup v1/v2 hybrid host binds them to v1"
						  : "");
	log_warn("cgroup %s%s: limits not applied: %s (%s)", SHOWN(cgs.dir), cgs.missing, why);
	cgs.missing[0] = '\0';
	memset(cgs.ctl_missing, 0, sizeof(cgs.ctl_missing));
}

/* A jailed family's cgroup (root's, before the jail): --family-budget (default 1) times this
 * VM's limit unit in FILE, with suffix after it (cpu.max's period). */
static int family_limit(enum cg_ctl ctl, const char *file, uint64_t unit, const char *suffix)
{
	uint64_t n = cgs.opts.family_budget ? cgs.opts.family_budget : 1;
	char v[64];
	int err;

	if (!cg_family_dir[0] || !cgs.have_opts || !unit || !cgs.avail[ctl])
		return 0;
	if (unit > (UINT64_MAX - 1) / n)
		snprintf(v, sizeof(v), "max%s", suffix);
	else
		snprintf(v, sizeof(v), "%" PRIu64 "%s", unit * n, suffix);
	if ((err = cg_write(cg_family_dir, file, v)))
		return log_errno(err, "the family cgroup %s: writing %s=%s", cg_family_dir, file, v);
	return 0;
}

/* The family's limits from this VM's (memory.max later for a restore: set_guest_ram). */
static int family_limits(uint64_t guest_ram)
{
	unsigned long long q, p;
	char period[32];
	int err = 0;

	if (cgs.opts.mem_limit)
		err = family_limit(CG_MEMORY, "memory.max", cgs.opts.mem_limit, "");
	else if (guest_ram && guest_ram != JAIL_CGROUP_RAM_LATER)
		err = family_limit(CG_MEMORY, "memory.max", guest_ram + JAIL_MEM_OVERHEAD, "");
	if (!err && sscanf(cgs.opts.cpu_max, "%llu %llu", &q, &p) == 2) {
		snprintf(period, sizeof(period), " %llu", p);
		err = family_limit(CG_CPU, "cpu.max", q, period);
	}
	if (!err)
		err = family_limit(CG_PIDS, "pids.max", cgs.opts.pids_max, "");
	/* a share, not a bound: the family competes with other VMs at its source's weight */
	if (!err && cgs.opts.cpu_weight && cg_family_dir[0] && cgs.avail[CG_CPU]) {
		char weight[24];
		snprintf(weight, sizeof(weight), "%" PRIu64, cgs.opts.cpu_weight);
		if ((err = cg_write(cg_family_dir, "cpu.weight", weight)))
			err = log_errno(err, "the family cgroup %s: writing cpu.weight=%s",
					cg_family_dir, weight);
	}
	return err;
}

int jail_cgroup_set_guest_ram(uint64_t guest_ram)
{
	char v[32];
	int err;

	/* Without the controller, jail_cgroup_enter's line already named memory.max. */
	if (!cgs.dir[0] || cgs.mem_explicit || !guest_ram || guest_ram == JAIL_CGROUP_RAM_LATER ||
	    !cgs.avail[CG_MEMORY])
		return 0;
	snprintf(v, sizeof(v), "%" PRIu64, (uint64_t)(guest_ram + JAIL_MEM_OVERHEAD));
	err = set_limit(CG_MEMORY, "memory.max", v);
	if (!err)
		err = family_limit(CG_MEMORY, "memory.max", guest_ram + JAIL_MEM_OVERHEAD, "");
	if (!err)
		report_missing();
	return err;
}

/* memory.max, cpu.max, cpu.weight, pids.max from the options; the missing ones in one line. */
static int apply_limits(uint64_t guest_ram, const struct cgroup_opts *o)
{
	char avail[512], v[32];
	int err;

	cgs.missing[0] = '\0';
	memset(cgs.ctl_missing, 0, sizeof(cgs.ctl_missing));
	err = read_controllers(cgs.dir, avail, sizeof(avail));
	if (err)
		return log_errno(err, "cgroup %s: reading cgroup.controllers", cgs.dir);
	for (int i = 0; i < CG_NCTL; i++)
		cgs.avail[i] = has_word(avail, cg_ctl_name[i]);
	cgs.mem_explicit = o && o->mem_limit;
	if (cgs.mem_explicit) {
		snprintf(v, sizeof(v), "%" PRIu64, o->mem_limit);
		err = set_limit(CG_MEMORY, "memory.max", v);
	} else if (guest_ram == JAIL_CGROUP_RAM_LATER) {
		/* A restore learns its RAM later: say now if the limit cannot be set then. */
		if (!cgs.avail[CG_MEMORY])
			err = set_limit(CG_MEMORY, "memory.max", "guest RAM + 256M");
	} else if (guest_ram) {
		snprintf(v, sizeof(v), "%" PRIu64, (uint64_t)(guest_ram + JAIL_MEM_OVERHEAD));
		err = set_limit(CG_MEMORY, "memory.max", v);
	}
	if (!err && o && o->cpu_max[0])
		err = set_limit(CG_CPU, "cpu.max", o->cpu_max);
	if (!err && o && o->cpu_weight) {
		snprintf(v, sizeof(v), "%" PRIu64, o->cpu_weight);
		err = set_limit(CG_CPU, "cpu.weight", v);
	}
	if (!err && o && o->pids_max) {
		snprintf(v, sizeof(v), "%" PRIu64, o->pids_max);
		err = set_limit(CG_PIDS, "pids.max", v);
	}
	if (!err)
		err = family_limits(guest_ram);
	if (!err)
		report_missing();
	return err;
}

/* The limits of the cgroup just entered (cgs.dir); on failure leave and remove it again. */
static int limits_or_leave(uint64_t guest_ram, const struct cgroup_opts *o)
{
	int err = apply_limits(guest_ram, o);

	if (err)
		jail_cgroup_leave();
	return err;
}

/* A VMM exec'd inside a jailed family (a full/diff/live child): the family's cgroup, bound at
 * ROOT's path, is its ROOT too. Only where the jail took CAP_SYS_ADMIN away, the uid is not
 * root, and ROOT is that uid's: a stray FORKVM_CGROUP_FAMILY elsewhere changes nothing. */
static void family_from_env(void)
{
	const char *host = getenv(FAMILY_ENV);
	struct stat st;

	if (cg_family || !host || !jail_inside_parent() || getuid() == 0 ||
	    stat(cgs.root, &st) < 0 || st.st_uid != getuid())
		return;
	cg_family = true;
	snprintf(cg_family_host, sizeof(cg_family_host), "%s", host);
}

/* Where VM cgroups are made: ROOT/forkvm, or ROOT itself inside a jailed family. */
static void base_path(char *buf, size_t len)
{
	snprintf(buf, len, cg_family ? "%s" : "%s/forkvm", cgs.root);
}

/*
 * Find ROOT (0) and, once per process lineage, make ROOT/forkvm, reap its stale cgroups and
 * enable the controllers. orig gets where this process leaves to. -ENOENT: no writable
 * cgroup v2 (logged); another -errno if a step failed (logged).
 */
static int cgroup_base(char *base, size_t len, char *orig, size_t orig_len)
{
	/* Forked from a VMM in its cgroup (a cow template or child): leave to the root later,
	 * as current_cgroup() would say for a /forkvm/ cgroup. */
	bool in_forkvm_cgroup = cgs.dir[0] != '\0';
	int err;

	if (find_root() < 0) { /* cheap; a jailed VMM's forks may not see the root it had */
		log_info("no writable cgroup v2 hierarchy (/sys/fs/cgroup, /sys/fs/cgroup/unified or "
			 "FORKVM_CGROUP_ROOT): running without a per-VM cgroup");
		return -ENOENT;
	}
	family_from_env();
	bool base_ready = cg_base_ready_root[0] && !strcmp(cg_base_ready_root, cgs.root);

	if (cg_family)
		snprintf(orig, orig_len, "%s/" LEAVING, cgs.root);
	else if (in_forkvm_cgroup && base_ready)
		snprintf(orig, orig_len, "%s", cgs.root);
	else if ((err = current_cgroup(orig, orig_len)))
		return log_errno(err, "reading /proc/self/cgroup");
	base_path(base, len);
	if (!base_ready) {
		if (mkdir(base, 0755) < 0 && errno != EEXIST)
			return log_errno(-errno, "creating the cgroup %s", base);
		/* In a family, root enabled the controllers (its cgroup.subtree_control is root's) */
		reap_stale(base, cg_family ? 1 : 0);
		if (!cg_family)
			enable_controllers(base);
		snprintf(cg_base_ready_root, sizeof(cg_base_ready_root), "%s", cgs.root);
	}
	return 0;
}

/* Make dir and move this process into it; -errno (logged), dir removed again. */
static int move_into(const char *dir)
{
	char pid[24];
	int err;

	if (mkdir(dir, 0755) < 0 && errno != EEXIST)
		return log_errno(-errno, "creating the cgroup %s", dir);
	snprintf(pid, sizeof(pid), "%d", (int)getpid());
	if ((err = cg_write(dir, "cgroup.procs", pid))) {
		(void)log_errno(err, "moving the VMM into the cgroup %s", dir);
		rmdir(dir);
	}
	return err;
}

/* Cgroups a jailed family may make (its VMs', its templates', its leaving leaf) and how deep:
 * its VMMs make theirs right in it. Bounds the root reaper's work on a dead family too. */
#define FAMILY_MAX_CGROUPS "4096"
#define FAMILY_MAX_DEPTH "1"

/* The family's cgroup, made afresh, its controllers handed on, with its leaving leaf;
 * -errno (logged). */
static int family_make(const char *fam)
{
	char leaving[600];
	int err;

	/* A family of an earlier VMM with our pid (cgroup names hold pids, and uids follow
	 * them): whatever its jail made in it goes first, never reused. */
	if (mkdir(fam, 0755) < 0) {
		err = errno == EEXIST ? reap_family(fam) : errno;
		if (!err && mkdir(fam, 0755) < 0)
			err = errno;
		if (err)
			return log_errno(-err, "creating the family cgroup %s%s", fam,
					 err == EBUSY ? " (an earlier VMM's of this pid is still in use)"
						      : "");
	}
	if ((err = cg_write(fam, "cgroup.max.descendants", FAMILY_MAX_CGROUPS)) ||
	    (err = cg_write(fam, "cgroup.max.depth", FAMILY_MAX_DEPTH))) {
		rmdir(fam);
		return log_errno(err, "the family cgroup %s: its cgroup.max.descendants and "
				 "cgroup.max.depth", fam);
	}
	/* What ROOT/forkvm offers, on to the family's VMs (before any process is in it). */
	for (int i = 0; i < CG_NCTL; i++) {
		if (cg_enable_err[i])
			continue;
		err = enable_controller(fam, cg_ctl_name[i]);
		cg_enable_err[i] = err;
		snprintf(cg_enable_at[i], sizeof(cg_enable_at[i]), "%s", fam);
	}
	snprintf(leaving, sizeof(leaving), "%s/" LEAVING, fam);
	if (mkdir(leaving, 0755) < 0) {
		err = log_errno(-errno, "creating the cgroup %s", leaving);
		rmdir(fam);
		return err;
	}
	return 0;
}

/* Remove what family_make made (nothing in it any more). */
static void family_unmake(void)
{
	char leaving[600];

	if (!cg_family_dir[0])
		return;
	snprintf(leaving, sizeof(leaving), "%s/" LEAVING, cg_family_dir);
	if ((rmdir(leaving) < 0 && errno != ENOENT) || rmdir(cg_family_dir) < 0)
		log_warn("removing the family cgroup %s: %s (the next VMM start removes it)",
			 cg_family_dir, strerror(errno));
	cg_family_dir[0] = '\0';
}

static int enter(const char *name, uint64_t guest_ram, const struct cgroup_opts *o, bool family)
{
	char base[sizeof(cg_family_dir)], fam[sizeof(cg_family_dir)];
	int err;

	if (o) {
		cgs.opts = *o;
		cgs.have_opts = true;
	}
	if (o && o->no_cgroup) {
		cgs.dir[0] = '\0';
		return 0;
	}
	err = cgroup_base(base, sizeof(base), cgs.orig, sizeof(cgs.orig));
	cgs.dir[0] = '\0';
	if (err)
		return err == -ENOENT ? 0 : err;
	if (family) {
		if (snprintf(fam, sizeof(fam), "%s/%s-%d", base, name, (int)getpid()) >=
		    (int)sizeof(fam))
			return log_errno(-ENAMETOOLONG, "the family cgroup of %s in %s", name, base);
		if ((err = family_make(fam)))
			return err;
		snprintf(cg_family_dir, sizeof(cg_family_dir), "%s", fam);
		snprintf(base, sizeof(base), "%s", fam);
	}
	if (snprintf(cgs.dir, sizeof(cgs.dir), "%s/%s-%d", base, name, (int)getpid()) >=
	    (int)sizeof(cgs.dir))
		err = log_errno(-ENAMETOOLONG, "the cgroup of %s in %s", name, base);
	else
		err = move_into(cgs.dir);
	if (err) {
		cgs.dir[0] = '\0';
		family_unmake();
		return err;
	}
	err = limits_or_leave(guest_ram, o);
	if (!err)
		log_debug("in the cgroup %s", cgs.dir);
	return err;
}

int jail_cgroup_enter(const char *name, uint64_t guest_ram, const struct cgroup_opts *o)
{
	return enter(name, guest_ram, o, false);
}

int jail_cgroup_enter_family(const char *name, uint64_t guest_ram, const struct cgroup_opts *o)
{
	return enter(name, guest_ram, o, true);
}

int jail_cgroup_delegate(unsigned uid, char *src, size_t len)
{
	/* The directory (to make cgroups in) and the cgroup.procs of the family and of its
	 * leaving leaf (moves within the family need the common ancestor's). Not
	 * cgroup.subtree_control: turning a controller off and on would reset every limit in
	 * the family, the source's root-made leaf's too. */
	static const char *const files[] = { "", "/cgroup.procs", "/" LEAVING "/cgroup.procs" };
	char path[700];

	src[0] = '\0';
	if (!cg_family_dir[0] || !cgs.dir[0])
		return 0;
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		snprintf(path, sizeof(path), "%s%s", cg_family_dir, files[i]);
		if (chown(path, uid, uid) < 0)
			return log_errno(-errno, "giving the family cgroup's %s to uid %u", path, uid);
	}
	if (snprintf(src, len, "%s", cg_family_dir) >= (int)len)
		return log_errno(-ENAMETOOLONG, "the family cgroup %s", cg_family_dir);
	return 0;
}

const char *jail_cgroup_root(void)
{
	return cgs.root;
}

int jail_cgroup_jailed(void)
{
	const char *leaf = strrchr(cgs.dir, '/');
	char dir[sizeof(cgs.dir)];

	if (!cg_family_dir[0] || !leaf)
		return 0;
	snprintf(dir, sizeof(dir), "%s%s", cgs.root, leaf);
	snprintf(cgs.dir, sizeof(cgs.dir), "%s", dir);
	snprintf(cgs.orig, sizeof(cgs.orig), "%s/" LEAVING, cgs.root);
	/* ROOT/forkvm of the host is out of sight: nothing to reap or enable in here. */
	snprintf(cg_base_ready_root, sizeof(cg_base_ready_root), "%s", cgs.root);
	snprintf(cg_family_host, sizeof(cg_family_host), "%s", cg_family_dir);
	cg_family_dir[0] = '\0';
	cg_family = true;
	if (setenv(FAMILY_ENV, cg_family_host, 1) < 0)
		return log_errno(-errno, "jail: setenv " FAMILY_ENV);
	return 0;
}

void jail_cgroup_slot_path(const char *name, char *buf, size_t len)
{
	char base[300];

	base_path(base, sizeof(base));
	snprintf(buf, len, "%s/%s-%d", base, name, (int)getpid());
}

void jail_cgroup_prepare(const char *name, const struct cgroup_opts *o, struct cgroup_slot *slot)
{
	char base[300], orig[sizeof(cgs.orig)]; /* unused: the child leaves to ROOT (adopt) */

	slot->fd = -1;
	slot->dir[0] = '\0';
	if (o && o->no_cgroup)
		return;
	if (cgroup_base(base, sizeof(base), orig, sizeof(orig)))
		return;
	jail_cgroup_slot_path(name, slot->dir, sizeof(slot->dir)); /* BASE/NAME-<our pid> */
	if (mkdir(slot->dir, 0755) < 0 && errno != EEXIST) {
		log_warn("creating the cgroup %s: %s; the child makes its own", slot->dir,
			 strerror(errno));
		slot->dir[0] = '\0';
		return;
	}
	slot->fd = open(slot->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (slot->fd < 0) {
		log_warn("opening the cgroup %s: %s; the child makes its own", slot->dir,
			 strerror(errno));
		rmdir(slot->dir);
		slot->dir[0] = '\0';
	}
}

static void slot_drop(struct cgroup_slot *slot)
{
	if (slot->fd >= 0)
		close(slot->fd);
	slot->fd = -1;
	if (slot->dir[0])
		rmdir(slot->dir);
	slot->dir[0] = '\0';
}

pid_t jail_cgroup_fork(struct cgroup_slot *slot)
{
	struct robust_list_head *robust = NULL;
	size_t robust_len = 0;
	void *tid = NULL;
	long pid;

	if (slot->fd < 0)
		return fork();
	/* glibc keeps the thread's id at the address it gave set_tid_address(): the child's
	 * must be written there (CLONE_CHILD_SETTID), as glibc's fork does; without it, or
	 * without clone3 and CLONE_INTO_CGROUP (Linux < 5.7), a plain fork. */
	if (prctl(PR_GET_TID_ADDRESS, &tid, 0, 0, 0) < 0 || !tid ||
	    syscall(SYS_get_robust_list, 0, &robust, &robust_len) < 0) {
		slot_drop(slot);
		return fork();
	}
	struct clone_args args = {
		.flags = CLONE_INTO_CGROUP | CLONE_CHILD_SETTID | CLONE_CHILD_CLEARTID,
		.child_tid = (uint64_t)(uintptr_t)tid,
		.exit_signal = SIGCHLD,
		.cgroup = (uint64_t)slot->fd,
	};
	pid = syscall(SYS_clone3, &args, sizeof(args));
	if (pid == 0) {
		/* The kernel gives a child no robust list; glibc's fork registers it again. */
		if (robust)
			syscall(SYS_set_robust_list, robust, robust_len);
		return 0;
	}
	if (pid < 0) { /* ENOSYS, EINVAL (no CLONE_INTO_CGROUP), EPERM...: the old way */
		log_debug("clone3 into %s: %s; forking, the child makes its own cgroup", slot->dir,
			  strerror(errno));
		slot_drop(slot);
		return fork();
	}
	close(slot->fd);
	slot->fd = -1;
	return (pid_t)pid;
}

int jail_cgroup_adopt(struct cgroup_slot *slot, const char *name, uint64_t guest_ram,
		      const struct cgroup_opts *o)
{
	int err;

	if (slot->fd < 0)
		return jail_cgroup_enter(name, guest_ram, o);
	if (o) {
		cgs.opts = *o;
		cgs.have_opts = true;
	}
	close(slot->fd);
	slot->fd = -1;
	/* leave to the root, as a forkvm one; in a jailed family to its leaving leaf */
	snprintf(cgs.orig, sizeof(cgs.orig), cg_family ? "%s/" LEAVING : "%s", cgs.root);
	/* NAME-<the maker's pid> (cgroup v2 cannot rename): the stale reaper skips a cgroup
	 * with processes in it, and the template removes a killed child's. */
	snprintf(cgs.dir, sizeof(cgs.dir), "%s", slot->dir);
	err = limits_or_leave(guest_ram, o);
	if (!err)
		log_debug("in the cgroup %s (cloned into it)", cgs.dir);
	return err;
}

void jail_cgroup_leave(void)
{
	char pid[24];
	int err;

	if (!cgs.dir[0])
		return;
	snprintf(pid, sizeof(pid), "%d", (int)getpid());
	err = cg_write(cgs.orig, "cgroup.procs", pid);
	if (err)
		log_warn("leaving the cgroup %s%s for %s%s: %s (the next VMM start removes it)",
			 SHOWN(cgs.dir), SHOWN(cgs.orig), strerror(-err));
	else if (rmdir(cgs.dir) < 0)
		log_warn("removing the cgroup %s%s: %s (the next VMM start removes it)",
			 SHOWN(cgs.dir), strerror(errno));
	cgs.dir[0] = '\0';
	family_unmake(); /* before the jail only: inside, the family's cgroup is root's to remove */
}

/*
 * The family budget's record (cgroup.h): the family's cgroup and one VM's limits. Written
 * root's (file_write_atomic: 0600, in a directory the jail cannot write), read the same way.
 */
static json_t *limit_json(uint64_t v)
{
	return v == UINT64_MAX ? json_null() : json_integer((json_int_t)v);
}

static uint64_t limit_of(json_t *o, const char *key)
{
	json_t *v = json_object_get(o, key);

	return json_is_integer(v) && json_integer_value(v) > 0 ? (uint64_t)json_integer_value(v)
							       : UINT64_MAX;
}

int jail_family_record_write(const char *record, const struct cgroup_limits *unit, int vms,
			     struct fvm_err *err)
{
	json_t *o = json_pack("{s:s, s:o, s:o, s:I, s:o}", "cgroup", unit->path, "memory_max",
			      limit_json(unit->memory_max), "cpu_quota", limit_json(unit->cpu_quota),
			      "cpu_period", (json_int_t)unit->cpu_period, "pids_max",
			      limit_json(unit->pids_max));
	if (o && vms > 0 && json_object_set_new(o, "vms", json_integer(vms)) < 0) {
		json_decref(o);
		o = NULL;
	}
	char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
	int ret = text ? file_write_atomic(record, text, strlen(text), 0600, err)
		       : errmsg(err, -ENOMEM, "the family record %s: out of memory", record);

	free(text);
	json_decref(o);
	return ret;
}

int jail_cgroup_family_record(const char *record)
{
	struct fvm_err err = FVM_ERR_INIT;
	struct cgroup_limits unit;

	if (unlink(record) < 0 && errno != ENOENT)
		return log_errno(-errno, "removing the stale family record %s", record);
	/* A budget fixed with --family-budget is nobody's to change; no family: nothing. */
	if (!cg_family_dir[0] || !cgs.dir[0] || cgs.opts.family_budget)
		return 0;
	read_limits_at(cgs.dir, &unit);
	snprintf(unit.path, sizeof(unit.path), "%s", cg_family_dir);
	if (jail_family_record_write(record, &unit, 1, &err))
		return log_errno(err.errnum, "%s", err_text(&err));
	return 0;
}

#define CG_PATH_MAX sizeof(((struct cgroup_limits *)0)->path)

/* The record at path, root's (checked on the descriptor read): its JSON, its cgroup under
 * ROOT/forkvm/ (NULL: -errno in *ret, err set). */
static json_t *record_read(const char *record, int *ret, struct fvm_err *err)
{
	char text[4097];
	struct stat st;
	json_t *o = NULL;
	const char *cg;
	ssize_t n;
	int fd = file_open_regular(record, O_NOFOLLOW, &st, err);

	if (fd < 0) {
		*ret = fd;
		return NULL;
	}
	if (st.st_uid != 0)
		*ret = errmsg(err, -EPERM, "the family record %s is not root's", record);
	else if ((n = read(fd, text, sizeof(text) - 1)) < 0)
		*ret = errmsg(err, -errno, "reading %s: %s", record, strerror(errno));
	else if (text[n] = '\0', !(o = json_loads(text, 0, NULL)))
		*ret = errmsg(err, -EINVAL, "the family record %s: not JSON", record);
	close(fd);
	if (!o)
		return NULL;
	cg = json_string_value(json_object_get(o, "cgroup"));
	/* root wrote it, but it names where limits go: only a family cgroup of ours */
	size_t root = cg && find_root() == 0 ? strlen(cgs.root) : 0;
	if (!root || strncmp(cg, cgs.root, root) != 0 || strncmp(cg + root, "/forkvm/", 8) != 0 ||
	    cg[root + 8] == '.' || cg[root + 8] == '\0' || strchr(cg + root + 8, '/') ||
	    strlen(cg) >= CG_PATH_MAX) {
		*ret = errmsg(err, -EINVAL, "the family record %s: %s is no family cgroup", record,
			      cg ? cg : "no cgroup");
		json_decref(o);
		return NULL;
	}
	return o;
}

/* unit * n, saturating below max; max stays max. */
static uint64_t times(uint64_t unit, int n)
{
	if (unit == UINT64_MAX)
		return UINT64_MAX;
	return n > 0 && unit > (UINT64_MAX - 1) / (uint64_t)n ? UINT64_MAX - 1 : unit * (uint64_t)n;
}

/* One VM's limits and the family's cgroup (path), from record o. */
static void unit_of(json_t *o, struct cgroup_limits *u)
{
	json_t *period = json_object_get(o, "cpu_period");

	memset(u, 0, sizeof(*u));
	snprintf(u->path, sizeof(u->path), "%s", json_string_value(json_object_get(o, "cgroup")));
	u->memory_max = limit_of(o, "memory_max");
	u->cpu_quota = limit_of(o, "cpu_quota");
	u->pids_max = limit_of(o, "pids_max");
	u->cpu_period = json_is_integer(period) ? (uint64_t)json_integer_value(period) : 100000;
}

/* The family's limits := members (at least 1) x unit. */
static int budget_write(const struct cgroup_limits *unit, int members, struct fvm_err *err)
{
	struct cgroup_limits l = *unit;
	int ret;

	if (members < 1)
		members = 1;
	l.memory_max = times(unit->memory_max, members);
	l.cpu_quota = times(unit->cpu_quota, members);
	l.pids_max = times(unit->pids_max, members);
	if (access(l.path, F_OK) < 0)
		return errmsg(err, -ENOENT, "the family cgroup %s is gone", l.path);
	if ((ret = cgroup_write_limits(&l)))
		return errmsg(err, ret, "the budget of %d VM(s) on %s: %s", members, l.path,
			      strerror(-ret));
	return 0;
}

int jail_family_budget_apply(const char *record, int members, struct fvm_err *err)
{
	struct cgroup_limits unit;
	int ret;
	json_t *o = record_read(record, &ret, err);

	if (!o)
		return ret;
	unit_of(o, &unit);
	json_decref(o);
	return budget_write(&unit, members, err);
}

/* The family's cgroups with a process in them (cgroup.events "populated 1"), but leaving. */
static int populated_members(const char *family, struct fvm_err *err)
{
	struct dirent *de;
	int n = 0;
	DIR *d = opendir(family);

	if (!d)
		return errmsg(err, -errno, "the family cgroup %s: %s", family, strerror(errno));
	while ((de = readdir(d))) {
		char events[PATH_MAX], text[256];
		int fd;
		ssize_t len;

		if (de->d_type != DT_DIR || de->d_name[0] == '.' || !strcmp(de->d_name, "leaving") ||
		    snprintf(events, sizeof(events), "%s/%s/cgroup.events", family, de->d_name) >=
			    (int)sizeof(events))
			continue;
		fd = open(events, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
		len = fd < 0 ? -1 : read(fd, text, sizeof(text) - 1);
		if (fd >= 0)
			close(fd);
		if (len > 0 && (text[len] = '\0', strstr(text, "populated 1")))
			n++;
	}
	closedir(d);
	return n;
}

int jail_family_budget_keep(const char *record, int extra, int limit, struct fvm_err *err)
{
	char dir[PATH_MAX];
	const char *base;
	int lock = -1, ret, live, vms;
	json_t *o = NULL;
	struct cgroup_limits unit;

	if ((ret = path_split(record, dir, sizeof(dir), &base)))
		return errmsg(err, ret, "the family record %s: a bad path", record);
	/* One keeper at a time: two branches of a family must not write older counts. */
	lock = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (lock < 0 || flock(lock, LOCK_EX) < 0) {
		ret = errmsg(err, -errno, "locking %s: %s", dir, strerror(errno));
		goto out;
	}
	if (!(o = record_read(record, &ret, err)))
		goto out;
	unit_of(o, &unit);
	live = populated_members(unit.path, err);
	if (live < 0) {
		ret = live;
		goto out;
	}
	/* The VMs root let in (vms) bound the count: cgroups the family's VMMs make and fill
	 * themselves do not raise it. A record without it is the daemon's: not ours to keep. */
	if (!json_is_integer(json_object_get(o, "vms"))) {
		ret = 0;
		goto out;
	}
	vms = (int)json_integer_value(json_object_get(o, "vms"));
	if (live < vms)
		vms = live;
	if (limit > 0 && vms > limit)
		vms = limit;
	if (vms < 1)
		vms = 1;
	vms += extra;
	if (!(ret = jail_family_record_write(record, &unit, vms, err)))
		ret = budget_write(&unit, vms, err);
	if (!ret)
		ret = vms;
out:
	json_decref(o);
	if (lock >= 0)
		close(lock); /* and the lock with it */
	return ret;
}
