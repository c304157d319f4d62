/* Snapshot directory lifecycle: DIR.tmp-PID next to DIR, stale cleanup, atomic commit, abort. */
#include "snapshot/snap_format.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/log.h"

#define RM_MAX_DEPTH 16

/* Remove name under dirfd, recursively if a directory; never follows symlinks. */
static int remove_tree_at(int dirfd, const char *name, int depth)
{
	struct dirent *de;
	DIR *d = NULL;
	int fd, ret = 0;

	if (unlinkat(dirfd, name, 0) == 0 || errno == ENOENT)
		return 0;
	if (errno != EISDIR)
		return -errno;
	if (depth >= RM_MAX_DEPTH)
		return -ELOOP;
	fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	d = fdopendir(fd);
	if (!d) {
		ret = -errno;
		close(fd);
		goto out;
	}
	for (;;) {
		errno = 0;
		de = readdir(d);
		if (!de) {
			ret = -errno;
			break;
		}
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		ret = remove_tree_at(fd, de->d_name, depth + 1);
		if (ret)
			break;
	}
out:
	if (d)
		closedir(d);
	if (!ret && unlinkat(dirfd, name, AT_REMOVEDIR) < 0 && errno != ENOENT)
		ret = -errno;
	return ret;
}

/* "/a/b/snap" -> parent "/a/b", base "snap"; "snap" -> ".", "snap". */
static int split_path(const char *path, char *parent, size_t len, const char **base)
{
	const char *slash = strrchr(path, '/');

	*base = slash ? slash + 1 : path;
	if (!slash)
		snprintf(parent, len, ".");
	else if (slash == path)
		snprintf(parent, len, "/");
	else
		snprintf(parent, len, "%.*s", (int)(slash - path), path);
	if (!**base || strcmp(*base, ".") == 0 || strcmp(*base, "..") == 0)
		return -EINVAL;
	return 0;
}

/* A PID in "BASE.tmp-PID" / "BASE.old-PID" whose process is gone (or is us: a leftover). */
static bool stale_entry(const char *name, const char *base, const char **kind)
{
	size_t n = strlen(base);
	char *end;
	long pid;

	if (strncmp(name, base, n) != 0)
		return false;
	name += n;
	if (strncmp(name, ".tmp-", 5) != 0 && strncmp(name, ".old-", 5) != 0)
		return false;
	*kind = name[1] == 't' ? "temporary" : "replaced";
	if (name[5] < '1' || name[5] > '9')
		return false;
	errno = 0;
	pid = strtol(name + 5, &end, 10);
	/* pid > 0 always: kill(0) or kill(-1) would address whole process groups. */
	if (*end || errno || pid <= 0 || pid > INT32_MAX)
		return false;
	return pid == getpid() || (kill((pid_t)pid, 0) < 0 && errno == ESRCH);
}

/* Remove what a killed snapshot left next to DIR; a failure here is only a warning. */
static void clean_stale(const char *parent, const char *base)
{
	struct dirent *de;
	const char *kind;
	DIR *d;
	int ret;

	d = opendir(parent);
	if (!d) {
		log_warn("open %s to clean stale snapshots: %s", parent, strerror(errno));
		return;
	}
	while ((de = readdir(d))) {
		if (!stale_entry(de->d_name, base, &kind))
			continue;
		/* Killed between the two renames of a replace: the old snapshot goes back. */
		if (kind[0] == 'r' && faccessat(dirfd(d), base, F_OK, AT_SYMLINK_NOFOLLOW) < 0 &&
		    errno == ENOENT && renameat(dirfd(d), de->d_name, dirfd(d), base) == 0) {
			log_warn("restored snapshot %s/%s from %s", parent, base, de->d_name);
			continue;
		}
		ret = remove_tree_at(dirfd(d), de->d_name, 0);
		if (ret)
			log_warn("remove stale %s snapshot %s/%s: %s", kind, parent, de->d_name,
				 strerror(-ret));
		else
			log_info("removed stale %s snapshot %s/%s", kind, parent, de->d_name);
	}
	closedir(d);
}

/* Force replaces only a snapshot (or an empty directory), never an arbitrary path. */
static int check_replaceable(const char *dir)
{
	char path[PATH_MAX + 16];
	struct stat st;
	DIR *d;
	int n = 0;

	if (lstat(dir, &st) < 0)
		return log_errno(-errno, "stat %s", dir);
	if (!S_ISDIR(st.st_mode)) {
		log_err("refusing to replace %s: not a directory", dir);
		return -ENOTDIR;
	}
	snprintf(path, sizeof(path), "%s/%s", dir, SNAP_FILE_VMSTATE);
	if (access(path, F_OK) == 0)
		return 0;
	d = opendir(dir);
	if (!d)
		return log_errno(-errno, "open %s", dir);
	while (n <= 2 && readdir(d))
		n++;
	closedir(d);
	if (n > 2) {
		log_err("refusing to replace %s: not a snapshot directory (it has no %s)", dir,
			SNAP_FILE_VMSTATE);
		return -EEXIST;
	}
	return 0;
}

