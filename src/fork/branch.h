/* BRANCH: make N children of a running VM with one of four strategies (a library call). */
#ifndef FORKVM_BRANCH_H
#define FORKVM_BRANCH_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "util/errmsg.h"

struct vm;

enum branch_strategy { BRANCH_FULL, BRANCH_DIFF, BRANCH_LIVE, BRANCH_COW };

#define BRANCH_MAX_CHILDREN 1000

struct branch_opts {
	enum branch_strategy strategy;
	int count;
	const char *prefix;	/* children PREFIX-0..; the cow template PREFIX.template */
	const char *run_dir;	/* sockets, logs, consoles */
	const char *dir;	/* full/diff/live: where snapshots/layers go */
	bool paused;		/* children start with vCPUs parked */
	bool record_hashes;	/* test mode: hash the image while the source is paused */
	int timeout_ms;
	bool no_agent_sync;	/* Linux guests: skip reseeding/clock-setting the children */
	/* cow: how a child serves its VM until it ends (the control server, ctl_serve). Given
	 * by the caller, so this layer does not reach up into the service above it. */
	int (*serve)(struct vm *vm, const char *socket, int ready_fd);
	/*
	 * cow, a source with a NIC: the child's own TAP (IFF_TAP | IFF_NO_PI | IFF_VNET_HDR,
	 * non-blocking), called in each child before its VM is built, with the child's name and
	 * net_arg. Returns the fd (the child's NIC owns it) or -errno. NULL, or an error: the
	 * child's NIC starts detached (link down to the guest), never on the source's TAP, which
	 * the child does not have (docs/NET.md). Given by the caller (the networking above).
	 */
	int (*child_tap)(const char *child_name, void *net_arg);
	void *net_arg;
};

struct branch_child {
	char name[64];
	char socket[512];
	pid_t pid;
};

struct branch_result {
	uint64_t pause_ns;	/* source paused → every vCPU parked */
	uint64_t paused_ns;	/* the pause window: first vCPU parked → last back in the guest */
	uint64_t source_paused_ns; /* pause request → resumed, as the control thread saw it */
	uint64_t capture_ns;	/* reading vCPU/VM/device state while paused */
	uint64_t fork_ns;	/* cow: fork() of the template while paused */
	uint64_t arm_ns;	/* live: arming write-protect */
	uint64_t complete_ns;	/* live: until the frozen image is complete */
	uint64_t populate_ns;	/* live, kernels < 6.4: populating guest RAM before the pause */
	uint64_t populated_bytes; /* live, kernels < 6.4: bytes that populating newly allocated */
	bool wp_unpopulated;	/* live: the kernel write-protected unpopulated pages itself */
	uint64_t wp_faults;	/* live: source writes that waited for their page to be copied */
	uint64_t total_ns;	/* request → every child ready */
	/* cow, from the request: the template running, its first child forked, its last child
	 * forked, every child ready (agent fix-up included): where a fan-out's time goes */
	uint64_t template_ns, first_fork_ns, last_fork_ns, ready_ns;
	uint64_t start_ns;	/* CLOCK_MONOTONIC at the request: what the four above count from */
	uint64_t bytes_written; /* full/diff: memory bytes written */
	char snapshot[4096];	/* full/diff/live: the snapshot or layer the children use */
	char template_socket[512]; /* cow: the template's control socket */
	int nregions;
	uint64_t image_hash[2];	/* record_hashes: chained page hash of each RAM region */
	int count;
	struct branch_child *children; /* count entries, malloc'd */
};

const char *branch_strategy_name(enum branch_strategy s);
int branch_strategy_parse(const char *name, enum branch_strategy *out);

/* Branch the VM; on error err names the failing step or child and nothing is left running. */
int branch(struct vm *vm, const struct branch_opts *opts, struct branch_result *res,
	   struct fvm_err *err);
void branch_result_free(struct branch_result *res);

/* Strategy implementations (branch.c, diff.c, live.c, cow_branch.c). */
int branch_diff(struct vm *vm, const struct branch_opts *o, struct branch_result *res,
		struct fvm_err *err);
int branch_live(struct vm *vm, const struct branch_opts *o, struct branch_result *res,
		struct fvm_err *err);
/* Restore the children from a snapshot directory (file backend). */
int branch_restore_children(const char *snapshot, const struct branch_opts *o,
			    struct branch_result *res, struct fvm_err *err);

/* The source's pause around a branch: pause unless the user had paused it, hash in test mode. */
struct branch_pause {
	bool was_paused;
	uint64_t t0;
};
int branch_pause_source(struct vm *vm, const struct branch_opts *o, struct branch_result *res,
			struct branch_pause *bp, struct fvm_err *err);
/* Resume (unless the user had paused it) and record the pause window. */
void branch_resume_source(struct vm *vm, struct branch_result *res, const struct branch_pause *bp);

/* The image hashes of every RAM region (the VM must be paused for them to mean anything). */
void branch_hash_image(struct vm *vm, struct branch_result *res);

#endif
