/* CPUID filtering: topology per vCPU and user-maskable features. */
#include "x86/cpuid.h"
#include "util/errmsg.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct cpuid_feature features[] = {
	{ "sse3", 1, 0, CPUID_ECX, 0 },	   { "pclmulqdq", 1, 0, CPUID_ECX, 1 },
	{ "ssse3", 1, 0, CPUID_ECX, 9 },   { "fma", 1, 0, CPUID_ECX, 12 },
	{ "cx16", 1, 0, CPUID_ECX, 13 },   { "pcid", 1, 0, CPUID_ECX, 17 },
	{ "sse4.1", 1, 0, CPUID_ECX, 19 }, { "sse4.2", 1, 0, CPUID_ECX, 20 },
	{ "x2apic", 1, 0, CPUID_ECX, 21 }, { "movbe", 1, 0, CPUID_ECX, 22 },
	{ "popcnt", 1, 0, CPUID_ECX, 23 }, { "tsc-deadline", 1, 0, CPUID_ECX, 24 },
	{ "aes", 1, 0, CPUID_ECX, 25 },	   { "xsave", 1, 0, CPUID_ECX, 26 },
	{ "avx", 1, 0, CPUID_ECX, 28 },	   { "f16c", 1, 0, CPUID_ECX, 29 },
	{ "rdrand", 1, 0, CPUID_ECX, 30 }, { "pge", 1, 0, CPUID_EDX, 13 },
	{ "fsgsbase", 7, 0, CPUID_EBX, 0 }, { "bmi1", 7, 0, CPUID_EBX, 3 },
	{ "avx2", 7, 0, CPUID_EBX, 5 },	   { "smep", 7, 0, CPUID_EBX, 7 },
	{ "bmi2", 7, 0, CPUID_EBX, 8 },	   { "erms", 7, 0, CPUID_EBX, 9 },
	{ "invpcid", 7, 0, CPUID_EBX, 10 }, { "avx512f", 7, 0, CPUID_EBX, 16 },
	{ "rdseed", 7, 0, CPUID_EBX, 18 }, { "smap", 7, 0, CPUID_EBX, 20 },
	{ "umip", 7, 0, CPUID_ECX, 2 },	   { "pku", 7, 0, CPUID_ECX, 3 },
	{ "la57", 7, 0, CPUID_ECX, 16 },   { "rdpid", 7, 0, CPUID_ECX, 22 },
	{ "avx512-vnni", 7, 0, CPUID_ECX, 11 }, { "amx-tile", 7, 0, CPUID_EDX, 24 },
	{ "pdpe1gb", 0x80000001, 0, CPUID_EDX, 26 }, { "rdtscp", 0x80000001, 0, CPUID_EDX, 27 },
};

const struct cpuid_feature *cpuid_feature_find(const char *name)
{
	for (size_t i = 0; i < sizeof(features) / sizeof(features[0]); i++)
		if (strcmp(features[i].name, name) == 0)
			return &features[i];
	return NULL;
}

const char *cpuid_feature_name(uint32_t leaf, uint32_t subleaf, enum cpuid_reg reg, int bit)
{
	for (size_t i = 0; i < sizeof(features) / sizeof(features[0]); i++)
		if (features[i].leaf == leaf && features[i].subleaf == subleaf &&
		    features[i].reg == reg && features[i].bit == bit)
			return features[i].name;
	return NULL;
}

int cpuid_policy_parse(struct cpuid_policy *policy, const char *spec, struct fvm_err *err)
{
	char buf[512], *save = NULL;

	memset(policy, 0, sizeof(*policy));
	if (!spec || !*spec)
		return 0;
	if (strlen(spec) >= sizeof(buf)) {
		return errmsg(err, -EINVAL, "feature list too long");
	}
	strcpy(buf, spec);
	for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		const char *name = tok[0] == '-' ? tok + 1 : tok;
		const struct cpuid_feature *f = cpuid_feature_find(name);
		if (tok[0] == '+') {
			return errmsg(err, -EINVAL, "'%s': features can only be hidden ('-%s')",
				      tok, tok + 1);
		}
		if (!f) {
			return errmsg(err, -EINVAL, "unknown CPU feature '%s'", name);
		}
		if (policy->nhidden == CPUID_POLICY_MAX) {
			return errmsg(err, -EINVAL, "too many features (max %d)", CPUID_POLICY_MAX);
		}
		policy->hidden[policy->nhidden++] = f;
	}
	return 0;
}

void cpuid_policy_format(const struct cpuid_policy *policy, char *buf, size_t len)
{
	size_t off = 0;

	if (len == 0)
		return;
	buf[0] = '\0';
	for (int i = 0; i < policy->nhidden && off < len; i++)
		off += (size_t)snprintf(buf + off, len - off, "%s-%s", i ? "," : "",
					policy->hidden[i]->name);
}

struct kvm_cpuid_entry2 *cpuid_find(struct kvm_cpuid2 *cpuid, uint32_t leaf, uint32_t subleaf)
{
	for (uint32_t i = 0; i < cpuid->nent; i++) {
		struct kvm_cpuid_entry2 *e = &cpuid->entries[i];
		bool indexed = e->flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX;
		if (e->function == leaf && (!indexed || e->index == subleaf))
			return e;
	}
	return NULL;
}

static uint32_t *cpuid_reg_ptr(struct kvm_cpuid_entry2 *e, enum cpuid_reg reg)
{
	switch (reg) {
	case CPUID_EAX: return &e->eax;
	case CPUID_EBX: return &e->ebx;
	case CPUID_ECX: return &e->ecx;
	default: return &e->edx;
	}
}

static void cpuid_set_topology(struct kvm_cpuid_entry2 *e, int vcpu_id, int nvcpus)
{
	switch (e->function) {
	case 1:
		/* Initial APIC ID and logical processors per package; HTT when more than one. */
		e->ebx = (e->ebx & 0x0000ffffu) | ((uint32_t)vcpu_id << 24) | ((uint32_t)nvcpus << 16);
		e->edx = nvcpus > 1 ? e->edx | (1u << 28) : e->edx & ~(1u << 28);
		e->ecx |= 1u << 31;	  /* running under a hypervisor */
		e->ecx &= ~(1u << 27); /* OSXSAVE mirrors the guest's CR4, KVM sets it */
		break;
	case 4:
		/* Cores per package - 1 in EAX[31:26]; one thread per core. */
		if (e->eax & 0x1f)
			e->eax = (e->eax & 0x03ffffffu) | ((uint32_t)(nvcpus - 1) << 26);
		break;
	case 0xb:
	case 0x1f:
		e->edx = (uint32_t)vcpu_id; /* x2APIC ID */
		break;
	}
}

struct kvm_cpuid2 *cpuid_build(const struct kvm_cpuid2 *supported, int vcpu_id, int nvcpus,
			       const struct cpuid_policy *policy)
{
	size_t bytes = sizeof(*supported) + supported->nent * sizeof(supported->entries[0]);
	struct kvm_cpuid2 *c = malloc(bytes);

	if (!c)
		return NULL;
	memcpy(c, supported, bytes);
	for (uint32_t i = 0; i < c->nent; i++)
		cpuid_set_topology(&c->entries[i], vcpu_id, nvcpus);
	for (int i = 0; policy && i < policy->nhidden; i++) {
		const struct cpuid_feature *f = policy->hidden[i];
		struct kvm_cpuid_entry2 *e = cpuid_find(c, f->leaf, f->subleaf);
		if (e)
			*cpuid_reg_ptr(e, f->reg) &= ~(1u << f->bit);
	}
	return c;
}
