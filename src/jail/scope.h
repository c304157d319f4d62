/*
 * Signals scoped to a VMM and the VMs it makes (docs/SECURITY.md, "Signals stay in the
 * family's tree"). The VMs of one jail share its uid, and a control thread may signal (it
 * kills the children it made when a branch fails), so a guest that takes over one VMM could
 * otherwise signal its siblings and its source. Each jailed VMM enters a Landlock domain of
 * its own that scopes signals (LANDLOCK_SCOPE_SIGNAL, Landlock ABI 6, Linux 6.12): it can
 * then signal only processes in its domain or in domains nested in it, that is itself, the
 * cow template that shares its domain, and the VMs branched from it, which each enter a
 * nested domain as they start. Older kernels: said once in the log, the VMM runs without.
 */
#ifndef FORKVM_JAIL_SCOPE_H
#define FORKVM_JAIL_SCOPE_H

#include <stdbool.h>

/*
 * Enter a new Landlock domain scoping this process's signals (no_new_privs or
 * CAP_SYS_ADMIN needed: a jailed VMM has the first). 0 also where the kernel lacks Landlock
 * or its signal scope (said once per process lineage, at info) and past Landlock's 16 nested
 * domains (a warning: the process stays in its parent's); another -errno (logged) if a step
 * failed.
 */
int jail_scope_signals(const char *name);
/* The same in a forked VM (a cow child) whose parent's signals were scoped; 0 otherwise. */
int jail_scope_signals_again(const char *name);
/* Whether this process entered such a domain (status, tests). */
bool jail_signals_scoped(void);

#define JAIL_LANDLOCK_ABI_SCOPE 6 /* the first Landlock ABI with scopes (Linux 6.12) */
/* The kernel's Landlock ABI version, or -errno (-EOPNOTSUPP: built in but disabled). */
int jail_landlock_abi(void);

#endif