int snap_writer_begin(struct snap_writer *w, const char *dir, bool force)
{
	char parent[PATH_MAX];
	const char *base;
	size_t n = strlen(dir);
	int ret;

	memset(w, 0, sizeof(*w));
	w->tmp_fd = -1;
	w->force = force;
	while (n > 1 && dir[n - 1] == '/')
		n--;
	/* Room for ".tmp-PID" and ".old-PID" after the name. */
	if (n + 16 >= sizeof(w->tmp)) {
		log_err("snapshot path too long: %s", dir);
		return -ENAMETOOLONG;
	}
	memcpy(w->dir, dir, n);
	w->dir[n] = '\0';
	if (split_path(w->dir, parent, sizeof(parent), &base)) {
		log_err("bad snapshot path: %s", dir);
		return -EINVAL;
	}
	clean_stale(parent, base);
	if (access(w->dir, F_OK) == 0) {
		if (!force) {
			log_err("snapshot %s already exists", w->dir);
			return -EEXIST;
		}
		ret = check_replaceable(w->dir);
		if (ret)
			return ret;
	} else if (errno != ENOENT) {
		return log_errno(-errno, "stat %s", w->dir);
	}
	if (snprintf(w->tmp, sizeof(w->tmp), "%s.tmp-%d", w->dir, (int)getpid()) >=
	    (int)sizeof(w->tmp)) {
		w->tmp[0] = '\0';
		return -ENAMETOOLONG;
	}
	/* Guest RAM may hold secrets: the snapshot is private to its owner. */
	if (mkdir(w->tmp, 0700) < 0) {
		ret = log_errno(-errno, "create %s", w->tmp);
		w->tmp[0] = '\0';
		return ret;
	}
	w->tmp_fd = open(w->tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (w->tmp_fd < 0) {
		ret = log_errno(-errno, "open %s", w->tmp);
		snap_writer_abort(w);
		return ret;
	}
	return 0;
}

static int fsync_path(const char *path)
{
	int fd, ret = 0;

	fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return log_errno(-errno, "open %s", path);
	if (fsync(fd) < 0)
		ret = log_errno(-errno, "fsync %s", path);
	close(fd);
	return ret;
}

/* Swap the new snapshot in for the old one; *old names where the old one is now. */
static int replace_dir(struct snap_writer *w, char *old, size_t len)
{
	int ret;

	ret = check_replaceable(w->dir);
	if (ret)
		return ret;
	/* RENAME_EXCHANGE: DIR always names a complete snapshot, old or new. */
	if (renameat2(AT_FDCWD, w->tmp, AT_FDCWD, w->dir, RENAME_EXCHANGE) == 0) {
		snprintf(old, len, "%s", w->tmp);
		return 0;
	}
	if (errno != EINVAL && errno != ENOSYS)
		return log_errno(-errno, "rename %s to %s", w->tmp, w->dir);
	/* No exchange on this filesystem: move the old one aside for a moment. */
	if (snprintf(old, len, "%s.old-%d", w->dir, (int)getpid()) >= (int)len) {
		old[0] = '\0';
		return -ENAMETOOLONG;
	}
	if (rename(w->dir, old) < 0)
		return log_errno(-errno, "rename %s to %s", w->dir, old);
	if (rename(w->tmp, w->dir) < 0) {
		ret = log_errno(-errno, "rename %s to %s", w->tmp, w->dir);
		if (rename(old, w->dir) < 0)
			log_err("restore %s from %s: %s", w->dir, old, strerror(errno));
		old[0] = '\0';
		return ret;
	}
	return 0;
}

/* rename(tmp, DIR) unless DIR exists; sets errno like rename. */
static int move_into_place(struct snap_writer *w)
{
	if (renameat2(AT_FDCWD, w->tmp, AT_FDCWD, w->dir, RENAME_NOREPLACE) == 0)
		return 0;
	if (errno != EINVAL && errno != ENOSYS)
		return -1;
	/* No RENAME_NOREPLACE here: check, then rename (racy only against another writer). */
	if (access(w->dir, F_OK) == 0) {
		errno = EEXIST;
		return -1;
	}
	return rename(w->tmp, w->dir);
}

int snap_writer_commit(struct snap_writer *w)
{
	char parent[PATH_MAX], old[PATH_MAX] = "";
	const char *base;
	int ret;

	if (!w->tmp[0] || w->tmp_fd < 0) {
		log_err("snapshot %s: commit without a snapshot in progress", w->dir);
		return -EINVAL;
	}
	split_path(w->dir, parent, sizeof(parent), &base);
	if (fsync(w->tmp_fd) < 0) {
		ret = log_errno(-errno, "fsync %s", w->tmp);
		goto out;
	}
	if (move_into_place(w) == 0) {
		ret = 0;
	} else if (errno == EEXIST && w->force) {
		ret = replace_dir(w, old, sizeof(old));
	} else if (errno == EEXIST) {
		log_err("snapshot %s already exists", w->dir);
		ret = -EEXIST;
	} else {
		ret = log_errno(-errno, "rename %s to %s", w->tmp, w->dir);
	}
	if (ret)
		goto out;
	/* Renamed: the temp name is gone (or holds the old snapshot), so abort has nothing left. */
	close(w->tmp_fd);
	w->tmp_fd = -1;
	w->tmp[0] = '\0';
	ret = fsync_path(parent);
	if (old[0]) {
		int rm = remove_tree_at(AT_FDCWD, old, 0);

		if (rm)
			log_warn("remove replaced snapshot %s: %s", old, strerror(-rm));
	}
out:
	return ret;
}

void snap_writer_abort(struct snap_writer *w)
{
	int ret;

	/* tmp[0] marks a writer in progress, so a zeroed or committed writer is a no-op. */
	if (!w->tmp[0])
		return;
	if (w->tmp_fd >= 0)
		close(w->tmp_fd);
	w->tmp_fd = -1;
	ret = remove_tree_at(AT_FDCWD, w->tmp, 0);
	if (ret)
		log_warn("remove %s: %s", w->tmp, strerror(-ret));
	w->tmp[0] = '\0';
}
