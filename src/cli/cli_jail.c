/* The CLI and a jailed VM: children named in the run directory, snapshots adopted (cli_jail.h). */
#include "cli/cli_jail.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/cli_vm.h"
#include "jail/cgroup.h"
#include "jail/jail.h"
#include "jail/jail_adopt.h"
#include "snapshot/snap_format.h"
#include "util/clock.h"
#include "util/fileio.h"
#include "util/log.h"
#include "util/unix_sock.h"

#define JAIL_DIR_SUFFIX ".jail"

int cli_vm_jail(const char *vm, struct cli_jail *j, struct fvm_err *err)
{
	char path[512], real[PATH_MAX], *slash;
	struct ucred cred;
	socklen_t len = sizeof(cred);
	struct stat st;
	size_t n;
	int fd, ret;

	if (cli_vm_socket(vm, path, sizeof(path)) < 0)
		return errmsg(err, -EINVAL, "bad VM name or socket path '%s'", vm);
	if (!realpath(path, real))
		return errmsg(err, -errno, "VM %s: %s: %s", vm, path, strerror(errno));
	fd = unix_connect(real, 0);
	if (fd < 0)
		return errmsg(err, fd, "VM %s: connecting to %s: %s", vm, real, strerror(-fd));
	ret = getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0 ? -errno : 0;
	close(fd);
	if (ret)
		return errmsg(err, ret, "VM %s: who serves %s: %s", vm, real, strerror(-ret));
	if (cred.uid == 0 || cred.uid == geteuid())
		return 0;
	slash = strrchr(real, '/');
	if (!slash || slash == real)
		return 0;
	*slash = '\0';
	n = strlen(real);
	/* The directory root made for the jail and gave to its uid (jail_prepare). */
	if (n <= strlen(JAIL_DIR_SUFFIX) || strcmp(real + n - strlen(JAIL_DIR_SUFFIX),
						   JAIL_DIR_SUFFIX) != 0 ||
	    lstat(real, &st) < 0 || !S_ISDIR(st.st_mode) || st.st_uid != cred.uid)
		return 0;
	snprintf(j->dir, sizeof(j->dir), "%s", real);
	j->uid = cred.uid;
	return 1;
}

bool cli_jail_holds(const struct cli_jail *j, const char *path)
{
	size_t n = strlen(j->dir);

	return strncmp(path, j->dir, n) == 0 && path[n] == '/';
}

/* RUN_DIR/BASENAME(path)SUFFIX -> pathSUFFIX, when the latter exists. */
static void link_one(const char *path, const char *suffix, const char *run_dir)
{
	const char *base = strrchr(path, '/');
	char target[PATH_MAX], pub[PATH_MAX];
	struct stat st;

	if (!base || snprintf(target, sizeof(target), "%s%s", path, suffix) >= (int)sizeof(target) ||
	    snprintf(pub, sizeof(pub), "%s/%s%s", run_dir, base + 1, suffix) >= (int)sizeof(pub) ||
	    lstat(target, &st) < 0)
		return;
	if (jail_link_public(pub, target) < 0)
		log_warn("branch: %s stays addressed by its path %s only", base + 1, path);
}

static void link_socket(const char *sock, const char *run_dir)
{
	static const char *const suffixes[] = { "", ".console", ".log", ".vsock" };
	size_t n = strlen(run_dir);

	if (!sock || sock[0] != '/' || (strncmp(sock, run_dir, n) == 0 && sock[n] == '/' &&
					!strchr(sock + n + 1, '/')))
		return; /* already in the run directory */
	for (size_t i = 0; i < sizeof(suffixes) / sizeof(suffixes[0]); i++)
		link_one(sock, suffixes[i], run_dir);
}

void cli_link_children(json_t *reply, const char *run_dir)
{
	json_t *kid;
	size_t i;

	if (!reply || !run_dir)
		return;
	json_array_foreach(json_object_get(reply, "children"), i, kid)
		link_socket(json_string_value(json_object_get(kid, "socket")), run_dir);
	link_socket(json_string_value(json_object_get(reply, "template")), run_dir);
}

void cli_jail_budget(const struct cli_jail *j, int extra)
{
	char record[PATH_MAX + sizeof(JAIL_FAMILY_RECORD_SUFFIX)];
	struct fvm_err err = FVM_ERR_INIT;
	int members, ret;

	snprintf(record, sizeof(record), "%s%s", j->dir, JAIL_FAMILY_RECORD_SUFFIX);
	if (access(record, F_OK) < 0)
		return; /* a budget --family-budget fixed, or no family cgroup */
	members = jail_family_members(record, &err);
	if (members < 0 || (ret = jail_family_budget_apply(record, members + extra, &err)) < 0) {
		log_warn("the family budget of %s: %s", j->dir, err_text(&err));
		return;
	}
	log_debug("the family budget of %s: %d VM(s)", j->dir, members + extra);
}

