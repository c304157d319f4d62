/* The CLI and a jailed VM: jail found, children linked, budget kept, snapshots adopted. */
#include "cli/cli_jail.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/cli_vm.h"
#include "jail/cgroup.h"
#include "jail/jail_adopt.h"
#include "snapshot/snap_format.h"
#include "util/clock.h"
#include "util/fileio.h"
#include "util/log.h"
#include "util/unix_sock.h"

#define JAIL_DIR_SUFFIX ".jail"
/* open_tree(2) and move_mount(2) (Linux 5.2), by number: older headers lack the wrappers. */
#ifndef OPEN_TREE_CLONE
#define OPEN_TREE_CLONE 1
#endif
#ifndef OPEN_TREE_CLOEXEC
#define OPEN_TREE_CLOEXEC O_CLOEXEC
#endif
#ifndef MOVE_MOUNT_F_EMPTY_PATH
#define MOVE_MOUNT_F_EMPTY_PATH 0x00000004
#endif
#ifndef MOVE_MOUNT_T_EMPTY_PATH
#define MOVE_MOUNT_T_EMPTY_PATH 0x00000040
#endif

/* A name the CLI makes or follows: name_check's rules (no '/', no leading '.'), and suffix. */
static bool name_ok(const char *name, const char *suffix)
{
	size_t n = strlen(name), s = strlen(suffix);

	return n > s && name_check("name", name, NAME_MAX, NULL) == 0 &&
	       strcmp(name + n - s, suffix) == 0;
}

/*
 * The jail's directories through descriptors, checked again: RUN_DIR root's and writable by
 * nobody else, NAME.jail in it a directory (not a link) of the jail's uid. 0 or -errno.
 */
