/* Unix socket listeners (0600 sockets in private directories), peer checks, path roots. */
#include "util/unix_sock.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "util/errmsg.h"
#include "util/fileio.h"
#include "util/log.h"

#define DEFAULT_ROOTS "/tmp:/var/tmp:/dev/shm"

/* Our euid, read before any seccomp filter: a device thread's filter has no geteuid. */
static uid_t our_euid = (uid_t)-1;

static uid_t euid(void)
{
	uid_t u = __atomic_load_n(&our_euid, __ATOMIC_RELAXED);

	if (u == (uid_t)-1) {
		u = geteuid();
		__atomic_store_n(&our_euid, u, __ATOMIC_RELAXED);
	}
	return u;
}

/* Open the socket's directory, creating it 0700; refuse one another user could write to. */
static int open_private_dir(const char *dir, const char *what, bool *private_dir)
{
	bool created = mkdir(dir, 0700) == 0;
	struct stat st;
	int dfd, err;

	if (!created && errno != EEXIST)
		return log_errno(-errno, "%s: creating directory %s", what, dir);
	dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return log_errno(-errno, "%s: opening directory %s", what, dir);
	if (fstat(dfd, &st) < 0) {
		err = log_errno(-errno, "%s: stat of directory %s", what, dir);
		goto fail;
	}
	if (st.st_uid != euid()) {
		err = -EPERM;
		log_err("%s: directory %s is owned by uid %u, not by us (uid %u): refusing to put "
			"a socket there", what, dir, (unsigned)st.st_uid, (unsigned)euid());
		goto fail;
	}
	if (created && fchmod(dfd, 0700) < 0) { /* the umask may have taken bits we need */
		err = log_errno(-errno, "%s: chmod 0700 of directory %s", what, dir);
		goto fail;
	}
	if (!created && (st.st_mode & (S_IWGRP | S_IWOTH))) {
		err = -EPERM;
		log_err("%s: directory %s is group- or world-writable (mode %03o): refusing to put "
			"a socket there (use a 0700 directory)", what, dir, st.st_mode & 0777);
		goto fail;
	}
	*private_dir = created || !(st.st_mode & 077);
	return dfd;
fail:
	close(dfd);
	return err;
}

/* A connection attempt to path: 0 (someone accepted) or the errno of unix_connect. */
static int liveness(const char *path)
{
	int fd = unix_connect(path, SOCK_NONBLOCK);

	if (fd < 0)
		return -fd;
	close(fd);
	return 0;
}

/* 1 = a stale socket (nobody listens), 0 = nothing there, -errno otherwise (logged). */
static int check_existing(int dfd, const char *base, const struct sockaddr_un *addr,
			  const char *what)
{
	struct stat st;
	int err;

	if (fstatat(dfd, base, &st, AT_SYMLINK_NOFOLLOW) < 0) {
		if (errno == ENOENT)
			return 0;
		return log_errno(-errno, "%s: stat of %s", what, addr->sun_path);
	}
	if (!S_ISSOCK(st.st_mode)) {
		log_err("%s: %s exists and is not a socket: not replacing it", what, addr->sun_path);
		return -EEXIST;
	}
	err = liveness(addr->sun_path);
	if (err == ECONNREFUSED)
		return 1;
	if (err == ENOENT)
		return 0;
	if (err == 0 || err == EAGAIN) {
		log_err("%s: %s: a running process already answers there", what, addr->sun_path);
		return -EADDRINUSE;
	}
	return log_errno(-err, "%s: liveness test of the existing socket %s", what, addr->sun_path);
}

bool unix_sock_live(const char *path)
{
	int err = liveness(path);

	return err == 0 || err == EAGAIN;
}

int unix_connect(const char *path, int sock_flags)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	size_t len = strlen(path);
	int fd, err;

	if (len == 0 || len >= sizeof(addr.sun_path))
		return len ? -ENAMETOOLONG : -EINVAL;
	memcpy(addr.sun_path, path, len + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | sock_flags, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (const struct sockaddr *)&addr, sizeof(addr)) < 0) {
		err = -errno;
		close(fd);
		return err;
	}
	return fd;
}

