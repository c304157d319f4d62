/* Snapshot directory lifecycle: DIR.tmp-PID next to DIR, stale cleanup, atomic commit, abort. */
#include "snapshot/snap_format.h"

#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/fileio.h"
#include "util/log.h"


/* Read a small /proc file into buf (NUL-terminated); returns bytes read or -errno. */
static ssize_t read_proc(const char *path, char *buf, size_t len)
{
	ssize_t n;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return -errno;
	n = read(fd, buf, len - 1);
	if (n < 0)
		n = -errno;
	else
		buf[n] = '\0';
	close(fd);
	return n;
}

/* Our own comm ("forkvm" for the VMM, the test binary's name in unit tests). */
static void own_comm(char *buf, size_t len)
{
	if (read_proc("/proc/self/comm", buf, len) <= 0)
		snprintf(buf, len, "forkvm\n");
}

/*
 * Whether a snapshot writer PID still runs: the process exists, is not a zombie (a killed
 * writer whose parent never reaped it is dead for us), and is a forkvm (comm "forkvm", or
 * the same program as us), so a PID reused by an unrelated process does not keep a stale
 * DIR.tmp-PID forever. Without /proc, falls back to kill(PID, 0).
 */
static bool writer_alive(pid_t pid)
{
	char path[64], stat[512], comm[64], mine[64];
	const char *state;
	ssize_t n;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	n = read_proc(path, stat, sizeof(stat));
	if (n == -ENOENT || n == -ESRCH)
		return false;
	if (n < 0)
		return !(kill(pid, 0) < 0 && errno == ESRCH);
	/* "PID (comm) S ...": comm may hold spaces or parentheses, the state follows the last ')'. */
	state = strrchr(stat, ')');
	if (state && state[1] == ' ' && (state[2] == 'Z' || state[2] == 'X'))
		return false;
	snprintf(path, sizeof(path), "/proc/%d/comm", (int)pid);
	if (read_proc(path, comm, sizeof(comm)) <= 0)
		return true; /* exists, but unreadable: assume it is a writer */
	own_comm(mine, sizeof(mine));
	return strcmp(comm, "forkvm\n") == 0 || strcmp(comm, mine) == 0;
}

/* A PID in "BASE.tmp-PID" / "BASE.old-PID" whose writer is gone (or is us: a leftover). */
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
	return pid == getpid() || !writer_alive((pid_t)pid);
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
		ret = remove_tree_at(dirfd(d), de->d_name);
		if (ret)
			log_warn("remove stale %s snapshot %s/%s: %s", kind, parent, de->d_name,
				 strerror(-ret));
		else
			log_info("removed stale %s snapshot %s/%s", kind, parent, de->d_name);
	}
	closedir(d);
}

#define META_MAX (1 << 20)

/* Open DIR/name for the replace check: a regular file, no symlink, never blocking (a FIFO
 * planted there must not hang the VMM). Returns the fd or -1 with the reason in why. */
static int open_regular(const char *dir, const char *name, struct stat *st, struct fvm_err *why)
{
	char path[PATH_MAX + 16];
	int fd;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0) {
		errf(why, "no %s (%s)", name, strerror(errno));
		return -1;
	}
	if (fstat(fd, st) < 0 || !S_ISREG(st->st_mode)) {
		errf(why, "%s is not a regular file", name);
		close(fd);
		return -1;
	}
	return fd;
}

/* DIR/meta.json parses as ours: a JSON object with format_version = SNAP_VERSION. */
static int check_meta(const char *dir, struct fvm_err *why)
{
	json_t *meta = NULL, *fv;
	json_error_t jerr;
	char *text = NULL;
	struct stat st;
	ssize_t n = -1;
	int fd, ret = -EEXIST;

	fd = open_regular(dir, SNAP_FILE_META, &st, why);
	if (fd < 0)
		return -EEXIST;
	if (st.st_size > META_MAX) {
		errf(why, "%s is larger than %d bytes", SNAP_FILE_META, META_MAX);
		goto out;
	}
	text = malloc((size_t)st.st_size + 1);
	if (text)
		n = pread(fd, text, (size_t)st.st_size, 0);
	if (n < 0) {
		errf(why, "reading %s: %s", SNAP_FILE_META, text ? strerror(errno) :
			 "out of memory");
		goto out;
	}
	meta = json_loadb(text, (size_t)n, JSON_REJECT_DUPLICATES, &jerr);
	if (!meta) {
		errf(why, "%s is not valid JSON (%s)", SNAP_FILE_META, jerr.text);
		goto out;
	}
	fv = json_object_get(meta, "format_version");
	if (!json_is_object(meta) || !json_is_integer(fv) || json_integer_value(fv) != SNAP_VERSION)
		errf(why, "%s has no \"format_version\": %d", SNAP_FILE_META, SNAP_VERSION);
	else
		ret = 0;
out:
	json_decref(meta);
	free(text);
	close(fd);
	return ret;
}

