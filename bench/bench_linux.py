"""VM start → kernel banner on the serial console, vmlinux (PVH) vs bzImage (64-bit protocol).

This host emulates guest CPL0 code, so both are slow and the bzImage's decompressor dominates;
each boot is bounded (--bound seconds) and reported as a timeout rather than waited out."""
import argparse
import os
import time

from benchlib import report
from forkvm_vm import VM
from linux_image import image_paths

CMDLINE = "console=ttyS0 earlyprintk=serial reboot=t panic=-1 noxsave"


def start_to_banner(kernel, initrd, bound):
    """Seconds from launching forkvm to "Linux version" on the console, or None on timeout."""
    t0 = time.monotonic()
    vm = VM(mem="512M", extra=("--kernel", kernel, "--initrd", initrd, "--cmdline", CMDLINE))
    try:
        while time.monotonic() - t0 < bound:
            if os.path.exists(vm.console) and b"Linux version" in open(vm.console, "rb").read():
                return time.monotonic() - t0
            if vm.proc.poll() is not None:
                raise RuntimeError(f"VMM exited {vm.proc.returncode}: {vm.stderr()}")
            time.sleep(0.2)
        return None
    finally:
        vm.kill()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bound", type=float, default=float(os.environ.get("FORKVM_BANNER_BOUND", 300)))
    ap.add_argument("--runs", type=int, default=1)
    args, _ = ap.parse_known_args()
    paths = image_paths()
    if isinstance(paths, str):
        print(f"bench_linux: skipped: {paths}")
        return
    vmlinux, bzimage, initrd = paths
    rows = []
    for name, kernel in (("vmlinux (PVH)", vmlinux), ("bzImage (64-bit protocol)", bzimage)):
        times = [start_to_banner(kernel, initrd, args.bound) for _ in range(args.runs)]
        done = [t for t in times if t is not None]
        if done:
            rows.append((f"{name}: start -> banner (s)", done))
        if len(done) < len(times):
            rows.append((f"{name}: no banner within (s)", args.bound))
    report("linux_banner", rows, "s")


if __name__ == "__main__":
    main()