int unix_peer_check(int fd, int pid, int uid, const char *path, struct fvm_err *err)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);

	if (pid < 0 && uid < 0)
		return 0;
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
		return errmsg(err, -errno, "who serves %s: SO_PEERCRED: %s", path, strerror(errno));
	if ((pid >= 0 && cred.pid != pid) || (uid >= 0 && (int)cred.uid != uid))
		return errmsg(err, -EPERM, "%s is served by pid %d (uid %u), not the expected %s %d: "
			      "refused (a socket swapped for another's?)", path, (int)cred.pid,
			      (unsigned)cred.uid, pid >= 0 ? "pid" : "uid", pid >= 0 ? pid : uid);
	return 0;
}

static int listen_now(int fd, int backlog, const char *what, const char *path)
{
	return listen(fd, backlog) < 0 ? log_errno(-errno, "%s: listen on %s", what, path) : 0;
}

int unix_listen(const char *path, int backlog, int sock_flags, const char *what)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX }, stage = { .sun_family = AF_UNIX };
	char dir[sizeof(addr.sun_path)], stage_dir[sizeof(addr.sun_path)] = "";
	bool private_dir = false, bound_final = false, bound_stage = false;
	const char *base;
	int dfd = -1, fd = -1, err, stale;

	(void)euid(); /* cache it for unix_accept */
	if (strlen(path) >= sizeof(addr.sun_path))
		return log_errno(-ENAMETOOLONG, "%s path %s (max %zu bytes)", what, path,
				 sizeof(addr.sun_path) - 1);
	strcpy(addr.sun_path, path);
	err = path_split(path, dir, sizeof(dir), &base);
	if (err)
		return log_errno(err, "%s path %s: no file name", what, path);
	dfd = open_private_dir(dir, what, &private_dir);
	if (dfd < 0)
		return dfd;
	stale = check_existing(dfd, base, &addr, what);
	if (stale < 0) {
		err = stale;
		goto fail;
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | sock_flags, 0);
	if (fd < 0) {
		err = log_errno(-errno, "%s: socket for %s", what, path);
		goto fail;
	}
	if (private_dir) {
		/* Nobody else can enter the directory: bind in place, then narrow the mode. */
		if (stale && unlinkat(dfd, base, 0) < 0 && errno != ENOENT) {
			err = log_errno(-errno, "%s: removing the stale socket %s", what, path);
			goto fail;
		}
		if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
			err = log_errno(-errno, "%s: bind %s", what, path);
			goto fail;
		}
		bound_final = true;
		if ((err = listen_now(fd, backlog, what, path)))
			goto fail;
		if (fchmodat(dfd, base, 0600, 0) < 0) {
			err = log_errno(-errno, "%s: chmod 0600 of %s", what, path);
			goto fail;
		}
	} else {
		/* Others may enter the directory: bind in a private one, chmod, then move in. */
		if (snprintf(stage_dir, sizeof(stage_dir), "%s/.forkvm-XXXXXX", dir) >=
			    (int)sizeof(stage_dir) ||
		    snprintf(stage.sun_path, sizeof(stage.sun_path), "%s/.forkvm-XXXXXX/s", dir) >=
			    (int)sizeof(stage.sun_path)) {
			stage_dir[0] = '\0';
			err = -ENAMETOOLONG;
			log_err("%s: %s is too long to stage the socket in %s; use a 0700 directory",
				what, path, dir);
			goto fail;
		}
		if (!mkdtemp(stage_dir)) {
			err = log_errno(-errno, "%s: creating a private directory %s", what, stage_dir);
			stage_dir[0] = '\0';
			goto fail;
		}
		snprintf(stage.sun_path, sizeof(stage.sun_path), "%s/s", stage_dir);
		if (bind(fd, (struct sockaddr *)&stage, sizeof(stage)) < 0) {
			err = log_errno(-errno, "%s: bind %s", what, stage.sun_path);
			goto fail;
		}
		bound_stage = true;
		/* Listening before it appears at path: a socket there that refuses connections
		 * reads as stale to everyone else (unix_sock_live, check_existing). */
		if ((err = listen_now(fd, backlog, what, path)))
			goto fail;
		if (chmod(stage.sun_path, 0600) < 0) {
			err = log_errno(-errno, "%s: chmod 0600 of %s", what, stage.sun_path);
			goto fail;
		}
		if (stale && unlinkat(dfd, base, 0) < 0 && errno != ENOENT) {
			err = log_errno(-errno, "%s: removing the stale socket %s", what, path);
			goto fail;
		}
		if (renameat2(AT_FDCWD, stage.sun_path, dfd, base, RENAME_NOREPLACE) < 0) {
			err = errno == EEXIST ? -EADDRINUSE : -errno;
			log_err("%s: moving the socket to %s: %s", what, path, strerror(-err));
			goto fail;
		}
		bound_stage = false;
		bound_final = true;
		if (rmdir(stage_dir) < 0)
			log_warn("%s: removing %s: %s", what, stage_dir, strerror(errno));
		stage_dir[0] = '\0';
	}
	close(dfd);
	return fd;
