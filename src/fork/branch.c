/* The branch engine's entry point: strategy dispatch, the full strategy, image hashes. */
#include "fork/branch.h"
#include "net/net.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/vm.h"
#include "devices/probe_dev.h"
#include "fork/cow.h"
#include "jail/cgroup.h"
#include "snapshot/restore_many.h"
#include "snapshot/snapshot.h"
#include "util/clock.h"
#include "util/errmsg.h"
#include "util/fileio.h"

static const char *const names[] = { "full", "diff", "live", "cow" };

const char *branch_strategy_name(enum branch_strategy s)
{
	return (unsigned)s < 4 ? names[s] : "unknown";
}

int branch_strategy_parse(const char *name, enum branch_strategy *out)
{
	for (int i = 0; i < 4; i++)
		if (strcmp(name, names[i]) == 0) {
			*out = (enum branch_strategy)i;
			return 0;
		}
	return -EINVAL;
}

void branch_hash_image(struct vm *vm, struct branch_result *res)
{
	res->nregions = vm->mem.nregions;
	for (int i = 0; i < vm->mem.nregions; i++)
		res->image_hash[i] = probe_hash_memory(vm->mem.host + vm->mem.regions[i].offset,
						       vm->mem.regions[i].size);
}

int branch_pause_source(struct vm *vm, const struct branch_opts *o, struct branch_result *res,
			struct branch_pause *bp, struct fvm_err *err)
{
	int ret;

	bp->t0 = monotonic_ns();
	bp->was_paused = vm_is_paused(vm);
	if (!bp->was_paused && (ret = vm_pause(vm))) {
		return errmsg(err, ret, "pausing the source: %s", strerror(-ret));
	}
	res->pause_ns = bp->was_paused ? 0 : vm->last_pause_ns;
	if (o->record_hashes)
		branch_hash_image(vm, res);
	return 0;
}

void branch_resume_source(struct vm *vm, struct branch_result *res, const struct branch_pause *bp)
{
	if (bp->was_paused)
		return;
	res->paused_ns = vm_resume_window(vm);
	res->source_paused_ns = monotonic_ns() - bp->t0;
}

/* Children restored from a snapshot directory (full, diff and live all end this way). */
int branch_restore_children(const char *snapshot, const struct branch_opts *o,
			    struct branch_result *res, struct fvm_err *err)
{
	struct restore_many_opts ro = { .dir = snapshot, .backend = "file", .count = o->count,
					.prefix = o->prefix, .run_dir = o->run_dir,
					.paused = o->paused, .timeout_ms = o->timeout_ms,
					.no_agent_sync = o->no_agent_sync };
	struct restored_child *kids = calloc((size_t)o->count, sizeof(*kids));
	const struct net *net = net_current();
	struct net_argv *na = calloc(1, sizeof(*na));
	int ret;

	if (!kids || !na) {
		free(kids);
		free(na);
		return errmsg(err, -ENOMEM, "out of memory for %d children", o->count);
	}
	/* A networked source's children get networks of the same plan, each on new host ports
	 * (docs/NET.md): the snapshot's NIC needs one, and they must not take the source's. */
	if (net && net->active) {
		ret = net_opts_argv(&net->opts, true, na, ro.extra, RESTORE_MAX_EXTRA - 8);
		if (ret < 0) {
			errf(err, "the children's network options do not fit");
			goto out;
		}
		ro.nextra = ret;
		ro.net_broker = net->lifeline_fd >= 0; /* a jailed source's: its broker makes them */
	}
	/* ... and the source's cgroup limits, as cow children inherit them (SECURITY.md): a
	 * limited sandbox must not branch into unlimited ones. memory.max without --mem-limit
	 * follows each child's RAM. */
	struct cgroup_argv cga;
	ro.nextra += cgroup_opts_argv(jail_cgroup_opts(), &cga, ro.extra + ro.nextra);
	ret = restore_many(&ro, kids, err);
	for (int i = 0; !ret && i < o->count; i++) {
		memcpy(res->children[i].name, kids[i].name, sizeof(kids[i].name));
		memcpy(res->children[i].socket, kids[i].socket, sizeof(kids[i].socket));
		res->children[i].pid = kids[i].pid;
		res->count++;
	}
out:
	free(kids);
	free(na);
	return ret;
}

