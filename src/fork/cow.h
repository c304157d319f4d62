/* cow strategy: a forked template process holds the frozen image and forks the children. */
#ifndef FORKVM_COW_H
#define FORKVM_COW_H

#include <stdbool.h>
#include <sys/types.h>

#include "core/vm.h"
#include "fork/branch.h"
#include "jail/cgroup.h"
#include "snapshot/snapshot.h"
#include "util/errmsg.h"

struct cow_template {
	/*
	 * The source's guest RAM and /dev/kvm, copied out of its struct vm, which is not used
	 * after the setup: a source that is itself a cow child keeps that struct on a thread
	 * stack glibc counts as free in this process (raw clone3, no fork handlers), which a
	 * thread started here or in a child may reuse or unmap.
	 */
	struct guest_mem mem;
	struct kvm kvm;
	struct snap_machine machine; /* vCPU/VM/device state captured while the source was paused */
	struct cpuid_policy cpuid_policy; /* machine.config.cpu_features, parsed */
	char prefix[48];
	char run_dir[440];
	char socket[600];	/* PREFIX.template.sock */
	char disk_dir[600];	/* PREFIX.template.disks: the source's sealed disk layers, linked */
	int listen_fd;
	int next_index;		/* children are PREFIX-<index> */
	int live;		/* children not yet reaped */
	struct {
		pid_t pid;
		char socket[512];
		char cgroup[512];	/* made for it by the template; "" none */
	} *kids;		/* every child made, so a killed one's socket can be removed */
	int nkids, capkids;
	uint64_t first_fork_ns, last_fork_ns, ready_ns; /* the last cow_spawn's (CLOCK_MONOTONIC) */
	bool source_alive;
	int timeout_ms;
	struct cgroup_opts cg;	/* the source's cgroup options: each child enters with them */
	bool have_cg;
	int (*serve)(struct vm *vm, const char *socket, int ready_fd); /* branch_opts.serve */
	int (*child_tap)(const char *child_name, void *net_arg);	/* branch_opts.child_tap */
	void *net_arg;
};

/* In the template process: fork `count` children, wait until all are ready, then give each
 * child of a Linux guest the agent fix-up (agent/agent_sync.h) unless no_agent_sync. On
 * failure every child of this call is killed, err names the failing one and quotes its log,
 * which stays (as do the logs of every child that failed). */
int cow_spawn(struct cow_template *t, int count, bool paused, bool no_agent_sync,
	      struct branch_child *out, struct fvm_err *err);

/* In a freshly forked child: become a VM on the inherited RAM and serve it. Never returns. */
__attribute__((noreturn)) void cow_child_main(struct cow_template *t, const char *name,
					      const char *socket, bool paused, int ready_fd,
					      struct cgroup_slot *cg);

/* In the template process: set up, spawn the first children, report, serve. Never returns. */
__attribute__((noreturn)) void cow_template_main(struct vm *vm, struct snap_buf *state,
						 const struct branch_opts *o, int report_fd,
						 pid_t source, struct cgroup_slot *cg);

/* Source side: pause, capture, fork the template, resume, wait for its report. */
int branch_cow(struct vm *vm, const struct branch_opts *o, struct branch_result *res,
	       struct fvm_err *err);

#endif
