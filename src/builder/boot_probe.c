/* Load the embedded probe guest and start every vCPU at CPL3 in long mode with IOPL=3. */
#include <stdlib.h>
#include <sys/ioctl.h>

#include "util/log.h"
#include "builder/builder.h"
#include "devices/probe_dev.h"
#include "x86/boot_cpu.h"
#include "x86/layout.h"
#include "x86/pagetable.h"
#include "x86/segments.h"

extern const uint8_t probe_image_start[], probe_image_end[];

static uint64_t probe_mailbox_gpa(int id)
{
	return LAYOUT_PROBE_MAILBOX + (uint64_t)id * LAYOUT_PAGE_SIZE;
}

static void probe_mailbox_init(struct vm *vm, struct probe_mailbox *mb)
{
	memset(mb, 0, sizeof(*mb));
	for (int i = 0; i < vm->mem.nregions && i < PROBE_MAX_REGIONS; i++) {
		const struct guest_mem_region *r = &vm->mem.regions[i];
		uint64_t start = r->gpa < LAYOUT_PROBE_WORK ? LAYOUT_PROBE_WORK : r->gpa;
		if (start >= r->gpa + r->size)
			continue;
		mb->work[mb->nregions].start = start;
		mb->work[mb->nregions].end = r->gpa + r->size;
		mb->nregions++;
	}
}

static int vcpu_boot_probe(struct vcpu *vcpu, uint64_t cr3)
{
	struct kvm_sregs sregs;
	struct kvm_regs regs = { 0 };
	struct kvm_fpu fpu;
	struct kvm_mp_state mp = { .mp_state = KVM_MP_STATE_RUNNABLE };
	struct {
		struct kvm_msrs hdr;
		struct kvm_msr_entry e[BOOT_MSR_MAX];
	} msrs = { 0 };
	int n;

	if (ioctl(vcpu->fd, KVM_GET_SREGS, &sregs) < 0)
		return log_errno(-errno, "KVM_GET_SREGS on vcpu %d", vcpu->id);
	boot_sregs_long_mode(&sregs, cr3, 3);
	if (ioctl(vcpu->fd, KVM_SET_SREGS, &sregs) < 0)
		return log_errno(-errno, "KVM_SET_SREGS on vcpu %d", vcpu->id);
	regs.rip = LAYOUT_PROBE_IMAGE;
	regs.rsp = LAYOUT_PROBE_STACKS + (uint64_t)(vcpu->id + 1) * LAYOUT_PROBE_STACK_SIZE;
	regs.rdi = (uint64_t)vcpu->id;
	regs.rsi = probe_mailbox_gpa(vcpu->id);
	regs.rflags = X86_RFLAGS_RESERVED | X86_RFLAGS_IOPL3; /* ports from CPL3, no interrupts */
	if (ioctl(vcpu->fd, KVM_SET_REGS, &regs) < 0)
		return log_errno(-errno, "KVM_SET_REGS on vcpu %d", vcpu->id);
	boot_fpu(&fpu);
	if (ioctl(vcpu->fd, KVM_SET_FPU, &fpu) < 0)
		return log_errno(-errno, "KVM_SET_FPU on vcpu %d", vcpu->id);
	boot_msrs(&msrs.hdr);
	n = ioctl(vcpu->fd, KVM_SET_MSRS, &msrs);
	if (n < 0 || (uint32_t)n != msrs.hdr.nmsrs)
		return log_errno(n < 0 ? -errno : -EINVAL, "KVM_SET_MSRS on vcpu %d (set %d of %u)",
				 vcpu->id, n, msrs.hdr.nmsrs);
	/* APs would otherwise wait for INIT/SIPI; every probe vCPU runs from the start. */
	if (ioctl(vcpu->fd, KVM_SET_MP_STATE, &mp) < 0)
		return log_errno(-errno, "KVM_SET_MP_STATE on vcpu %d", vcpu->id);
	return 0;
}

void vm_attach_probe(struct vm *vm)
{
	vm->probe_guest = true;
	for (int i = 0; i < vm->nvcpus; i++)
		probe_dev_attach(vm->probe, i,
				 guest_mem_ptr(&vm->mem, probe_mailbox_gpa(i), LAYOUT_PAGE_SIZE));
}

int vm_boot_probe(struct vm *vm)
{
	size_t image_size = (size_t)(probe_image_end - probe_image_start);
	uint8_t *low = guest_mem_ptr(&vm->mem, 0, LAYOUT_PROBE_WORK);
	uint64_t cr3;

	if (!low)
		return log_errno(-EINVAL, "probe guest needs at least %llu MiB of RAM",
				 LAYOUT_PROBE_WORK >> 20);
	if (image_size == 0 || image_size > LAYOUT_PROBE_IMAGE_MAX)
		return log_errno(-EINVAL, "probe image of %zu bytes does not fit its slot", image_size);
	memcpy(low + LAYOUT_PROBE_IMAGE, probe_image_start, image_size);
	gdt_build(low);
	/* With virtio devices the probe's driver also needs the MMIO window below 4 GiB mapped. */
	cr3 = pagetable_build_identity(low, vm->nvirtio && guest_mem_end(&vm->mem) < (4ULL << 30)
					    ? (4ULL << 30) : guest_mem_end(&vm->mem), true);
	if (!cr3)
		return log_errno(-E2BIG, "guest RAM too large for the boot page tables");
	for (int i = 0; i < vm->nvcpus; i++)
		probe_mailbox_init(vm, (struct probe_mailbox *)(low + probe_mailbox_gpa(i)));
	vm_attach_probe(vm);
	for (int i = 0; i < vm->nvcpus; i++) {
		int err = vcpu_boot_probe(&vm->vcpus[i], cr3);
		if (err)
			return err;
	}
	return 0;
}
