/* Linux boot: kernel + initrd + ACPI into guest RAM, vCPU 0 at the kernel entry, APs in wait-for-SIPI. */
#include "builder/boot_linux.h"

#include <inttypes.h>
#include <stdio.h>
#include <sys/ioctl.h>

#include "util/log.h"
#include "core/vm.h"
#include "devices/vmgenid.h"
#include "loader/boot_regs.h"
#include "loader/load_util.h"
#include "x86/acpi.h"
#include "x86/boot_cpu.h"
#include "x86/layout.h"
#include "x86/pagetable.h"
#include "x86/segments.h"

#define BP_ACPI_RSDP_ADDR 0x070 /* boot_params.acpi_rsdp_addr (protocol 2.14) */
#define FOUR_GIB 0x100000000ULL

int linux_cmdline_compose(char *out, size_t len, const char *base, int nvirtio)
{
	size_t off = (size_t)snprintf(out, len, "%s", base);

	for (int i = 0; i < nvirtio && off < len; i++)
		off += (size_t)snprintf(out + off, len - off, " virtio_mmio.device=4K@0x%llx:%d",
					LAYOUT_VIRTIO_MMIO_BASE + (unsigned long long)i *
					LAYOUT_VIRTIO_MMIO_SIZE, LAYOUT_VIRTIO_MMIO_IRQ + i);
	return off < len ? 0 : -E2BIG;
}

int linux_boot_prepare(struct linux_boot *lb, const char *kernel, const char *initrd,
		       const char *cmdline, enum boot_protocol proto, int nvirtio,
		       uint64_t ram_size)
{
	int err;

	memset(lb, 0, sizeof(*lb));
	if (linux_cmdline_compose(lb->cmdline, sizeof(lb->cmdline),
				  cmdline ? cmdline : LINUX_DEFAULT_CMDLINE, nvirtio)) {
		log_err("kernel command line is longer than %d bytes", LINUX_CMDLINE_MAX - 1);
		return -E2BIG;
	}
	err = kernel_probe(kernel, &lb->info);
	if (err)
		return err;
	if (initrd)
		snprintf(lb->initrd, sizeof(lb->initrd), "%s", initrd);
	lb->opts = (struct kernel_load_opts){ .cmdline = lb->cmdline,
					      .initrd_path = initrd ? lb->initrd : NULL,
					      .protocol = proto };
	return kernel_check(&lb->info, &lb->opts, ram_size);
}

/* Log the e820 map in the kernel's own format so tests can compare the console with it. */
static void log_e820(struct vm *vm)
{
	struct e820_entry e820[BP_E820_MAX];
	int n;

	if (e820_build(vm->mem.regions, vm->mem.nregions, e820, BP_E820_MAX, &n))
		return;
	for (int i = 0; i < n; i++)
		log_info("e820: [mem 0x%016" PRIx64 "-0x%016" PRIx64 "] %s", e820[i].addr,
			 e820[i].addr + e820[i].size - 1, e820[i].type == E820_RAM ? "usable" : "reserved");
}

static int build_acpi(struct vm *vm, uint64_t *rsdp)
{
	struct acpi_config cfg = { .ncpus = vm->nvcpus, .lapic_addr = LAYOUT_LAPIC,
				   .ioapic_addr = LAYOUT_IOAPIC, .nvirtio = vm->nvirtio,
				   .vmgenid_addr = LAYOUT_VMGENID, .ged_gsi = LAYOUT_GED_GSI };
	uint8_t *buf = guest_mem_ptr(&vm->mem, LAYOUT_ACPI, LAYOUT_ACPI_SIZE);
	struct acpi_layout lay;
	int err;

	for (int i = 0; i < vm->nvirtio; i++)
		cfg.virtio[i] = (struct acpi_virtio){
			.base = (uint32_t)(LAYOUT_VIRTIO_MMIO_BASE + (uint64_t)i * LAYOUT_VIRTIO_MMIO_SIZE),
			.size = LAYOUT_VIRTIO_MMIO_SIZE, .irq = LAYOUT_VIRTIO_MMIO_IRQ + (uint32_t)i };
	if (!buf)
		return log_errno(-ENOSPC, "guest RAM has no room for ACPI tables at 0x%llx", LAYOUT_ACPI);
	err = acpi_build(buf, LAYOUT_ACPI_SIZE, LAYOUT_ACPI, &cfg, &lay);
	if (err)
		return log_errno(err, "building ACPI tables (%d vCPUs, %d virtio devices)",
				 vm->nvcpus, vm->nvirtio);
	log_debug("ACPI: RSDP 0x%" PRIx64 " XSDT 0x%" PRIx64 " FADT 0x%" PRIx64 " MADT 0x%" PRIx64
		  " DSDT 0x%" PRIx64 ", %zu bytes", lay.rsdp, lay.xsdt, lay.fadt, lay.madt, lay.dsdt,
		  lay.total);
	*rsdp = lay.rsdp;
	return 0;
}

