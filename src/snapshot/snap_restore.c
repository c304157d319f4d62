/* Rebuild a VM from a decoded snapshot: host check, RAM on the chosen backing, then state. */
#include <cpuid.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util/errmsg.h"
#include "util/log.h"
#include "builder/builder.h"
#include "devices/serial.h"
#include "devices/vmgenid.h"
#include "snapshot/snap_layer.h"
#include "snapshot/snapshot.h"
#include "x86/boot_cpu.h"

/* Feature registers a snapshot may only use if this host offers them. */
static const struct {
	uint32_t leaf, subleaf;
	enum cpuid_reg reg;
	uint32_t dynamic; /* bits KVM or forkvm set per vCPU, not host features */
} checked[] = {
	{ 1, 0, CPUID_ECX, (1u << 27) | (1u << 31) }, /* OSXSAVE, hypervisor */
	{ 1, 0, CPUID_EDX, 1u << 28 },		       /* HTT */
	{ 7, 0, CPUID_EBX, 0 },
	{ 7, 0, CPUID_ECX, 1u << 4 },		       /* OSPKE */
	{ 7, 0, CPUID_EDX, 0 },
	{ 0x80000001, 0, CPUID_ECX, 0 },
	{ 0x80000001, 0, CPUID_EDX, 0 },
};

/* What the CPU under this VMM executes natively (PVM runs guest CPL3 code on it directly). */
static uint32_t native_cpuid_reg(uint32_t leaf, uint32_t subleaf, enum cpuid_reg r)
{
	uint32_t regs[4] = { 0 }, max = __get_cpuid_max(leaf & 0x80000000u, NULL);

	if (leaf > max)
		return 0;
	__cpuid_count(leaf, subleaf, regs[0], regs[1], regs[2], regs[3]);
	return regs[r];
}

static uint32_t reg_of(const struct kvm_cpuid_entry2 *e, enum cpuid_reg r)
{
	return r == CPUID_EAX ? e->eax : r == CPUID_EBX ? e->ebx : r == CPUID_ECX ? e->ecx : e->edx;
}

int snap_check_host(const struct snap_machine *m, const struct kvm_cpuid2 *supported,
		    struct fvm_err *err)
{
	static const char *const reg_names[] = { "EAX", "EBX", "ECX", "EDX" };
	struct kvm_cpuid2 *saved = m->vcpus[0].cpuid;

	for (size_t i = 0; i < sizeof(checked) / sizeof(checked[0]); i++) {
		struct kvm_cpuid_entry2 *want = cpuid_find(saved, checked[i].leaf, checked[i].subleaf);
		struct kvm_cpuid_entry2 *have =
			cpuid_find((struct kvm_cpuid2 *)supported, checked[i].leaf, checked[i].subleaf);
		uint32_t missing;

		if (!want)
			continue;
		/*
		 * KVM_GET_SUPPORTED_CPUID alone is too narrow on some hosts (PVM reports a minimal
		 * set yet runs guests with the CPU's features), so a feature counts as available
		 * when KVM offers it or the host CPU has it.
		 */
		missing = reg_of(want, checked[i].reg) & ~checked[i].dynamic &
			  ~(have ? reg_of(have, checked[i].reg) : 0) &
			  ~native_cpuid_reg(checked[i].leaf, checked[i].subleaf, checked[i].reg);
		if (!missing)
			continue;
		int bit = __builtin_ctz(missing);
		const char *name = cpuid_feature_name(checked[i].leaf, checked[i].subleaf,
						      checked[i].reg, bit);
		errf(err,
			 "snapshot needs CPU feature %s (CPUID leaf 0x%x %s bit %d) that this host's KVM "
			 "does not offer", name ? name : "?", checked[i].leaf,
			 reg_names[checked[i].reg], bit);
		return -ENOTSUP;
	}
	return 0;
}

static int restore_devices(struct vm *vm, const struct snap_machine *m)
{
	if (m->has_serial) {
		struct serial_regs regs;
		memcpy(&regs, m->serial, sizeof(regs));
		serial_set_regs(vm->serial, &regs);
	}
	if (m->config.guest_kind == SNAP_GUEST_PROBE)
		vm_attach_probe(vm);
	else
		vmgenid_mark_restored(vm); /* every restore and branch child: a new identity */
	if (m->has_vsock && !vm->vsock)
		log_warn("snapshot has a vsock device; restore with --vsock PATH to keep it");
	if (m->has_vsock && vm->vsock &&
	    (virtio_mmio_restore(vm->virtio[0], &m->vsock_mmio) || vsock_restore(vm->vsock, &m->vsock)))
		return -EINVAL;
	if (m->has_net && snap_net_restore(vm, m))
		return -EINVAL;
	return snap_disks_restore(vm, m);
}

/* Before any RAM is allocated or copied: can this host's KVM run the snapshot's CPU? */
static int restore_check_host(const struct vm_config *cfg, const struct snap_machine *m,
			      const char *dir)
{
	struct kvm kvm;
	struct fvm_err err = FVM_ERR_INIT;
	int ret = kvm_open(&kvm, cfg->kvm_path);

	if (ret)
		return ret;
	ret = snap_check_host(m, kvm.supported_cpuid, &err);
	if (ret)
		log_err("snapshot %s: %s", dir, err.msg);
	kvm_close(&kvm);
	return ret;
}

