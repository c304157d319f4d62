"""forkvm image: end-to-end build from Debian packages, extract and inspect (stdlib only)."""
import gzip
import json
import os
import shutil
import subprocess
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

BUILD = os.environ.get("FORKVM_BUILD", "build")
FORKVM = os.path.abspath(os.path.join(BUILD, "forkvm"))
# Outside the work tree so CI runs on the same machine reuse the ~28 MB of downloads.
CACHE = os.environ.get("FORKVM_CACHE") or os.path.expanduser("~/.cache/forkvm")
DEFAULT_KERNEL = "linux-image-6.12-cloud-amd64"  # 6.12: CONFIG_VMGENID=y
KERNEL_61 = "linux-image-cloud-amd64"
VSOCK_MODULES = ["virtio_mmio", "vsock", "vmw_vsock_virtio_transport_common",
                 "vmw_vsock_virtio_transport"]
# The root disk (forkvm.root=): virtio_blk; Debian builds ext4 and crc32c in, so they are skipped.
DISK_MODULES = ["virtio_blk"]
# The NIC (forkvm run --net): virtio_net and the failover modules it depends on.
NET_MODULES = ["failover", "net_failover", "virtio_net"]
NEEDS_APT = pytest.mark.skipif(
    shutil.which("apt-get") is None or os.environ.get("FORKVM_SKIP_NETWORK") == "1",
    reason="needs apt-get and Debian's package mirror",
)


def forkvm(*args, timeout=600):
    return subprocess.run([FORKVM, *args], capture_output=True, text=True, timeout=timeout)


def parse_newc(data):
    """Return [(name, mode, body)] of a newc archive up to TRAILER!!!."""
    out, pos = [], 0
    while True:
        assert data[pos:pos + 6] == b"070701", f"bad cpio magic at {pos}"
        fields = [int(data[pos + 6 + 8 * i:pos + 14 + 8 * i], 16) for i in range(13)]
        mode, size, namesz = fields[1], fields[6], fields[11]
        name = data[pos + 110:pos + 110 + namesz - 1].decode()
        pos = (pos + 110 + namesz + 3) & ~3
        body = data[pos:pos + size]
        pos = (pos + size + 3) & ~3
        if name == "TRAILER!!!":
            return out
        out.append((name, mode, body))


def inspect(path):
    r = forkvm("image", "inspect", str(path))
    assert r.returncode == 0, r.stderr
    return dict(line.split(": ", 1) for line in r.stdout.splitlines())


@pytest.fixture(scope="module")
def agent():
    """The static production agent: the initramfs has no libc. tests/run builds it even for
    the sanitizer pass, whose own agent is dynamically linked."""
    real = os.path.join(ROOT, "build", "forkvm-agent")
    assert os.path.exists(real), "build/forkvm-agent missing: run 'make build/forkvm-agent'"
    return real


@pytest.fixture(scope="module")
def image(tmp_path_factory, agent):
    out = tmp_path_factory.mktemp("image")
    start = time.monotonic()
    r = forkvm("image", "build", "--cache", CACHE, "--agent", agent, "--out", str(out))
    elapsed = time.monotonic() - start
    assert r.returncode == 0, r.stderr
    print(f"forkvm image build took {elapsed:.1f} s (cache {CACHE})")
    assert elapsed < 300, "image build must fit the CI budget"
    return out


@pytest.fixture(scope="module")
def image61(tmp_path_factory, agent):
    """The same build with Debian's 6.1 cloud kernel (lz4 bzImage, plain .ko modules)."""
    out = tmp_path_factory.mktemp("image61")
    r = forkvm("image", "build", "--cache", CACHE, "--agent", agent, "--out", str(out),
               "--kernel-package", KERNEL_61)
    assert r.returncode == 0, r.stderr
    return out


