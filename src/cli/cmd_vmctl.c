/*
 * pause, resume, status, stop and ctl: one control request each. A daemon sandbox's pause,
 * resume, status and stop go through the daemon (its route for each), so its records follow.
 */
#include <errno.h>
#include <stdbool.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli_daemon.h"
#include "cli/commands.h"
#include "cli/cli_vm.h"
#include "util/errmsg.h"

/*
 * cmd on the daemon sandbox id: the daemon's route for it (stop: DELETE, which waits for the
 * VMM to exit and removes the record); prints the answer as the direct path prints the VM's.
 */
static int daemon_request(const struct cli_command *self, const char *id, const char *cmd)
{
	static const struct {
		const char *cmd, *method, *suffix;
	} routes[] = {
		{ "pause", "POST", "/pause" }, { "resume", "POST", "/resume" },
		{ "status", "GET", "" },	 { "stop", "DELETE", "" },
	};
	char path[128];
	struct fvm_err err = FVM_ERR_INIT;
	json_t *reply = NULL;
	size_t i = 0;

	while (i < sizeof(routes) / sizeof(routes[0]) && strcmp(routes[i].cmd, cmd))
		i++;
	if (i == sizeof(routes) / sizeof(routes[0]) ||
	    cli_daemon_sandbox_path(id, routes[i].suffix, path, sizeof(path)) < 0) {
		fprintf(stderr, "forkvm %s: %s has no daemon route for sandbox %s\n", self->name, cmd,
			id);
		return CLI_EXIT_FAIL;
	}
	if (cli_daemon_call(routes[i].method, path, NULL, &reply, &err) < 0) {
		fprintf(stderr, "forkvm %s: %s\n", self->name, err_text(&err));
		return CLI_EXIT_FAIL;
	}
	json_dumpf(reply, stdout, strcmp(cmd, "status") ? JSON_COMPACT : JSON_INDENT(2));
	fputc('\n', stdout);
	json_decref(reply);
	return CLI_EXIT_OK;
}

/* Whether vm is a daemon sandbox; -1 after printing why that could not be told. */
static int is_daemon_sandbox(const struct cli_command *self, const char *vm)
{
	struct fvm_err err = FVM_ERR_INIT;
	bool yes;

	if (cli_daemon_sandbox(vm, &yes, &err) < 0) {
		fprintf(stderr, "forkvm %s: %s\n", self->name, err_text(&err));
		return -1;
	}
	return yes;
}

static int simple_request(const struct cli_command *self, int argc, char **argv, const char *cmd)
{
	json_t *req;
	int ret;

	if (argc < 2)
		return cli_usage_error(self, "missing VM");
	if (argc > 2 || argv[1][0] == '-')
		return cli_usage_error(self, "unexpected argument '%s'", argc > 2 ? argv[2] : argv[1]);
	ret = is_daemon_sandbox(self, argv[1]);
	if (ret)
		return ret < 0 ? CLI_EXIT_FAIL : daemon_request(self, argv[1], cmd);
	req = json_pack("{s:s}", "cmd", cmd);
	ret = cli_vm_call_print(argv[1], req, 30000, strcmp(cmd, "status") ? JSON_COMPACT : JSON_INDENT(2));
	json_decref(req);
	return ret;
}

static int run_pause(int argc, char **argv) { return simple_request(&cli_cmd_pause, argc, argv, "pause"); }
static int run_resume(int argc, char **argv) { return simple_request(&cli_cmd_resume, argc, argv, "resume"); }
static int run_status(int argc, char **argv) { return simple_request(&cli_cmd_status, argc, argv, "status"); }

static bool process_gone(pid_t pid)
{
	char path[64], state = 0;
	FILE *f;

	if (kill(pid, 0) < 0 && errno == ESRCH)
		return true;
	/* A zombie has finished exiting; only its parent's wait is missing. */
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "r");
	if (!f)
		return true;
	if (fscanf(f, "%*d (%*[^)]) %c", &state) != 1)
		state = 0;
	fclose(f);
	return state == 'Z' || state == 'X';
}

/* stop returns once the VMM process has exited, so callers can rely on it being gone. */
static int run_stop(int argc, char **argv)
{
	json_t *req, *status;
	pid_t pid;
	int ret;

	if (argc != 2 || argv[1][0] == '-')
		return simple_request(&cli_cmd_stop, argc, argv, "stop");
	ret = is_daemon_sandbox(&cli_cmd_stop, argv[1]);
	if (ret)
		return ret < 0 ? CLI_EXIT_FAIL : daemon_request(&cli_cmd_stop, argv[1], "stop");
	req = json_pack("{s:s}", "cmd", "status");
	status = cli_vm_call(argv[1], req, 10000);
	json_decref(req);
	if (!status)
		return CLI_EXIT_FAIL;
	pid = (pid_t)json_integer_value(json_object_get(status, "pid"));
	json_decref(status);
	ret = simple_request(&cli_cmd_stop, argc, argv, "stop");
	if (ret != CLI_EXIT_OK)
		return ret;
	for (int i = 0; i < 3000; i++) {
		if (process_gone(pid))
			return CLI_EXIT_OK;
		usleep(10000);
	}
	fprintf(stderr, "forkvm stop: VMM pid %d of %s still runs after 30 s\n", (int)pid, argv[1]);
	return CLI_EXIT_FAIL;
}

static int run_ctl(int argc, char **argv)
{
	json_error_t jerr;
	json_t *req;
	int ret;

	if (argc != 3)
		return cli_usage_error(&cli_cmd_ctl, "expected VM and one JSON request");
	req = json_loads(argv[2], 0, &jerr);
	if (!req)
		return cli_usage_error(&cli_cmd_ctl, "request is not JSON: %s", jerr.text);
	ret = cli_vm_call_print(argv[1], req, 600000, JSON_COMPACT);
	json_decref(req);
	return ret;
}

#define VM_HELP                                                                            \
	"  VM is a name (socket in the run directory), a socket path, or a daemon sandbox id\n" \
	"  (sb-...: then the request goes through the daemon, forkvm --help)\n"

const struct cli_command cli_cmd_pause = { "pause", "park every vCPU of a VM",
	"forkvm pause VM\n" VM_HELP, run_pause };
const struct cli_command cli_cmd_resume = { "resume", "run a paused VM again",
	"forkvm resume VM\n" VM_HELP, run_resume };
const struct cli_command cli_cmd_status = { "status", "show a VM's state as JSON",
	"forkvm status VM\n" VM_HELP "  A daemon sandbox shows the daemon's record of it.\n",
	run_status };
const struct cli_command cli_cmd_stop = { "stop", "end a VM and wait for its VMM to exit",
	"forkvm stop VM\n" VM_HELP "  A daemon sandbox is ended by the daemon, which removes its "
	"record.\n", run_stop };
const struct cli_command cli_cmd_ctl = { "ctl", "send one raw JSON request to a VM",
	"forkvm ctl VM '{\"cmd\":\"status\"}'\n", run_ctl };
