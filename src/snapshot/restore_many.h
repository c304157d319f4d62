/* Start N VMM processes restored from one snapshot, in parallel, all or nothing. */
#ifndef FORKVM_RESTORE_MANY_H
#define FORKVM_RESTORE_MANY_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "util/errmsg.h"

struct restored_child {
	char name[64];
	char socket[512];
	pid_t pid;
};

/* `forkvm run` arguments a restore may pass on to each child (uffd, cgroup and network
 * options: a network's allow and deny lists may hold 64 CIDRs each). */
#define RESTORE_MAX_EXTRA 320

struct restore_many_opts {
	const char *dir;	/* snapshot directory */
	const char *backend;	/* file | memfd | hugetlb | anon */
	int count;
	const char *prefix;	/* children are PREFIX-0 .. PREFIX-(count-1) */
	const char *run_dir;	/* sockets, logs and consoles go here */
	bool paused;
	int timeout_ms;		/* for every child to become ready; then again for the fix-up */
	bool no_agent_sync;	/* Linux snapshots: skip the agent fix-up of the clones */
	const char *extra[RESTORE_MAX_EXTRA]; /* more `forkvm run` arguments (uffd, cgroup, net) */
	int nextra;
	/* The children's networks come from this process's network broker (net/net.h): it
	 * goes to each as --net-broker-fd 4. */
	bool net_broker;
};

/*
 * Spawn `count` `forkvm run --restore` processes at once (each in its own session, so they
 * outlive the caller) and wait until every control socket is ready. For a Linux snapshot
 * (its config's guest kind) each clone then gets the agent fix-up (agent_sync: new entropy,
 * the host's clock) within one more timeout_ms for all, unless no_agent_sync; a Linux
 * snapshot with `paused` or without a vsock device is refused unless no_agent_sync.
 *
 * All or nothing: if child k fails to start, to become ready or to be fixed up, every child
 * is killed and reaped and their sockets removed, and err names k and the cause and quotes
 * the last lines of k's log. A child that failed keeps its log (SOCKET.log) and console.
 */
int restore_many(const struct restore_many_opts *o, struct restored_child *children,
		 struct fvm_err *err);

/*
 * Before spawning children PREFIX-first..PREFIX-(first+count-1) in run_dir: 0 if no process
 * serves any of their sockets, else -EADDRINUSE with err naming the first taken (a running
 * VM of that name: starting the child would fail, and cleaning up after it would take that
 * VM's files).
 */
int vmm_child_names_free(const char *run_dir, const char *prefix, int first, int count,
			 struct fvm_err *err);
/*
 * Remove what a killed child at socket left: its socket, vsock socket and disk overlays, and
 * unless keep_log its log and console. Nothing, with a warning, when a process serves the
 * socket: then the name is another running VM's, whose files these are.
 */
void vmm_child_remove_files(const char *socket, bool keep_log);

/* The last line a VMM child logged to SOCKET.log: why it failed. */
void vmm_child_reason(const char *socket, char *buf, size_t len);
/*
 * Append to buf (NUL-terminated) "; its log SOCKET.log ends:" and its last lines, then the
 * same for SOCKET.console if that is not empty; or say that the log is missing or empty.
 */
void vmm_child_log_tail(const char *socket, struct fvm_err *err);
/* Append to err what the running child at socket says its vCPUs are doing (control `vcpus`:
 * exits, mp_state, RIP, pending events), for a child whose agent did not answer. */
void vmm_child_vcpus(const char *socket, struct fvm_err *err);

#endif