def check_manifest(image, kernel_package, version_prefix, builtin_virtio):
    manifest = json.loads((image / "manifest.json").read_text())
    kver = manifest["kernel_version"]
    assert manifest["kernel_package"] == kernel_package
    assert kver.startswith(version_prefix) and kver.endswith("-cloud-amd64")
    assert set(manifest["packages"]) == {kernel_package, f"linux-image-{kver}", "busybox-static"}
    for name in ("vmlinux", "bzImage", "initramfs.cpio.gz"):
        assert manifest["files"][name]["size"] == (image / name).stat().st_size
    mods = manifest["modules"]
    # 6.12 builds virtio_ring and virtio in (modules.builtin); 6.1 has them as modules.
    expect = VSOCK_MODULES + DISK_MODULES + NET_MODULES
    if not builtin_virtio:
        expect = ["virtio_ring", "virtio"] + expect
    assert sorted(mods) == sorted(expect)
    for dep, user in [("virtio_ring", "virtio"), ("virtio", "virtio_mmio"),
                      ("vsock", "vmw_vsock_virtio_transport_common"),
                      ("vmw_vsock_virtio_transport_common", "vmw_vsock_virtio_transport"),
                      ("virtio_ring", "virtio_blk"), ("virtio", "virtio_blk"),
                      ("failover", "net_failover"), ("net_failover", "virtio_net"),
                      ("virtio", "virtio_net")]:
        if dep in mods:
            assert mods.index(dep) < mods.index(user)
    banner = f"Linux version {kver} ".encode()
    assert banner in (image / "vmlinux").read_bytes()
    assert not [p for p in os.listdir(image) if ".tmp." in p], "temp files left behind"
    return manifest


@NEEDS_APT
def test_build_outputs_and_manifest(image, agent):
    check_manifest(image, DEFAULT_KERNEL, "6.12.", builtin_virtio=True)


@NEEDS_APT
def test_build_with_61_kernel(image61):
    check_manifest(image61, KERNEL_61, "6.1.", builtin_virtio=False)
    assert inspect(image61 / "bzImage")["payload"] == "lz4"


@NEEDS_APT
def test_switching_kernel_rewrites_outputs(image, image61, agent, tmp_path):
    """After a successful build the output directory holds only the kernel built last."""
    out = tmp_path / "out"
    shutil.copytree(image61, out)
    r = forkvm("image", "build", "--cache", CACHE, "--agent", agent, "--out", str(out))
    assert r.returncode == 0, r.stderr
    check_manifest(out, DEFAULT_KERNEL, "6.12.", builtin_virtio=True)
    for name in ("vmlinux", "bzImage", "initramfs.cpio.gz", "manifest.json"):
        assert (out / name).read_bytes() == (image / name).read_bytes(), name


@NEEDS_APT
def test_initramfs_contents(image, agent):
    manifest = json.loads((image / "manifest.json").read_text())
    entries = parse_newc(gzip.decompress((image / "initramfs.cpio.gz").read_bytes()))
    names = [e[0] for e in entries]
    assert names == sorted(names)
    files = {name: (mode, body) for name, mode, body in entries}
    assert files["init"][0] & 0o111
    init = files["init"][1].decode()
    assert "exec /sbin/forkvm-agent --vsock-port 52" in init
    assert files["bin/busybox"][1][:4] == b"\x7fELF"
    assert files["bin/sh"][1] == b"busybox"
    assert files["bin/switch_root"][1] == b"busybox"  # root on a disk (forkvm.root=)
    assert "exec switch_root /newroot /usr/sbin/forkvm-agent --vsock-port 52" in init
    assert init.index("forkvm.root=*)") < init.index("exec /sbin/forkvm-agent")
    assert files["sbin/forkvm-agent"][1] == open(agent, "rb").read()
    assert files["dev/console"][0] & 0o170000 == 0o020000
    insmods = [line.split()[1] for line in init.splitlines() if line.startswith("insmod ")]
    assert insmods == [f"/lib/modules/{m}.ko" for m in manifest["modules"]]
    # 6.12 ships .ko.xz; the initramfs gets them decompressed (busybox insmod needs plain .ko).
    assert sorted(n for n in names if n.startswith("lib/modules/") and n != "lib/modules") == \
        sorted(f"lib/modules/{m}.ko" for m in manifest["modules"])
    for m in manifest["modules"]:
        assert files[f"lib/modules/{m}.ko"][1][:4] == b"\x7fELF"
        assert b"vermagic=" + manifest["kernel_version"].encode() in files[f"lib/modules/{m}.ko"][1]


