/* CPUID: per-vCPU topology, hypervisor/OSXSAVE bits, and the user feature-hiding policy. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/errmsg.h"
#include "x86/cpuid.h"

#define IDX KVM_CPUID_FLAG_SIGNIFCANT_INDEX

/* Leaves 0, 1, 4 (two caches + the null terminator), 7.0, 7.1, 0xb.0, 0xb.1, 0x80000001. */
static const struct kvm_cpuid_entry2 synthetic[] = {
	{ .function = 0, .eax = 0xd, .ebx = 0x756e6547, .ecx = 0x6c65746e, .edx = 0x49656e69 },
	/* EBX: garbage in [31:16] that must be replaced; ECX: every bit set incl. OSXSAVE. */
	{ .function = 1, .eax = 0x000806ec, .ebx = 0xabcd0800, .ecx = 0x7fffffff, .edx = 0xffffffff },
	{ .function = 4, .index = 0, .flags = IDX, .eax = 0xfc004121, .ebx = 0x01c0003f },
	{ .function = 4, .index = 1, .flags = IDX, .eax = 0xfc004122, .ebx = 0x01c0003f },
	{ .function = 4, .index = 2, .flags = IDX, .eax = 0x00000000 },
	{ .function = 7, .index = 0, .flags = IDX, .eax = 1, .ebx = 0xffffffff, .ecx = 0xffffffff },
	{ .function = 7, .index = 1, .flags = IDX, .eax = 0x12345678, .ebx = 0xffffffff },
	{ .function = 0xb, .index = 0, .flags = IDX, .eax = 0, .ebx = 1, .ecx = 0x100, .edx = 0x77 },
	{ .function = 0xb, .index = 1, .flags = IDX, .eax = 4, .ebx = 4, .ecx = 0x201, .edx = 0x77 },
	{ .function = 0x80000001, .ecx = 0x121, .edx = 0xffffffff },
};
#define NSYN (sizeof(synthetic) / sizeof(synthetic[0]))

static struct kvm_cpuid2 *make_supported(void)
{
	struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + NSYN * sizeof(c->entries[0]));

	assert_non_null(c);
	c->nent = NSYN;
	memcpy(c->entries, synthetic, sizeof(synthetic));
	return c;
}

static struct kvm_cpuid_entry2 *entry(struct kvm_cpuid2 *c, uint32_t leaf, uint32_t sub)
{
	struct kvm_cpuid_entry2 *e = cpuid_find(c, leaf, sub);

	assert_non_null(e);
	return e;
}

static void test_find_respects_significant_index(void **state)
{
	struct kvm_cpuid2 *c = make_supported();

	assert_int_equal(entry(c, 7, 1)->eax, 0x12345678);
	assert_int_equal(entry(c, 7, 0)->eax, 1);
	assert_null(cpuid_find(c, 7, 2));
	/* Leaf 1 has no significant index: any subleaf finds it. */
	assert_ptr_equal(cpuid_find(c, 1, 5), cpuid_find(c, 1, 0));
	assert_null(cpuid_find(c, 0x40000000, 0));
	free(c);
}

static void test_build_leaf1_apic_id_and_logical_count_per_vcpu(void **state)
{
	struct kvm_cpuid2 *sup = make_supported();

	for (int id = 0; id < 16; id++) {
		struct kvm_cpuid2 *c = cpuid_build(sup, id, 16, NULL);
		assert_non_null(c);
		uint32_t ebx = entry(c, 1, 0)->ebx;
		assert_int_equal(ebx >> 24, id);
		assert_int_equal((ebx >> 16) & 0xff, 16);
		assert_int_equal(ebx & 0xffff, 0x0800); /* brand index / CLFLUSH size kept */
		free(c);
	}
	free(sup);
}

static void test_build_htt_follows_vcpu_count(void **state)
{
	struct kvm_cpuid2 *sup = make_supported();
	struct kvm_cpuid2 *one = cpuid_build(sup, 0, 1, NULL), *four = cpuid_build(sup, 2, 4, NULL);

	assert_false(entry(one, 1, 0)->edx & (1u << 28));
	assert_int_equal((entry(one, 1, 0)->ebx >> 16) & 0xff, 1);
	assert_true(entry(four, 1, 0)->edx & (1u << 28));
	assert_int_equal((entry(four, 1, 0)->ebx >> 16) & 0xff, 4);
	free(one);
	free(four);
	free(sup);
}

