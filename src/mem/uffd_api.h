/* The userfaultfd API handshake for every user of userfaultfd (the uffd backing, live branches):
 * feature probing, and errors that name a missing feature and the Linux version that has it. */
#ifndef FORKVM_UFFD_API_H
#define FORKVM_UFFD_API_H

#include <stdint.h>
#include <linux/userfaultfd.h>

#include "util/errmsg.h"

/* Features newer than Debian 12's (Linux 6.1) headers. */
#ifndef UFFD_FEATURE_WP_UNPOPULATED
#define UFFD_FEATURE_WP_UNPOPULATED (1 << 13) /* Linux 6.4 */
#endif
#ifndef UFFD_FEATURE_POISON
#define UFFD_FEATURE_POISON (1 << 14) /* Linux 6.6 */
#endif
#ifndef UFFD_FEATURE_WP_ASYNC
#define UFFD_FEATURE_WP_ASYNC (1 << 15) /* Linux 6.7 */
#endif
#ifndef UFFD_FEATURE_MOVE
#define UFFD_FEATURE_MOVE (1 << 16) /* Linux 6.8 */
#endif

/* What each user of userfaultfd asks for; `forkvm doctor` checks the same sets. */
/* The device a process without the syscall's privilege creates userfaultfds through. */
#define UFFD_DEV_PATH "/dev/userfaultfd"
#ifndef USERFAULTFD_IOC_NEW
#define USERFAULTFD_IOC_NEW _IO(0xAA, 0x00) /* Linux 6.1 */
#endif
#define UFFD_NEED_BACKING (UFFD_FEATURE_EVENT_REMOVE | UFFD_FEATURE_EVENT_UNMAP) /* uffd backing */
#define UFFD_NEED_LIVE UFFD_FEATURE_WP_HUGETLBFS_SHMEM	/* live branches */
#define UFFD_WANT_LIVE UFFD_FEATURE_WP_UNPOPULATED	/* live branches, else RAM populated */

/* Test knob: a hex (or decimal) mask; the probe reports only the kernel's features whose bits
 * are set in it, so FORKVM_UFFD_FEATURES_MASK=0x1fff behaves like Linux 6.1-6.3. */
#define UFFD_FEATURES_MASK_ENV "FORKVM_UFFD_FEATURES_MASK"

/*
 * The features this kernel's userfaultfd offers: UFFDIO_API with features 0 on a throwaway
 * userfaultfd returns the supported set (UFFDIO_API works once per fd, hence throwaway).
 * Restricted by FORKVM_UFFD_FEATURES_MASK; *hidden (may be NULL) gets the bits the mask removed.
 * 0 or -errno (logged).
 */
int uffd_probe_features(uint64_t *offered, uint64_t *hidden);
/* The same, logging nothing (`forkvm doctor` reports the error itself). */
int uffd_probe_features_quiet(uint64_t *offered, uint64_t *hidden);

/*
 * A userfaultfd (O_CLOEXEC | O_NONBLOCK, kernel faults included) whose API handshake enables
 * every feature of need plus those of want the kernel offers; *enabled (may be NULL) gets what
 * was enabled. A feature of need the kernel lacks fails with -EOPNOTSUPP before anything is
 * asked of it: "userfaultfd for WHAT needs UFFD_FEATURE_X (Linux V+), which this kernel does
 * not offer". Returns the fd or -errno; the reason is logged and, when why is not NULL, also
 * written there.
 */
int uffd_open(uint64_t need, uint64_t want, uint64_t *enabled, const char *what,
	      struct fvm_err *why);

/* "UFFD_FEATURE_WP_UNPOPULATED" and "6.4" for one feature bit ("unknown", "?" otherwise). */
const char *uffd_feature_name(uint64_t bit);
const char *uffd_feature_since(uint64_t bit);

#endif
