/* The snapshot control command: runs on the control worker thread, off the loop. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/vm.h"
#include "ctl/ctl.h"
#include "ctl/ctl_server.h"
#include "ctl/ctl_socket.h"
#include "snapshot/snap_format.h"
#include "snapshot/snapshot.h"
#include "util/errmsg.h"

/* A snapshot request, copied out of the request (which the loop frees) for the worker. */
struct snap_job {
	struct ctl_server *srv;
	uint64_t client;
	char *dir, *source;
	bool force;
};

static void job_free(struct snap_job *j)
{
	free(j->dir);
	free(j->source);
	free(j);
}

static json_t *snapshot_reply(struct ctl_server *srv, const struct snap_save_opts *o)
{
	struct snap_save_stats st;
	struct fvm_err e = FVM_ERR_INIT;
	json_t *reply;
	int err;

	err = snap_save(ctl_vm(srv), o, &st, &e);
	if ((err == -EEXIST || err == -ENOTDIR) && o->force) {
		struct fvm_err why = FVM_ERR_INIT;

		if (snap_dir_replaceable(o->dir, &why) != 0)
			return ctl_reply_error("snapshot: refusing to replace %s: it is not a complete "
					       "forkvm snapshot (%s)", o->dir, err_text(&why));
	}
	if (err == -EEXIST)
		return ctl_reply_error("snapshot %s already exists (use force to replace it)", o->dir);
	if (err)
		return ctl_reply_error("snapshot to %s failed: %s", o->dir, err_text(&e));
	reply = ctl_reply_ok();
	json_object_set_new(reply, "dir", json_string(o->dir));
	json_object_set_new(reply, "pause_us", json_real((double)st.pause_ns / 1e3));
	json_object_set_new(reply, "paused_us", json_real((double)st.paused_ns / 1e3));
	json_object_set_new(reply, "source_paused_us", json_real((double)st.source_paused_ns / 1e3));
	json_object_set_new(reply, "capture_us", json_real((double)st.capture_ns / 1e3));
	json_object_set_new(reply, "write_ms", json_real((double)st.write_ns / 1e6));
	json_object_set_new(reply, "vmstate_bytes", json_integer((json_int_t)st.vmstate_bytes));
	json_object_set_new(reply, "memory_bytes_written",
			    json_integer((json_int_t)st.memory_bytes_written));
	json_object_set_new(reply, "memory_bytes_by_helper",
			    json_integer((json_int_t)st.memory_bytes_by_helper));
	return reply;
}

static void *snapshot_worker(void *arg)
{
	struct snap_job *j = arg;
	struct snap_save_opts o = {
		.dir = j->dir, .force = j->force, .source = j->source, .strategy = "full",
	};

	ctl_worker_done(j->srv, j->client, snapshot_reply(j->srv, &o));
	job_free(j);
	return NULL;
}

json_t *ctl_cmd_snapshot(struct ctl_server *srv, struct ctl_request *req)
{
	struct snap_save_opts o = {
		.dir = ctl_req_str(req, "dir", NULL),
		.force = ctl_req_bool(req, "force", false),
		.source = ctl_req_str(req, "source", NULL),
		.strategy = "full",
	};
	struct snap_job *job;
	struct fvm_err perr = FVM_ERR_INIT;
	int err;

	if (ctl_path_check("dir", o.dir, false, &perr))
		return ctl_reply_error("snapshot: %s", err_text(&perr));
	job = calloc(1, sizeof(*job));
	if (!job)
		return ctl_reply_error("snapshot: out of memory");
	*job = (struct snap_job){ .srv = srv, .client = req->client, .dir = strdup(o.dir),
				  .source = o.source ? strdup(o.source) : NULL, .force = o.force };
	if (!job->dir || (o.source && !job->source)) {
		job_free(job);
		return ctl_reply_error("snapshot: out of memory");
	}
	/* Writing guest RAM takes seconds per GiB: the loop keeps answering meanwhile. */
	err = ctl_worker_start(srv, "snapshot", snapshot_worker, job);
	if (err) {
		job_free(job);
		if (err == -EBUSY)
			return ctl_reply_error("snapshot: busy, a %s is in progress", srv->busy);
		return ctl_reply_error("snapshot: starting the worker thread: %s", strerror(-err));
	}
	return NULL; /* snapshot_worker answers */
}