static int restore_vcpu(struct vm *vm, struct vcpu *vcpu, const struct vcpu_state *saved,
			const char *dir)
{
	struct vcpu_state st = *saved;
	uint32_t host_xsave = kvm_xsave_size(&vm->kvm);
	int ret;

	/* KVM reads an XSAVE buffer of this host's size; a smaller saved area is zero-extended. */
	if (st.xsave_size > host_xsave)
		return log_errno(-ENOTSUP, "snapshot %s: XSAVE area of %u bytes, this host has %u", dir,
				 st.xsave_size, host_xsave);
	st.xsave = calloc(1, host_xsave);
	if (!st.xsave)
		return -ENOMEM;
	memcpy(st.xsave, saved->xsave, saved->xsave_size);
	ret = vcpu_restore_state(vcpu, &st);
	free(st.xsave);
	return ret;
}

/* Each vCPU's TSC from the instant of the saved kvmclock (docs/SNAPSHOT.md, "kvmclock and
 * the TSC"): the MSR writes above went through KVM's TSC-matching heuristic. */
static int tie_tsc(struct vm *vm, const struct snap_machine *m)
{
	uint64_t *tsc = calloc((size_t)vm->nvcpus, sizeof(*tsc));
	int ret, found = 0;

	if (!tsc)
		return log_errno(-ENOMEM, "restoring the TSCs of %d vCPUs", vm->nvcpus);
	for (int i = 0; i < vm->nvcpus; i++) {
		const struct kvm_msrs *msrs = m->vcpus[i].msrs;
		for (uint32_t k = 0; msrs && k < msrs->nmsrs; k++)
			if (msrs->entries[k].index == MSR_IA32_TSC) {
				tsc[i] = msrs->entries[k].data;
				found++;
				break;
			}
	}
	/* A snapshot without every vCPU's TSC keeps what the MSR writes gave. */
	ret = found == vm->nvcpus ? vm_clock_tie_tsc(vm, m->arch.clock.clock, tsc) : 0;
	free(tsc);
	return ret;
}

int vm_restore_machine(struct vm *vm, const struct snap_machine *m, const char *what)
{
	int ret = 0;

	for (int i = 0; i < vm->mem.nregions; i++) {
		if (vm->mem.regions[i].gpa != m->config.regions[i].gpa ||
		    vm->mem.regions[i].size != m->config.regions[i].size)
			return log_errno(-EINVAL, "%s: RAM layout differs from this forkvm's", what);
	}
	/*
	 * VM-level state (interrupt controllers, clock), then each vCPU in the safe order, then
	 * the devices. Devices come last because restoring one can raise an interrupt at once:
	 * vsock's transport reset is delivered by its own thread, through an irqfd, as soon as
	 * vsock_restore wakes it. An interrupt raised before KVM_SET_LAPIC lands in the LAPIC's
	 * IRR and is then overwritten by the saved LAPIC page: the guest never hears of the
	 * reset, keeps its old connections, and resets the first new one when a later
	 * interrupt finally runs its event queue (a clone whose agent "closes the connection").
	 */
	ret = vm_restore_arch_state(vm, &m->arch);
	for (int i = 0; !ret && i < vm->nvcpus; i++)
		ret = restore_vcpu(vm, &vm->vcpus[i], &m->vcpus[i], what);
	if (!ret)
		ret = tie_tsc(vm, m);
	if (!ret)
		ret = restore_devices(vm, m);
	return ret;
}

int vm_restore(struct vm *vm, const struct vm_config *base, const struct snapshot *snap,
	       const struct snap_machine *m, enum guest_mem_backing backing,
	       const struct restore_hooks *hooks)
{
	struct vm_config cfg = *base;
	struct snap_disk_paths *disks;
	struct fvm_err err = FVM_ERR_INIT;
	int ret;

	cfg.mem_size = m->config.mem_size;
	cfg.nvcpus = m->nvcpus;
	cfg.mem.backing = backing;
	cfg.mem.path = snap->memory_path;
	cfg.mem.file_offset = 0;
	/* The NIC first: a snapshot with one needs this process's TAP (cfg.net owns it now). */
	ret = snap_net_config(m, &cfg, snap->dir);
	if (!ret && cpuid_policy_parse(&cfg.cpuid_policy, m->config.cpu_features, &err))
		ret = log_errno(-EINVAL, "snapshot %s: CPU feature policy: %s", snap->dir, err.msg);
	if (!ret)
		ret = restore_check_host(&cfg, m, snap->dir);
	/* Disks: the snapshot's sealed chain, a new private top for this VM. */
	if (!ret)
		ret = snap_disks_config(m, snap->dir, &cfg, &disks);
	if (ret) {
		if (cfg.net.present && cfg.net.tap_fd >= 0)
			close(cfg.net.tap_fd); /* no VM took it */
		return ret;
	}
	/* The hook may enter the jail, which needs this process single-threaded: the device
	 * threads start after it, before any device state is restored (docs/SECURITY.md). */
	cfg.defer_device_threads = hooks && hooks->mem_ready;
	cfg.cpuid_from_state = true;
	ret = vm_create(vm, &cfg);
	snap_disk_paths_free(disks);
	if (ret)
		return ret;
	if (hooks && hooks->mem_ready &&
	    ((ret = hooks->mem_ready(vm, hooks->arg)) || (ret = vm_start_devices(vm)))) {
		vm_destroy(vm);
		return ret;
	}
	/* A diff layer: RAM now holds the chain's base; its layers go on top, oldest first. */
	ret = snap_layers_apply(&vm->mem, snap->dir, &err);
	if (ret)
		log_err("snapshot %s: %s", snap->dir, err.msg);
	if (!ret)
		ret = vm_restore_machine(vm, m, snap->dir);
	if (ret)
		vm_destroy(vm);
	return ret;
}
