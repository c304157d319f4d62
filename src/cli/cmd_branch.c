/*
 * forkvm branch VM: make N children of a running VM (full, diff, live or cow); a daemon
 * sandbox branches through the daemon, which records the children as its sandboxes.
 */
#include <getopt.h>
#include <stdbool.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli_daemon.h"
#include "cli/cli_jail.h"
#include "cli/cli_vm.h"
#include "cli/commands.h"
#include "util/errmsg.h"

static const char usage[] =
	"forkvm branch VM [options]\n"
	"  --strategy S     full | diff | live | cow (default cow)\n"
	"                   full: pause, write a snapshot, resume; children restore it\n"
	"                   diff: first a full base, then layers of the pages dirtied since\n"
	"                   live: memfd RAM write-protected; pages copied before their first write\n"
	"                   cow:  fork a template process that holds the image and forks children\n"
	"  --count N        children (default 1, max 1000)\n"
	"  --name PREFIX    children are PREFIX-0..; cow template PREFIX.template (default VM-b)\n"
	"  --dir DIR        full/diff/live: where the snapshot or layers go\n"
	"  --paused         children start with their vCPUs parked\n"
	"  --record-hashes  test mode: hash the image while the source is paused\n"
	"  --timeout MS     for every child to be ready (default 120000); Linux children\n"
	"                   then get as long again for the agent fix-up\n"
	"  --no-agent-sync  Linux guests: skip the fix-up (new entropy and the host's clock\n"
	"                   through the guest agent; docs/BRANCH.md)\n"
	"Prints the result as JSON: children (name, pid, socket) and the timings.\n"
	"A daemon sandbox (VM is an sb-... id) branches through the daemon: its children are\n"
	"daemon sandboxes (name and id: their ids), full/diff/live images are the daemon's;\n"
	"--strategy and --count (at most 100) only.\n";

static const struct option options[] = {
	{ "strategy", required_argument, NULL, 's' }, { "count", required_argument, NULL, 'n' },
	{ "name", required_argument, NULL, 'p' },     { "dir", required_argument, NULL, 'd' },
	{ "paused", no_argument, NULL, 'P' },	      { "record-hashes", no_argument, NULL, 'H' },
	{ "timeout", required_argument, NULL, 't' },  { "no-agent-sync", no_argument, NULL, 'A' },
	{ NULL, 0, NULL, 0 },
};

/* The daemon's branch of sandbox id; prints its children as the direct path does. */
static int daemon_branch(const char *id, const char *strategy, unsigned long long count)
{
	char path[128];
	struct fvm_err err = FVM_ERR_INIT;
	json_t *body, *reply = NULL, *out = NULL, *kids, *kid;
	size_t i;
	int ret = CLI_EXIT_FAIL;

	body = json_pack("{s:I,s:s}", "count", (json_int_t)count, "strategy", strategy);
	if (!body || cli_daemon_sandbox_path(id, "/branch", path, sizeof(path)) < 0) {
		fprintf(stderr, "forkvm branch: %s: cannot build the daemon request\n", id);
		goto out;
	}
	if (cli_daemon_call("POST", path, body, &reply, &err) < 0) {
		fprintf(stderr, "forkvm branch: %s\n", err_text(&err));
		goto out;
	}
	kids = json_array();
	json_array_foreach(json_object_get(reply, "children"), i, kid) {
		json_t *c = json_pack("{s:O?,s:O?,s:O?,s:O?}", "name", json_object_get(kid, "id"),
				      "id", json_object_get(kid, "id"), "pid",
				      json_object_get(kid, "pid"), "socket",
				      json_object_get(kid, "socket"));
		if (!c || json_array_append_new(kids, c) < 0)
			break;
	}
	/* "o" takes kids whatever happens; out is NULL if anything above failed. */
	if (kids && i == json_array_size(json_object_get(reply, "children")))
		out = json_pack("{s:b,s:o,s:O?,s:s}", "ok", 1, "children", kids, "pause_us",
				json_object_get(reply, "pause_us"), "strategy", strategy);
	else
		json_decref(kids);
	if (!out) {
		fprintf(stderr, "forkvm branch: %s: out of memory printing the answer\n", id);
		goto out;
	}
	json_dumpf(out, stdout, JSON_COMPACT);
	fputc('\n', stdout);
	ret = CLI_EXIT_OK;
out:
	json_decref(out);
	json_decref(reply);
	json_decref(body);
	return ret;
}

