/* The snapshot control command: runs in the control loop while the VM is paused. */
#include <errno.h>
#include <string.h>

#include "core/vm.h"
#include "ctl/ctl.h"
#include "snapshot/snapshot.h"

json_t *ctl_cmd_snapshot(struct ctl_server *srv, struct ctl_request *req)
{
	struct snap_save_opts o = {
		.dir = ctl_req_str(req, "dir", NULL),
		.force = ctl_req_bool(req, "force", false),
		.source = ctl_req_str(req, "source", NULL),
		.strategy = "full",
	};
	struct snap_save_stats st;
	json_t *reply;
	int err;

	if (!o.dir || o.dir[0] != '/')
		return ctl_reply_error("snapshot dir must be an absolute path");
	err = snap_save(ctl_vm(srv), &o, &st);
	if (err == -EEXIST)
		return ctl_reply_error("snapshot %s already exists (use force to replace it)", o.dir);
	if (err)
		return ctl_reply_error("snapshot to %s failed: %s", o.dir, strerror(-err));
	reply = ctl_reply_ok();
	json_object_set_new(reply, "dir", json_string(o.dir));
	json_object_set_new(reply, "pause_us", json_real((double)st.pause_ns / 1e3));
	json_object_set_new(reply, "paused_us", json_real((double)st.paused_ns / 1e3));
	json_object_set_new(reply, "capture_us", json_real((double)st.capture_ns / 1e3));
	json_object_set_new(reply, "write_ms", json_real((double)st.write_ns / 1e6));
	json_object_set_new(reply, "vmstate_bytes", json_integer((json_int_t)st.vmstate_bytes));
	json_object_set_new(reply, "memory_bytes_written",
			    json_integer((json_int_t)st.memory_bytes_written));
	return reply;
}