static void test_build_sets_hypervisor_and_clears_osxsave(void **state)
{
	struct kvm_cpuid2 *sup = make_supported();
	struct kvm_cpuid2 *c = cpuid_build(sup, 0, 2, NULL);
	uint32_t ecx = entry(c, 1, 0)->ecx;

	assert_true(ecx & (1u << 31));
	assert_false(ecx & (1u << 27));
	/* Every other ECX bit is untouched. */
	assert_int_equal(ecx & ~((1u << 31) | (1u << 27)), 0x7fffffffu & ~(1u << 27));
	free(c);
	free(sup);
}

static void test_build_leaf_b_edx_is_x2apic_id(void **state)
{
	struct kvm_cpuid2 *sup = make_supported();

	for (int id = 0; id < 8; id++) {
		struct kvm_cpuid2 *c = cpuid_build(sup, id, 8, NULL);
		assert_int_equal(entry(c, 0xb, 0)->edx, id);
		assert_int_equal(entry(c, 0xb, 1)->edx, id);
		/* The level description is left as supplied. */
		assert_int_equal(entry(c, 0xb, 1)->ecx, 0x201);
		free(c);
	}
	free(sup);
}

static void test_build_leaf4_core_count(void **state)
{
	struct kvm_cpuid2 *sup = make_supported();

	for (int n = 1; n <= 16; n *= 2) {
		struct kvm_cpuid2 *c = cpuid_build(sup, 0, n, NULL);
		for (uint32_t sub = 0; sub < 2; sub++) {
			uint32_t eax = entry(c, 4, sub)->eax;
			assert_int_equal(eax >> 26, n - 1);
			assert_int_equal(eax & 0x03ffffff, synthetic[2 + sub].eax & 0x03ffffff);
		}
		/* The null cache-type subleaf ends the list and stays all zero. */
		assert_int_equal(entry(c, 4, 2)->eax, 0);
		free(c);
	}
	free(sup);
}

static void test_build_leaves_other_leaves_and_input_alone(void **state)
{
	struct kvm_cpuid2 *sup = make_supported();
	struct kvm_cpuid2 *c = cpuid_build(sup, 3, 4, NULL);

	assert_int_equal(c->nent, NSYN);
	assert_memory_equal(&c->entries[0], &synthetic[0], sizeof(synthetic[0]));
	assert_memory_equal(entry(c, 7, 0), &synthetic[5], sizeof(synthetic[5]));
	assert_memory_equal(entry(c, 0x80000001, 0), &synthetic[9], sizeof(synthetic[9]));
	/* The supported table itself is not modified. */
	assert_memory_equal(sup->entries, synthetic, sizeof(synthetic));
	free(c);
	free(sup);
}

static void test_build_clears_hidden_bits_only(void **state)
{
	struct kvm_cpuid2 *sup = make_supported();
	struct cpuid_policy p;
	struct fvm_err err = FVM_ERR_INIT;

	assert_int_equal(cpuid_policy_parse(&p, "-cx16,-xsave,avx2,-umip,-pdpe1gb,-pge", &err), 0);
	struct kvm_cpuid2 *c = cpuid_build(sup, 0, 1, &p);
	assert_non_null(c);
	uint32_t ecx1 = entry(c, 1, 0)->ecx;
	assert_false(ecx1 & (1u << 13)); /* cx16 */
	assert_false(ecx1 & (1u << 26)); /* xsave */
	assert_true(ecx1 & (1u << 28));	 /* avx untouched */
	assert_false(entry(c, 1, 0)->edx & (1u << 13)); /* pge */
	assert_int_equal(entry(c, 7, 0)->ebx, 0xffffffffu & ~(1u << 5)); /* avx2 */
	assert_int_equal(entry(c, 7, 0)->ecx, 0xffffffffu & ~(1u << 2)); /* umip */
	assert_int_equal(entry(c, 7, 1)->ebx, 0xffffffffu);		  /* other subleaf kept */
	assert_int_equal(entry(c, 0x80000001, 0)->edx, 0xffffffffu & ~(1u << 26)); /* pdpe1gb */
	assert_int_equal(entry(c, 0x80000001, 0)->ecx, 0x121);
	free(c);
	free(sup);
}

