/*
 * Slots of the pool: slot i is the /30 at NET_POOL + 4i and the host interface forkvm<i>. A
 * VMM holds its slot as an flock on STATE_DIR/slot-<i>.lock for its whole life; the kernel
 * drops the lock when the VMM dies (kill -9 included), so a free lock means nobody uses the
 * slot, and concurrent VMMs never pick the same one. The files stay (removing a lock file
 * while another process opens it would let two of them lock different inodes).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "net/net_impl.h"
#include "util/errmsg.h"

const char *net_state_dir(const char *state_dir)
{
	return state_dir && *state_dir ? state_dir : NET_STATE_DIR;
}

void net_slot_addrs(int slot, uint32_t *host, uint32_t *ns)
{
	uint32_t pool;
	uint8_t prefix;

	net_parse_cidr(NET_POOL, false, &pool, &prefix);
	*host = pool + 4u * (uint32_t)slot + 1;
	*ns = pool + 4u * (uint32_t)slot + 2;
}

/* The state directory: root's, 0700; one left by someone else is refused. */
static int state_dir_ready(const char *dir, struct fvm_err *err)
{
	struct stat st;

	if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		return errmsg(err, -errno, "creating the network state directory %s: %s",
			      dir, strerror(errno));
	if (lstat(dir, &st) < 0)
		return errmsg(err, -errno, "network state directory %s: %s", dir,
			      strerror(errno));
	if (!S_ISDIR(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 022))
		return errmsg(err, -EPERM, "network state directory %s must be a directory "
			      "of uid %d, not group- or world-writable", dir, (int)geteuid());
	return 0;
}

static int slot_path(const char *dir, int slot, char *path, size_t len)
{
	int n = snprintf(path, len, "%s/slot-%d.lock", dir, slot);

	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

int net_slot_take(const char *state_dir, int *fd, struct fvm_err *err)
{
	const char *dir = net_state_dir(state_dir);
	char path[512];
	int ret = state_dir_ready(dir, err);

	if (ret)
		return ret;
	for (int slot = 0; slot < NET_POOL_SLOTS; slot++) {
		if (slot_path(dir, slot, path, sizeof(path)))
			return errmsg(err, -ENAMETOOLONG, "slot file in %s: path too long", dir);
		int f = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
		if (f < 0)
			return errmsg(err, -errno, "opening slot file %s: %s", path,
				      strerror(errno));
		if (flock(f, LOCK_EX | LOCK_NB) == 0) {
			*fd = f;
			return slot;
		}
		ret = -errno;
		close(f);
		if (ret != -EWOULDBLOCK)
			return errmsg(err, ret, "locking slot file %s: %s", path,
				      strerror(-ret));
	}
	return errmsg(err, -ENOSPC, "the host-side address pool " NET_POOL " is "
		      "exhausted: all %d slots are held by running VMMs", NET_POOL_SLOTS);
}

int net_slot_lock_free(const char *state_dir, int slot)
{
	char path[512];
	int f;

	if (slot < 0 || slot >= NET_POOL_SLOTS ||
	    slot_path(net_state_dir(state_dir), slot, path, sizeof(path)))
		return -EINVAL;
	/* Created if missing, so that a VMM starting meanwhile locks this same file. */
	f = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (f < 0)
		return -errno;
	if (flock(f, LOCK_EX | LOCK_NB) < 0) {
		int ret = -errno;
		close(f);
		return ret;
	}
	return f;
}
