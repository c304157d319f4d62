/* forkvm: global options, then a table of subcommands, each in its own file. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli_daemon.h"
#include "cli/commands.h"
#include "util/errmsg.h"

static const struct cli_command *const commands[] = {
	&cli_cmd_run, &cli_cmd_probe, &cli_cmd_pause, &cli_cmd_resume,
	&cli_cmd_status, &cli_cmd_stop, &cli_cmd_ctl, &cli_cmd_snapshot, &cli_cmd_restore,
	&cli_cmd_image, &cli_cmd_branch, &cli_cmd_template, &cli_cmd_exec, &cli_cmd_eval,
	&cli_cmd_cp, &cli_cmd_pageserver, &cli_cmd_doctor, &cli_cmd_daemon, &cli_cmd_ls,
};

#define NCOMMANDS (sizeof(commands) / sizeof(commands[0]))

const struct cli_command *cli_find(const char *name)
{
	for (size_t i = 0; i < NCOMMANDS; i++)
		if (strcmp(commands[i]->name, name) == 0)
			return commands[i];
	return NULL;
}

static void print_overview(FILE *out)
{
	fprintf(out, "usage: forkvm [--daemon SOCKET|URL | --no-daemon] <command> [options]\n\n"
		"commands:\n");
	for (size_t i = 0; i < NCOMMANDS; i++)
		fprintf(out, "  %-10s %s\n", commands[i]->name, commands[i]->summary);
	fprintf(out, "\n'forkvm <command> --help' describes one command.\n\n"
		"A VM named by a daemon sandbox id (sb-...) is reached through the running daemon\n"
		"(forkvm daemon), so its records stay right: --daemon names it (a socket path, or\n"
		"http(s)://HOST:PORT with $FORKVM_DAEMON_TOKEN_FILE or $FORKVM_DAEMON_TOKEN), else\n"
		"$FORKVM_DAEMON_URL, $FORKVM_DAEMON_SOCKET, or %s; --no-daemon\n"
		"never asks one. Other names and socket paths are always reached directly.\n",
		cli_daemon_where()[0] ? cli_daemon_where() : "none");
}

/*
 * `run` hosts a VM: continue in the lean VM binary next to this one (DIR/vmm/forkvm,
 * src/cli/vmm_main.c), whose fewer libraries make every fork of the VMM cheaper. Returns only
 * when it could not: FORKVM_VMM_INPROCESS=1, no such binary (a partial build), or exec
 * failing (logged); the command then runs here, the same code.
 */
static void exec_vmm(char *argv0, int argc, char **argv)
{
	char self[4096], path[4200], *slash, **args;
	const char *inproc = getenv("FORKVM_VMM_INPROCESS");
	ssize_t n;

	if (inproc && strcmp(inproc, "1") == 0)
		return;
	n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n <= 0)
		return;
	self[n] = '\0';
	slash = strrchr(self, '/');
	if (!slash)
		return;
	*slash = '\0';
	snprintf(path, sizeof(path), "%s/vmm/forkvm", self);
	if (access(path, X_OK) < 0)
		return;
	args = calloc((size_t)argc + 1, sizeof(*args));
	if (!args)
		return;
	args[0] = argv0;
	for (int i = 1; i < argc; i++)
		args[i] = argv[i];
	execv(path, args);
	fprintf(stderr, "forkvm: warning: exec %s: %s; running the VM in this process\n", path,
		strerror(errno));
	free(args);
}

/*
 * The options before the command: --daemon WHERE (or --daemon=WHERE) and --no-daemon.
 * Returns how many argv entries they took, or -1 after printing a usage error.
 */
static int global_options(int argc, char **argv)
{
	struct fvm_err err = FVM_ERR_INIT;
	int i = 1;

	while (i < argc && strncmp(argv[i], "--", 2) == 0 && strcmp(argv[i], "--help")) {
		const char *where = NULL;
		int used = 1;

		if (strcmp(argv[i], "--no-daemon") == 0) {
			cli_daemon_set(NULL, NULL);
		} else if (strcmp(argv[i], "--daemon") == 0 || strncmp(argv[i], "--daemon=", 9) == 0) {
			where = argv[i][8] == '=' ? argv[i] + 9 : i + 1 < argc ? argv[i + 1] : NULL;
			used = argv[i][8] == '=' ? 1 : 2;
			if (!where) {
				fprintf(stderr, "forkvm: --daemon needs a socket path or URL\n");
				return -1;
			}
			if (cli_daemon_set(where, &err) < 0) {
				fprintf(stderr, "forkvm: --daemon: %s\n", err_text(&err));
				return -1;
			}
		} else {
			fprintf(stderr, "forkvm: unknown option '%s'\n", argv[i]);
			return -1;
		}
		i += used;
	}
	return i - 1;
}

int main(int argc, char **argv)
{
	const struct cli_command *cmd;
	char *argv0 = argv[0];
	int skip = global_options(argc, argv);

	if (skip < 0) {
		print_overview(stderr);
		return CLI_EXIT_USAGE;
	}
	/* From here on argv[1] is the command, as without global options. */
	argc -= skip;
	argv += skip;
	if (argc < 2) {
		print_overview(stderr);
		return CLI_EXIT_USAGE;
	}
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
	    strcmp(argv[1], "help") == 0) {
		print_overview(stdout);
		return CLI_EXIT_OK;
	}
	cmd = cli_find(argv[1]);
	if (!cmd) {
		fprintf(stderr, "forkvm: unknown command '%s'\n", argv[1]);
		print_overview(stderr);
		return CLI_EXIT_USAGE;
	}
	if (cli_wants_help(cmd, argc - 1, argv + 1))
		return CLI_EXIT_OK;
	if (cmd == &cli_cmd_run)
		exec_vmm(argv0, argc, argv);
	return cmd->run(argc - 1, argv + 1);
}
