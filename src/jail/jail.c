/* The per-VMM jail: namespaces, a minimal pivoted root, a dedicated uid, no capabilities. */
#include "jail/jail.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <linux/capability.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include "jail/cgroup.h"
#include "jail/scope.h"
#include "util/errmsg.h"
#include "util/log.h"
#include "util/newroot.h"
#include "util/fileio.h"
#include "util/pagemap.h"
#include "util/unix_sock.h"

/* Mount flags of each kind of entry once bound. */
#define BIND_RO_FLAGS (MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
#define BIND_RW_FLAGS (MS_NOSUID | MS_NODEV | MS_NOEXEC)

void jail_opts_init(struct jail_opts *j)
{
	memset(j, 0, sizeof(*j));
	j->mode = -1;
}

static int parse_uint(const char *s, unsigned *out)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 0);
	if (errno || end == s || *end || v == 0 || v > 0xfffffffeUL)
		return -EINVAL;
	*out = (unsigned)v;
	return 0;
}

int jail_opt(struct jail_opts *j, int opt, const char *arg, struct fvm_err *err)
{
	switch (opt) {
	case JAIL_OPT_JAIL: j->mode = 1; return 0;
	case JAIL_OPT_NO_JAIL: j->mode = 0; return 0;
	case JAIL_OPT_BIND:
		if (arg[0] != '/') {
			return errmsg(err, -EINVAL, "--jail-bind '%s': need an absolute path", arg);
		}
		if (jail_add(j, arg, true) < 0) {
			return errmsg(err, -EINVAL, "--jail-bind '%s': too many or too long", arg);
		}
		return 0;
	case JAIL_OPT_UID:
	case JAIL_OPT_UID_BASE:
		if (parse_uint(arg, opt == JAIL_OPT_UID ? &j->uid : &j->uid_base)) {
			return errmsg(err, -EINVAL, "--%s '%s': need a uid of 1 to 4294967294",
				 opt == JAIL_OPT_UID ? "jail-uid" : "jail-uid-base", arg);
		}
		return 0;
	default:
		errf(err, "unknown jail option");
		return -EINVAL;
	}
}

int jail_add(struct jail_opts *j, const char *path, bool rw)
{
	char clean[PATH_MAX];

	if (!path || !*path)
		return 0;
	/* Same path twice: one bind, writable if either asks. */
	if (!realpath(path, clean))
		snprintf(clean, sizeof(clean), "%s", path);
	for (int i = 0; i < j->nbinds; i++)
		if (strcmp(j->binds[i].path, clean) == 0) {
			j->binds[i].rw |= rw;
			return 0;
		}
	if (j->nbinds >= JAIL_MAX_BINDS || strlen(clean) >= sizeof(j->binds[0].path))
		return -ENOSPC;
	snprintf(j->binds[j->nbinds].path, sizeof(j->binds[0].path), "%s", clean);
	j->binds[j->nbinds++].rw = rw;
	return 0;
}

static int env_mode(void)
{
	const char *e = getenv("FORKVM_JAIL");

	if (!e || !*e)
		return -1;
	return strcmp(e, "0") == 0 || strcmp(e, "off") == 0 || strcmp(e, "no") == 0 ? 0 : 1;
}

/* The option, else FORKVM_JAIL, else on for root (the jail needs root), off for anyone else. */
static int effective_mode(int option)
{
	int mode = option >= 0 ? option : env_mode();

	return mode >= 0 ? mode : geteuid() == 0;
}

bool jail_enabled(const struct jail_opts *j)
{
	return effective_mode(j->mode) == 1;
}

bool jail_inside_parent(void)
{
	return getenv("FORKVM_JAILED") && prctl(PR_CAPBSET_READ, CAP_SYS_ADMIN, 0, 0, 0) == 0;
}

bool jail_will_confine(const struct jail_opts *j)
{
	return jail_enabled(j) && !jail_inside_parent();
}

/* Bind src at root+src; the mount point is created as a directory or an empty file. */
/*
 * A device the jail's uid cannot open through its host node (/dev/kvm: root:kvm 0660): a node
 * of its own in the jail, owned by that uid, mode 0600.
 */
static int own_node(const char *dst, const struct stat *st, uid_t uid)
{
	if (mknod(dst, S_IFCHR | 0600, st->st_rdev) < 0)
		return log_errno(-errno, "jail: mknod %s", dst);
	if (chown(dst, uid, uid) < 0)
		return log_errno(-errno, "jail: chown %s to %u", dst, (unsigned)uid);
	return 0;
}

