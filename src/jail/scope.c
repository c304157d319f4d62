/* Landlock signal scoping for jailed VMMs (jail/scope.h, docs/SECURITY.md). */
#include "jail/scope.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "util/log.h"

#ifndef SYS_landlock_create_ruleset
#define SYS_landlock_create_ruleset 444
#endif
#ifndef SYS_landlock_restrict_self
#define SYS_landlock_restrict_self 446
#endif
#define LL_CREATE_RULESET_VERSION (1U << 0)
#define LL_SCOPE_SIGNAL (1ULL << 1)

/* struct landlock_ruleset_attr as of ABI 6; older uapi headers lack its scoped field. */
struct ll_ruleset_attr {
	uint64_t handled_access_fs;
	uint64_t handled_access_net;
	uint64_t scoped;
};

static bool scoped;
static bool told; /* "not available" said once; forks inherit it */

bool jail_signals_scoped(void)
{
	return scoped;
}

int jail_landlock_abi(void)
{
	long abi = syscall(SYS_landlock_create_ruleset, NULL, 0, LL_CREATE_RULESET_VERSION);

	return abi < 0 ? -errno : (int)abi;
}

int jail_scope_signals(const char *name)
{
	struct ll_ruleset_attr attr = { .scoped = LL_SCOPE_SIGNAL };
	int abi = jail_landlock_abi(), fd, ret = 0;

	if (abi < JAIL_LANDLOCK_ABI_SCOPE) {
		char why[64];
		if (abi < 0)
			snprintf(why, sizeof(why), "no Landlock: %s", strerror(-abi));
		else
			snprintf(why, sizeof(why), "Landlock ABI %d", abi);
		if (!told)
			log_info("jail: %s: signals not scoped to its own VMs (%s; the signal scope "
				 "needs ABI 6, Linux 6.12): the VMs of its family share its uid", name,
				 why);
		told = true;
		return 0;
	}
	fd = (int)syscall(SYS_landlock_create_ruleset, &attr, sizeof(attr), 0);
	if (fd < 0)
		return log_errno(-errno, "jail: %s: a Landlock ruleset scoping signals", name);
	if (syscall(SYS_landlock_restrict_self, fd, 0) < 0) {
		ret = -errno;
		if (ret == -E2BIG) { /* 16 nested domains: a 16th generation of branches */
			log_warn("jail: %s: Landlock's 16 nested domains are used up: it stays in its "
				 "source's, and may signal the VMs there", name);
			ret = 1;
		} else {
			(void)log_errno(ret, "jail: %s: entering a Landlock domain scoping signals",
					name);
		}
	}
	close(fd);
	if (!ret) {
		scoped = true;
		log_debug("jail: %s: signals scoped to itself and the VMs it makes (Landlock ABI %d)",
			  name, abi);
	}
	return ret < 0 ? ret : 0;
}

int jail_scope_signals_again(const char *name)
{
	return scoped ? jail_scope_signals(name) : 0;
}
