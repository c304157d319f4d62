"""Boot smoke test: the Debian vmlinux under forkvm prints its banner, our command line and
the e820 map we built (this host cannot take a stock kernel further; see docs/LINUX.md)."""
import os
import re
import secrets
import subprocess
import time

import pytest

from forkvm_vm import FORKVM, VM
from linux_image import E820_GUEST, E820_VMM, e820_as_linux_sees_it, e820_lines, image_paths

pytestmark = [pytest.mark.kvm, pytest.mark.slow]
BOOT_BOUND_S = float(os.environ.get("FORKVM_LINUX_BOOT_BOUND", "120"))


@pytest.fixture(scope="module")
def image():
    paths = image_paths()
    if isinstance(paths, str):
        pytest.skip(paths)
    return paths


def wait_console(vm, pattern, bound):
    """Poll the console file until pattern matches; returns (text, seconds)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < bound:
        text = open(vm.console, "rb").read().decode(errors="replace") if os.path.exists(vm.console) else ""
        if re.search(pattern, text):
            return text, time.monotonic() - t0
        assert vm.proc.poll() is None, f"VMM exited {vm.proc.returncode}: {vm.stderr()}"
        time.sleep(0.5)
    raise AssertionError(f"no {pattern!r} on the console within {bound:.0f} s; got:\n{text[-2000:]}")


def test_vmlinux_banner_cmdline_e820(image):
    vmlinux, _, initrd = image
    token = secrets.token_hex(6)
    # earlyprintk: the kernel writes to the UART from setup_arch on, not only after console_init
    cmdline = f"console=ttyS0 earlyprintk=serial reboot=t panic=-1 noxsave forkvm.test={token}"
    vm = VM(mem="512M", extra=("--kernel", vmlinux, "--initrd", initrd, "--cmdline", cmdline))
    try:
        # The map is complete once a whole line that is not an e820 entry follows one.
        text, secs = wait_console(vm, r"BIOS-e820:[^\n]*\n(?![^\n]*BIOS-e820)[^\n]*\n",
                                  BOOT_BOUND_S)
        print(f"start -> e820 + command line on the console: {secs:.1f} s")
        assert "Linux version " in text
        logged = re.search(r"cmdline: (.*)", vm.stderr()).group(1)
        assert logged.startswith(cmdline + " virtio_mmio.device=4K@0xd0000000:5")
        assert re.search(r"Command line: (.*)\r?\n", text).group(1).strip() == logged
        built = e820_lines(vm.stderr(), E820_VMM)
        seen = e820_lines(text, E820_GUEST)
        assert built and seen == e820_as_linux_sees_it(built), f"guest map {seen}, built {built}"
        assert built[-1][1] == (512 << 20) - 1  # RAM ends where --mem says
    finally:
        rc = vm.stop()
        # Here the kernel may already have died in PVM's emulator (docs/LINUX.md).
        assert rc == 0 or "KVM internal error" in vm.stderr(), vm.stderr()


def test_bad_kernel_fails_before_vm(tmp_path):
    bad = tmp_path / "kernel"
    bad.write_bytes(b"\x7fELF" + b"\0" * 60)  # truncated ELF header
    sock = tmp_path / "vm.sock"
    r = subprocess.run([FORKVM, "run", "--kernel", str(bad), "--socket", str(sock)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert str(bad) in r.stderr
    assert not sock.exists() and not os.path.exists(str(sock) + ".vsock")


def test_linux_options_need_kernel(tmp_path):
    r = subprocess.run([FORKVM, "run", "--initrd", "/dev/null", "--socket", str(tmp_path / "s")],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "--kernel" in r.stderr