/* Bind src at root+at. */
static int bind_at(const char *root, const char *src, const char *at, bool rw, uid_t uid)
{
	char dst[PATH_MAX];
	struct stat st, dst_st;
	unsigned long flags;
	int ret;

	if (stat(src, &st) < 0)
		return log_errno(-errno, "jail: stat %s", src);
	if (snprintf(dst, sizeof(dst), "%s%s", root, at) >= (int)sizeof(dst))
		return log_errno(-ENAMETOOLONG, "jail: path %s", at);
	if ((ret = mkdir_parents(dst, 0755)))
		return log_errno(ret, "jail: creating the parents of %s", dst);
	if (S_ISCHR(st.st_mode) && (st.st_mode & 0006) != 0006 && lstat(dst, &dst_st) < 0)
		return own_node(dst, &st, uid);
	if (lstat(dst, &dst_st) < 0) {
		if (S_ISDIR(st.st_mode)) {
			if (mkdir(dst, 0755) < 0)
				return log_errno(-errno, "jail: mkdir %s", dst);
		} else {
			int fd = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
			if (fd < 0)
				return log_errno(-errno, "jail: creating mount point %s", dst);
			close(fd);
		}
	}
	if (mount(src, dst, NULL, MS_BIND, NULL) < 0)
		return log_errno(-errno, "jail: bind-mounting %s", src);
	if (S_ISCHR(st.st_mode))
		flags = MS_NOSUID | MS_NOEXEC; /* device nodes keep working: no MS_NODEV */
	else if (S_ISREG(st.st_mode) && (st.st_mode & 0111))
		flags = MS_RDONLY | MS_NOSUID | MS_NODEV; /* the forkvm binary: exec allowed */
	else if (!strcmp(src, "/usr") || !strcmp(src, "/lib") || !strcmp(src, "/lib64"))
		flags = MS_RDONLY | MS_NOSUID | MS_NODEV; /* the loader and shared libraries */
	else
		flags = rw ? BIND_RW_FLAGS : BIND_RO_FLAGS;
	if (!rw)
		flags |= MS_RDONLY;
	if (mount(NULL, dst, NULL, MS_REMOUNT | MS_BIND | flags, NULL) < 0)
		return log_errno(-errno, "jail: remounting %s %s", src, rw ? "read-write" : "read-only");
	return 0;
}

static int bind_one(const char *root, const char *src, bool rw, uid_t uid)
{
	return bind_at(root, src, src, rw, uid);
}

static int cmp_bind(const void *a, const void *b)
{
	const struct jail_bind *x = a, *y = b;
	size_t lx = strlen(x->path), ly = strlen(y->path);

	return lx < ly ? -1 : lx > ly;
}

/* Merged-/usr hosts: /lib and /lib64 are links into /usr; others get them bound read-only. */
static int add_lib_dirs(struct jail_opts *j, const char *root)
{
	static const char *const dirs[] = { "/lib", "/lib64" };
	char target[PATH_MAX], dst[PATH_MAX];
	struct stat st;

	for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
		if (lstat(dirs[i], &st) < 0)
			continue;
		if (S_ISDIR(st.st_mode)) {
			if (jail_add(j, dirs[i], false) < 0)
				return log_errno(-ENOSPC, "jail: adding %s", dirs[i]);
			continue;
		}
		if (!S_ISLNK(st.st_mode))
			continue;
		ssize_t n = readlink(dirs[i], target, sizeof(target) - 1);
		if (n < 0)
			return log_errno(-errno, "jail: readlink %s", dirs[i]);
		target[n] = '\0';
		snprintf(dst, sizeof(dst), "%s%s", root, dirs[i]);
		if (symlink(target, dst) < 0 && errno != EEXIST)
			return log_errno(-errno, "jail: symlink %s", dst);
	}
	return 0;
}

static int mount_special(const char *root)
{
	char path[PATH_MAX];

	/* No /tmp: a path the VMM was not given fails instead of landing in a private tmpfs. */
	if (snprintf(path, sizeof(path), "%s/proc", root) >= (int)sizeof(path))
		return log_errno(-ENAMETOOLONG, "jail: %s/proc", root);
	if (mkdir(path, 0555) < 0 && errno != EEXIST)
		return log_errno(-errno, "jail: mkdir %s", path);
	/* No PID namespace (docs/SECURITY.md): hide every process of another uid. */
	if (mount("proc", path, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "hidepid=invisible") < 0 &&
	    mount("proc", path, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "hidepid=2") < 0)
		return log_errno(-errno, "jail: mounting /proc");
	return 0;
}

