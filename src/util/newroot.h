/* Entering a private root (the jail's, the network broker's): one place for pivot_root and
 * its initramfs fallback. */
#ifndef FORKVM_UTIL_NEWROOT_H
#define FORKVM_UTIL_NEWROOT_H

/*
 * Make dir, a mount point in this process's own mount namespace, its root and working
 * directory. pivot_root, then the old root detached; where the old root is the kernel's
 * initramfs (pivot_root refuses to move away from the rootfs), dir is moved over / and
 * chroot'ed into instead, as container runtimes do there: the old root stays underneath,
 * covered (the caller must leave nothing inside able to chroot or mount again).
 * Returns 0, 1 when the initramfs way was taken, or -errno with *step naming what failed.
 */
int newroot_enter(const char *dir, const char **step);

#endif
