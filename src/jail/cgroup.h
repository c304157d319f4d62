/*
 * cgroup v2 per VM: each VMM moves itself into ROOT/forkvm/NAME-PID before guest RAM exists,
 * with memory.max, cpu.max and pids.max set from its options; leaves and removes it at exit.
 * Where cgroup v2 is missing or read-only the VMM logs once and runs without (docs/SECURITY.md).
 */
#ifndef FORKVM_JAIL_CGROUP_H
#define FORKVM_JAIL_CGROUP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/errmsg.h"

/* Memory the VMM needs besides guest RAM (page tables, vmstate buffers, threads' stacks). */
#define JAIL_MEM_OVERHEAD (256ULL << 20)

struct cgroup_opts {
	bool no_seccomp;	/* --no-seccomp: development only */
	bool no_cgroup;		/* --no-cgroup */
	uint64_t mem_limit;	/* --mem-limit: memory.max; 0 = guest RAM + JAIL_MEM_OVERHEAD */
	char cpu_max[48];	/* --cpu-max: "QUOTA PERIOD" for cpu.max; "" = unlimited */
	uint64_t cpu_weight;	/* 0: no cpu controller */	/* --cpu-weight 1-10000; 0 = default */
	uint64_t pids_max;	/* --pids-max; 0 = unlimited */
	uint64_t family_budget;	/* --family-budget N: a jailed family's cgroup gets N times the
				 * memory.max, cpu.max quota and pids.max above; 0 = 1 */
};

/* `forkvm run` options, ids from CGROUP_OPT_BASE. */
#define CGROUP_OPT_BASE 3100
enum { CGROUP_OPT_NO_SECCOMP = CGROUP_OPT_BASE, CGROUP_OPT_NO_CGROUP, CGROUP_OPT_MEM_LIMIT,
       CGROUP_OPT_CPU_MAX, CGROUP_OPT_CPU_WEIGHT, CGROUP_OPT_PIDS_MAX,
       CGROUP_OPT_FAMILY_BUDGET };
#define CGROUP_OPTIONS                                                           \
	{ "no-seccomp", no_argument, NULL, CGROUP_OPT_NO_SECCOMP },              \
	{ "no-cgroup", no_argument, NULL, CGROUP_OPT_NO_CGROUP },                \
	{ "mem-limit", required_argument, NULL, CGROUP_OPT_MEM_LIMIT },          \
	{ "cpu-max", required_argument, NULL, CGROUP_OPT_CPU_MAX },              \
	{ "cpu-weight", required_argument, NULL, CGROUP_OPT_CPU_WEIGHT },        \
	{ "pids-max", required_argument, NULL, CGROUP_OPT_PIDS_MAX },            \
	{ "family-budget", required_argument, NULL, CGROUP_OPT_FAMILY_BUDGET }
#define CGROUP_USAGE                                                                          \
	"  --mem-limit SIZE     cgroup memory.max (default guest RAM + 256M)\n"                \
	"  --cpu-max Q[/P]      cgroup cpu.max: Q us of CPU per P us (default P 100000)\n"   \
	"  --cpu-weight N       cgroup cpu.weight, 1-10000\n"                                   \
	"  --pids-max N         cgroup pids.max\n"                                              \
	"  --family-budget N    jailed: the family's cgroup (this VM and those it branches)\n"  \
	"                       gets N times the limits above, fixed (default: 1, then as\n"  \
	"                       many times as VMs in the family, set by forkvm branch)\n"      \
	"  --no-cgroup          stay in the caller's cgroup\n"                                  \
	"  --no-seccomp         no syscall filters (development only; FORKVM_SECCOMP=0|log)\n"
/* 0, or -EINVAL with ERR filled. */
int cgroup_opt(struct cgroup_opts *o, int opt, const char *arg, struct fvm_err *err);

/* The `forkvm run` options that give a new VMM the limits of o (a branch's restored children
 * get their source's, as cow children inherit them). */
struct cgroup_argv {
	char mem[32], cpu[48], weight[24], pids[24];
};
/* Written to argv (at most 8 entries; the strings in buf); returns how many. */
int cgroup_opts_argv(const struct cgroup_opts *o, struct cgroup_argv *buf, const char **argv);