/* The mount namespace: a private tmpfs root with only the binds (and the family's cgroup,
 * cgroup "" none, at the cgroup2 mount's path), then pivot_root into it. */
static int build_root(struct jail_opts *j, const char *root, uid_t uid, const char *cgroup)
{
	int ret;

	if (mkdir(root, 0755) < 0 && errno != EEXIST)
		return log_errno(-errno, "jail: mkdir %s", root);
	if (unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS) < 0)
		return log_errno(-errno, "jail: unshare (mount, network, IPC, UTS namespaces)");
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		return log_errno(-errno, "jail: making / private");
	/* Not nodev: it holds the jail's own /dev/kvm node (nobody inside can mknod). */
	if (mount("forkvm-jail", root, "tmpfs", MS_NOSUID, "mode=0755,size=1m") < 0)
		return log_errno(-errno, "jail: mounting the root tmpfs on %s", root);
	/* /proc first, then the binds. */
	if ((ret = mount_special(root)) || (ret = add_lib_dirs(j, root)))
		return ret;
	/* Parents before children: a child inside a bound parent is mounted over its own path. */
	qsort(j->binds, (size_t)j->nbinds, sizeof(j->binds[0]), cmp_bind);
	for (int i = 0; i < j->nbinds; i++)
		if ((ret = bind_one(root, j->binds[i].path, j->binds[i].rw, uid)))
			return ret;
	if (cgroup[0] && (ret = bind_at(root, cgroup, jail_cgroup_root(), true, uid)))
		return ret;
	/* Where the host's root is its initramfs, the old root stays underneath, covered: with
	 * every capability dropped below (no CAP_SYS_CHROOT, no CAP_SYS_ADMIN) nothing inside
	 * can reach it. */
	const char *step;
	if ((ret = newroot_enter(root, &step)) < 0)
		return log_errno(ret, "jail: %s (%s)", step, root);
	/* From here on the cgroup paths are the jail's, failures below included */
	int cg = jail_cgroup_jailed();
	if (ret == 1)
		log_info("jail: the host's root is its initramfs, where pivot_root is refused: the "
			 "jail's root was moved over it and chroot'ed into");
	if (mount(NULL, "/", NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID, NULL) < 0)
		return log_errno(-errno, "jail: remounting the root read-only");
	return cg;
}

static int drop_privileges(uid_t uid, gid_t gid)
{
	struct __user_cap_header_struct hdr = { .version = _LINUX_CAPABILITY_VERSION_3 };
	struct __user_cap_data_struct data[2];

	for (int cap = 0; cap < 64; cap++)
		if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0) {
			if (errno == EINVAL)
				break; /* past the kernel's last capability */
			return log_errno(-errno, "jail: dropping capability %d from the bounding set", cap);
		}
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
		return log_errno(-errno, "jail: clearing the ambient capabilities");
	if (prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0) < 0)
		return log_errno(-errno, "jail: PR_SET_KEEPCAPS 0");
	if (setgroups(1, &gid) < 0)
		return log_errno(-errno, "jail: setgroups %u", (unsigned)gid);
	if (setresgid(gid, gid, gid) < 0)
		return log_errno(-errno, "jail: setresgid %u", (unsigned)gid);
	if (setresuid(uid, uid, uid) < 0)
		return log_errno(-errno, "jail: setresuid %u", (unsigned)uid);
	memset(data, 0, sizeof(data));
	if (syscall(SYS_capset, &hdr, data) < 0)
		return log_errno(-errno, "jail: capset (clearing every capability)");
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		return log_errno(-errno, "jail: PR_SET_NO_NEW_PRIVS");
	if (syscall(SYS_capget, &hdr, data) < 0)
		return log_errno(-errno, "jail: capget");
	if (data[0].effective || data[0].permitted || data[1].effective || data[1].permitted)
		return log_errno(-EPERM, "jail: capabilities remain after the drop");
	return 0;
}

