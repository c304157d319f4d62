/* Adopting a directory a jailed VMM wrote: moved, made root's, checked (jail_adopt.h). */
#include "jail/jail_adopt.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/fileio.h"

#define ADOPT_MAX_DEPTH 8

static const char *kind_of(mode_t mode)
{
	if (S_ISLNK(mode))
		return "a symbolic link";
	if (S_ISFIFO(mode))
		return "a FIFO";
	if (S_ISSOCK(mode))
		return "a socket";
	if (S_ISCHR(mode) || S_ISBLK(mode))
		return "a device node";
	return "not a regular file or directory";
}

/*
 * A file with another name elsewhere (a sealed disk layer the VMM linked into its snapshot,
 * or a link a hostile VMM kept): made root's, that other name would be a root file with the
 * VMM's bytes wherever the VMM put it. So it is not taken but copied: a root-owned sparse
 * copy replaces the entry in the (root's by now) directory; the VMM keeps its file.
 */
static int copy_in_place(int dirfd, const char *name, const char *where, struct fvm_err *err)
{
	char tmp[NAME_MAX + 1], path[1024];
	struct stat st;
	int src, out = -1, ret = 0;

	snprintf(path, sizeof(path), "%s/%s", where, name);
	if (snprintf(tmp, sizeof(tmp), ".%.200s.adopt-copy", name) >= (int)sizeof(tmp))
		return errmsg(err, -ENAMETOOLONG, "adopting %s: name too long", path);
	src = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (src < 0 || fstat(src, &st) < 0)
		ret = -errno;
	else if (!S_ISREG(st.st_mode))
		ret = -EPERM;
	else if ((out = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
			       0600)) < 0)
		ret = -errno;
	else if (!(ret = file_copy_sparse(src, out, (uint64_t)st.st_size)) && fsync(out) < 0)
		ret = -errno;
	if (out >= 0)
		close(out);
	if (src >= 0)
		close(src);
	if (!ret && renameat(dirfd, tmp, dirfd, name) < 0)
		ret = -errno;
	if (ret) {
		unlinkat(dirfd, tmp, 0);
		return errmsg(err, ret, "adopting %s: copying a hard-linked file: %s", path,
			      strerror(-ret));
	}
	return 0;
}

/* Files copied instead of taken, in one adoption: each costs root-written space. */
#define ADOPT_MAX_LINKED 16

static int remember_linked(char (**list)[NAME_MAX + 1], int *n, int *left, const char *name,
			   const char *path, struct fvm_err *err)
{
	if (!*left)
		return errmsg(err, -E2BIG, "adopting %s: more than %d files that are hard-linked "
			      "or open for writing elsewhere", path, ADOPT_MAX_LINKED);
	(*left)--;
	if (!*list && !(*list = calloc(ADOPT_MAX_LINKED, sizeof(**list))))
		return errmsg(err, -ENOMEM, "adopting %s: out of memory", path);
	snprintf((*list)[(*n)++], NAME_MAX + 1, "%s", name);
	return 0;
}

/*
 * fd is a directory the jailed uid wrote: take it (0:0, 0700) first, then check and take
 * each entry. where: its path for messages.
 */
static int adopt_tree(int fd, const char *where, uid_t owner, int depth, int *left,
		      struct fvm_err *err)
{
	struct stat st;
	struct dirent *de;
	DIR *d = NULL;
	int dup_fd = -1, ret = 0, nlinked = 0;
	/* copied once the directory is read: entries renamed while it is read may show twice */
	char (*linked)[NAME_MAX + 1] = NULL;