static void test_build_hidden_feature_of_missing_leaf_is_ignored(void **state)
{
	struct kvm_cpuid2 *sup = make_supported();
	struct cpuid_policy p;
	struct fvm_err err = FVM_ERR_INIT;

	sup->nent = 2; /* only leaves 0 and 1 */
	assert_int_equal(cpuid_policy_parse(&p, "-avx2,-rdtscp,-sse3", &err), 0);
	struct kvm_cpuid2 *c = cpuid_build(sup, 0, 1, &p);
	assert_non_null(c);
	assert_int_equal(c->nent, 2);
	assert_false(entry(c, 1, 0)->ecx & 1u);
	free(c);
	free(sup);
}

static void test_feature_find(void **state)
{
	const struct cpuid_feature *f = cpuid_feature_find("cx16");

	assert_non_null(f);
	assert_int_equal(f->leaf, 1);
	assert_int_equal(f->reg, CPUID_ECX);
	assert_int_equal(f->bit, 13);
	f = cpuid_feature_find("rdtscp");
	assert_non_null(f);
	assert_int_equal(f->leaf, 0x80000001);
	assert_int_equal(f->reg, CPUID_EDX);
	assert_int_equal(f->bit, 27);
	assert_null(cpuid_feature_find("warp"));
	assert_null(cpuid_feature_find(""));
	assert_null(cpuid_feature_find("CX16"));
}

static void test_policy_parse_minus_list(void **state)
{
	struct cpuid_policy p;
	struct fvm_err err = FVM_ERR_INIT;

	assert_int_equal(cpuid_policy_parse(&p, "-cx16,-xsave", &err), 0);
	assert_int_equal(p.nhidden, 2);
	assert_ptr_equal(p.hidden[0], cpuid_feature_find("cx16"));
	assert_ptr_equal(p.hidden[1], cpuid_feature_find("xsave"));
}

static void test_policy_parse_without_minus(void **state)
{
	struct cpuid_policy p;
	struct fvm_err err = FVM_ERR_INIT;

	assert_int_equal(cpuid_policy_parse(&p, "cx16", &err), 0);
	assert_int_equal(p.nhidden, 1);
	assert_ptr_equal(p.hidden[0], cpuid_feature_find("cx16"));
}

static void test_policy_parse_empty_and_null(void **state)
{
	struct cpuid_policy p;
	struct fvm_err err = FVM_ERR_INIT;

	p.nhidden = 7;
	assert_int_equal(cpuid_policy_parse(&p, "", &err), 0);
	assert_int_equal(p.nhidden, 0);
	p.nhidden = 7;
	assert_int_equal(cpuid_policy_parse(&p, NULL, &err), 0);
	assert_int_equal(p.nhidden, 0);
	/* Empty items between commas are skipped. */
	assert_int_equal(cpuid_policy_parse(&p, ",-cx16,,", &err), 0);
	assert_int_equal(p.nhidden, 1);
}

static void test_policy_parse_unknown_feature_names_it(void **state)
{
	struct cpuid_policy p;
	struct fvm_err err = FVM_ERR_INIT;

	assert_int_equal(cpuid_policy_parse(&p, "-cx16,-warp", &err), -EINVAL);
	assert_string_equal(err.msg, "unknown CPU feature 'warp'");
	assert_int_equal(cpuid_policy_parse(&p, "-", &err), -EINVAL);
	assert_string_equal(err.msg, "unknown CPU feature ''");
}

static void test_policy_parse_rejects_plus(void **state)
{
	struct cpuid_policy p;
	struct fvm_err err = FVM_ERR_INIT;

	assert_int_equal(cpuid_policy_parse(&p, "+cx16", &err), -EINVAL);
	assert_non_null(strstr(err.msg, "'+cx16'"));
	assert_non_null(strstr(err.msg, "'-cx16'"));
	assert_non_null(strstr(err.msg, "hidden"));
}