static int resolve_uid(struct jail_opts *j)
{
	const char *env;
	unsigned base = j->uid_base;

	if (!base && (env = getenv("FORKVM_JAIL_UID_BASE")) && parse_uint(env, &base))
		return log_errno(-EINVAL, "jail: FORKVM_JAIL_UID_BASE '%s'", env);
	if (!base)
		base = JAIL_UID_BASE_DEFAULT;
	if (!j->uid) {
		if ((unsigned long long)base + (unsigned)getpid() > 0xfffffffeULL)
			return log_errno(-ERANGE, "jail: uid base %u + pid %d", base, (int)getpid());
		j->uid = base + (unsigned)getpid();
	}
	return 0;
}

int jail_prepare(struct jail_opts *j, const char *name, const char *run_dir)
{
	struct stat st;
	int ret;

	j->state = JAIL_OFF;
	/* The VMMs this one execs (full/diff/live children) follow its option, not the default. */
	if (j->mode >= 0 && setenv("FORKVM_JAIL", j->mode ? "1" : "0", 1) < 0)
		return log_errno(-errno, "jail: setting FORKVM_JAIL for %s's children", name);
	if (jail_inside_parent()) {
		j->state = JAIL_INHERITED;
		log_info("jail: %s runs inside its parent's jail (uid %d)", name, (int)getuid());
		return 0;
	}
	if (!jail_enabled(j)) {
		if (j->mode == 0 || env_mode() == 0)
			log_warn("JAIL DISABLED (--no-jail / FORKVM_JAIL=0): development only; VMM %s "
				 "runs unconfined as uid %d with all its privileges", name, (int)getuid());
		else
			log_warn("JAIL OFF: VMM %s runs as uid %d, not root, and the jail needs root; "
				 "it is confined by its seccomp filters and that uid only", name,
				 (int)getuid());
		return 0;
	}
	if (geteuid() != 0)
		return log_errno(-EPERM, "jail: confining %s needs root (or --no-jail)", name);
	if ((ret = resolve_uid(j)))
		return ret;
	if (snprintf(j->dir, sizeof(j->dir), "%s/%s.jail", run_dir, name) >= (int)sizeof(j->dir))
		return log_errno(-ENAMETOOLONG, "jail: directory for %s in %s", name, run_dir);
	if (mkdir(j->dir, 0700) < 0 && errno != EEXIST)
		return log_errno(-errno, "jail: mkdir %s", j->dir);
	if (lstat(j->dir, &st) < 0)
		return log_errno(-errno, "jail: stat %s", j->dir);
	if (!S_ISDIR(st.st_mode))
		return log_errno(-ENOTDIR, "jail: %s is not a directory", j->dir);
	if (chown(j->dir, j->uid, j->uid) < 0 || chmod(j->dir, 0700) < 0)
		return log_errno(-errno, "jail: giving %s to uid %u", j->dir, j->uid);
	if ((ret = jail_add(j, j->dir, true)))
		return log_errno(ret, "jail: adding %s", j->dir);
	j->state = JAIL_NEW;
	return 0;
}

/* public_path becomes a symlink to target, replacing a stale one (a symlink to nothing that
 * answers, a dead socket, a file); one a running VM answers at is -EADDRINUSE, anything else
 * there -EEXIST. Logged. 0 or -errno. */
static int link_public(const char *public_path, const char *target)
{
	struct stat st;

	if (lstat(public_path, &st) == 0) {
		if (S_ISSOCK(st.st_mode)) {
			int fd = unix_connect(public_path, 0);
			if (fd >= 0)
				close(fd);
			if (fd >= 0 || fd == -EAGAIN)
				return log_errno(-EADDRINUSE, "jail: %s: a running VM answers there",
						 public_path);
		} else if (S_ISLNK(st.st_mode) && unix_sock_live(public_path)) {
			return log_errno(-EADDRINUSE, "jail: %s: a running VM answers there",
					 public_path);
		} else if (!S_ISLNK(st.st_mode) && !S_ISREG(st.st_mode)) {
			return log_errno(-EEXIST, "jail: %s exists and is not a socket, link or file",
					 public_path);
		}
		if (unlink(public_path) < 0)
			return log_errno(-errno, "jail: removing the stale %s", public_path);
	}
	if (symlink(target, public_path) < 0)
		return log_errno(-errno, "jail: symlink %s -> %s", public_path, target);
	return 0;
}

