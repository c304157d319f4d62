/* The branch control command: the source VMM runs the branch engine and reports children. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "core/vm.h"
#include "ctl/ctl.h"
#include "fork/branch.h"

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

json_t *ctl_cmd_branch(struct ctl_server *srv, struct ctl_request *req)
{
	struct branch_opts o = {
		.count = (int)ctl_req_u64(req, "count", 1),
		.prefix = ctl_req_str(req, "prefix", NULL),
		.run_dir = ctl_req_str(req, "run_dir", NULL),
		.dir = ctl_req_str(req, "dir", NULL),
		.paused = ctl_req_bool(req, "paused", false),
		.record_hashes = ctl_req_bool(req, "record_hashes", false),
		.timeout_ms = (int)ctl_req_u64(req, "timeout_ms", 120000),
		.no_agent_sync = ctl_req_bool(req, "no_agent_sync", false),
	};
	struct branch_result res;
	char err[4096] = "";
	json_t *reply;

	if (branch_strategy_parse(ctl_req_str(req, "strategy", ""), &o.strategy))
		return ctl_reply_error("strategy must be full, diff, live or cow");
	if (!o.prefix || !*o.prefix || strchr(o.prefix, '/') || strlen(o.prefix) > 40)
		return ctl_reply_error("prefix must be 1-40 characters without '/'");
	if (!o.run_dir || o.run_dir[0] != '/')
		return ctl_reply_error("run_dir must be an absolute path");
	if (o.dir && o.dir[0] != '/')
		return ctl_reply_error("dir must be an absolute path");
	if (ctl_req_u64(req, "count", 1) > BRANCH_MAX_CHILDREN || o.count < 1)
		return ctl_reply_error("count must be 1-%d", BRANCH_MAX_CHILDREN);
	if (branch(ctl_vm(srv), &o, &res, err, sizeof(err)) < 0)
		reply = ctl_reply_error("branch (%s) failed: %s", branch_strategy_name(o.strategy), err);
	else
		reply = branch_reply(&res, o.strategy);
	branch_result_free(&res);
	return reply;
}