static int run(int argc, char **argv)
{
	const char *strategy = "cow", *prefix = NULL, *dir = NULL, *run_dir;
	unsigned long long count = 1, timeout = 120000;
	char absdir[PATH_MAX], defprefix[64];
	struct fvm_err err = FVM_ERR_INIT;
	bool paused = false, hashes = false, no_agent_sync = false, via_daemon;
	/* an option the daemon has no counterpart for, and why */
	const char *direct_only = NULL, *direct_why = NULL;
	json_t *req, *reply;
	int opt;

	optind = 1;
	opterr = 0;
	while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
		switch (opt) {
		case 's': strategy = optarg; break;
		case 'n':
			if (cli_parse_u64(optarg, &count) || count < 1 || count > 1000)
				return cli_usage_error(&cli_cmd_branch, "--count '%s': need 1-1000", optarg);
			break;
		case 'p':
			prefix = optarg;
			direct_only = "--name";
			direct_why = "the daemon names the children: their ids";
			break;
		case 'd':
			dir = optarg;
			direct_only = "--dir";
			direct_why = "the daemon keeps branch images in its state directory";
			break;
		case 'P':
			paused = true;
			direct_only = "--paused";
			direct_why = "the daemon's children start running";
			break;
		case 'H':
			hashes = true;
			direct_only = "--record-hashes";
			direct_why = "a test mode of the direct path";
			break;
		case 'A':
			no_agent_sync = true;
			direct_only = "--no-agent-sync";
			direct_why = "the daemon always fixes up Linux children";
			break;
		case 't':
			if (cli_parse_u64(optarg, &timeout) || timeout < 1 || timeout > 3600000)
				return cli_usage_error(&cli_cmd_branch, "--timeout '%s' out of range", optarg);
			direct_only = "--timeout";
			direct_why = "the daemon bounds the branch itself";
			break;
		default:
			return cli_usage_error(&cli_cmd_branch, "unknown option '%s'", argv[optind - 1]);
		}
	}
	if (optind != argc - 1)
		return cli_usage_error(&cli_cmd_branch, "need exactly one VM");
	if (strcmp(strategy, "full") && strcmp(strategy, "diff") && strcmp(strategy, "live") &&
	    strcmp(strategy, "cow"))
		return cli_usage_error(&cli_cmd_branch, "--strategy '%s': full, diff, live or cow",
				       strategy);
	if (cli_daemon_sandbox(argv[optind], &via_daemon, &err) < 0) {
		fprintf(stderr, "forkvm branch: %s\n", err_text(&err));
		return CLI_EXIT_FAIL;
	}
	if (via_daemon && direct_only)
		return cli_daemon_refuse("branch", direct_only, direct_why);
	if (via_daemon)
		return daemon_branch(argv[optind], strategy, count);
	if (strcmp(strategy, "cow") && !dir)
		return cli_usage_error(&cli_cmd_branch, "--strategy %s needs --dir", strategy);
	if (dir) {
		/* The VMM resolves paths from its own working directory: send an absolute one. */
		char cwd[PATH_MAX] = "";
		if (dir[0] != '/' && !getcwd(cwd, sizeof(cwd)))
			return CLI_EXIT_FAIL;
		if (snprintf(absdir, sizeof(absdir), "%s%s%s", cwd, cwd[0] ? "/" : "", dir) >=
		    (int)sizeof(absdir))
			return cli_usage_error(&cli_cmd_branch, "--dir '%s' is too long", dir);
	}
	if (!prefix) {
		const char *base = strrchr(argv[optind], '/');
		snprintf(defprefix, sizeof(defprefix), "%.30s-b", base ? base + 1 : argv[optind]);
		char *dot = strstr(defprefix, ".sock");
		if (dot)
			memmove(dot, dot + 5, strlen(dot + 5) + 1);
		prefix = defprefix;
	}
	if (cli_ensure_run_dir() < 0 || !(run_dir = cli_run_dir()) || run_dir[0] != '/')
		return cli_usage_error(&cli_cmd_branch, "the run directory must be an absolute path");
	req = json_pack("{s:s,s:s,s:I,s:s,s:s,s:b,s:b,s:I}", "cmd", "branch", "strategy", strategy,
			"count", (json_int_t)count, "prefix", prefix, "run_dir", run_dir, "paused",
			paused, "record_hashes", hashes, "timeout_ms", (json_int_t)timeout);
	if (dir)
		json_object_set_new(req, "dir", json_string(absdir));
	if (no_agent_sync)
		json_object_set_new(req, "no_agent_sync", json_true());
	/* A jailed family's budget for the children to come (then as they are). */
	struct cli_jail jail;
	int jailed = cli_vm_jail(argv[optind], &jail, &err) > 0;
	int extra = (int)count + !strcmp(strategy, "cow");
	int budget = jailed ? cli_jail_budget(&jail, extra, 0) : 0;
	/* Readiness, then (Linux) as long again for the fix-up, then slack. */
	reply = cli_vm_call_peer(argv[optind], jailed ? (int)jail.pid : -1,
				 jailed ? (int)jail.uid : -1, req, 2 * (int)timeout + 60000);
	json_decref(req);
	if (budget > 0)
		cli_jail_budget(&jail, 0, budget - extra + cli_jail_made(reply));
	if (!reply && dir) {
		if (jailed && !cli_jail_writes_itself(&jail, absdir))
			fprintf(stderr, "forkvm branch: VM %s is jailed: --dir must lie in its jail "
				"directory %s or a --jail-bind directory (SECURITY.md)\n", argv[optind],
				jail.dir);
	}
	if (!reply)
		return CLI_EXIT_FAIL;
	/* A jailed source's children live in its jail: named here too. */
	if (jailed)
		cli_link_children(&jail, reply, run_dir);
	return cli_print_reply(reply, JSON_COMPACT);
}

const struct cli_command cli_cmd_branch = { "branch", "fork a running VM into N children", usage,
					    run };