static int branch_full(struct vm *vm, const struct branch_opts *o, struct branch_result *res,
		       struct fvm_err *err)
{
	struct snap_save_opts so = { .dir = o->dir, .force = true, .strategy = "full",
				     .source = o->prefix };
	struct snap_save_stats st;
	struct branch_pause bp;
	int ret;

	if (!o->dir) {
		return errmsg(err, -EINVAL, "the full strategy needs a snapshot directory");
	}
	if ((ret = branch_pause_source(vm, o, res, &bp, err)))
		return ret;
	ret = snap_save(vm, &so, &st, err); /* already paused: snap_save leaves it so */
	branch_resume_source(vm, res, &bp);
	if (ret)
		return ret; /* err names the step and the file */
	res->bytes_written = st.memory_bytes_written;
	snprintf(res->snapshot, sizeof(res->snapshot), "%s", o->dir);
	return branch_restore_children(o->dir, o, res, err);
}

/*
 * Siblings start with one RNG state and the source's clock: each Linux child gets the agent
 * fix-up (agent/agent_sync.h) from whoever made it, before the branch reports it ready:
 * restore_many for full/diff/live, the cow template for cow. Refuse what cannot get it.
 */
static int branch_check_agent_sync(const struct vm *vm, const struct branch_opts *o,
				   struct fvm_err *err)
{
	if (vm->probe_guest || o->no_agent_sync)
		return 0;
	if (o->paused) {
		return errmsg(err, -EINVAL,
			      "paused children of a Linux guest cannot get the agent fix-up "
			 "(new entropy, the host's clock), which needs them running; pass "
			 "no_agent_sync (--no-agent-sync) to branch them paused anyway");
	}
	if (!vm->vsock) {
		return errmsg(err, -EINVAL,
			      "this Linux guest has no vsock device: its children's agents "
			 "cannot be reached for the fix-up (new entropy, the host's clock); pass "
			 "no_agent_sync (--no-agent-sync) to branch without it");
	}
	return 0;
}

int branch(struct vm *vm, const struct branch_opts *o, struct branch_result *res,
	   struct fvm_err *err)
{
	uint64_t t0 = monotonic_ns();
	int ret;

	memset(res, 0, sizeof(*res));
	res->start_ns = t0;
	if (o->count < 1 || o->count > BRANCH_MAX_CHILDREN) {
		return errmsg(err, -EINVAL, "count must be 1-%d", BRANCH_MAX_CHILDREN);
	}
	if ((ret = branch_check_agent_sync(vm, o, err)))
		return ret;
	/* Before the source pauses: a name a running VM has fails nothing half-way (the cow
	 * template checks its own, numbered on from earlier branches). */
	if (o->strategy != BRANCH_COW &&
	    (ret = vmm_child_names_free(o->run_dir, o->prefix, 0, o->count, err)))
		return ret;
	res->children = calloc((size_t)o->count, sizeof(*res->children));
	if (!res->children) {
		return errmsg(err, -ENOMEM, "out of memory for %d children", o->count);
	}
	if (o->dir && o->strategy == BRANCH_DIFF && (ret = mkdir_p(o->dir, 0700))) {
		return errmsg(err, ret, "creating %s: %s", o->dir, strerror(-ret));
	}
	switch (o->strategy) {
	case BRANCH_FULL: ret = branch_full(vm, o, res, err); break;
	case BRANCH_DIFF: ret = branch_diff(vm, o, res, err); break;
	case BRANCH_LIVE: ret = branch_live(vm, o, res, err); break;
	default: ret = branch_cow(vm, o, res, err); break;
	}
	res->total_ns = monotonic_ns() - t0;
	return ret;
}

void branch_result_free(struct branch_result *res)
{
	free(res->children);
	res->children = NULL;
}
