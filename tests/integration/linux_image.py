"""Locating (or building) the cached Linux guest image for the Linux tests and benchmarks."""
import os
import re
import subprocess

from forkvm_vm import FORKVM

CACHE = os.environ.get("FORKVM_CACHE") or os.path.expanduser("~/.cache/forkvm")
IMAGE = os.path.join(CACHE, "image")


def image_paths(build=True):
    """(vmlinux, bzImage, initramfs) of `forkvm image build`, or a reason string if unavailable."""
    files = [os.path.join(IMAGE, n) for n in ("vmlinux", "bzImage", "initramfs.cpio.gz")]
    if not all(os.path.exists(f) for f in files) and build:
        if os.environ.get("FORKVM_SKIP_NETWORK") == "1":
            return "no cached guest image and FORKVM_SKIP_NETWORK=1"
        r = subprocess.run([FORKVM, "image", "build", "--cache", CACHE], capture_output=True,
                           text=True, timeout=900)
        if r.returncode != 0:
            return f"forkvm image build failed: {r.stderr.strip()[-300:]}"
    if not all(os.path.exists(f) for f in files):
        return f"no guest image in {IMAGE}"
    return tuple(files)


def host_cannot_run_linux():
    """Why this host cannot run a Linux guest to userspace, or None."""
    if os.path.exists("/sys/module/kvm_pvm"):
        return ("KVM here is PVM (/sys/module/kvm_pvm): guest CPL0 code is emulated and a stock "
                "kernel stalls in early init")
    if not os.path.exists("/dev/kvm"):
        return "no /dev/kvm"
    return None


E820_VMM = re.compile(r"e820: \[mem (0x[0-9a-f]+)-(0x[0-9a-f]+)\] (\w+)")
E820_GUEST = re.compile(r"BIOS-e820: \[mem (0x[0-9a-f]+)-(0x[0-9a-f]+)\] (\w+)")


def e820_lines(text, pattern):
    return [(int(a, 16), int(b, 16), t) for a, b, t in pattern.findall(text)]


def e820_as_linux_sees_it(entries, pvh=True):
    """The map Linux prints for the one we built: the PVH entry code adds the ISA window
    [0xa0000, 1 MiB) as reserved (arch/x86/platform/pvh/enlighten.c), then the kernel
    merges adjacent ranges of one type (e820__update_table)."""
    ents = list(entries)
    if pvh:
        ents.append((0xA0000, 0xFFFFF, "reserved"))
    ents.sort()
    out = []
    for a, b, t in ents:
        if out and out[-1][2] == t and out[-1][1] + 1 >= a:
            out[-1] = (out[-1][0], max(out[-1][1], b), t)
        else:
            out.append((a, b, t))
    return out
