/* /proc/self/pagemap of this process: which of its pages are present, and which it alone
 * maps (the page-table facts behind mem/thp_repair.c). */
#ifndef FORKVM_UTIL_PAGEMAP_H
#define FORKVM_UTIL_PAGEMAP_H

#include <stdint.h>

#define PAGEMAP_PRESENT (1ULL << 63)
#define PAGEMAP_EXCLUSIVE (1ULL << 56) /* mapped by this process only */

/*
 * Open it now, while the process may: a jail's uid change makes the process non-dumpable,
 * and its /proc/self files root's. Idempotent; -errno (not logged).
 */
int pagemap_preopen(void);
/*
 * The descriptor for this process: the one pagemap_preopen kept if this process opened it,
 * else opened now. After fork() an inherited one reads the parent's page tables: the child
 * opens its own and leaves the old number alone (it may name another file by then).
 * -errno (not logged) when it cannot be: EACCES in a jail entered before any preopen.
 */
int pagemap_fd(void);

#endif