	if (fstat(fd, &st) < 0)
		return errmsg(err, -errno, "adopting %s: fstat: %s", where, strerror(errno));
	if (st.st_uid != owner)
		return errmsg(err, -EPERM, "adopting %s: owned by uid %u, not the jail's %u", where,
			      (unsigned)st.st_uid, (unsigned)owner);
	if (fchown(fd, 0, 0) < 0 || fchmod(fd, 0700) < 0)
		return errmsg(err, -errno, "adopting %s: making it root's: %s", where,
			      strerror(errno));
	dup_fd = dup(fd);
	if (dup_fd < 0 || !(d = fdopendir(dup_fd))) {
		ret = errmsg(err, -errno, "adopting %s: reading it: %s", where, strerror(errno));
		if (dup_fd >= 0)
			close(dup_fd);
		return ret;
	}
	for (;;) {
		char path[1024];
		struct stat est;
		int efd;

		errno = 0;
		de = readdir(d);
		if (!de) {
			if (errno)
				ret = errmsg(err, -errno, "adopting %s: reading it: %s", where,
					     strerror(errno));
			break;
		}
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		snprintf(path, sizeof(path), "%s/%s", where, de->d_name);
		if (fstatat(fd, de->d_name, &est, AT_SYMLINK_NOFOLLOW) < 0) {
			ret = errmsg(err, -errno, "adopting %s: %s", path, strerror(errno));
			break;
		}
		if (!S_ISREG(est.st_mode) && !S_ISDIR(est.st_mode)) {
			ret = errmsg(err, -EPERM, "adopting %s: %s, refused", path,
				     kind_of(est.st_mode));
			break;
		}
		if (S_ISDIR(est.st_mode) && depth + 1 >= ADOPT_MAX_DEPTH) {
			ret = errmsg(err, -ELOOP, "adopting %s: nested deeper than %d", path,
				     ADOPT_MAX_DEPTH);
			break;
		}
		/* O_NOFOLLOW | O_NONBLOCK: an entry swapped since the stat cannot lead elsewhere
		 * or hang (the directory is root's by now, so it cannot be swapped anyway). */
		efd = openat(fd, de->d_name, (S_ISDIR(est.st_mode) ? O_DIRECTORY : 0) | O_RDONLY |
					     O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
		if (efd < 0) {
			ret = errmsg(err, -errno, "adopting %s: open: %s", path, strerror(errno));
			break;
		}
		if (S_ISDIR(est.st_mode)) {
			ret = adopt_tree(efd, path, owner, depth + 1, left, err);
		} else if (fstat(efd, &st) < 0 || st.st_ino != est.st_ino || !S_ISREG(st.st_mode)) {
			ret = errmsg(err, -EPERM, "adopting %s: changed while it was checked", path);
		} else if (st.st_uid != owner) {
			ret = errmsg(err, -EPERM, "adopting %s: owned by uid %u, not the jail's %u",
				     path, (unsigned)st.st_uid, (unsigned)owner);
		} else if (st.st_nlink != 1) {
			ret = remember_linked(&linked, &nlinked, left, de->d_name, path, err);
		} else if (fchown(efd, 0, 0) < 0 || fchmod(efd, 0600) < 0) {
			ret = errmsg(err, -errno, "adopting %s: making it root's: %s", path,
				     strerror(errno));
		} else if (fstat(efd, &st) < 0 || st.st_nlink != 1) {
			/* linked again while it was taken: given back, and copied instead */
			if (fchown(efd, owner, owner) < 0)
				ret = errmsg(err, -errno, "adopting %s: giving a linked file back: %s",
					     path, strerror(errno));
			else
				ret = remember_linked(&linked, &nlinked, left, de->d_name, path, err);
		} else if (fcntl(efd, F_SETLEASE, F_RDLCK) < 0) {
			/* EAGAIN: open for writing (or mapped shared) elsewhere, by a descriptor
			 * the VMM kept: it could change the file after this; copied instead */
			if (errno == EAGAIN)
				ret = remember_linked(&linked, &nlinked, left, de->d_name, path, err);
		} else {
			fcntl(efd, F_SETLEASE, F_UNLCK);
		}
		close(efd);
		if (ret)
			break;
	}
	closedir(d);
	for (int i = 0; !ret && i < nlinked; i++)
		ret = copy_in_place(fd, linked[i], where, err);
	free(linked);
	return ret;
}

int jail_adopt_dir(int from_dirfd, const char *name, int to_dirfd, const char *to_name,
		   uid_t owner, struct fvm_err *err)
{
	struct stat st;
	int fd, ret;

	if (fstatat(from_dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return errmsg(err, -errno, "adopting %s: %s", name, strerror(errno));
	if (!S_ISDIR(st.st_mode))
		return errmsg(err, -ENOTDIR, "adopting %s: %s, not a directory", name,
			      kind_of(st.st_mode));
	if (renameat2(from_dirfd, name, to_dirfd, to_name, RENAME_NOREPLACE) < 0)
		return errmsg(err, -errno, "adopting %s: moving it to %s: %s", name, to_name,
			      strerror(errno));
	/* What was moved may have been swapped for something else since the stat. */
	fd = openat(to_dirfd, to_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		ret = errmsg(err, -errno, "adopting %s: open: %s", to_name, strerror(errno));
		remove_tree_at(to_dirfd, to_name);
		return ret;
	}
	int left = ADOPT_MAX_LINKED;
	ret = adopt_tree(fd, to_name, owner, 0, &left, err);
	close(fd);
	if (ret) {
		int rm = remove_tree_at(to_dirfd, to_name);
		if (rm)
			errappend(err, " (and removing %s: %s)", to_name, strerror(-rm));
	}
	return ret;
}