/* The limits the kernel applies to a process's cgroup v2, as read back from its files. */
struct cgroup_limits {
	bool found;		/* the process is in a cgroup v2 whose files were read */
	uint64_t memory_max;	/* bytes; UINT64_MAX: max */
	uint64_t cpu_quota, cpu_period; /* µs; quota UINT64_MAX: max */
	uint64_t cpu_weight;
	uint64_t pids_max;	/* UINT64_MAX: max */
	char path[512];		/* its directory */
};
/* Read pid's cgroup (its "0::" line of /proc/PID/cgroup under the cgroup2 mount): 0, or
 * -errno (-ENOENT: no such process, or not in a cgroup v2 we can read). */
int cgroup_read_limits(int pid, struct cgroup_limits *out);
/*
 * A jailed family whose source is pid, named name (ROOT/forkvm/NAME-PID, SECURITY.md): its
 * path in family, and in out the limits of the source's own cgroup, made by root (so not
 * the cgroup pid is in now, which the jail's uid may have chosen). 0, or -errno (-ENOENT:
 * no such cgroup; -EPERM: that cgroup is not root's).
 */
int cgroup_family_limits(int pid, const char *name, struct cgroup_limits *out, char *family,
			 size_t len);
/* Write memory.max, cpu.max and pids.max of the cgroup at l->path from l (UINT64_MAX: max);
 * a file the cgroup lacks (its controller is not enabled) is skipped. 0 or the first -errno. */
int cgroup_write_limits(const struct cgroup_limits *l);

/*
 * The budget of a jailed family (docs/SECURITY.md, "A jailed family"). The family's cgroup
 * bounds every VM in it, so its keeper sets its limits to one VM's times the VMs that live
 * in it: the daemon for its sandboxes, the CLI (at each branch) for a hand-run family whose
 * budget --family-budget did not fix. One VM's limits, read from the source's root-made
 * cgroup, and the family's cgroup are recorded in a root-owned file outside the jail,
 * RUN_DIR/NAME.jail.family.
 */
#define JAIL_FAMILY_RECORD_SUFFIX ".family"
/* Write the record: unit's limits, unit->path the family's cgroup, and vms (> 0: the VMs
 * its keeper let in; 0: none, the daemon counts its own). 0 or -errno with err. */
int jail_family_record_write(const char *record, const struct cgroup_limits *unit, int vms,
			     struct fvm_err *err);
/* Root, before the jail: this VMM's record (vms 1) when its family's budget is its keeper's
 * (no --family-budget), else none (a stale one is removed). 0 or -errno (logged). */
int jail_cgroup_family_record(const char *record);
/* The family's limits := members (at least 1) x the record's unit. 0, or -errno with err
 * (-ENOENT: no record, or its cgroup is gone; -EPERM: the record is not root's; -EINVAL: it
 * names no family cgroup under ROOT/forkvm). */
int jail_family_budget_apply(const char *record, int members, struct fvm_err *err);
/*
 * The CLI's keeping of a hand-run family's budget, under a lock on the record's directory:
 * the VMs counted are the family's populated cgroups (but leaving), at most the record's
 * vms (so cgroups the family's VMMs make and fill themselves do not raise it) and at most
 * limit (> 0: what the caller knows to be there), at least 1, plus extra (the children a
 * branch is about to make); vms := that, and the family's limits := that x the unit. The
 * count, 0 for a record without vms (the daemon's: not the CLI's to keep), or -errno with err.
 */
int jail_family_budget_keep(const char *record, int extra, int limit, struct fvm_err *err);

/* jail_cgroup_enter's guest_ram for a restore: memory.max waits for jail_cgroup_set_guest_ram. */
#define JAIL_CGROUP_RAM_LATER UINT64_MAX

/*
 * Reap empty cgroups of dead VMMs, then create ROOT/forkvm/NAME-PID, move this process in
 * and set the limits: memory.max from o->mem_limit, else guest_ram + JAIL_MEM_OVERHEAD
 * (guest_ram 0: none; JAIL_CGROUP_RAM_LATER: set by jail_cgroup_set_guest_ram), cpu.max,
 * cpu.weight and pids.max from o (NULL: none). Limits whose controller is not available
 * are named in one warning with the reason. 0 also where cgroups are unavailable (logged
 * once); a negative errno if a step failed. o is remembered (jail_cgroup_opts).
 */
