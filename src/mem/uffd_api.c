/* userfaultfd feature probing and the API handshake, shared by every user of userfaultfd. */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "util/errmsg.h"
#include "util/log.h"
#include "mem/uffd_api.h"

static const struct {
	uint64_t bit;
	const char *name, *since;
} features[] = {
	{ UFFD_FEATURE_PAGEFAULT_FLAG_WP, "UFFD_FEATURE_PAGEFAULT_FLAG_WP", "5.7" },
	{ UFFD_FEATURE_EVENT_FORK, "UFFD_FEATURE_EVENT_FORK", "4.11" },
	{ UFFD_FEATURE_EVENT_REMAP, "UFFD_FEATURE_EVENT_REMAP", "4.11" },
	{ UFFD_FEATURE_EVENT_REMOVE, "UFFD_FEATURE_EVENT_REMOVE", "4.11" },
	{ UFFD_FEATURE_MISSING_HUGETLBFS, "UFFD_FEATURE_MISSING_HUGETLBFS", "4.11" },
	{ UFFD_FEATURE_MISSING_SHMEM, "UFFD_FEATURE_MISSING_SHMEM", "4.11" },
	{ UFFD_FEATURE_EVENT_UNMAP, "UFFD_FEATURE_EVENT_UNMAP", "4.11" },
	{ UFFD_FEATURE_SIGBUS, "UFFD_FEATURE_SIGBUS", "4.14" },
	{ UFFD_FEATURE_THREAD_ID, "UFFD_FEATURE_THREAD_ID", "4.14" },
	{ UFFD_FEATURE_MINOR_HUGETLBFS, "UFFD_FEATURE_MINOR_HUGETLBFS", "5.13" },
	{ UFFD_FEATURE_MINOR_SHMEM, "UFFD_FEATURE_MINOR_SHMEM", "5.14" },
	{ UFFD_FEATURE_EXACT_ADDRESS, "UFFD_FEATURE_EXACT_ADDRESS", "5.18" },
	{ UFFD_FEATURE_WP_HUGETLBFS_SHMEM, "UFFD_FEATURE_WP_HUGETLBFS_SHMEM", "5.19" },
	{ UFFD_FEATURE_WP_UNPOPULATED, "UFFD_FEATURE_WP_UNPOPULATED", "6.4" },
	{ UFFD_FEATURE_POISON, "UFFD_FEATURE_POISON", "6.6" },
	{ UFFD_FEATURE_WP_ASYNC, "UFFD_FEATURE_WP_ASYNC", "6.7" },
	{ UFFD_FEATURE_MOVE, "UFFD_FEATURE_MOVE", "6.8" },
};

const char *uffd_feature_name(uint64_t bit)
{
	for (size_t i = 0; i < sizeof(features) / sizeof(features[0]); i++)
		if (features[i].bit == bit)
			return features[i].name;
	return "unknown";
}

const char *uffd_feature_since(uint64_t bit)
{
	for (size_t i = 0; i < sizeof(features) / sizeof(features[0]); i++)
		if (features[i].bit == bit)
			return features[i].since;
	return "?";
}

/*
 * Not UFFD_USER_MODE_ONLY: KVM's accesses to guest RAM are kernel-mode faults. The syscall
 * needs root (CAP_SYS_PTRACE) or vm.unprivileged_userfaultfd=1; a jailed VMM has neither and
 * uses its own /dev/userfaultfd node instead (Linux 6.1: access to the node is the
 * permission; docs/SECURITY.md).
 */
static int uffd_create(const char *what, bool quiet)
{
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	int err = errno;

	if (fd >= 0)
		return fd;
	if (err == EPERM) {
		int dev = open(UFFD_DEV_PATH, O_RDWR | O_CLOEXEC);
		if (dev >= 0) {
			fd = ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
			err = errno;
			close(dev);
			if (fd >= 0)
				return fd;
		}
	}
	if (quiet)
		return -err;
	return log_errno(-err, "userfaultfd for %s (root, vm.unprivileged_userfaultfd=1 or "
			 "access to %s needed)", what, UFFD_DEV_PATH);
}

