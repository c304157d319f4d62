/* pivot_root into a private root, or the initramfs way (util/newroot.h). */
#include "util/newroot.h"

#include <errno.h>
#include <linux/magic.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <unistd.h>

/* Whether / is the kernel's initramfs: a ramfs or tmpfs root with no parent mount (the rootfs,
 * which pivot_root cannot move away from). */
static bool root_is_initramfs(void)
{
	struct statfs fs;
	char line[512];
	bool found = false;
	FILE *f;

	if (statfs("/", &fs) < 0 || (fs.f_type != RAMFS_MAGIC && fs.f_type != TMPFS_MAGIC))
		return false;
	f = fopen("/proc/self/mountinfo", "re");
	if (!f)
		return false;
	/* "ID PARENT MAJ:MIN ROOT MOUNTPOINT ... - rootfs ...": the mount on / of type rootfs. */
	while (!found && fgets(line, sizeof(line), f)) {
		char mnt[256], *dash = strstr(line, " - ");
		found = sscanf(line, "%*d %*d %*s %*s %255s", mnt) == 1 && strcmp(mnt, "/") == 0 &&
			dash && strncmp(dash + 3, "rootfs ", 7) == 0;
	}
	fclose(f);
	return found;
}

int newroot_enter(const char *dir, const char **step)
{
	int moved = 0;

	*step = "chdir into the new root";
	if (chdir(dir) < 0)
		return -errno;
	int pivot = syscall(SYS_pivot_root, ".", ".") == 0 ? 0 : errno;

	if (pivot == 0) {
		/* The old root is stacked under the new one: detach it. */
		*step = "detaching the old root";
		if (umount2(".", MNT_DETACH) < 0)
			return -errno;
	} else if (pivot == EINVAL && root_is_initramfs()) {
		*step = "moving the new root over the initramfs root";
		if (mount(".", "/", NULL, MS_MOVE, NULL) < 0)
			return -errno;
		*step = "chroot into the new root";
		if (chroot(".") < 0)
			return -errno;
		moved = 1;
	} else {
		*step = "pivot_root";
		return -pivot;
	}
	*step = "chdir /";
	if (chdir("/") < 0)
		return -errno;
	return moved;
}