static void test_policy_parse_too_many(void **state)
{
	struct cpuid_policy p;
	char spec[512] = "";
	struct fvm_err err = FVM_ERR_INIT;

	for (int i = 0; i < CPUID_POLICY_MAX; i++)
		strcat(spec, i ? ",-sse3" : "-sse3");
	assert_int_equal(cpuid_policy_parse(&p, spec, &err), 0);
	assert_int_equal(p.nhidden, CPUID_POLICY_MAX);
	strcat(spec, ",-avx");
	assert_int_equal(cpuid_policy_parse(&p, spec, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "too many"));
}

static void test_policy_parse_too_long(void **state)
{
	struct cpuid_policy p;
	char spec[600];
	struct fvm_err err = FVM_ERR_INIT;

	memset(spec, 'a', sizeof(spec) - 1);
	spec[sizeof(spec) - 1] = '\0';
	assert_int_equal(cpuid_policy_parse(&p, spec, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "too long"));
}

static void test_policy_format_round_trip(void **state)
{
	struct cpuid_policy p, q;
	char buf[256];
	struct fvm_err err = FVM_ERR_INIT;

	assert_int_equal(cpuid_policy_parse(&p, "cx16,-xsave,-la57", &err), 0);
	cpuid_policy_format(&p, buf, sizeof(buf));
	/* Names in order, comma separated, each optionally with the '-' the parser accepts. */
	char stripped[256];
	size_t n = 0;
	for (const char *s = buf; *s; s++)
		if (*s != '-')
			stripped[n++] = *s;
	stripped[n] = '\0';
	assert_string_equal(stripped, "cx16,xsave,la57");
	assert_int_equal(cpuid_policy_parse(&q, buf, &err), 0);
	assert_int_equal(q.nhidden, 3);
	for (int i = 0; i < 3; i++)
		assert_ptr_equal(q.hidden[i], p.hidden[i]);
}

static void test_policy_format_empty_and_truncated(void **state)
{
	struct cpuid_policy p = { 0 };
	char buf[8];
	struct fvm_err err = FVM_ERR_INIT;

	memset(buf, 'x', sizeof(buf));
	cpuid_policy_format(&p, buf, sizeof(buf));
	assert_string_equal(buf, "");
	assert_int_equal(cpuid_policy_parse(&p, "-cx16,-xsave,-avx", &err), 0);
	cpuid_policy_format(&p, buf, sizeof(buf));
	/* Truncated but terminated inside the buffer. */
	assert_true(memchr(buf, '\0', sizeof(buf)) != NULL);
	assert_true(strlen(buf) < sizeof(buf));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_find_respects_significant_index),
		cmocka_unit_test(test_build_leaf1_apic_id_and_logical_count_per_vcpu),
		cmocka_unit_test(test_build_htt_follows_vcpu_count),
		cmocka_unit_test(test_build_sets_hypervisor_and_clears_osxsave),
		cmocka_unit_test(test_build_leaf_b_edx_is_x2apic_id),
		cmocka_unit_test(test_build_leaf4_core_count),
		cmocka_unit_test(test_build_leaves_other_leaves_and_input_alone),
		cmocka_unit_test(test_build_clears_hidden_bits_only),
		cmocka_unit_test(test_build_hidden_feature_of_missing_leaf_is_ignored),
		cmocka_unit_test(test_feature_find),
		cmocka_unit_test(test_policy_parse_minus_list),
		cmocka_unit_test(test_policy_parse_without_minus),
		cmocka_unit_test(test_policy_parse_empty_and_null),
		cmocka_unit_test(test_policy_parse_unknown_feature_names_it),
		cmocka_unit_test(test_policy_parse_rejects_plus),
		cmocka_unit_test(test_policy_parse_too_many),
		cmocka_unit_test(test_policy_parse_too_long),
		cmocka_unit_test(test_policy_format_round_trip),
		cmocka_unit_test(test_policy_format_empty_and_truncated),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
