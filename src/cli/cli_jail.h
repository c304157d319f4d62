/*
 * The CLI and a jailed VM (docs/SECURITY.md, "The CLI and a jailed VM"). A jailed VMM writes
 * only its own directory RUN_DIR/NAME.jail, so the CLI, outside the jail, does the two things
 * it cannot: names the children of a branch in the run directory, and takes a snapshot out
 * of the jail to where the user asked for it.
 */
#ifndef FORKVM_CLI_JAIL_H
#define FORKVM_CLI_JAIL_H

#include <jansson.h>
#include <limits.h>
#include <stdbool.h>
#include <sys/types.h>

#include "util/errmsg.h"

struct cli_jail {
	char dir[PATH_MAX]; /* the VMM's jail directory, resolved */
	uid_t uid;	    /* the jail's uid, from the kernel (SO_PEERCRED) */
};

/*
 * Whether VM runs in a jail: the process answering its socket runs as a uid that is neither
 * root nor ours, and the socket lies in a directory NAME.jail owned by that uid. 1 with j
 * filled, 0 when not jailed, -errno with err set when VM cannot be reached.
 */
int cli_vm_jail(const char *vm, struct cli_jail *j, struct fvm_err *err);

/* Whether path (absolute) lies inside the jail directory, where the VMM writes itself. */
bool cli_jail_holds(const struct cli_jail *j, const char *path);

/*
 * After a branch or template spawn: each socket the reply reports (children[].socket,
 * template) that lies outside run_dir gets RUN_DIR/BASENAME as a symlink to it, and so do
 * its .console, .log and .vsock files, so the children are addressed by name as unjailed
 * ones are. A name a running VM answers at is left alone with a warning; never fails.
 */
void cli_link_children(json_t *reply, const char *run_dir);

/*
 * Before a branch (extra: the VMs it will add, its cow template included) and after it (0):
 * a hand-run jailed family whose budget is its keeper's (SECURITY.md, "A jailed family": no
 * --family-budget, so RUN_DIR/NAME.jail.family exists) gets its cgroup's limits set to one
 * VM's times the VMs in it plus extra, as the daemon does for its sandboxes. Says why in a
 * warning when it cannot; never fails the branch.
 */
void cli_jail_budget(const struct cli_jail *j, int extra);

/*
 * `forkvm snapshot create VM DIR` for a jailed VM whose DIR lies outside its jail: the VMM
 * writes the snapshot into its jail directory; it is then adopted (jail_adopt_dir: moved out,
 * made root's, anything but the jail uid's directories and regular files refused) and put at
 * DIR atomically (renamed when on the same file system, else copied; DIR.tmp-PID, fsync,
 * rename; --force replaces only a complete snapshot). Prints the VMM's reply with "dir" set
 * to DIR and "adopt_ms". Returns the CLI's exit code; nothing is left behind on failure.
 */
int cli_jail_snapshot(const char *vm, const struct cli_jail *j, const char *dir, bool force);

#endif
