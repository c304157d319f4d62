/*
 * Taking over what a jailed VMM wrote (docs/SECURITY.md, "What a jailed VMM writes"). A jailed
 * VMM can write only its own directory, so a snapshot a root service keeps (the daemon's
 * snapshot store) is written there first and then adopted: moved out, made root's, and
 * checked, because the VMM that wrote it may be hostile (a guest that escaped into it).
 */
#ifndef FORKVM_JAIL_JAIL_ADOPT_H
#define FORKVM_JAIL_JAIL_ADOPT_H

#include <sys/types.h>

#include "util/errmsg.h"

/*
 * Move directory NAME of FROM_DIRFD to TO_NAME of TO_DIRFD (same file system; an existing
 * TO_NAME is refused) and make it root's: the directory and every directory in it 0700, every
 * file 0600, all owned by 0:0. Each directory is made root's before its entries are read, so
 * a descriptor the VMM kept cannot add or swap entries behind the check.
 *
 * Everything in it must be a regular file or a directory owned by OWNER (the jail's uid): a
 * symlink, a device, a FIFO, a socket, or anything another uid owns (a hard link to a root
 * file) is refused, the moved tree is removed, and the error names the entry. So is NAME
 * itself when it is not such a directory. A file of OWNER's with another name (a hard link:
 * a sealed disk layer linked into a snapshot, or a link the VMM kept to have a root file of
 * its making) is not taken but replaced by a root-owned sparse copy, at most 64 per
 * directory. Depth at most 8. 0 or -errno.
 */
int jail_adopt_dir(int from_dirfd, const char *name, int to_dirfd, const char *to_name,
		   uid_t owner, struct fvm_err *err);

#endif