/* DIR/vmstate starts with our magic. */
static int check_vmstate(const char *dir, struct fvm_err *why)
{
	char magic[sizeof(SNAP_MAGIC) - 1];
	struct stat st;
	ssize_t n;
	int fd, ret = -EEXIST;

	fd = open_regular(dir, SNAP_FILE_VMSTATE, &st, why);
	if (fd < 0)
		return -EEXIST;
	n = pread(fd, magic, sizeof(magic), 0);
	if (n < 0)
		errf(why, "reading %s: %s", SNAP_FILE_VMSTATE, strerror(errno));
	else if ((size_t)n != sizeof(magic) || memcmp(magic, SNAP_MAGIC, sizeof(magic)) != 0)
		errf(why, "%s does not start with %s", SNAP_FILE_VMSTATE, SNAP_MAGIC);
	else
		ret = 0;
	close(fd);
	return ret;
}

/*
 * Force replaces only a complete forkvm snapshot (meta.json with our format_version and a
 * vmstate with our magic) or an empty directory, never an arbitrary path: -ENOTDIR for a
 * non-directory, -EEXIST for anything else, with the reason in why.
 */
int snap_dir_replaceable(const char *dir, struct fvm_err *why)
{
	struct stat st;
	struct dirent *de;
	DIR *d;
	int n = 0;

	if (lstat(dir, &st) < 0) {
		errf(why, "stat: %s", strerror(errno));
		return -errno;
	}
	if (!S_ISDIR(st.st_mode)) {
		errf(why, "not a directory");
		return -ENOTDIR;
	}
	d = opendir(dir);
	if (!d) {
		errf(why, "open: %s", strerror(errno));
		return -errno;
	}
	while (n == 0 && (de = readdir(d)))
		if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
			n++;
	closedir(d);
	if (n == 0)
		return 0; /* empty: nothing to lose */
	if (check_meta(dir, why) || check_vmstate(dir, why))
		return -EEXIST;
	return 0;
}

