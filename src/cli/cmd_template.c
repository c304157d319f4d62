/* forkvm template spawn|status|stop T: more children from a cow template, without the source. */
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli_jail.h"
#include "cli/cli_vm.h"
#include "cli/commands.h"

static const char usage[] =
	"forkvm template spawn TEMPLATE [--count N] [--paused] [--no-agent-sync]\n"
	"forkvm template status TEMPLATE\n"
	"forkvm template stop TEMPLATE\n"
	"  TEMPLATE is PREFIX.template (the name `forkvm branch --strategy cow` printed) or its\n"
	"  socket path. The template exits when stopped, or once its source and every child\n"
	"  it made are gone. Stopping it leaves its children running.\n"
	"  Children of a Linux guest get the agent fix-up (new entropy, the host's clock)\n"
	"  before they are reported; --no-agent-sync skips it (docs/BRANCH.md).\n";

static int run(int argc, char **argv)
{
	unsigned long long count = 1;
	bool paused = false, no_agent_sync = false;
	json_t *req, *reply;

	if (argc < 3)
		return cli_usage_error(&cli_cmd_template, "need a subcommand and TEMPLATE");
	if (strcmp(argv[1], "spawn") && strcmp(argv[1], "status") && strcmp(argv[1], "stop"))
		return cli_usage_error(&cli_cmd_template, "unknown subcommand '%s'", argv[1]);
	for (int i = 3; i < argc; i++) {
		if (strcmp(argv[1], "spawn") == 0 && strcmp(argv[i], "--paused") == 0)
			paused = true;
		else if (strcmp(argv[1], "spawn") == 0 && strcmp(argv[i], "--no-agent-sync") == 0)
			no_agent_sync = true;
		else if (strcmp(argv[1], "spawn") == 0 && strcmp(argv[i], "--count") == 0 && i + 1 < argc &&
			 !cli_parse_u64(argv[i + 1], &count) && count >= 1 && count <= 1000)
			i++;
		else
			return cli_usage_error(&cli_cmd_template, "unexpected argument '%s'", argv[i]);
	}
	req = json_pack("{s:s}", "cmd", argv[1]);
	if (strcmp(argv[1], "spawn") == 0) {
		json_object_set_new(req, "count", json_integer((json_int_t)count));
		json_object_set_new(req, "paused", json_boolean(paused));
		json_object_set_new(req, "no_agent_sync", json_boolean(no_agent_sync));
	}
	struct cli_jail jail;
	struct fvm_err err = FVM_ERR_INIT;
	int jailed = strcmp(argv[1], "spawn") == 0 && cli_vm_jail(argv[2], &jail, &err) > 0;
	/* a jailed family's budget for the children to come */
	int budget = jailed ? cli_jail_budget(&jail, (int)count, 0) : 0;
	reply = cli_vm_call_peer(argv[2], jailed ? (int)jail.pid : -1, jailed ? (int)jail.uid : -1,
				 req, 300000);
	json_decref(req);
	if (budget > 0)
		cli_jail_budget(&jail, 0, budget - (int)count + cli_jail_made(reply));
	if (!reply)
		return CLI_EXIT_FAIL;
	if (jailed) { /* a jailed template's children: named here too */
		const char *run_dir = cli_ensure_run_dir() == 0 ? cli_run_dir() : NULL;
		cli_link_children(&jail, reply, run_dir);
	}
	return cli_print_reply(reply, JSON_COMPACT);
}

const struct cli_command cli_cmd_template = { "template", "spawn more cow children, or stop a template",
					      usage, run };
