/* Capture a paused VM into vmstate sections: MP state first and events last per vCPU. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/log.h"
#include "core/vm.h"
#include "devices/serial.h"
#include "devices/vsock.h"
#include "snapshot/snapshot.h"
#include "x86/boot_cpu.h"
#include "x86/layout.h"

static void capture_config(struct vm *vm, struct snap_buf *buf, uint32_t xsave_size)
{
	struct snap_config c = {
		.mem_size = vm->mem.size,
		.nvcpus = (uint32_t)vm->nvcpus,
		.guest_kind = vm->probe_guest ? SNAP_GUEST_PROBE : SNAP_GUEST_LINUX,
		.nregions = (uint32_t)vm->mem.nregions,
		.xsave_size = xsave_size,
	};

	for (int i = 0; i < vm->mem.nregions; i++) {
		c.regions[i].gpa = vm->mem.regions[i].gpa;
		c.regions[i].size = vm->mem.regions[i].size;
		c.regions[i].offset = vm->mem.regions[i].offset;
	}
	cpuid_policy_format(&vm->cfg.cpuid_policy, c.cpu_features, sizeof(c.cpu_features));
	snap_buf_add(buf, SNAP_SEC_CONFIG, 0, &c, sizeof(c));
}

/* tsc: this vCPU's TSC at the instant the snapshot's kvmclock was read (vm_clock_capture). */
static int capture_vcpu(struct vcpu *vcpu, struct snap_buf *buf, uint64_t tsc)
{
	struct vcpu_state st;
	uint32_t id = (uint32_t)vcpu->id;
	int err = vcpu_save_state(vcpu, &st);

	if (err)
		return err;
	for (uint32_t i = 0; i < st.msrs->nmsrs; i++)
		if (st.msrs->entries[i].index == MSR_IA32_TSC)
			st.msrs->entries[i].data = tsc;
	snap_buf_add(buf, SNAP_SEC_MP_STATE, id, &st.mp, sizeof(st.mp));
	snap_buf_add(buf, SNAP_SEC_CPUID, id, st.cpuid,
		     sizeof(*st.cpuid) + st.cpuid->nent * sizeof(st.cpuid->entries[0]));
	snap_buf_add(buf, SNAP_SEC_REGS, id, &st.regs, sizeof(st.regs));
	snap_buf_add(buf, SNAP_SEC_SREGS, id, &st.sregs, sizeof(st.sregs));
	snap_buf_add(buf, SNAP_SEC_XSAVE, id, st.xsave, st.xsave_size);
	snap_buf_add(buf, SNAP_SEC_XCRS, id, &st.xcrs, sizeof(st.xcrs));
	snap_buf_add(buf, SNAP_SEC_DEBUGREGS, id, &st.debugregs, sizeof(st.debugregs));
	snap_buf_add(buf, SNAP_SEC_LAPIC, id, &st.lapic, sizeof(st.lapic));
	snap_buf_add(buf, SNAP_SEC_MSRS, id, st.msrs,
		     sizeof(*st.msrs) + st.msrs->nmsrs * sizeof(st.msrs->entries[0]));
	snap_buf_add(buf, SNAP_SEC_TSC_KHZ, id, &st.tsc_khz, sizeof(st.tsc_khz));
	snap_buf_add(buf, SNAP_SEC_VCPU_EVENTS, id, &st.events, sizeof(st.events));
	vcpu_state_free(&st);
	return 0;
}

int snap_capture(struct vm *vm, struct snap_buf *buf)
{
	struct vm_arch_state arch;
	struct serial_regs serial;
	uint64_t clock, *tsc = calloc((size_t)vm->nvcpus, sizeof(*tsc));
	int err;

	if (!tsc)
		return log_errno(-ENOMEM, "capturing the TSCs of %d vCPUs", vm->nvcpus);
	capture_config(vm, buf, kvm_xsave_size(&vm->kvm));
	/* kvmclock and the TSCs at one instant: a clone starts them from one instant too. */
	err = vm_clock_capture(vm, &clock, tsc);
	for (int i = 0; !err && i < vm->nvcpus; i++)
		err = capture_vcpu(&vm->vcpus[i], buf, tsc[i]);
	free(tsc);
	if (!err)
		err = vm_save_arch_state(vm, &arch);
	if (err)
		return err;
	arch.clock.clock = clock;
	snap_buf_add(buf, SNAP_SEC_PIC_MASTER, 0, &arch.pic_master, sizeof(arch.pic_master));
	snap_buf_add(buf, SNAP_SEC_PIC_SLAVE, 0, &arch.pic_slave, sizeof(arch.pic_slave));
	snap_buf_add(buf, SNAP_SEC_IOAPIC, 0, &arch.ioapic, sizeof(arch.ioapic));
	snap_buf_add(buf, SNAP_SEC_PIT2, 0, &arch.pit, sizeof(arch.pit));
	snap_buf_add(buf, SNAP_SEC_CLOCK, 0, &arch.clock, sizeof(arch.clock));
	serial_get_regs(vm->serial, &serial);
	snap_buf_add(buf, SNAP_SEC_SERIAL, LAYOUT_SERIAL_PORT, &serial, sizeof(serial));
	if (vm->vsock) {
		struct virtio_mmio_regs regs;
		struct vsock_state vs;

		virtio_mmio_save(vm->virtio[0], &regs);
		vsock_save(vm->vsock, &vs);
		snap_buf_add(buf, SNAP_SEC_VIRTIO_MMIO, 0, &regs, sizeof(regs));
		snap_buf_add(buf, SNAP_SEC_VSOCK, 0, &vs, sizeof(vs));
	}
	if (vm->net)
		snap_net_capture(vm, buf);
	return snap_disks_capture(vm, buf);
}