int snap_writer_fail(const struct snap_writer *w, int ret, const char *fmt, ...)
{
	char msg[FVM_ERR_MSG_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (w->err)
		return errmsg(w->err, ret, "%s", msg);
	log_err("%s", msg);
	return ret;
}

static int check_replaceable(const struct snap_writer *w)
{
	struct fvm_err why = FVM_ERR_INIT;
	int ret = snap_dir_replaceable(w->dir, &why);

	if (ret)
		return snap_writer_fail(w, ret, "refusing to replace %s: not a complete forkvm "
					"snapshot: %s", w->dir, err_text(&why));
	return 0;
}

int snap_writer_begin(struct snap_writer *w, const char *dir, bool force, struct fvm_err *err)
{
	char parent[PATH_MAX];
	const char *base;
	size_t n = strlen(dir);
	int ret;

	memset(w, 0, sizeof(*w));
	w->tmp_fd = -1;
	w->force = force;
	w->err = err;
	while (n > 1 && dir[n - 1] == '/')
		n--;
	/* Room for ".tmp-PID" and ".old-PID" after the name. */
	if (n + 16 >= sizeof(w->tmp))
		return snap_writer_fail(w, -ENAMETOOLONG, "snapshot path too long: %s", dir);
	memcpy(w->dir, dir, n);
	w->dir[n] = '\0';
	if (path_split(w->dir, parent, sizeof(parent), &base))
		return snap_writer_fail(w, -EINVAL, "bad snapshot path: %s", dir);
	clean_stale(parent, base);
	if (access(w->dir, F_OK) == 0) {
		if (!force)
			return snap_writer_fail(w, -EEXIST, "snapshot %s already exists", w->dir);
		ret = check_replaceable(w);
		if (ret)
			return ret;
	} else if (errno != ENOENT) {
		return snap_writer_fail(w, -errno, "stat %s: %s", w->dir, strerror(errno));
	}
	if (snprintf(w->tmp, sizeof(w->tmp), "%s.tmp-%d", w->dir, (int)getpid()) >=
	    (int)sizeof(w->tmp)) {
		w->tmp[0] = '\0';
		return snap_writer_fail(w, -ENAMETOOLONG, "snapshot path too long: %s", dir);
	}
	/* Guest RAM may hold secrets: the snapshot is private to its owner. */
	if (mkdir(w->tmp, 0700) < 0) {
		ret = snap_writer_fail(w, -errno, "create %s: %s", w->tmp, strerror(errno));
		w->tmp[0] = '\0';
		return ret;
	}
	w->tmp_fd = open(w->tmp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (w->tmp_fd < 0) {
		ret = snap_writer_fail(w, -errno, "open %s: %s", w->tmp, strerror(errno));
		snap_writer_abort(w);
		return ret;
	}
	return 0;
}

static int fsync_path(const struct snap_writer *w, const char *path)
{
	int fd, ret = 0;

	fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return snap_writer_fail(w, -errno, "open %s: %s", path, strerror(errno));
	if (fsync(fd) < 0)
		ret = snap_writer_fail(w, -errno, "fsync %s: %s", path, strerror(errno));
	close(fd);
	return ret;
}

/* Swap the new snapshot in for the old one; *old names where the old one is now. */
static int replace_dir(struct snap_writer *w, char *old, size_t len)
{
	int ret;

	ret = check_replaceable(w);
	if (ret)
		return ret;
	/* RENAME_EXCHANGE: DIR always names a complete snapshot, old or new. */
	if (renameat2(AT_FDCWD, w->tmp, AT_FDCWD, w->dir, RENAME_EXCHANGE) == 0) {
		snprintf(old, len, "%s", w->tmp);
		return 0;
	}
	if (errno != EINVAL && errno != ENOSYS)
		return snap_writer_fail(w, -errno, "rename %s to %s: %s", w->tmp, w->dir,
					strerror(errno));
	/* No exchange on this filesystem: move the old one aside for a moment. */
	if (snprintf(old, len, "%s.old-%d", w->dir, (int)getpid()) >= (int)len) {
		old[0] = '\0';
		return snap_writer_fail(w, -ENAMETOOLONG, "snapshot path too long: %s", w->dir);
	}
	if (rename(w->dir, old) < 0)
		return snap_writer_fail(w, -errno, "rename %s to %s: %s", w->dir, old,
					strerror(errno));
	if (rename(w->tmp, w->dir) < 0) {
		ret = snap_writer_fail(w, -errno, "rename %s to %s: %s", w->tmp, w->dir,
				       strerror(errno));
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

	if (!w->tmp[0] || w->tmp_fd < 0)
		return snap_writer_fail(w, -EINVAL, "snapshot %s: commit without a snapshot in "
					"progress", w->dir);
	path_split(w->dir, parent, sizeof(parent), &base);
	if (fsync(w->tmp_fd) < 0) {
		ret = snap_writer_fail(w, -errno, "fsync %s: %s", w->tmp, strerror(errno));
		goto out;
	}
	if (move_into_place(w) == 0) {
		ret = 0;
	} else if (errno == EEXIST && w->force) {
		ret = replace_dir(w, old, sizeof(old));
	} else if (errno == EEXIST) {
		ret = snap_writer_fail(w, -EEXIST, "snapshot %s already exists", w->dir);
	} else {
		ret = snap_writer_fail(w, -errno, "rename %s to %s: %s", w->tmp, w->dir,
				       strerror(errno));
	}
	if (ret)
		goto out;
	/* Renamed: the temp name is gone (or holds the old snapshot), so abort has nothing left. */
	close(w->tmp_fd);
	w->tmp_fd = -1;
	w->tmp[0] = '\0';
	ret = fsync_path(w, parent);
	if (old[0]) {
		int rm = remove_tree_at(AT_FDCWD, old);

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
	ret = remove_tree_at(AT_FDCWD, w->tmp);
	if (ret)
		log_warn("remove %s: %s", w->tmp, strerror(-ret));
	w->tmp[0] = '\0';
}