/* Tell the kernel where the RSDP is, in whichever boot structure its protocol reads. */
static void point_at_rsdp(struct vm *vm, const struct boot_info *boot, uint64_t rsdp)
{
	if (boot->mode == BOOT_MODE_PVH32) {
		struct hvm_start_info *si = guest_mem_ptr(&vm->mem, boot->boot_params, sizeof(*si));
		if (si)
			si->rsdp_paddr = rsdp;
	} else {
		uint8_t *zp = guest_mem_ptr(&vm->mem, boot->boot_params, BP_SIZE);
		if (zp)
			memcpy(zp + BP_ACPI_RSDP_ADDR, &rsdp, sizeof(rsdp));
	}
}

static int vcpu_boot_linux(struct vcpu *vcpu, const struct boot_info *boot)
{
	struct kvm_sregs sregs;
	struct kvm_regs regs;
	struct kvm_fpu fpu;
	struct {
		struct kvm_msrs hdr;
		struct kvm_msr_entry e[BOOT_MSR_MAX];
	} msrs = { 0 };
	int n, err = vcpu_set_cpuid(vcpu); /* again: now every vCPU sees the final count */

	if (err)
		return err;
	boot_msrs(&msrs.hdr);
	n = ioctl(vcpu->fd, KVM_SET_MSRS, &msrs);
	if (n < 0 || (uint32_t)n != msrs.hdr.nmsrs)
		return log_errno(n < 0 ? -errno : -EINVAL, "KVM_SET_MSRS on vcpu %d (set %d of %u)",
				 vcpu->id, n, msrs.hdr.nmsrs);
	if (vcpu->id != 0)
		return 0; /* APs stay in wait-for-SIPI; the kernel starts them */
	if (ioctl(vcpu->fd, KVM_GET_SREGS, &sregs) < 0)
		return log_errno(-errno, "KVM_GET_SREGS on vcpu %d", vcpu->id);
	err = boot_regs_fill(boot, &regs, &sregs);
	if (err)
		return log_errno(err, "entry registers for boot mode %d", boot->mode);
	if (ioctl(vcpu->fd, KVM_SET_SREGS, &sregs) < 0)
		return log_errno(-errno, "KVM_SET_SREGS on vcpu %d", vcpu->id);
	if (ioctl(vcpu->fd, KVM_SET_REGS, &regs) < 0)
		return log_errno(-errno, "KVM_SET_REGS on vcpu %d", vcpu->id);
	boot_fpu(&fpu);
	if (ioctl(vcpu->fd, KVM_SET_FPU, &fpu) < 0)
		return log_errno(-errno, "KVM_SET_FPU on vcpu %d", vcpu->id);
	return 0;
}

int vm_boot_linux(struct vm *vm, struct linux_boot *lb)
{
	uint8_t *low = guest_mem_ptr(&vm->mem, 0, LAYOUT_HIGH_MEM);
	uint64_t map_end = guest_mem_end(&vm->mem), rsdp = 0;
	struct boot_info boot;
	int err;

	if (!low)
		return log_errno(-EINVAL, "Linux guests need at least 1 MiB of low RAM");
	err = kernel_load(&vm->mem, &lb->info, &lb->opts, &boot);
	if (err)
		return err;
	gdt_build(low);
	boot_gdt_fill((uint64_t *)(low + LAYOUT_GDT));
	/* The 64-bit protocol enters with paging on: identity-map RAM and the 3-4 GiB hole. */
	if (!pagetable_build_identity(low, map_end > FOUR_GIB ? map_end : FOUR_GIB, false))
		return log_errno(-E2BIG, "guest RAM too large for the boot page tables");
	err = build_acpi(vm, &rsdp);
	if (!err)
		err = vmgenid_boot(vm);
	if (err)
		return err;
	point_at_rsdp(vm, &boot, rsdp);
	for (int i = 0; i < vm->nvcpus; i++) {
		err = vcpu_boot_linux(&vm->vcpus[i], &boot);
		if (err)
			return err;
	}
	log_info("linux: %s %s, entry 0x%" PRIx64 " (%s), kernel 0x%" PRIx64 "-0x%" PRIx64
		 ", initrd 0x%" PRIx64 "+0x%" PRIx64, kernel_format_name(lb->info.format),
		 lb->info.path, boot.entry, boot_mode_name(boot.mode), boot.kernel_start,
		 boot.kernel_end, boot.initrd_addr, boot.initrd_size);
	log_info("cmdline: %s", lb->cmdline);
	log_e820(vm);
	return 0;
}
