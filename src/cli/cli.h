/* Table-driven CLI: each subcommand is one file exporting cmd_<name>(). */
#ifndef FORKVM_CLI_H
#define FORKVM_CLI_H

#include <stdio.h>

#define CLI_EXIT_OK 0
#define CLI_EXIT_FAIL 1
#define CLI_EXIT_USAGE 2

struct cli_command {
	const char *name;
	const char *summary;
	const char *usage;	/* full --help text */
	int (*run)(int argc, char **argv); /* argv[0] is the subcommand name */
};

/* Print "usage: ..." for cmd to stderr and return CLI_EXIT_USAGE. */
int cli_usage_error(const struct cli_command *cmd, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* True (and help printed to stdout) when argv asks for --help/-h. */
int cli_wants_help(const struct cli_command *cmd, int argc, char **argv);
/* Parse "256M", "1G", "4096" into bytes; returns 0 or -EINVAL. */
int cli_parse_size(const char *text, unsigned long long *out);
int cli_parse_u64(const char *text, unsigned long long *out);

const struct cli_command *cli_find(const char *name);

#endif