static int jail_open(const struct cli_jail *j, int *pfd, int *jfd, struct fvm_err *err)
{
	struct stat st;

	*jfd = -1;
	*pfd = open(j->parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (*pfd < 0 || fstat(*pfd, &st) < 0)
		return errmsg(err, -errno, "opening %s: %s", j->parent, strerror(errno));
	if (st.st_uid != 0 || (st.st_mode & 022))
		return errmsg(err, -EPERM, "%s is not root's alone", j->parent);
	*jfd = openat(*pfd, j->base, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (*jfd < 0 || fstat(*jfd, &st) < 0)
		return errmsg(err, -errno, "opening %s: %s", j->dir, strerror(errno));
	if (st.st_uid != j->uid)
		return errmsg(err, -EPERM, "%s is not the jail uid %u's", j->dir, (unsigned)j->uid);
	return 0;
}

static void close_pair(int *pfd, int *jfd)
{
	if (*pfd >= 0)
		close(*pfd);
	if (*jfd >= 0)
		close(*jfd);
	*pfd = *jfd = -1;
}

int cli_vm_jail(const char *vm, struct cli_jail *j, struct fvm_err *err)
{
	char path[PATH_MAX], sock[PATH_MAX], dir[PATH_MAX], target[PATH_MAX];
	struct ucred cred;
	socklen_t len = sizeof(cred);
	const char *sbase, *jbase;
	struct stat st;
	int fd, pfd = -1, jfd = -1, ret;
	ssize_t n;

	if (cli_vm_socket(vm, path, sizeof(path)) < 0)
		return errmsg(err, -EINVAL, "bad VM name or socket path '%s'", vm);
	fd = unix_connect(path, 0);
	if (fd < 0)
		return errmsg(err, fd, "VM %s: connecting to %s: %s", vm, path, strerror(-fd));
	ret = getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0 ? -errno : 0;
	close(fd);
	if (ret)
		return errmsg(err, ret, "VM %s: who serves %s: %s", vm, path, strerror(-ret));
	if (cred.uid == 0 || cred.uid == geteuid() || lstat(path, &st) < 0)
		return 0;
	/* The socket's name, lexically: through root's link (RUN_DIR/X.sock -> NAME.jail/X.sock,
	 * or an absolute one `forkvm branch` made), else the path itself. */
	snprintf(sock, sizeof(sock), "%s", path);
	if (S_ISLNK(st.st_mode)) {
		if (st.st_uid != 0 || (n = readlink(path, target, sizeof(target) - 1)) <= 0)
			return 0;
		target[n] = '\0';
		if (target[0] == '/')
			snprintf(sock, sizeof(sock), "%s", target);
		else if (path_split(path, dir, sizeof(dir), &sbase) < 0 ||
			 snprintf(sock, sizeof(sock), "%s/%s", dir, target) >= (int)sizeof(sock))
			return 0;
	}
	if (sock[0] != '/' || strstr(sock, "/.") || path_split(sock, dir, sizeof(dir), &sbase) < 0 ||
	    path_split(dir, j->parent, sizeof(j->parent), &jbase) < 0 || !name_ok(jbase, JAIL_DIR_SUFFIX))
		return 0;
	snprintf(j->dir, sizeof(j->dir), "%s", dir);
	snprintf(j->base, sizeof(j->base), "%s", jbase);
	j->uid = cred.uid;
	j->pid = cred.pid;
	/* The directories, then the socket itself: the uid's socket right in its jail. */
	ret = jail_open(j, &pfd, &jfd, NULL) == 0 &&
	      fstatat(jfd, sbase, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISSOCK(st.st_mode) &&
	      st.st_uid == cred.uid;
	close_pair(&pfd, &jfd);
	return ret;
}

bool cli_jail_writes_itself(const struct cli_jail *j, const char *dir)
{
	char parent[PATH_MAX], real[PATH_MAX], jail[PATH_MAX];
	const char *base;
	struct stat st;
	size_t n;

	if (path_split(dir, parent, sizeof(parent), &base) < 0 ||
	    !realpath(parent, real) || stat(real, &st) < 0)
		return false; /* no such parent: the snapshot writer says so */
	if (realpath(j->dir, jail) && (n = strlen(jail), strncmp(real, jail, n) == 0) &&
	    (real[n] == '/' || real[n] == '\0'))
		return true;
	if (st.st_uid == j->uid)
		return true;
	if (st.st_mode & S_ISVTX) /* others' entries cannot be renamed or removed there */
		return false;
	return (st.st_mode & S_IWOTH) || ((st.st_mode & S_IWGRP) && st.st_gid == j->uid);
}

/* RUN_DIR/NAME -> target, replacing only a link nothing answers at. */
static void link_one(int rfd, const char *run_dir, const char *name, const char *target)
{
	char pub[PATH_MAX];
	struct stat st;

	snprintf(pub, sizeof(pub), "%s/%s", run_dir, name);
	if (fstatat(rfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0) {
		if (!S_ISLNK(st.st_mode)) {
			log_warn("branch: %s exists and is not a link: left alone (%s is reached by "
				 "its path)", pub, target);
			return;
		}
		if (unix_sock_live(pub)) {
			log_warn("branch: a running VM answers at %s: left alone (%s is reached by "
				 "its path)", pub, target);
			return;
		}
		if (unlinkat(rfd, name, 0) < 0 && errno != ENOENT) {
			log_warn("branch: removing the stale link %s: %s", pub, strerror(errno));
			return;
		}
	}
	if (symlinkat(target, rfd, name) < 0)
		log_warn("branch: linking %s to %s: %s", pub, target, strerror(errno));
}

/* One socket the reply names: linked if it is the jail uid's socket right in its jail. */
static void link_socket(const struct cli_jail *j, int rfd, int jfd, const char *run_dir,
			const char *sock)
{
	static const char *const suffixes[] = { "", ".vsock" };
	size_t n = strlen(j->dir);
	const char *base;

	if (!sock || strncmp(sock, j->dir, n) != 0 || sock[n] != '/')
		return;
	base = sock + n + 1;
	if (!name_ok(base, ".sock")) {
		log_warn("branch: %s: not a socket name the CLI links", sock);
		return;
	}
	for (size_t i = 0; i < sizeof(suffixes) / sizeof(suffixes[0]); i++) {
		char name[NAME_MAX + 8], target[PATH_MAX + 8];
		struct stat st;

		snprintf(name, sizeof(name), "%s%s", base, suffixes[i]);
		snprintf(target, sizeof(target), "%s%s", sock, suffixes[i]);
		if (fstatat(jfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISSOCK(st.st_mode) &&
		    st.st_uid == j->uid)
			link_one(rfd, run_dir, name, target);
		else if (!i)
			log_warn("branch: %s is not a socket of the jail's uid: not linked", sock);
	}
}

void cli_link_children(const struct cli_jail *j, json_t *reply, const char *run_dir)
{
	struct fvm_err err = FVM_ERR_INIT;
	int rfd = -1, pfd = -1, jfd = -1;
	json_t *kid;
	size_t i;

	if (!reply || !run_dir || run_dir[0] != '/' || strcmp(run_dir, j->dir) == 0)
		return; /* the children are in the run directory already */
	rfd = open(run_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (rfd < 0 || jail_open(j, &pfd, &jfd, &err) < 0) {
		log_warn("branch: the children stay reached by their paths: %s",
			 rfd < 0 ? strerror(errno) : err_text(&err));
		goto out;
	}
	json_array_foreach(json_object_get(reply, "children"), i, kid)
		link_socket(j, rfd, jfd, run_dir, json_string_value(json_object_get(kid, "socket")));
	link_socket(j, rfd, jfd, run_dir, json_string_value(json_object_get(reply, "template")));
out:
	close_pair(&pfd, &jfd);
	if (rfd >= 0)
		close(rfd);
}

int cli_jail_budget(const struct cli_jail *j, int extra, int limit)
{
	char record[PATH_MAX + NAME_MAX + 16];
	struct fvm_err err = FVM_ERR_INIT;
	int vms;

	snprintf(record, sizeof(record), "%s/%s%s", j->parent, j->base, JAIL_FAMILY_RECORD_SUFFIX);
	if (access(record, F_OK) < 0)
		return 0; /* a budget --family-budget fixed, or no family cgroup */
	vms = jail_family_budget_keep(record, extra, limit, &err);
	if (vms < 0)
		log_warn("the family budget of %s: %s", j->dir, err_text(&err));
	else if (vms)
		log_debug("the family budget of %s: %d VM(s)", j->dir, vms);
	return vms;
}

int cli_jail_made(json_t *reply)
{
	return reply ? (int)json_array_size(json_object_get(reply, "children")) +
			       (json_is_string(json_object_get(reply, "template")) ? 1 : 0)
		     : 0;
}

/* A mount of the writer's temp dir inside the VMM's jail (cli_jail_snapshot). */
struct stage {
	bool mounted;
	int hold;		/* JAIL/snapshot.adopt-PID: root's 0711, holds the mount point */
	char hold_name[64];
	char mnt[PATH_MAX + 80]; /* JAIL/snapshot.adopt-PID/m, as the VMM sees it */
};

/* The stage's tree with no exec, setuid or device files (as the jail's own binds). */
static int tree_confined(int tree)
{
	struct { uint64_t set, clr, prop, userns; } attr = {
		.set = 0x2 | 0x4 | 0x8, /* MOUNT_ATTR_NOSUID | NODEV | NOEXEC */
	};

	return syscall(SYS_mount_setattr, tree, "", AT_EMPTY_PATH, &attr, sizeof(attr)) < 0 ?
		-errno : 0;
}

/*
 * Mount the writer's temp dir (DIR.tmp-PID, on DIR's file system) on JAIL/snapshot.adopt-PID/m
 * in the VMM's mount namespace: nosuid, nodev, noexec, from a child that enters the namespace
 * through a pidfd of the VMM. The mount point m is made by root inside a directory of root's
 * the VMM cannot write, and checked there by device and inode; everything is ready before
 * the temp dir is given to the jail's uid, and a failure takes it back.
 */
static int stage_mount(const struct cli_jail *j, struct snap_writer *w, int jfd, int pidfd,
		       struct stage *sg, struct fvm_err *err)
{
	char ns[64];
	struct stat mine, its, st;
	int tree = -1, status, ret = 0;
	bool given = false;
	pid_t child;

	/* A jailed VMM has a mount namespace of its own; one in ours gets no mount from us. */
	snprintf(ns, sizeof(ns), "/proc/%d/ns/mnt", (int)j->pid);
	if (stat("/proc/self/ns/mnt", &mine) < 0 || stat(ns, &its) < 0)
		return errmsg(err, -errno, "the mount namespace of the VMM %d: %s", (int)j->pid,
			      strerror(errno));
	if (mine.st_ino == its.st_ino && mine.st_dev == its.st_dev)
		return errmsg(err, -EINVAL, "the VMM %d shares this mount namespace", (int)j->pid);
	if (mkdirat(jfd, sg->hold_name, 0711) < 0 ||
	    (sg->hold = openat(jfd, sg->hold_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
			       O_CLOEXEC)) < 0 ||
	    mkdirat(sg->hold, "m", 0700) < 0 || fstatat(sg->hold, "m", &st, AT_SYMLINK_NOFOLLOW) < 0)
		return errmsg(err, -errno, "making %s: %s", sg->mnt, strerror(errno));
	tree = (int)syscall(SYS_open_tree, w->tmp_fd, "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC |
			    AT_EMPTY_PATH);
	if (tree < 0)
		return errmsg(err, -errno, "open_tree of %s: %s", w->tmp, strerror(errno));
	if ((ret = tree_confined(tree))) {
		ret = errmsg(err, ret, "mount_setattr of %s: %s", w->tmp, strerror(-ret));
		goto out;
	}
	if (fchown(w->tmp_fd, j->uid, j->uid) < 0) {
		ret = errmsg(err, -errno, "giving %s to uid %u: %s", w->tmp, (unsigned)j->uid,
			     strerror(errno));
		goto out;
	}
	given = true;
	child = fork();
	if (child < 0) {
		ret = errmsg(err, -errno, "fork: %s", strerror(errno));
		goto out;
	}
	if (child == 0) {
		struct stat t;
		int fd;

		if (setns(pidfd, CLONE_NEWNS) < 0)
			_exit(errno);
		fd = open(sg->mnt, O_PATH | O_NOFOLLOW | O_DIRECTORY | O_CLOEXEC);
		if (fd < 0)
			_exit(errno);
		if (fstat(fd, &t) < 0 || t.st_ino != st.st_ino || t.st_dev != st.st_dev ||
		    t.st_uid != 0)
			_exit(EPERM);
		if (syscall(SYS_move_mount, tree, "", fd, "",
			    MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) < 0)
			_exit(errno);
		_exit(0);
	}
	if (waitpid(child, &status, 0) < 0)
		ret = errmsg(err, -errno, "waitpid: %s", strerror(errno));
	else if (!WIFEXITED(status) || WEXITSTATUS(status))
		ret = errmsg(err, WIFEXITED(status) ? -WEXITSTATUS(status) : -ECHILD,
			     "mounting %s on %s in the VMM's mount namespace: %s", w->tmp, sg->mnt,
			     WIFEXITED(status) ? strerror(WEXITSTATUS(status)) : "killed");
	else
		sg->mounted = true;
out:
	close(tree);
	if (ret && given && fchown(w->tmp_fd, 0, 0) < 0)
		errappend(err, " (and taking %s back: %s)", w->tmp, strerror(errno));
	return ret;
}

/*
 * The mount gone and the temp dir root's again, before anything in it is read or removed:
 * the mount point removed from this side detaches the mount in the VMM's namespace. 0, or
 * -errno with err when the mount could not be removed (then nothing in it may be used).
 */
static int stage_unmount(struct stage *sg, struct snap_writer *w, struct fvm_err *err)
{
	int ret = 0;

	if (sg->mounted && unlinkat(sg->hold, "m", AT_REMOVEDIR) < 0)
		ret = errmsg(err, -errno, "removing the mount point %s: %s", sg->mnt,
			     strerror(errno));
	else
		sg->mounted = false;
	if (w->tmp_fd >= 0 && (fchown(w->tmp_fd, 0, 0) < 0 || fchmod(w->tmp_fd, 0700) < 0) &&
	    !ret)
		ret = errmsg(err, -errno, "taking %s back: %s", w->tmp, strerror(errno));
	return ret;
}

/*
 * The tree adopted into STAGE (in the jail's parent) into the writer's empty temp dir:
 * renamed over it on the same file system, else (or where a bind mount says EXDEV) copied.
 */
static int place(int pfd, const char *stage, struct snap_writer *w, struct fvm_err *err)
{
	struct fvm_err inner = FVM_ERR_INIT;
	int sfd, ret;

	if (renameat(pfd, stage, AT_FDCWD, w->tmp) == 0) {
		close(w->tmp_fd);
		w->tmp_fd = open(w->tmp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		return w->tmp_fd < 0 ? errmsg(err, -errno, "opening %s: %s", w->tmp,
					      strerror(errno)) : 0;
	}
	if (errno != EXDEV)
		return errmsg(err, -errno, "renaming it to %s: %s", w->tmp, strerror(errno));
	sfd = openat(pfd, stage, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (sfd < 0)
		return errmsg(err, -errno, "opening %s: %s", stage, strerror(errno));
	ret = tree_copy_at(sfd, w->tmp_fd, &inner);
	close(sfd);
	if (ret)
		errmsg(err, ret, "copying it to %s: %s", w->tmp, err_text(&inner));
	return ret;
}

/* The snapshot the VMM wrote in the (root's again) stage: S/snap adopted as S/adopted, and
 * the writer pointed at that; stage keeps S for the final removal. */
static int adopt_mounted(const struct cli_jail *j, struct snap_writer *w, char *stage,
			 size_t len, struct fvm_err *err)
{
	char adopted[PATH_MAX];
	int ret;

	if ((ret = jail_adopt_dir(w->tmp_fd, "snap", w->tmp_fd, "adopted", j->uid, err)) < 0)
		return ret;
	if (snprintf(adopted, sizeof(adopted), "%s/adopted", w->tmp) >= (int)sizeof(adopted) ||
	    snprintf(stage, len, "%s", w->tmp) >= (int)len)
		return errmsg(err, -ENAMETOOLONG, "%s/adopted: too long", w->tmp);
	close(w->tmp_fd);
	snprintf(w->tmp, sizeof(w->tmp), "%s", adopted);
	w->tmp_fd = open(w->tmp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	return w->tmp_fd < 0 ? errmsg(err, -errno, "opening %s: %s", w->tmp, strerror(errno)) : 0;
}

int cli_jail_snapshot(const char *vm, const struct cli_jail *j, const char *dir, bool force)
{
	char inner[64], req_dir[PATH_MAX + 96], stage[PATH_MAX] = "", jstage[NAME_MAX + 1];
	struct fvm_err err = FVM_ERR_INIT;
	struct stage sg = { .hold = -1 };
	struct snap_writer w;
	json_t *req = NULL, *reply = NULL;
	int pfd = -1, jfd = -1, pidfd = -1, ret = CLI_EXIT_FAIL;
	const char *step = "staging it";
	uint64_t t0;

	snprintf(inner, sizeof(inner), "snapshot.adopt-%d", (int)getpid());
	snprintf(sg.hold_name, sizeof(sg.hold_name), "%s", inner);
	snprintf(sg.mnt, sizeof(sg.mnt), "%s/%s/m", j->dir, inner);
	snprintf(jstage, sizeof(jstage), ".%.200s.adopt-%d", j->base, (int)getpid());
	/* DIR first: an existing one without --force fails before the VM is paused. */
	if (snap_writer_begin(&w, dir, force, &err) < 0) {
		fprintf(stderr, "forkvm snapshot: VM %s: %s\n", vm, err_text(&err));
		return CLI_EXIT_FAIL;
	}
	if (jail_open(j, &pfd, &jfd, &err) < 0)
		goto fail;
	/* What a killed CLI of the same pid left. */
	remove_tree_at(jfd, inner);
	remove_tree_at(pfd, jstage);
	/* Staged on DIR's file system, mounted into the VMM; else in its jail directory. */
	pidfd = (int)syscall(SYS_pidfd_open, j->pid, 0);
	if (pidfd >= 0 && stage_mount(j, &w, jfd, pidfd, &sg, &err) == 0) {
		snprintf(req_dir, sizeof(req_dir), "%s/snap", sg.mnt);
	} else {
		log_warn("snapshot of %s: staged in its jail directory (%s)", vm,
			 pidfd < 0 ? strerror(errno) : err_text(&err));
		errclear(&err);
		if (sg.hold >= 0)
			close(sg.hold);
		sg.hold = -1;
		remove_tree_at(jfd, inner);
		snprintf(req_dir, sizeof(req_dir), "%s/%s", j->dir, inner);
	}
	req = json_pack("{s:s,s:s,s:b,s:s}", "cmd", "snapshot", "dir", req_dir, "force", 0,
			"source", vm);
	/* to the VMM checked as jailed, on the connection the request goes over */
	if (!req || !(reply = cli_vm_call_peer(vm, (int)j->pid, (int)j->uid, req, 3600 * 1000)))
		goto out; /* cli_vm_call_peer printed why */
	t0 = monotonic_ns();
	step = "taking it out of its jail";
	if (sg.hold >= 0) {
		if (stage_unmount(&sg, &w, &err) < 0 || adopt_mounted(j, &w, stage, sizeof(stage),
								       &err) < 0)
			goto fail;
	} else {
		if (jail_adopt_dir(jfd, inner, pfd, jstage, j->uid, &err) < 0)
			goto fail;
		step = "putting it in place";
		if (place(pfd, jstage, &w, &err) < 0)
			goto fail;
	}
	step = "putting it in place";
	if (snap_writer_commit(&w) < 0)
		goto fail;
	json_object_set_new(reply, "dir", json_string(dir));
	json_object_set_new(reply, "adopt_ms", json_real((double)(monotonic_ns() - t0) / 1e6));
	json_object_set_new(reply, "staged", json_string(sg.hold >= 0 ? "mount" : "jail"));
	ret = cli_print_reply(reply, JSON_COMPACT);
	reply = NULL; /* printed and dropped */
	goto out;
fail:
	fprintf(stderr, "forkvm snapshot: VM %s (jailed in %s): %s to %s: %s\n", vm, j->dir, step,
		dir, err_text(&err));
out:
	/* The mount first, and the stage root's, before anything is removed. */
	if (sg.hold >= 0) {
		struct fvm_err ignored = FVM_ERR_INIT;
		if (stage_unmount(&sg, &w, &ignored) < 0)
			log_warn("snapshot of %s: %s", vm, err_text(&ignored));
		close(sg.hold);
	}
	if (!sg.mounted) {
		snap_writer_abort(&w);
		if (stage[0]) /* the mounted stage: what the VMM left beside its snapshot */
			remove_tree_at(AT_FDCWD, stage);
	}
	if (jfd >= 0 && !sg.mounted)
		remove_tree_at(jfd, inner);
	if (pfd >= 0)
		remove_tree_at(pfd, jstage);
	if (pidfd >= 0)
		close(pidfd);
	close_pair(&pfd, &jfd);
	json_decref(reply);
	json_decref(req);
	return ret;
}
