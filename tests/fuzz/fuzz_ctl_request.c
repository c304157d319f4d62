/* libFuzzer harness: control-socket request lines (src/ctl/ctl_proto.c) validated against the
 * command table (src/ctl/ctl_commands.c). Input: one request line, as the server reads it. */
#include "fuzz_util.h"
#include "ctl/ctl.h"
#include "util/errmsg.h"

#include <jansson.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ctl_request req;
	struct fvm_err err = FVM_ERR_INIT;
	json_t *reply;

	if (size > CTL_MAX_LINE)
		return 0; /* the server rejects longer lines before parsing */
	err.msg[0] = '\0';
	if (ctl_request_parse((const char *)data, size, &req, &err) == 0) {
		if (!req.cmd || !req.root)
			abort();
		/* What handlers do: read every declared field with its accessor. */
		for (int i = 0; i < CTL_MAX_FIELDS && req.cmd->fields[i].name; i++) {
			const struct ctl_field *fl = &req.cmd->fields[i];

			switch (fl->type) {
			case CTL_U64:
				(void)ctl_req_u64(&req, fl->name, 0);
				break;
			case CTL_STR:
				(void)ctl_req_str(&req, fl->name, NULL);
				break;
			default:
				(void)ctl_req_bool(&req, fl->name, false);
				break;
			}
		}
		reply = ctl_reply_ok();
		ctl_request_release(&req);
	} else {
		if (!err.msg[0])
			abort(); /* every rejection carries a message for the client */
		reply = ctl_reply_error("%s", err.msg);
	}
	if (!reply)
		abort();
	free(json_dumps(reply, JSON_COMPACT));
	json_decref(reply);
	return 0;
}