@NEEDS_APT
def test_rebuild_is_reproducible(image, agent, tmp_path):
    r = forkvm("image", "build", "--cache", CACHE, "--agent", agent, "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    for name in ("vmlinux", "initramfs.cpio.gz"):
        assert (tmp_path / name).read_bytes() == (image / name).read_bytes()


@NEEDS_APT
def test_extract_and_inspect(image, tmp_path):
    info = inspect(image / "bzImage")
    assert info["format"] == "bzImage"
    assert info["payload"] == "zstd"  # Debian 6.12: CONFIG_KERNEL_ZSTD=y
    assert info["kernel_64"] == "yes"
    out = tmp_path / "vmlinux"
    r = forkvm("image", "extract", str(image / "bzImage"), str(out))
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == (image / "vmlinux").read_bytes()
    info = inspect(out)
    assert info["format"] == "vmlinux"
    assert int(info["pvh_entry"], 16) >= 0x100000


@NEEDS_APT
@pytest.mark.parametrize("damage", ["corrupt", "size"])
def test_extract_rejects_damaged_zstd_payload(image, tmp_path, damage):
    info = inspect(image / "bzImage")
    data = bytearray((image / "bzImage").read_bytes())
    setup_sects = int(info["setup_sects"]) or 4
    start = (setup_sects + 1) * 512 + int(info["payload_offset"], 16)
    end = start + int(info["payload_length"])
    assert data[start:start + 4] == b"\x28\xb5\x2f\xfd"
    if damage == "corrupt":
        mid = (start + end) // 2
        data[mid:mid + 64] = bytes(b ^ 0x5A for b in data[mid:mid + 64])
    else:  # the kernel's appended uncompressed size
        data[end - 4:end] = (1234).to_bytes(4, "little")
    bad = tmp_path / "bzImage"
    bad.write_bytes(bytes(data))
    out = tmp_path / "vmlinux"
    r = forkvm("image", "extract", str(bad), str(out))
    assert r.returncode == 1 and not out.exists()
    assert "zstd: " in r.stderr and f"{bad}: cannot decode its zstd payload" in r.stderr
    if damage == "size":
        assert "trailing size 1234 does not match" in r.stderr


def test_inspect_rejects_garbage(tmp_path):
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"\x13\x37garbage" * 1000)
    r = forkvm("image", "inspect", str(garbage))
    assert r.returncode == 1
    assert str(garbage) in r.stderr and "neither an ELF vmlinux nor a bzImage" in r.stderr
    r = forkvm("image", "inspect", str(tmp_path / "missing"))
    assert r.returncode == 1 and "No such file" in r.stderr


def test_inspect_rejects_truncated(tmp_path):
    elf = tmp_path / "elf"
    elf.write_bytes(b"\x7fELF\x02\x01\x01" + b"\0" * 40)
    r = forkvm("image", "inspect", str(elf))
    assert r.returncode == 1 and "truncated" in r.stderr
    bz = tmp_path / "bz"
    bz.write_bytes(b"\0" * 0x1fe + b"\x55\xaa" + b"\0" * 4)
    r = forkvm("image", "inspect", str(bz))
    assert r.returncode == 1 and "not a usable bzImage" in r.stderr


def test_extract_rejects_non_bzimage(tmp_path):
    elf = tmp_path / "x"
    elf.write_bytes(b"garbage" * 100)
    r = forkvm("image", "extract", str(elf), str(tmp_path / "out"))
    assert r.returncode == 1 and not (tmp_path / "out").exists()


def test_usage_errors():
    for args in (["image"], ["image", "bogus"], ["image", "extract", "one"],
                 ["image", "build", "--nope"], ["image", "inspect"],
                 ["image", "build", "--kernel-package", "busybox-static"],
                 ["image", "build", "--kernel-package"]):
        r = forkvm(*args)
        assert r.returncode == 2, args
        assert "usage:" in r.stderr
    for sub in ("build", "extract", "inspect"):
        r = forkvm("image", sub, "--help")
        assert r.returncode == 0 and f"forkvm image {sub}" in r.stdout
    r = forkvm("image", "build", "--help")
    assert "--kernel-package" in r.stdout and DEFAULT_KERNEL in r.stdout and KERNEL_61 in r.stdout


def test_build_without_agent_fails_clearly(tmp_path):
    r = forkvm("image", "build", "--cache", str(tmp_path), "--agent", str(tmp_path / "nope"))
    assert r.returncode == 1
    assert "agent" in r.stderr and "not found" in r.stderr