int jail_redirect(struct jail_opts *j, const char *public_path, char *inner, size_t len)
{
	const char *base = strrchr(public_path, '/');
	const char *dirbase = strrchr(j->dir, '/');
	char target[PATH_MAX];
	int ret;

	base = base ? base + 1 : public_path;
	if (snprintf(inner, len, "%s/%s", j->dir, base) >= (int)len || strlen(inner) >= 108)
		return log_errno(-ENAMETOOLONG, "jail: path %s/%s", j->dir, base);
	/* Relative: public_path and DIR share their directory. */
	snprintf(target, sizeof(target), "%s/%s", dirbase ? dirbase + 1 : j->dir, base);
	/* What a previous VMM of this name left inside belongs to its uid: start afresh. */
	if ((ret = link_public(public_path, target)) == 0 && unlink(inner) < 0 &&
	    errno != ENOENT)
		ret = log_errno(-errno, "jail: removing the stale %s", inner);
	return ret;
}

int jail_add_owned_file(struct jail_opts *j, const char *path)
{
	int fd, ret = 0;

	if (j->state != JAIL_NEW || !path || !*path)
		return 0;
	fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0644);
	if (fd < 0)
		return log_errno(-errno, "jail: creating %s", path);
	if (fchown(fd, j->uid, j->uid) < 0)
		ret = log_errno(-errno, "jail: giving %s to uid %u", path, j->uid);
	close(fd);
	if (!ret && (ret = jail_add(j, path, true)))
		ret = log_errno(ret, "jail: adding %s", path);
	return ret;
}

bool jail_single_threaded(void)
{
	char line[256];
	FILE *f = fopen("/proc/self/status", "re");
	int threads = -1;

	if (!f)
		return false;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "Threads: %d", &threads) == 1)
			break;
	fclose(f);
	return threads == 1;
}

/*
 * Not dumpable: another process of the same uid (the rest of its jail's family) can then
 * neither ptrace it nor read its memory (/proc/PID/mem, process_vm_readv), and its /proc
 * files are root's. The kernel clears the flag when the uid changes, but execve sets it again,
 * so a VMM exec'd inside its source's jail (a full/diff/live child) clears it itself, after
 * opening the page map it needs (mem/thp_repair.h), which is root's from then on.
 */
static int undumpable(const char *name)
{
	int ret = pagemap_preopen();

	if (ret < 0)
		log_debug("jail: /proc/self/pagemap: %s (no huge-page repair)", strerror(-ret));
	if (prctl(PR_SET_DUMPABLE, 0) < 0)
		return log_errno(-errno, "jail: %s: PR_SET_DUMPABLE", name);
	return 0;
}

int jail_enter(struct jail_opts *j, const char *name)
{
	const char *env;
	char exe[PATH_MAX], root[PATH_MAX], cgroup[PATH_MAX];
	int ret;

	if (j->state == JAIL_INHERITED) /* a domain below its source's: jail/scope.h */
		return (ret = undumpable(name)) ? ret : jail_scope_signals(name);
	if (j->state != JAIL_NEW)
		return 0;
	if (!jail_single_threaded())
		return log_errno(-EBUSY, "jail: %s must enter its jail single-threaded, and a device "
				 "thread already runs (a restore with a vsock device cannot be jailed "
				 "yet; docs/SECURITY.md)", name);
	if ((env = getenv("FORKVM_JAIL_BIND"))) {
		char list[4096], *save = NULL;
		snprintf(list, sizeof(list), "%s", env);
		for (char *p = strtok_r(list, ":", &save); p; p = strtok_r(NULL, ":", &save))
			if (jail_add(j, p, true) < 0)
				return log_errno(-ENOSPC, "jail: FORKVM_JAIL_BIND entry %s", p);
	}
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (n < 0)
		return log_errno(-errno, "jail: readlink /proc/self/exe");
	exe[n] = '\0';
	/* The binary and its libraries: full/diff/live branches spawn `forkvm run --restore`. */
	if (jail_add(j, exe, false) < 0 || jail_add(j, "/usr", false) < 0 ||
	    jail_add(j, "/dev/null", true) < 0 || jail_add(j, "/dev/urandom", false) < 0)
		return log_errno(-ENOSPC, "jail: too many paths for %s", name);
	env = getenv("FORKVM_JAIL_ROOT");
	snprintf(root, sizeof(root), "%s", env && *env ? env : JAIL_MOUNTPOINT_DEFAULT);
	/* The family's cgroup, for the cgroups of the VMMs this one branches, and the record of
	 * its budget's unit for its keeper (docs/SECURITY.md) */
	char record[sizeof(j->dir) + sizeof(JAIL_FAMILY_RECORD_SUFFIX)];
	snprintf(record, sizeof(record), "%s%s", j->dir, JAIL_FAMILY_RECORD_SUFFIX);
	if ((ret = jail_cgroup_family_record(record)) ||
	    (ret = jail_cgroup_delegate(j->uid, cgroup, sizeof(cgroup))) ||
	    (ret = build_root(j, root, j->uid, cgroup)))
		return ret;
	/* After the uid change the process is not dumpable and its /proc/self files are root's:
	 * the huge-page repair (mem/thp_repair.h) reads pagemap through this descriptor. */
	if ((ret = pagemap_preopen()) < 0)
		log_debug("jail: /proc/self/pagemap: %s (no huge-page repair)", strerror(-ret));
	if ((ret = drop_privileges(j->uid, (gid_t)j->uid)))
		return ret;
	/* the uid change cleared it unless fs.suid_dumpable says otherwise: said outright */
	if ((ret = undumpable(name)) || (ret = jail_scope_signals(name)))
		return ret;
	if (setenv("FORKVM_JAILED", "1", 1) < 0 || setenv("FORKVM_RUN_DIR", j->dir, 1) < 0)
		return log_errno(-errno, "jail: setenv");
	log_info("jail: %s confined: uid %u gid %u, root %s (%d paths), own mount/net/ipc/uts "
		 "namespaces, no capabilities, no_new_privs", name, j->uid, j->uid, j->dir,
		 j->nbinds);
	return 0;
}

