/*
 * A jail per VMM (docs/SECURITY.md): entered once, single-threaded, before the VM exists and
 * so before any guest code runs. Own mount namespace with a minimal tmpfs root (pivot_root),
 * own network, IPC and UTS namespaces, a dedicated uid/gid, every capability dropped
 * (effective, permitted, inheritable, bounding, ambient) and no_new_privs.
 */
#ifndef FORKVM_JAIL_JAIL_H
#define FORKVM_JAIL_JAIL_H

#include <stdbool.h>
#include <sys/types.h>

#include "util/errmsg.h"

#define JAIL_MAX_BINDS 24
/* Default first uid/gid of the range: a VMM gets BASE + its pid (unique among live VMMs). */
#define JAIL_UID_BASE_DEFAULT 200000000u
/* The (empty) host directory each jail mounts its private tmpfs root on. */
#define JAIL_MOUNTPOINT_DEFAULT "/run/forkvm-jail"

struct jail_bind {
	char path[512];
	bool rw;
};

enum jail_state { JAIL_OFF, JAIL_INHERITED, JAIL_NEW };

struct jail_opts {
	int mode;		/* -1 not set (FORKVM_JAIL, else root: on), 0 --no-jail, 1 --jail */
	unsigned uid_base;	/* 0: FORKVM_JAIL_UID_BASE or the default */
	unsigned uid;		/* 0: uid_base + pid */
	int nbinds;
	struct jail_bind binds[JAIL_MAX_BINDS];
	/* Set by jail_prepare. */
	enum jail_state state;
	char dir[512];		/* the VMM's own writable directory: RUN_DIR/NAME.jail */
};

/* `forkvm run` options (ids from JAIL_OPT_BASE). */
#define JAIL_OPT_BASE 3000
enum { JAIL_OPT_JAIL = JAIL_OPT_BASE, JAIL_OPT_NO_JAIL, JAIL_OPT_BIND, JAIL_OPT_UID,
       JAIL_OPT_UID_BASE };
#define JAIL_OPTIONS                                                    \
	{ "jail", no_argument, NULL, JAIL_OPT_JAIL },                   \
	{ "no-jail", no_argument, NULL, JAIL_OPT_NO_JAIL },             \
	{ "jail-bind", required_argument, NULL, JAIL_OPT_BIND },        \
	{ "jail-uid", required_argument, NULL, JAIL_OPT_UID },          \
	{ "jail-uid-base", required_argument, NULL, JAIL_OPT_UID_BASE }
#define JAIL_USAGE                                                                            \
	"  --jail               confine the VMM (docs/SECURITY.md; the default as root)\n"      \
	"  --no-jail            development only: no confinement, logged loudly (FORKVM_JAIL=0)\n"\
	"  --jail-bind DIR      make DIR writable inside the jail (snapshot targets); also\n"    \
	"                       FORKVM_JAIL_BIND=DIR[:DIR...]\n"                                 \
	"  --jail-uid N         the jail's uid and gid (default UID_BASE + pid)\n"               \
	"  --jail-uid-base N    first uid of the range (default 200000000; FORKVM_JAIL_UID_BASE)\n"

void jail_opts_init(struct jail_opts *j);
/* One option; 0 or -EINVAL with a message in err. */
int jail_opt(struct jail_opts *j, int opt, const char *arg, struct fvm_err *err);
/* Add a path the VMM needs (a file or a directory), read-only or writable; NULL/"" ignored. */
int jail_add(struct jail_opts *j, const char *path, bool rw);
/* Whether the jail is on: the option, else FORKVM_JAIL, else on when running as root (off
 * otherwise: the jail needs root; jail_prepare says so in the log). */
bool jail_enabled(const struct jail_opts *j);
/* Spawned by a jailed VMM (a full/diff/live branch child): already confined (FORKVM_JAILED
 * and no CAP_SYS_ADMIN in the bounding set). */
bool jail_inside_parent(void);
/* Enabled, and this process is not already inside its parent's jail: jail_enter will confine
 * it into a jail of its own. */
bool jail_will_confine(const struct jail_opts *j);
/*
 * Decide (state: off, inside a parent's jail, new), and for a new jail pick the uid and create
 * its directory run_dir/NAME.jail (0700, owned by the jail's uid), bound writable inside.
 * Logs the --no-jail warning. 0 or -errno.
 */
int jail_prepare(struct jail_opts *j, const char *name, const char *run_dir);
/*
 * A path the VMM creates after entering the jail but clients use outside (a socket, the
 * console): inner = DIR/basename(public), and public becomes a relative symlink to it (a stale
 * symlink or dead socket there is replaced; a live socket is -EADDRINUSE). 0 or -errno.
 */
int jail_redirect(struct jail_opts *j, const char *public_path, char *inner, size_t len);
/*
 * A file the VMM opens for writing after entering the jail, outside DIR: created if missing,
 * given to the jail's uid and bound writable. 0 or -errno.
 */
int jail_add_owned_file(struct jail_opts *j, const char *path);
/* Whether the calling process is single-threaded (the jail's precondition). */
bool jail_single_threaded(void);
/*
 * Enter the jail prepared by jail_prepare (nothing when off or inherited). Must run while the
 * process is single-threaded. name labels the messages. 0 or -errno.
 */
int jail_enter(struct jail_opts *j, const char *name);
/*
 * The directory children of this VMM get their sockets in (branch run_dir): inside a jail its
 * own directory (the only one it can write), else requested.
 */
const char *jail_run_dir(const char *requested);
/*
 * The page server (docs/SECURITY.md): jail_pageserver_set(-1 from FORKVM_JAIL, 0, 1) while
 * parsing; jail_pageserver_enter once its socket is bound, before it serves anything: own
 * network/IPC/UTS namespaces, uid/gid UID_BASE + pid, only CAP_DAC_OVERRIDE and
 * CAP_DAC_READ_SEARCH (snapshot directories are named at run time), no_new_privs.
 */
void jail_pageserver_set(int mode);
int jail_pageserver_enter(void);

#endif
