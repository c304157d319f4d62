/* forkvm: a table of subcommands, each in its own file. */
#include <stdio.h>
#include <string.h>

#include "cli/commands.h"

static const struct cli_command *const commands[] = {
	&cli_cmd_run, &cli_cmd_probe, &cli_cmd_pause, &cli_cmd_resume,
	&cli_cmd_status, &cli_cmd_stop, &cli_cmd_ctl, &cli_cmd_snapshot, &cli_cmd_restore,
	&cli_cmd_image, &cli_cmd_branch, &cli_cmd_template, &cli_cmd_exec, &cli_cmd_eval,
	&cli_cmd_cp, &cli_cmd_pageserver, &cli_cmd_doctor, &cli_cmd_daemon,
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
	fprintf(out, "usage: forkvm <command> [options]\n\ncommands:\n");
	for (size_t i = 0; i < NCOMMANDS; i++)
		fprintf(out, "  %-10s %s\n", commands[i]->name, commands[i]->summary);
	fprintf(out, "\n'forkvm <command> --help' describes one command.\n");
}

int main(int argc, char **argv)
{
	const struct cli_command *cmd;

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
	return cmd->run(argc - 1, argv + 1);
}
