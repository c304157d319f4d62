/*
 * The VM process (BUILD/vmm/forkvm): `forkvm run` and nothing else, linked with only the
 * libraries a running VM uses (-Wl,--as-needed: 16 instead of 35 with the daemon's HTTP/TLS,
 * sqlite and the image tools' archive/XML/ICU stacks). `forkvm run` re-executes itself here
 * (cli_exec_vmm); restores and full/diff/live children are spawned from /proc/self/exe, so
 * they start here directly. Fewer mappings make every fork of a VMM cheaper: the cow pause
 * window, the template's fork per child, each child's page faults (docs/PERFORMANCE.md).
 */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/commands.h"

int main(int argc, char **argv)
{
	if (argc < 2 || strcmp(argv[1], "run") != 0) {
		fprintf(stderr, "%s: this is forkvm's VM process; it serves only 'run' (the forkvm "
			"next to its vmm/ folder serves every command)\n", argv[0]);
		return CLI_EXIT_USAGE;
	}
	if (cli_wants_help(&cli_cmd_run, argc - 1, argv + 1))
		return CLI_EXIT_OK;
	return cli_cmd_run.run(argc - 1, argv + 1);
}