fail:
	if (bound_final && unlinkat(dfd, base, 0) < 0)
		log_warn("%s: removing %s: %s", what, path, strerror(errno));
	if (bound_stage && unlink(stage.sun_path) < 0)
		log_warn("%s: removing %s: %s", what, stage.sun_path, strerror(errno));
	if (stage_dir[0] && rmdir(stage_dir) < 0)
		log_warn("%s: removing %s: %s", what, stage_dir, strerror(errno));
	if (fd >= 0)
		close(fd);
	close(dfd);
	return err;
}

bool unix_peer_trusted(int fd, unsigned *uid)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);

	*uid = (unsigned)-1;
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0 || len != sizeof(cred))
		return false;
	*uid = (unsigned)cred.uid;
	return cred.uid == 0 || cred.uid == euid();
}

/* Log a refused uid once per listener kind (the first 64 pairs; later ones silently). */
static void log_refused_once(unsigned uid, const char *what)
{
	static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
	static struct {
		const char *what;
		unsigned uid;
	} seen[64];
	static int nseen;
	bool fresh = true;

	pthread_mutex_lock(&lock);
	for (int i = 0; i < nseen && fresh; i++)
		fresh = seen[i].uid != uid || strcmp(seen[i].what, what) != 0;
	if (fresh && nseen < (int)(sizeof(seen) / sizeof(seen[0]))) {
		seen[nseen].what = what; /* callers pass string literals */
		seen[nseen++].uid = uid;
	} else {
		fresh = false;
	}
	pthread_mutex_unlock(&lock);
	if (fresh)
		log_warn("%s: refused a connection from uid %d (only uid %u and root may connect)",
			 what, uid == (unsigned)-1 ? -1 : (int)uid, (unsigned)euid());
}

int unix_accept(int listen_fd, int flags, const char *what)
{
	for (;;) {
		unsigned uid;
		int fd = accept4(listen_fd, NULL, NULL, flags);

		if (fd < 0)
			return -errno;
		if (unix_peer_trusted(fd, &uid))
			return fd;
		log_refused_once(uid, what);
		close(fd);
	}
}

/* Collapse "//" and drop a trailing '/'; refuse "." and ".." components. */
static int normalize(const char *field, const char *path, char *out, size_t outlen,
		     struct fvm_err *err)
{
	size_t n = 0;

	for (const char *p = path; *p;) {
		const char *end;
		size_t len;

		while (*p == '/')
			p++;
		if (!*p)
			break;
		end = strchrnul(p, '/');
		len = (size_t)(end - p);
		if ((len == 1 && p[0] == '.') || (len == 2 && p[0] == '.' && p[1] == '.')) {
			return errmsg(err, -EINVAL,
				      "field '%s': '.' and '..' components are not allowed",
				 field);
		}
		if (n + 1 + len >= outlen) {
			return errmsg(err, -ENAMETOOLONG, "field '%s' is too long", field);
		}
		out[n++] = '/';
		memcpy(out + n, p, len);
		n += len;
		p = end;
	}
	if (n == 0)
		out[n++] = '/';
	out[n] = '\0';
	return 0;
}

/* Resolve the longest existing prefix of an absolute, normalized path; keep the rest. */
static int resolve(const char *field, const char *norm, char *out, size_t outlen,
		   struct fvm_err *err)
{
	char prefix[PATH_MAX], real[PATH_MAX];
	size_t cut = strlen(norm);

