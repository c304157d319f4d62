"""virtio-blk disks in Linux guests (docs/DISK.md): /dev/vdX of the right size, raw I/O and
ext4 through the private copy-on-write top, snapshots whose restores see the disk as it was and
never each other's writes, branch children likewise; the base image is never written."""
import os
import random
import shutil
import subprocess

import pytest

from forkvm_vm import file_sha256
from linuxlib import find_dev

BASE_BYTES = 64 << 20
# The root filesystem image has no util-linux mount; busybox (initramfs guests, the rig's
# rootfs) has both applets.
MOUNT = "$(command -v mount || echo busybox mount)"
UMOUNT = "$(command -v umount || echo busybox umount)"
STRATEGIES = ["full", "diff", "live", "cow"]


def raw_base(env):
    path = env.path("raw.img")
    with open(path, "wb") as f:
        f.write(random.Random(7).randbytes(BASE_BYTES))
    return path


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


def dev_of(g):
    """The raw disk in g (restores and children: found again by its serial)."""
    if not hasattr(g, "dev"):
        g.dev = find_dev(g, "raw.img")
    return g.dev


def drop_caches(g):
    g.sh("sync; echo 3 > /proc/sys/vm/drop_caches")


def sector_hex(g, sector, count=8):
    """count sectors at sector, read from the device (caches dropped first), as hex."""
    drop_caches(g)
    return g.sh(f"dd if={dev_of(g)} bs=512 skip={sector} count={count} 2>/dev/null | "
                "od -An -tx1 -v | tr -d ' \\n'").strip()


def write_marker(g, sector, text):
    """text, NUL-padded to 4 KiB, at sector; synced to the device."""
    g.sh(f"printf '%s' '{text}' > /tmp/m && dd if=/tmp/m of={dev_of(g)} bs=4096 seek={sector // 8} "
         "conv=sync,fsync,notrunc 2>/dev/null && sync")


def read_marker(g, sector):
    """What write_marker wrote at sector (only call it where one was written)."""
    drop_caches(g)
    return g.sh(f"dd if={dev_of(g)} bs=4096 skip={sector // 8} count=1 2>/dev/null | tr -d '\\000'")


def base_hex(base, sector, count=8):
    with open(base, "rb") as f:
        f.seek(sector * 512)
        return f.read(count * 512).hex()


def test_vda_is_the_base_and_writes_stay_private(env):
    base = raw_base(env)
    digest = file_sha256(base)
    g = boot(env, base)
    blk = "/sys/block/" + g.dev[5:]
    assert g.sh(f"cat {blk}/size").strip() == str(BASE_BYTES // 512)
    assert g.sh(f"cat {blk}/ro").strip() == "0"
    assert sector_hex(g, 0) == base_hex(base, 0)
    assert sector_hex(g, BASE_BYTES // 512 - 8) == base_hex(base, BASE_BYTES // 512 - 8)
    write_marker(g, 2048, "written by the guest")
    assert read_marker(g, 2048) == "written by the guest"
    assert sector_hex(g, 2056) == base_hex(base, 2056)
    top = g.control({"cmd": "status"})["disks"][0]["top"]
    assert os.path.exists(top) and os.stat(top).st_blocks > 0
    g.ok({"cmd": "stop"})
    g.proc.wait(timeout=60)
    assert not os.path.exists(top)
    assert file_sha256(base) == digest


def test_read_only_disk(env):
    base = raw_base(env)
    g = boot(env, base + ",ro")
    assert g.sh(f"cat /sys/block/{g.dev[5:]}/ro").strip() == "1"
    code, _, _ = g.run(["sh", "-c", f"echo x | dd of={g.dev} conv=fsync 2>&1"], check=False)
    assert code != 0
    assert sector_hex(g, 8) == base_hex(base, 8)


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


@pytest.mark.parametrize("backend", ["file", "memfd", "anon"])
def test_raw_restores_on_every_backend(env, backend):
    base = raw_base(env)
    digest = file_sha256(base)
    g = boot(env, base)
    write_marker(g, 4096, "at the snapshot")
    snap = env.snapshot(g)
    write_marker(g, 4096, "source, later")
    kids = env.restore(snap, count=2, backend=backend, name="r")
    assert [read_marker(k, 4096) for k in kids] == ["at the snapshot"] * 2
    write_marker(kids[0], 8192, "child 0")
    assert read_marker(kids[0], 8192) == "child 0"
    assert sector_hex(kids[1], 8192) == base_hex(base, 8192)
    assert read_marker(g, 4096) == "source, later"
    assert file_sha256(base) == digest


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_branch_children_see_the_disk_at_the_branch(env, strategy):
    base = raw_base(env)
    digest = file_sha256(base)
    g = boot(env, base, backing="memfd" if strategy == "live" else "anon")
    write_marker(g, 100 * 8, "before the branch")
    _, kids = env.branch(g, strategy, count=2)
    write_marker(g, 100 * 8, "source after")
    assert [read_marker(k, 100 * 8) for k in kids] == ["before the branch"] * 2
    write_marker(kids[0], 200 * 8, "child 0 only")
    assert read_marker(kids[0], 200 * 8) == "child 0 only"
    assert sector_hex(kids[1], 200 * 8) == base_hex(base, 200 * 8)
    assert sector_hex(g, 200 * 8) == base_hex(base, 200 * 8)
    assert read_marker(g, 100 * 8) == "source after"
    assert file_sha256(base) == digest
