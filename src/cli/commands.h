/* Every subcommand the forkvm CLI knows; main.c's table lists them. */
#ifndef FORKVM_CLI_COMMANDS_H
#define FORKVM_CLI_COMMANDS_H

#include "cli/cli.h"

extern const struct cli_command cli_cmd_run;
extern const struct cli_command cli_cmd_probe;
extern const struct cli_command cli_cmd_pause;
extern const struct cli_command cli_cmd_resume;
extern const struct cli_command cli_cmd_status;
extern const struct cli_command cli_cmd_stop;
extern const struct cli_command cli_cmd_ctl;
extern const struct cli_command cli_cmd_snapshot;
extern const struct cli_command cli_cmd_restore;
extern const struct cli_command cli_cmd_image;
extern const struct cli_command cli_cmd_branch;
extern const struct cli_command cli_cmd_template;
extern const struct cli_command cli_cmd_exec;
extern const struct cli_command cli_cmd_eval;
extern const struct cli_command cli_cmd_cp;
extern const struct cli_command cli_cmd_pageserver;
extern const struct cli_command cli_cmd_doctor;
extern const struct cli_command cli_cmd_daemon;
extern const struct cli_command cli_cmd_ls;

#endif
