/*
 * The daemon's side of jailed VMMs (docs/DAEMON.md, "Confinement"): where each one's jail
 * is, taking over the snapshots it writes there, removing a jail nothing lives in any more,
 * and the cgroup budget of a jail's family of VMMs.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon/daemon_impl.h"
#include "jail/cgroup.h"
#include "jail/jail_adopt.h"
#include "util/errmsg.h"
#include "util/fileio.h"
#include "util/log.h"

/*
 * Where r's VMM is jailed (docs/DAEMON.md, "Confinement"): RUN_DIR/ID.jail for a sandbox the
 * daemon started (its socket RUN_DIR/ID.sock points into it), the directory its socket lies
 * in for a branch child (RUN_DIR/SOURCE.jail/CHILD.sock). Derived from the recorded socket
 * path, never from a link the VMM could change, and it counts only as a real directory of
 * RUN_DIR that root does not own: RUN_DIR is root's, so no VMM can have made it. 0 with dir
 * and *uid (its owner, the jail's uid) set; -ENOENT when r runs unjailed.
 */
int sb_jail_dir(const struct daemon *d, const struct sandbox_rec *r, char *dir,
		       size_t cap, uid_t *uid)
{
	size_t rl = strlen(d->run_dir);
	const char *rest, *slash;
	struct stat st;
	int n;

	if (strncmp(r->socket, d->run_dir, rl) != 0 || r->socket[rl] != '/')
		return -ENOENT;
	rest = r->socket + rl + 1;
	slash = strchr(rest, '/');
	if (slash) {
		if (strchr(slash + 1, '/') || slash - rest < 6 || rest[0] == '.' ||
		    strncmp(slash - 5, ".jail", 5) != 0)
			return -ENOENT;
		n = snprintf(dir, cap, "%s/%.*s", d->run_dir, (int)(slash - rest), rest);
	} else {
		n = snprintf(dir, cap, "%s/%s.jail", d->run_dir, r->id);
	}
	if (n < 0 || (size_t)n >= cap || lstat(dir, &st) < 0 || !S_ISDIR(st.st_mode) ||
	    st.st_uid == 0)
		return -ENOENT;
	*uid = st.st_uid;
	return 0;
}

/* Whether path lies inside directory dir. */
bool path_under(const char *path, const char *dir)
{
	size_t n = strlen(dir);

	return strncmp(path, dir, n) == 0 && path[n] == '/';
}

/*
 * After a sandbox is gone: its jail directory (jail) goes once nothing recorded lives in it
 * any more, no sandbox (its cow and restored children share their source's jail, dead ones
 * keep their logs there) and no branch image. A jailed VMM cannot remove it (RUN_DIR is
 * root's), so the daemon does.
 */
void jail_dir_release(struct daemon *d, const char *jail)
{
	struct sandbox_rec *recs = NULL;
	struct snapshot_rec *snaps = NULL;
	struct fvm_err err = FVM_ERR_INIT;
	size_t n = 0, ns = 0;
	bool used = false;
	char dir[JAIL_DIR_MAX];
	uid_t uid;
	size_t len = strlen(jail);

	/* only ever RUN_DIR/NAME.jail */
	if (!path_under(jail, d->run_dir) || strchr(jail + strlen(d->run_dir) + 1, '/') ||
	    len < 5 || strcmp(jail + len - 5, ".jail") != 0)
		return;

	if (store_list_sandboxes(d->store, NULL, NULL, &recs, &n, &err) ||
	    store_list_snapshots(d->store, &snaps, &ns, &err)) {
		log_warn("daemon: keeping %s: %s", jail, err_text(&err));
		used = true;
	}
	for (size_t i = 0; !used && i < n; i++)
		used = !sb_jail_dir(d, &recs[i], dir, sizeof(dir), &uid) && strcmp(dir, jail) == 0;
	for (size_t i = 0; !used && i < ns; i++)
		used = path_under(snaps[i].dir, jail);
	free(recs);
	free(snaps);
	if (used)
		return;
	int ret = remove_tree_at(AT_FDCWD, jail);
	if (ret)
		log_warn("daemon: removing the jail directory %s: %s", jail, strerror(-ret));
	char unit[JAIL_DIR_MAX + 8];
	snprintf(unit, sizeof(unit), "%s%s", jail, JAIL_FAMILY_RECORD_SUFFIX);
	if (unlink(unit) < 0 && errno != ENOENT)
		log_warn("daemon: removing %s: %s", unit, strerror(errno));
}

/*
 * A jailed VMM wrote snapshot NAME into its jail directory jail (the only place it can
 * write): move it into the store as NAME, root's and checked (jail_adopt_dir), because the
 * VMM that wrote it may be hostile.
 */
