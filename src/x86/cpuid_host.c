/* Host-probed CPUID defaults: a table of host traits and the features each one must hide. */
#include "x86/cpuid_host.h"
#include "util/errmsg.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/*
 * Each rule is data, not a special case in the boot path. kvm_pvm: guest CPL0 code goes
 * through KVM's instruction emulator, which stalls forever on `lock cmpxchg16b` (SLUB uses it
 * when CPUID says CX16), so the guest must not see CX16.
 */
static const struct cpuid_host_rule rules[] = {
	{ "kvm_pvm", "sys/module/kvm_pvm", "-cx16",
	  "guest CPL0 is emulated and the emulator cannot execute cmpxchg16b" },
};

int cpuid_host_default_policy(const char *root, struct cpuid_policy *policy, char *why,
			      size_t whylen)
{
	char spec[256] = "", path[512];
	struct fvm_err err = FVM_ERR_INIT;
	size_t off = 0, woff = 0;

	memset(policy, 0, sizeof(*policy));
	if (whylen)
		why[0] = '\0';
	for (size_t i = 0; i < sizeof(rules) / sizeof(rules[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", root, rules[i].path);
		if (access(path, F_OK) != 0)
			continue;
		off += (size_t)snprintf(spec + off, sizeof(spec) - off, "%s%s", off ? "," : "",
					rules[i].hide);
		if (woff < whylen)
			woff += (size_t)snprintf(why + woff, whylen - woff, "%s%s: %s (%s)",
						 woff ? "; " : "", rules[i].trait, rules[i].why,
						 rules[i].hide);
		if (off >= sizeof(spec))
			return -EINVAL;
	}
	return cpuid_policy_parse(policy, spec, &err);
}
