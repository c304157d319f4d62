/* The jail of `forkvm run` (docs/SECURITY.md). */
#ifndef FORKVM_CLI_RUN_JAIL_H
#define FORKVM_CLI_RUN_JAIL_H

#include "cli/run_opts.h"
#include "jail/jail.h"

/*
 * Before the VM exists, as root: decide whether to jail, create the VM's directory, move the
 * socket, vsock socket and default console into it (symlinks at the usual paths), and list
 * the paths the VMM needs inside. jail_enter(&o->jail) follows (or, for uffd, the page-server
 * attach). 0 or -errno.
 */
int run_jail_prepare(struct run_opts *o);

#endif
