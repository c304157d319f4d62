/* The branch control command: the source VMM runs the branch engine and reports children. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/vm.h"
#include "util/errmsg.h"
#include "util/unix_sock.h"
#include "ctl/ctl.h"
#include "ctl/ctl_server.h"
#include "ctl/ctl_socket.h"
#include "fork/branch.h"
#include "jail/jail.h"
#include "net/net.h"

static json_t *branch_reply(const struct branch_result *r, enum branch_strategy strategy)
{
	json_t *reply = ctl_reply_ok(), *kids = json_array(), *hashes = json_array();

	for (int i = 0; i < r->count; i++)
		json_array_append_new(kids, json_pack("{s:s,s:i,s:s}", "name", r->children[i].name,
						      "pid", (int)r->children[i].pid, "socket",
						      r->children[i].socket));
	for (int i = 0; i < r->nregions; i++) {
		char hex[32];
		snprintf(hex, sizeof(hex), "0x%016" PRIx64, r->image_hash[i]);
		json_array_append_new(hashes, json_string(hex));
	}
	json_object_set_new(reply, "children", kids);
	json_object_set_new(reply, "pause_us", json_real((double)r->pause_ns / 1e3));
	json_object_set_new(reply, "paused_us", json_real((double)r->paused_ns / 1e3));
	json_object_set_new(reply, "source_paused_us", json_real((double)r->source_paused_ns / 1e3));
	json_object_set_new(reply, "capture_us", json_real((double)r->capture_ns / 1e3));
	json_object_set_new(reply, "fork_us", json_real((double)r->fork_ns / 1e3));
	json_object_set_new(reply, "arm_us", json_real((double)r->arm_ns / 1e3));
	json_object_set_new(reply, "complete_ms", json_real((double)r->complete_ns / 1e6));
	json_object_set_new(reply, "populate_ms", json_real((double)r->populate_ns / 1e6));
	json_object_set_new(reply, "populated_bytes", json_integer((json_int_t)r->populated_bytes));
	if (strategy == BRANCH_LIVE) {
		json_object_set_new(reply, "wp_unpopulated", json_boolean(r->wp_unpopulated));
		json_object_set_new(reply, "wp_faults", json_integer((json_int_t)r->wp_faults));
	}
	json_object_set_new(reply, "total_ms", json_real((double)r->total_ns / 1e6));
	if (strategy == BRANCH_COW) {
		json_object_set_new(reply, "template_ms", json_real((double)r->template_ns / 1e6));
		json_object_set_new(reply, "first_fork_ms", json_real((double)r->first_fork_ns / 1e6));
		json_object_set_new(reply, "last_fork_ms", json_real((double)r->last_fork_ns / 1e6));
		json_object_set_new(reply, "ready_ms", json_real((double)r->ready_ns / 1e6));
	}
	json_object_set_new(reply, "bytes_written", json_integer((json_int_t)r->bytes_written));
	if (r->snapshot[0])
		json_object_set_new(reply, "snapshot", json_string(r->snapshot));
	if (r->template_socket[0])
		json_object_set_new(reply, "template", json_string(r->template_socket));
	if (r->nregions)
		json_object_set_new(reply, "image_hashes", hashes);
	else
		json_decref(hashes);
	return reply;
}

/* A branch request, copied out of the request (which the loop frees) for the worker. */
struct branch_job {
	struct ctl_server *srv;
	uint64_t client;
	struct branch_opts o; /* its strings point into the strdup'ed copies below */
	char *prefix, *run_dir, *dir;
};

static void job_free(struct branch_job *j)
{
	free(j->prefix);
	free(j->run_dir);
	free(j->dir);
	free(j);
}

static void *branch_worker(void *arg)
{
	struct branch_job *j = arg;
	struct branch_result res;
	struct fvm_err err = FVM_ERR_INIT;
	json_t *reply;

	if (branch(ctl_vm(j->srv), &j->o, &res, &err) < 0)
		reply = ctl_reply_error("branch (%s) failed: %s", branch_strategy_name(j->o.strategy),
					err_text(&err));
	else
		reply = branch_reply(&res, j->o.strategy);
	branch_result_free(&res);
	ctl_worker_done(j->srv, j->client, reply);
	job_free(j);
	return NULL;
}

/*
 * How a cow child serves its VM: the control server until the VM ends, then the child's own
 * network goes (net_child_tap made it; docs/NET.md, "Cleanup") while the process still runs,
 * so its host-side table does not wait for a reaper. A no-op without one.
 */
static int serve_cow_child(struct vm *vm, const char *socket, int ready_fd)
{
	int ret = ctl_serve(vm, socket, ready_fd);

	net_release_current();
	return ret;
}

json_t *ctl_cmd_branch(struct ctl_server *srv, struct ctl_request *req)
{
	struct branch_opts o = {
		.count = (int)ctl_req_u64(req, "count", 1),
		.prefix = ctl_req_str(req, "prefix", NULL),
		.run_dir = jail_run_dir(ctl_req_str(req, "run_dir", NULL)), /* jailed: its own dir */
		.dir = ctl_req_str(req, "dir", NULL),
		.paused = ctl_req_bool(req, "paused", false),
		.record_hashes = ctl_req_bool(req, "record_hashes", false),
		.timeout_ms = (int)ctl_req_u64(req, "timeout_ms", 120000),
		.no_agent_sync = ctl_req_bool(req, "no_agent_sync", false),
		.serve = serve_cow_child,
		/* cow: each child's own network namespace, TAP and ports (docs/NET.md) */
		.child_tap = net_child_tap,
	};
	struct branch_job *job;
	int ret;
	struct fvm_err err = FVM_ERR_INIT;

	if (branch_strategy_parse(ctl_req_str(req, "strategy", ""), &o.strategy))
		return ctl_reply_error("strategy must be full, diff, live or cow");
	/* Confinement (docs/CONTROL.md, Security): names stay names, paths stay in the roots. */
	if (name_check("prefix", o.prefix, 40, &err) ||
	    ctl_path_check("run_dir", o.run_dir, true, &err) ||
	    (o.dir && ctl_path_check("dir", o.dir, false, &err)))
		return ctl_reply_error("branch: %s", err_text(&err));
	if (ctl_req_u64(req, "count", 1) > BRANCH_MAX_CHILDREN || o.count < 1)
		return ctl_reply_error("count must be 1-%d", BRANCH_MAX_CHILDREN);
	job = calloc(1, sizeof(*job));
	if (!job)
		return ctl_reply_error("branch: out of memory");
	*job = (struct branch_job){ .srv = srv, .client = req->client, .o = o,
				    .prefix = strdup(o.prefix), .run_dir = strdup(o.run_dir),
				    .dir = o.dir ? strdup(o.dir) : NULL };
	if (!job->prefix || !job->run_dir || (o.dir && !job->dir)) {
		job_free(job);
		return ctl_reply_error("branch: out of memory");
	}
	job->o.prefix = job->prefix;
	job->o.run_dir = job->run_dir;
	job->o.dir = job->dir;
	/* A branch pauses, copies and waits for children: the loop keeps answering meanwhile. */
	ret = ctl_worker_start(srv, "branch", branch_worker, job);
	if (ret) {
		job_free(job);
		if (ret == -EBUSY)
			return ctl_reply_error("branch: busy, a %s is in progress", srv->busy);
		return ctl_reply_error("branch: starting the worker thread: %s", strerror(-ret));
	}
	return NULL; /* branch_worker answers */
}