int jail_snapshot_adopt(struct daemon *d, const char *jail, uid_t uid, const char *name,
			  struct api_err *e)
{
	struct fvm_err err = FVM_ERR_INIT;
	int to = -1, ret;
	int from = open(jail, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

	if (from < 0)
		ret = errmsg(&err, -errno, "opening %s: %s", jail, strerror(errno));
	else if ((to = open(d->snap_dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) < 0)
		ret = errmsg(&err, -errno, "opening %s: %s", d->snap_dir, strerror(errno));
	else
		ret = jail_adopt_dir(from, name, to, name, uid, &err);
	if (from >= 0)
		close(from);
	if (to >= 0)
		close(to);
	if (ret)
		return api_fail(e, 500, "snapshot_refused", "taking snapshot %s from the VM's jail "
				"%s into %s: %s", name, jail, d->snap_dir, err_text(&err));
	return 0;
}


/*
 * The family budget. Each VM of a jailed family has a cgroup of its own with its own limits
 * (the source's made by root, the others by the family's VMMs in the family's cgroup,
 * delegated to the jail's uid: docs/SECURITY.md). A VMM taken over could make cgroups there
 * without limits, so the family's cgroup carries the bound: the daemon keeps its
 * memory.max, cpu.max quota and pids.max at one VM's times the VMs that live in it, before
 * a branch (for the children to come) and whenever one ends. One VM's limits are recorded
 * when the source starts, in RUN_DIR/ID.jail.family (root's: out of the VMM's reach).
 */
static int family_unit_path(const char *jail, char *out, size_t cap)
{
	return snprintf(out, cap, "%s%s", jail, JAIL_FAMILY_RECORD_SUFFIX) < (int)cap
		? 0 : -ENAMETOOLONG;
}

void family_record(struct daemon *d, const struct sandbox_rec *r)
{
	char jail[JAIL_DIR_MAX], path[JAIL_DIR_MAX + 8], family[512];
	struct cgroup_limits l;
	struct fvm_err err = FVM_ERR_INIT;
	uid_t uid;

	/* The family's cgroup where the source was started (ROOT/forkvm/ID-PID), its limits
	 * from the source's root-made cgroup: nothing the VMM chose after it started. */
	if (sb_jail_dir(d, r, jail, sizeof(jail), &uid) ||
	    cgroup_family_limits(r->pid, r->id, &l, family, sizeof(family)) ||
	    family_unit_path(jail, path, sizeof(path)))
		return;
	snprintf(l.path, sizeof(l.path), "%s", family);
	if (jail_family_record_write(path, &l, 0, &err))
		log_warn("daemon: recording the cgroup limits of %s: %s", r->id, err_text(&err));
}

/* The children still to come of branches in jail's family. */
static int family_pending(struct daemon *d, const char *jail)
{
	int n = 0;

	pthread_mutex_lock(&d->family_lock);
	for (size_t i = 0; i < sizeof(d->pending) / sizeof(d->pending[0]); i++)
		if (d->pending[i].count && strcmp(d->pending[i].jail, jail) == 0)
			n += d->pending[i].count;
	pthread_mutex_unlock(&d->family_lock);
	return n;
}

static void family_pending_add(struct daemon *d, const char *jail, int count)
{
	size_t i, free_slot = SIZE_MAX;

	pthread_mutex_lock(&d->family_lock);
	for (i = 0; i < sizeof(d->pending) / sizeof(d->pending[0]); i++) {
		if (d->pending[i].count && strcmp(d->pending[i].jail, jail) == 0)
			break;
		if (!d->pending[i].count && free_slot == SIZE_MAX)
			free_slot = i;
	}
	if (i == sizeof(d->pending) / sizeof(d->pending[0]))
		i = free_slot;
	if (i != SIZE_MAX) { /* full: 32 families branching at once; it counts no children */
		snprintf(d->pending[i].jail, sizeof(d->pending[i].jail), "%s", jail);
		d->pending[i].count += count;
		if (d->pending[i].count < 0)
			d->pending[i].count = 0;
	}
	pthread_mutex_unlock(&d->family_lock);
}

void family_branch_begin(struct daemon *d, const char *jail, int count)
{
	family_pending_add(d, jail, count);
	family_sync(d, jail);
}

void family_branch_end(struct daemon *d, const char *jail, int count)
{
	family_pending_add(d, jail, -count);
	family_sync(d, jail);
}

void family_sync(struct daemon *d, const char *jail)
{
	struct sandbox_rec *recs = NULL;
	struct fvm_err err = FVM_ERR_INIT;
	char path[JAIL_DIR_MAX + 8], dir[JAIL_DIR_MAX];
	size_t n = 0;
	int members = 0, ret;
	uid_t uid;

	if (family_unit_path(jail, path, sizeof(path)) || access(path, F_OK) < 0)
		return; /* not a jailed family with limits recorded */
	/* Counting and writing as one: a concurrent sync (the reaper's, a branch's) must not
	 * write an older count over a newer one. */
	pthread_mutex_lock(&d->family_sync_lock);
	if (store_list_sandboxes(d->store, NULL, NULL, &recs, &n, &err)) {
		log_warn("daemon: the family budget of %s: %s", jail, err_text(&err));
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		if (strcmp(recs[i].state, "dead") == 0 || !vmm_alive(&recs[i]) ||
		    sb_jail_dir(d, &recs[i], dir, sizeof(dir), &uid) || strcmp(dir, jail) != 0)
			continue;
		members++;
	}
	if (!members)
		goto out; /* nobody left: nothing to keep */
	members += family_pending(d, jail);
	ret = jail_family_budget_apply(path, members, &err);
	if (ret && ret != -ENOENT)
		log_warn("daemon: %s", err_text(&err));
	else if (!ret)
		log_debug("daemon: %s: the budget of %d VM(s)", jail, members);
out:
	pthread_mutex_unlock(&d->family_sync_lock);
	free(recs);
}
