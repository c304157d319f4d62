/* Default CPUID policy for Linux guests, chosen by probing what this host's KVM can run. */
#ifndef FORKVM_X86_CPUID_HOST_H
#define FORKVM_X86_CPUID_HOST_H

#include <stddef.h>

#include "x86/cpuid.h"

/* A host trait that is detected by a file's presence and asks for features to be hidden. */
struct cpuid_host_rule {
	const char *trait;   /* for logs: "kvm_pvm" */
	const char *path;    /* exists on such hosts (relative to the sysfs root) */
	const char *hide;    /* cpuid_policy_parse() syntax */
	const char *why;
};

/*
 * Fill policy from the rules that match under root ("/" normally; tests pass a fake tree).
 * why receives "trait: reason; ..." (or "" when nothing matched). Returns 0 or -EINVAL.
 */
int cpuid_host_default_policy(const char *root, struct cpuid_policy *policy, char *why,
			      size_t whylen);

#endif