	for (;;) {
		struct stat st;

		if (cut == 0) {
			snprintf(prefix, sizeof(prefix), "/");
		} else {
			memcpy(prefix, norm, cut);
			prefix[cut] = '\0';
		}
		if (realpath(prefix, real))
			break;
		if (errno != ENOENT || cut == 0 || lstat(prefix, &st) == 0) {
			/* lstat finding it: a dangling symlink, which creating would follow */
			int e = errno == ENOENT ? ELOOP : errno;
			errf(err, "field '%s': resolving %s: %s", field, prefix,
				 strerror(e));
			return -e;
		}
		while (cut > 0 && norm[cut - 1] != '/')
			cut--;
		if (cut > 0)
			cut--; /* drop the '/' too; 0 stands for the root */
	}
	if (snprintf(out, outlen, "%s%s", strcmp(real, "/") ? real : "", norm + cut) >=
	    (int)outlen) {
		return errmsg(err, -ENAMETOOLONG, "field '%s' is too long once resolved", field);
	}
	if (!out[0])
		snprintf(out, outlen, "/");
	return 0;
}

static bool inside(const char *path, const char *root, bool allow_root)
{
	size_t n = strlen(root);

	if (strcmp(root, "/") == 0)
		return allow_root || strcmp(path, "/") != 0;
	if (strncmp(path, root, n) != 0)
		return false;
	return path[n] == '/' || (allow_root && path[n] == '\0');
}

/* Whether the resolved path is inside root (a configured, possibly missing, directory). */
static bool inside_root(const char *path, const char *root, bool allow_root)
{
	char real[PATH_MAX];

	if (root[0] != '/' || !realpath(root, real))
		return false;
	return inside(path, real, allow_root);
}

const char *path_snapshot_roots(void)
{
	const char *env = getenv("FORKVM_SNAPSHOT_ROOTS");

	return env && *env ? env : DEFAULT_ROOTS;
}

int path_confine(const char *field, const char *path, const char *const *extra_roots,
		 bool allow_root, struct fvm_err *err)
{
	const char *env = path_snapshot_roots();
	char norm[PATH_MAX], full[PATH_MAX], roots[4096], shown[4096] = "";
	size_t n = 0;
	int ret;

	if (!path || path[0] != '/') {
		return errmsg(err, -EINVAL, "field '%s' must be an absolute path", field);
	}
	ret = normalize(field, path, norm, sizeof(norm), err);
	if (!ret)
		ret = resolve(field, norm, full, sizeof(full), err);
	if (ret)
		return ret;
	for (int i = 0; extra_roots && extra_roots[i]; i++) {
		if (inside_root(full, extra_roots[i], allow_root))
			return 0;
		n += (size_t)snprintf(shown + n, sizeof(shown) - n, "%s:", extra_roots[i]);
		if (n >= sizeof(shown))
			n = sizeof(shown) - 1;
	}
	if (snprintf(roots, sizeof(roots), "%s", env) >= (int)sizeof(roots)) {
		return errmsg(err, -ENAMETOOLONG, "FORKVM_SNAPSHOT_ROOTS is longer than %zu bytes",
			 sizeof(roots) - 1);
	}
	for (char *save = NULL, *r = strtok_r(roots, ":", &save); r; r = strtok_r(NULL, ":", &save))
		if (inside_root(full, r, allow_root))
			return 0;
	errf(err,
		 "field '%s': %s is outside the allowed roots (%s%s; see FORKVM_SNAPSHOT_ROOTS)",
		 field, full, shown, env);
	return -EACCES;
}

int name_check(const char *field, const char *name, size_t maxlen, struct fvm_err *err)
{
	size_t len = name ? strlen(name) : 0;

	if (len == 0 || len > maxlen) {
		return errmsg(err, -EINVAL, "field '%s' must be 1-%zu characters", field, maxlen);
	}
	if (strchr(name, '/')) {
		return errmsg(err, -EINVAL, "field '%s' must not contain '/'", field);
	}
	if (name[0] == '.') {
		return errmsg(err, -EINVAL, "field '%s' must not start with '.'", field);
	}
	return 0;
}