int jail_cgroup_enter(const char *name, uint64_t guest_ram, const struct cgroup_opts *o);
/*
 * The same for a VMM about to enter a jail of its own: its cgroup is the leaf
 * ROOT/forkvm/NAME-PID/NAME-PID of a family cgroup ROOT/forkvm/NAME-PID, which hands the
 * controllers on to the cgroups its jail's VMMs (cow template and children, full/diff/live
 * children) make in it once jail_cgroup_delegate gave it to the jail's uid. The family's
 * own limits (the daemon's budget) and the source's leaf stay root's.
 */
int jail_cgroup_enter_family(const char *name, uint64_t guest_ram, const struct cgroup_opts *o);
/*
 * Root, before the jail: give the family cgroup to uid (the directory, cgroup.procs,
 * cgroup.threads, cgroup.subtree_control: cgroup v2 delegation) and put its path in src, for
 * the jail to bind at jail_cgroup_root()'s path. src "" when this VMM has no family cgroup.
 */
int jail_cgroup_delegate(unsigned uid, char *src, size_t len);
/* The cgroup2 mount found (ROOT); "" before any. */
const char *jail_cgroup_root(void);
/* Inside the jail, once the family's cgroup is bound at ROOT: our paths from there on. */
int jail_cgroup_jailed(void);
/* The options this process entered its cgroup with (inherited across fork: a cow template
 * passes its source's on to its children); NULL when it entered with none. */
const struct cgroup_opts *jail_cgroup_opts(void);
/* memory.max = guest RAM + overhead, unless --mem-limit set it. */
int jail_cgroup_set_guest_ram(uint64_t guest_ram);
/*
 * A cgroup made by a parent for the process it is about to fork (jail_cgroup_fork): the child
 * starts in it (clone3 CLONE_INTO_CGROUP), so no migration runs. Moving a running process
 * (writing cgroup.procs) takes the cgroup core's thread-group lock for writing, which waits
 * for an RCU grace period: 6-30 ms here, on the critical path of every cow branch
 * (docs/PERFORMANCE.md). fd is -1 where there is none (no cgroup v2, --no-cgroup, a step
 * failed): the child then enters one itself (jail_cgroup_enter).
 */
struct cgroup_slot {
	int fd;			/* the cgroup directory, O_DIRECTORY; -1 none */
	char dir[512];		/* ROOT/forkvm/NAME-PPID */
};

/* Make ROOT/forkvm/NAME-<our pid> for a child (base setup and stale reaping as
 * jail_cgroup_enter). 0 with slot->fd -1 where no cgroup is to be made or making it failed
 * (logged: the child falls back to jail_cgroup_enter). */
void jail_cgroup_prepare(const char *name, const struct cgroup_opts *o, struct cgroup_slot *slot);
/* The directory jail_cgroup_prepare made for NAME in this process (slot->dir when it made
 * one), computed again: for a caller that keeps only whether it did. */
void jail_cgroup_slot_path(const char *name, char *buf, size_t len);
/*
 * fork() into slot's cgroup. Only for a single-threaded caller (the cow template and the
 * process that forks it): it is a raw clone3, without glibc's fork handlers; the child's
 * thread id and robust list are set up as glibc's fork does. Falls back to fork() (slot->fd
 * closed and -1, its directory removed: the child enters one itself) where clone3 or
 * CLONE_INTO_CGROUP is missing. In the parent, closes slot->fd.
 */
pid_t jail_cgroup_fork(struct cgroup_slot *slot);
/* In the child of jail_cgroup_fork: take slot's cgroup (NAME-<the parent's pid>) as ours and
 * set the limits as jail_cgroup_enter does; with slot->fd -1, jail_cgroup_enter itself. */
int jail_cgroup_adopt(struct cgroup_slot *slot, const char *name, uint64_t guest_ram,
		      const struct cgroup_opts *o);
/* Move back to the cgroup this process came from and remove ours (the exit path). */
void jail_cgroup_leave(void);
/* Our cgroup directory, "" when none. */
const char *jail_cgroup_path(void);

#endif
