/* /dev/kvm: open it, check the API version and every capability forkvm relies on. */
#ifndef FORKVM_KVM_H
#define FORKVM_KVM_H

#include <linux/kvm.h>
#include <stddef.h>
#include <stdint.h>

struct kvm {
	int fd;
	int vcpu_mmap_size;
	struct kvm_cpuid2 *supported_cpuid; /* from KVM_GET_SUPPORTED_CPUID */
	uint32_t *msr_list;	/* restorable MSRs, found once (kvm_msr_list) */
	uint32_t nmsrs;
	uint32_t xsave_size;	/* kvm_xsave_size, asked once (0: not yet) */
};

/* One row per capability forkvm needs; exported for the unit test and `forkvm doctor`. */
struct kvm_cap_req {
	int cap;
	const char *name;
	const char *why;
};
extern const struct kvm_cap_req kvm_required_caps[];
extern const size_t kvm_required_caps_count;
/* Capabilities forkvm uses where the host has them; why says what is lost without one. */
extern const struct kvm_cap_req kvm_optional_caps[];
extern const size_t kvm_optional_caps_count;

int kvm_open(struct kvm *kvm, const char *path);
void kvm_close(struct kvm *kvm);
/* Returns the first missing capability in *missing, or 0 when all are present. */
int kvm_check_caps(int kvm_fd, const struct kvm_cap_req **missing);

#endif