/* The adopted tree (STAGE in the jail's parent) into the writer's empty temp dir. */
static int place(int pfd, const char *stage, struct snap_writer *w, struct fvm_err *err)
{
	struct stat a, b;
	int sfd, ret;

	if (fstat(pfd, &a) == 0 && fstat(w->tmp_fd, &b) == 0 && a.st_dev == b.st_dev) {
		/* Same file system: a directory renamed over the empty temp dir. */
		if (renameat(pfd, stage, AT_FDCWD, w->tmp) < 0)
			return errmsg(err, -errno, "renaming it to %s: %s", w->tmp, strerror(errno));
		close(w->tmp_fd);
		w->tmp_fd = open(w->tmp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		return w->tmp_fd < 0 ? errmsg(err, -errno, "opening %s: %s", w->tmp,
					      strerror(errno)) : 0;
	}
	sfd = openat(pfd, stage, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (sfd < 0)
		return errmsg(err, -errno, "opening %s: %s", stage, strerror(errno));
	ret = tree_copy_at(sfd, w->tmp_fd, err);
	close(sfd);
	if (ret)
		errmsg(err, ret, "copying it to %s: %s", w->tmp, err_text(err));
	return ret;
}

int cli_jail_snapshot(const char *vm, const struct cli_jail *j, const char *dir, bool force)
{
	char inner_name[64], inner[PATH_MAX + 64], stage[NAME_MAX + 1], parent[PATH_MAX];
	const char *jail_base = strrchr(j->dir, '/') + 1;
	struct fvm_err err = FVM_ERR_INIT;
	struct snap_writer w;
	json_t *req = NULL, *reply = NULL;
	int jfd = -1, pfd = -1, ret = CLI_EXIT_FAIL;
	uint64_t t0;

	snprintf(inner_name, sizeof(inner_name), "snapshot.adopt-%d", (int)getpid());
	snprintf(inner, sizeof(inner), "%s/%s", j->dir, inner_name);
	snprintf(parent, sizeof(parent), "%.*s", (int)(jail_base - 1 - j->dir), j->dir);
	snprintf(stage, sizeof(stage), ".%.200s.adopt-%d", jail_base, (int)getpid());
	/* DIR first: an existing one without --force fails before the VM is paused. */
	if (snap_writer_begin(&w, dir, force, &err) < 0) {
		fprintf(stderr, "forkvm snapshot: VM %s: %s\n", vm, err_text(&err));
		return CLI_EXIT_FAIL;
	}
	jfd = open(j->dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	pfd = open(parent[0] ? parent : "/", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (jfd < 0 || pfd < 0) {
		fprintf(stderr, "forkvm snapshot: VM %s: opening its jail %s: %s\n", vm, j->dir,
			strerror(errno));
		goto out;
	}
	/* What a killed CLI of the same pid left. */
	remove_tree_at(jfd, inner_name);
	remove_tree_at(pfd, stage);
	req = json_pack("{s:s,s:s,s:b,s:s}", "cmd", "snapshot", "dir", inner, "force", 0, "source",
			vm);
	if (!req || !(reply = cli_vm_call(vm, req, 3600 * 1000)))
		goto out; /* cli_vm_call printed why */
	t0 = monotonic_ns();
	if (jail_adopt_dir(jfd, inner_name, pfd, stage, j->uid, &err) < 0) {
		fprintf(stderr, "forkvm snapshot: VM %s: taking its snapshot out of its jail %s: "
			"%s\n", vm, j->dir, err_text(&err));
		goto out;
	}
	if (place(pfd, stage, &w, &err) < 0 || snap_writer_commit(&w) < 0) {
		fprintf(stderr, "forkvm snapshot: VM %s: putting its snapshot at %s: %s\n", vm, dir,
			err_text(&err));
		goto out;
	}
	json_object_set_new(reply, "dir", json_string(dir));
	json_object_set_new(reply, "adopt_ms", json_real((double)(monotonic_ns() - t0) / 1e6));
	json_dumpf(reply, stdout, JSON_COMPACT);
	fputc('\n', stdout);
	ret = CLI_EXIT_OK;
out:
	snap_writer_abort(&w);
	if (jfd >= 0)
		remove_tree_at(jfd, inner_name);
	if (pfd >= 0)
		remove_tree_at(pfd, stage);
	if (jfd >= 0)
		close(jfd);
	if (pfd >= 0)
		close(pfd);
	json_decref(reply);
	json_decref(req);
	return ret;
}
