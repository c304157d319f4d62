"""virtio-blk disks in Linux guests (docs/DISK.md): /dev/vdX of the right size, raw I/O and
ext4 through the private copy-on-write top, snapshots whose restores see the disk as it was and
never each other's writes; the base image is never written. Raw disks across restores with
every memory backend and across branches with every strategy are checked where those tests
already boot a source: test_restore.py and test_branch.py."""
import os
import shutil
import subprocess

import pytest

from forkvm_vm import file_sha256
from linuxlib import (BASE_BYTES, base_hex, find_dev, raw_base, read_marker, sector_hex,
                      write_marker)

# The root filesystem image has no util-linux mount; busybox (initramfs guests, the rig's
# rootfs) has both applets.
MOUNT = "$(command -v mount || echo busybox mount)"
UMOUNT = "$(command -v umount || echo busybox umount)"


def ext4_base(env):
    """An ext4 image made on the host with mkfs.ext4 -d (skips where e2fsprogs is missing)."""
    mkfs = shutil.which("mkfs.ext4") or shutil.which("mke2fs")
    if not mkfs:
        pytest.skip("no mkfs.ext4 on this host to build an ext4 base")
    tree = env.path("tree")
    os.makedirs(os.path.join(tree, "etc"))
    with open(os.path.join(tree, "etc", "hello"), "w") as f:
        f.write("hello from the base\n")
    path = env.path("ext4.img")
    subprocess.run([mkfs, "-q", "-F", "-t", "ext4", "-d", tree, path, "64M"], check=True,
                   capture_output=True)
    return path


def boot(env, base, name="src", backing="anon", extra=()):
    g = env.boot(name, backing=backing, extra=("--disk", base, *extra))
    g.dev = find_dev(g, os.path.basename(base.split(",")[0]))
    return g


def test_raw_disks_read_write_and_read_only(env):
    """A raw disk is the base's size and bytes, the guest's writes land in its private top
    (removed with the VM) and never in the base; a read-only disk next to it refuses writes."""
    base = raw_base(env)
    ro = raw_base(env, "ro.img", seed=8)
    digest, ro_digest = file_sha256(base), file_sha256(ro)
    g = boot(env, base, extra=("--disk", ro + ",ro"))
    blk = "/sys/block/" + g.dev[5:]
    assert g.sh(f"cat {blk}/size").strip() == str(BASE_BYTES // 512)
    assert g.sh(f"cat {blk}/ro").strip() == "0"
    assert sector_hex(g, 0) == base_hex(base, 0)
    assert sector_hex(g, BASE_BYTES // 512 - 8) == base_hex(base, BASE_BYTES // 512 - 8)
    write_marker(g, 2048, "written by the guest")
    assert read_marker(g, 2048) == "written by the guest"
    assert sector_hex(g, 2056) == base_hex(base, 2056)

    ro_dev = find_dev(g, "ro.img")
    assert g.sh(f"cat /sys/block/{ro_dev[5:]}/ro").strip() == "1"
    code, _, _ = g.run(["sh", "-c", f"echo x | dd of={ro_dev} conv=fsync 2>&1"], check=False)
    assert code != 0
    assert sector_hex(g, 8, dev=ro_dev) == base_hex(ro, 8)

    disks = {d["base"]: d for d in g.control({"cmd": "status"})["disks"]}  # real paths
    ro_disk = disks[os.path.realpath(ro)]
    assert ro_disk["read_only"] and ro_disk["top"] is None, disks
    top = disks[os.path.realpath(base)]["top"]
    assert os.path.exists(top) and os.stat(top).st_blocks > 0
    g.ok({"cmd": "stop"})
    g.proc.wait(timeout=60)
    assert not os.path.exists(top)
    assert file_sha256(base) == digest and file_sha256(ro) == ro_digest


def test_ext4_snapshot_restores_are_isolated(env):
    base = ext4_base(env)
    digest = file_sha256(base)
    g = boot(env, base)
    g.sh(f"mkdir -p /mnt && {MOUNT} -t ext4 {g.dev} /mnt")
    assert g.sh("cat /mnt/etc/hello").strip() == "hello from the base"
    g.sh("echo before-snapshot > /mnt/state && sync")
    snap = env.snapshot(g)
    assert any(n.startswith("disk") and n.endswith(".ovl") for n in os.listdir(snap))
    g.sh("echo after-snapshot > /mnt/state && sync")
    kids = env.restore(snap, count=2, name="r")
    for k in kids:
        assert k.sh("cat /mnt/state").strip() == "before-snapshot"
        assert k.sh("cat /mnt/etc/hello").strip() == "hello from the base"
    kids[0].sh("echo zero > /mnt/mine && sync")
    kids[1].sh("echo one > /mnt/mine && sync")
    assert kids[0].sh("cat /mnt/mine").strip() == "zero"
    assert kids[1].sh("cat /mnt/mine").strip() == "one"
    assert g.sh("cat /mnt/mine 2>/dev/null || echo none").strip() == "none"
    assert g.sh("cat /mnt/state").strip() == "after-snapshot"
    # Each restore remounted from what its own disk holds: the data is really on the disk.
    for k, want in zip(kids, ("zero", "one")):
        k.sh(f"{UMOUNT} /mnt && {MOUNT} -t ext4 {g.dev} /mnt")
        assert k.sh("cat /mnt/mine").strip() == want
    tops = {k.control({"cmd": "status"})["disks"][0]["top"] for k in kids}
    assert len(tops) == 2
    assert file_sha256(base) == digest
