"""A Linux guest boots to its agent; commands, exit codes, files, power-off."""
import os

import pytest

from linux_image import image_paths


@pytest.mark.parametrize("root", ["rootfs", "initramfs"])
def test_boot_exec_files_poweroff(env, root):
    """Both ways a guest runs: / on the cached root filesystem image (the default once one is
    built), and the initramfs alone (--no-rootfs)."""
    g = env.boot("basic", extra=("--no-rootfs",) if root == "initramfs" else ())
    print(f"{root}: start -> agent answering: {g.boot_s:.1f} s")
    fstype = g.sh("cat /proc/mounts").split("\n")
    root_fs = [line.split()[2] for line in fstype if len(line.split()) > 2 and line.split()[1] == "/"]
    assert root_fs and root_fs[-1] == ("ext4" if root == "rootfs" else "rootfs"), root_fs
    kver = g.sh("uname -r").strip()
    manifest = open(os.path.join(os.path.dirname(image_paths()[0]), "manifest.json")).read()
    assert kver and kver in manifest
    code, out, _ = g.run(["sh", "-c", "echo hi; echo err >&2; exit 3"], check=False)
    assert (code, out) == (3, b"hi\n")
    data = os.urandom(200_000)
    g.write_file("/tmp/blob", data)
    assert g.read_file("/tmp/blob") == data
    assert g.sh("wc -c < /tmp/blob").strip() == "200000"
    # The vCPU report (control `vcpus`, also logged when a clone's fix-up fails) reads real
    # KVM state: an idle Linux guest's vCPUs sit in its kernel (RIP in the top 2 GiB), and the
    # VM runs on afterwards.
    vcpus = g.ok({"cmd": "vcpus"})["vcpus"].split("; ")
    assert vcpus and all(" rip 0x" in v for v in vcpus), vcpus
    assert any("rip 0xffffffff" in v for v in vcpus), vcpus
    assert g.sh("echo still-here").strip() == "still-here"
    with g.agent() as a:
        a.call("shutdown", mode="poweroff")
    assert g.proc.wait(timeout=120) == 0
