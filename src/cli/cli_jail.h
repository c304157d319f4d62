/*
 * The CLI and a jailed VM (docs/SECURITY.md, "The CLI and a jailed VM"). A jailed VMM writes
 * only its own directory RUN_DIR/NAME.jail, so the CLI, outside the jail as root, does what
 * it cannot: names the children of a branch in the run directory, takes a snapshot to where
 * the user asked for it, and keeps a hand-run family's cgroup budget. The VMM may be
 * hostile: nothing it answers or writes is taken as it is, and the CLI never acts on a path
 * inside a directory the VMM can write but through descriptors it checked.
 */
#ifndef FORKVM_CLI_JAIL_H
#define FORKVM_CLI_JAIL_H

#include <jansson.h>
#include <limits.h>
#include <stdbool.h>
#include <sys/types.h>

#include "util/errmsg.h"

struct cli_jail {
	char dir[PATH_MAX];	/* RUN_DIR/NAME.jail, as the links and the socket name it */
	char parent[PATH_MAX];	/* RUN_DIR: root's, not writable by others */
	char base[NAME_MAX + 1]; /* NAME.jail */
	uid_t uid;		/* the jail's uid, from the kernel (SO_PEERCRED) */
	pid_t pid;		/* the VMM that answered, from the kernel */
};

/*
 * Whether VM runs in a jail, asked of the kernel and the file system, never of the VM: the
 * process answering its socket runs as a uid that is neither root nor ours, and the socket
 * is RUN_DIR/NAME.jail/BASE (named directly, or through a root-owned link RUN_DIR/X.sock),
 * with RUN_DIR root's and writable by nobody else, and NAME.jail a directory (not a link)
 * of that uid. 1 with j filled, 0 when not so, -errno with err set when VM cannot be reached.
 */
int cli_vm_jail(const char *vm, struct cli_jail *j, struct fvm_err *err);

/*
 * Whether the VMM writes DIR (absolute) itself: DIR's parent lies in its jail directory, or
 * is writable by its uid (a --jail-bind directory). Root must not write there for it: the
 * VMM could swap what root is about to write through. Otherwise the CLI adopts the snapshot.
 */
bool cli_jail_writes_itself(const struct cli_jail *j, const char *dir);

/*
 * After a branch or template spawn of a jailed VM: each child socket (children[].socket)
 * and the template's the reply names that is a socket of the jail's uid directly in the jail
 * directory, named [A-Za-z0-9._-]+.sock, gets RUN_DIR/NAME.sock as a link to it, and so does
 * its .vsock socket: the children are addressed by name as unjailed ones are. Only a stale
 * link is replaced; a name a running VM answers at, or anything but a link, is left alone
 * with a warning. Never fails the branch.
 */
void cli_link_children(const struct cli_jail *j, json_t *reply, const char *run_dir);

/*
 * A hand-run family's budget (no --family-budget, so RUN_DIR/NAME.jail.family exists; SECURITY.md,
 * "A jailed family"), kept as the daemon keeps its sandboxes': before a branch with extra = the
 * VMs it will add (its cow template included) and limit 0; after it with extra 0 and limit =
 * the count before less extra plus what the reply shows was made (cli_jail_made), so a failed
 * branch leaves no room behind. The family's cgroup gets one VM's limits times the count
 * (jail_family_budget_keep). Returns the count (0: no record to keep), a warning when it
 * cannot; never fails the branch.
 */
int cli_jail_budget(const struct cli_jail *j, int extra, int limit);
/* The VMs a branch or spawn reply shows made: its children and its template. */
int cli_jail_made(json_t *reply);

/*
 * `forkvm snapshot create VM DIR` for a jailed VM that does not write DIR itself: the CLI
 * makes DIR.tmp-PID (snap_writer_begin: DIR checked, --force rules), gives it to the jail's
 * uid and mounts it into the VMM's mount namespace inside its jail directory, where the VMM
 * writes the snapshot; then unmounts it, takes it back, adopts the snapshot (jail_adopt_dir:
 * root's, anything but the uid's directories and regular files refused, hard-linked files
 * copied) and renames it to DIR (snap_writer_commit). Where the mount cannot be made (a
 * kernel without move_mount), the VMM writes into its jail directory and the adopted tree
 * is renamed or copied to DIR. Prints the VMM's reply with "dir" set to DIR, "adopt_ms" and
 * "staged" ("mount" or "jail"). Returns the CLI's exit code; nothing is left on failure.
 */
int cli_jail_snapshot(const char *vm, const struct cli_jail *j, const char *dir, bool force);

#endif
