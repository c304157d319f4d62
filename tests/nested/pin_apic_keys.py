"""Hold KVM's LAPIC static keys still for the life of the nested rig's L1.

kvm.ko guards its LAPIC fast paths with the static keys apic_sw_disabled and apic_hw_disabled.
Each vCPU whose LAPIC is not yet software-enabled holds apic_sw_disabled up, so every L2 VM
that starts or ends flips the key and the kernel live-patches those jump sites with int3
breakpoints (text_poke_bp). Under QEMU's multi-threaded TCG the other L1 CPU can still run a
translation made while the int3 was in place after the patch completes: L1 6.12 then dies with
"Oops: int3" in kvm_arch_vcpu_ioctl_run (seen in ~1 of 3 runs; the faulting address is an
apic_sw_disabled site of 6.12.117's kvm.ko). That is an emulator artefact, not a forkvm or KVM bug.

This process makes one VM with one vCPU that never runs: its LAPIC stays software-disabled and
is set hardware-disabled through the APIC base MSR, so both keys keep a count above zero and are
never patched again while tests create and destroy VMs. It prints "pinned" once holding them and
then sleeps until killed."""
import fcntl
import os
import struct
import sys
import time

KVM_CREATE_VM = 0xAE01
KVM_CREATE_IRQCHIP = 0xAE60
KVM_CREATE_VCPU = 0xAE41
KVM_SET_MSRS = 0x4008AE89  # _IOW(KVMIO, 0x89, struct kvm_msrs)
MSR_IA32_APICBASE = 0x1B
APIC_BASE_BSP = 1 << 8  # BSP flag kept, enable bit (11) cleared: hardware-disabled


def main():
    try:
        kvm = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
        vm = fcntl.ioctl(kvm, KVM_CREATE_VM, 0)
        fcntl.ioctl(vm, KVM_CREATE_IRQCHIP, 0)
        vcpu = fcntl.ioctl(vm, KVM_CREATE_VCPU, 0)
        msrs = bytearray(struct.pack("=II IIQ", 1, 0, MSR_IA32_APICBASE, 0,
                                     0xFEE00000 | APIC_BASE_BSP))
        if fcntl.ioctl(vcpu, KVM_SET_MSRS, msrs) != 1:
            raise OSError("KVM_SET_MSRS did not set the APIC base")
    except OSError as e:
        print(f"nested: pinning KVM's LAPIC static keys failed: {e}", flush=True)
        return 1
    print("pinned", flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    sys.exit(main())