/* FORKVM_UFFD_FEATURES_MASK, or all ones when unset. */
static int features_mask(uint64_t *mask, bool quiet)
{
	const char *v = getenv(UFFD_FEATURES_MASK_ENV);
	char *end;

	*mask = ~0ULL;
	if (!v || !*v)
		return 0;
	errno = 0;
	*mask = strtoull(v, &end, 0);
	if (!errno && !*end)
		return 0;
	if (quiet)
		return -EINVAL;
	return log_errno(-EINVAL, "%s='%s' is not a feature mask (e.g. 0x1fff)",
			 UFFD_FEATURES_MASK_ENV, v);
}

static int probe_features(uint64_t *offered, uint64_t *hidden, bool quiet)
{
	struct uffdio_api api = { .api = UFFD_API, .features = 0 };
	uint64_t mask;
	int fd, ret;

	if ((ret = features_mask(&mask, quiet)))
		return ret;
	if ((fd = uffd_create("probing features", quiet)) < 0)
		return fd;
	ret = 0;
	if (ioctl(fd, UFFDIO_API, &api) < 0)
		ret = quiet ? -errno : log_errno(-errno, "UFFDIO_API probing the kernel's "
						 "userfaultfd features");
	close(fd);
	if (ret)
		return ret;
	*offered = api.features & mask;
	if (hidden)
		*hidden = api.features & ~mask;
	return 0;
}

int uffd_probe_features(uint64_t *offered, uint64_t *hidden)
{
	return probe_features(offered, hidden, false);
}

int uffd_probe_features_quiet(uint64_t *offered, uint64_t *hidden)
{
	return probe_features(offered, hidden, true);
}

/* "UFFD_FEATURE_A (Linux 5.19+), UFFD_FEATURE_B (Linux 6.4+)" for every bit of set. */
static void describe(uint64_t set, char *buf, size_t len)
{
	size_t at = 0;

	buf[0] = 0;
	for (int b = 0; b < 64 && at < len; b++) {
		uint64_t bit = 1ULL << b;
		if (!(set & bit))
			continue;
		int n = snprintf(buf + at, len - at, "%s%s (Linux %s+)", at ? ", " : "",
				 uffd_feature_name(bit), uffd_feature_since(bit));
		if (n < 0)
			break;
		at += (size_t)n;
	}
}

int uffd_open(uint64_t need, uint64_t want, uint64_t *enabled, const char *what,
	      struct fvm_err *why)
{
	struct uffdio_api api = { .api = UFFD_API };
	uint64_t offered, hidden, missing;
	char names[512], msg[1024];
	int fd = -1, ret;

	msg[0] = 0;
	if ((ret = uffd_probe_features(&offered, &hidden))) {
		snprintf(msg, sizeof(msg), "probing userfaultfd features for %s: %s", what,
			 strerror(-ret));
		goto out;
	}
	if ((missing = need & ~offered)) {
		describe(missing, names, sizeof(names));
		snprintf(msg, sizeof(msg), "userfaultfd for %s needs %s, which %s", what, names,
			 (missing & hidden) ? "FORKVM_UFFD_FEATURES_MASK hides" :
					      "this kernel does not offer");
		log_err("%s", msg);
		ret = -EOPNOTSUPP;
		goto out;
	}
	api.features = need | (want & offered);
	if ((fd = uffd_create(what, false)) < 0) {
		ret = fd;
		snprintf(msg, sizeof(msg), "userfaultfd for %s: %s", what, strerror(-ret));
		goto out;
	}
	if (ioctl(fd, UFFDIO_API, &api) < 0) {
		ret = -errno;
		describe(need | (want & offered), names, sizeof(names));
		snprintf(msg, sizeof(msg), "UFFDIO_API for %s with %s: %s", what,
			 names[0] ? names : "no features", strerror(-ret));
		log_err("%s", msg);
		goto out;
	}
	if (enabled)
		*enabled = need | (want & offered);
	ret = fd;
	fd = -1;
out:
	if (fd >= 0)
		close(fd);
	if (ret < 0 && why)
		errmsg(why, ret, "%s", msg);
	return ret;
}
