/* Per-vCPU CPUID from KVM_GET_SUPPORTED_CPUID, filtered by topology and a user feature policy. */
#ifndef FORKVM_X86_CPUID_H
#define FORKVM_X86_CPUID_H

#include <linux/kvm.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/errmsg.h"

enum cpuid_reg { CPUID_EAX, CPUID_EBX, CPUID_ECX, CPUID_EDX };

/* A named feature bit users can mask ("-cx16"). */
struct cpuid_feature {
	const char *name;
	uint32_t leaf, subleaf;
	enum cpuid_reg reg;
	int bit;
};

#define CPUID_POLICY_MAX 32
struct cpuid_policy {
	int nhidden;
	const struct cpuid_feature *hidden[CPUID_POLICY_MAX];
};

const struct cpuid_feature *cpuid_feature_find(const char *name);
/* Name of a known feature bit, or NULL. */
const char *cpuid_feature_name(uint32_t leaf, uint32_t subleaf, enum cpuid_reg reg, int bit);
/* Parse "-cx16,-xsave" (a leading '-' is optional); error names the unknown feature. */
int cpuid_policy_parse(struct cpuid_policy *policy, const char *spec, struct fvm_err *err);
/* "-cx16,-xsave" (parses back) for logs and snapshots. */
void cpuid_policy_format(const struct cpuid_policy *policy, char *buf, size_t len);

/*
 * Build the CPUID of vCPU `vcpu_id` of `nvcpus` from `supported` into a newly allocated
 * kvm_cpuid2 (caller frees): APIC IDs and logical-processor counts per vCPU, the hypervisor
 * bit, OSXSAVE left to the guest's CR4, and the policy's features hidden.
 */
struct kvm_cpuid2 *cpuid_build(const struct kvm_cpuid2 *supported, int vcpu_id, int nvcpus,
			       const struct cpuid_policy *policy);

struct kvm_cpuid_entry2 *cpuid_find(struct kvm_cpuid2 *cpuid, uint32_t leaf, uint32_t subleaf);

#endif
