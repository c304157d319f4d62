/* CLI side of the control protocol: call a VM and report errors uniformly. */
#include <stdio.h>
#include <stdlib.h>

#include "cli/cli.h"
#include "cli/cli_vm.h"
#include "util/ctl_call.h"
#include "util/errmsg.h"

json_t *cli_vm_call(const char *vm, json_t *request, int timeout_ms)
{
	return cli_vm_call_peer(vm, -1, -1, request, timeout_ms);
}

json_t *cli_vm_call_peer(const char *vm, int pid, int uid, json_t *request, int timeout_ms)
{
	char path[512];
	struct fvm_err err = FVM_ERR_INIT;
	json_t *reply = NULL;

	if (cli_vm_socket(vm, path, sizeof(path)) < 0) {
		fprintf(stderr, "forkvm: bad VM name or socket path '%s'\n", vm);
		return NULL;
	}
	if (ctl_call_peer(path, pid, uid, request, &reply, timeout_ms, &err) < 0) {
		fprintf(stderr, "forkvm: %s\n", err_text(&err));
		return NULL;
	}
	if (!json_is_true(json_object_get(reply, "ok"))) {
		const char *msg = json_string_value(json_object_get(reply, "error"));
		fprintf(stderr, "forkvm: VM %s: %s\n", vm, msg ? msg : "request failed");
		json_decref(reply);
		return NULL;
	}
	return reply;
}

int cli_print_reply(json_t *reply, int json_flags)
{
	if (!reply)
		return CLI_EXIT_FAIL;
	json_dumpf(reply, stdout, json_flags);
	fputc('\n', stdout);
	json_decref(reply);
	return CLI_EXIT_OK;
}

int cli_vm_call_print(const char *vm, json_t *request, int timeout_ms, int json_flags)
{
	return cli_print_reply(cli_vm_call(vm, request, timeout_ms), json_flags);
}