const char *jail_run_dir(const char *requested)
{
	const char *own = getenv("FORKVM_RUN_DIR");

	return getenv("FORKVM_JAILED") && own && *own ? own : requested;
}

static bool pageserver_jail_on;

void jail_pageserver_set(int mode)
{
	pageserver_jail_on = effective_mode(mode) == 1;
	if (mode == 0 || (mode < 0 && env_mode() == 0))
		log_warn("JAIL DISABLED (--no-jail / FORKVM_JAIL=0): development only; the page "
			 "server runs unconfined as uid %d", (int)getuid());
}

int jail_pageserver_enter(void)
{
	struct __user_cap_header_struct hdr = { .version = _LINUX_CAPABILITY_VERSION_3 };
	struct __user_cap_data_struct data[2];
	const __u32 keep = (1u << CAP_DAC_OVERRIDE) | (1u << CAP_DAC_READ_SEARCH);
	struct jail_opts j;
	int ret;

	if (!pageserver_jail_on)
		return 0;
	if (!jail_single_threaded())
		return log_errno(-EBUSY, "jail: the page server must enter its jail single-threaded");
	jail_opts_init(&j);
	if ((ret = resolve_uid(&j)))
		return ret;
	if (unshare(CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS) < 0)
		return log_errno(-errno, "jail: page server unshare (network, IPC, UTS namespaces)");
	for (int cap = 0; cap < 64; cap++) {
		if (cap == CAP_DAC_OVERRIDE || cap == CAP_DAC_READ_SEARCH)
			continue;
		if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0) {
			if (errno == EINVAL)
				break;
			return log_errno(-errno, "jail: page server: dropping capability %d", cap);
		}
	}
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
		return log_errno(-errno, "jail: page server: clearing the ambient capabilities");
	/* Keep the two file-access capabilities across the uid change, then nothing else. */
	if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0)
		return log_errno(-errno, "jail: page server: PR_SET_KEEPCAPS 1");
	if (setgroups(1, &(gid_t){ j.uid }) < 0 || setresgid(j.uid, j.uid, j.uid) < 0 ||
	    setresuid(j.uid, j.uid, j.uid) < 0)
		return log_errno(-errno, "jail: page server: switching to uid/gid %u", j.uid);
	memset(data, 0, sizeof(data));
	data[0].effective = data[0].permitted = keep;
	if (syscall(SYS_capset, &hdr, data) < 0)
		return log_errno(-errno, "jail: page server: capset");
	if (prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0) < 0 || prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		return log_errno(-errno, "jail: page server: PR_SET_KEEPCAPS 0 / PR_SET_NO_NEW_PRIVS");
	log_info("jail: page server confined: uid %u gid %u, own network/IPC/UTS namespaces, "
		 "capabilities CAP_DAC_OVERRIDE + CAP_DAC_READ_SEARCH only (it serves snapshot "
		 "directories named at run time), no_new_privs", j.uid, j.uid);
	return 0;
}
