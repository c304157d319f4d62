/* Options of `forkvm run`, parsed into a vm_config plus process settings. */
#ifndef FORKVM_CLI_RUN_OPTS_H
#define FORKVM_CLI_RUN_OPTS_H

#include <stdbool.h>

#include "cli/cli.h"
#include "core/vm.h"

struct run_opts {
	struct vm_config vm;
	char name[64];
	char socket[512];
	bool detach;
	const char *restore;	/* snapshot directory to restore instead of booting */
	bool backing_set, size_set;
	const char *log_path;	/* VMM messages when detached (default RUN_DIR/NAME.log) */
	char default_console[600];
	char default_log[600];
	int ready_fd;
};

/* Returns 0, or a CLI exit code after printing the usage error. */
int run_opts_parse(const struct cli_command *self, int argc, char **argv, struct run_opts *o);

#endif
