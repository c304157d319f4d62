"""forkvm image build --rootfs / --rootfs-dir / --rootfs-tar: ext4 root filesystems checked with
debugfs and e2fsck on this host (no VM): contents, reproducibility, refused and corrupt tars,
too-small images, a full disk, option errors, and the Debian package build (needs apt)."""
import hashlib
import io
import json
import os
import shutil
import struct
import subprocess
import tarfile
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("FORKVM_BUILD", "build")
FORKVM = os.path.join(ROOT, BUILD, "forkvm")
CACHE = os.environ.get("FORKVM_CACHE") or os.path.expanduser("~/.cache/forkvm")
SBIN = "/usr/sbin:/sbin:" + os.environ.get("PATH", "")
NEEDS_E2FS = pytest.mark.skipif(
    not all(shutil.which(t, path=SBIN) for t in ("mke2fs", "debugfs", "e2fsck")),
    reason="needs e2fsprogs (mke2fs, debugfs, e2fsck)")
NEEDS_APT = pytest.mark.skipif(
    shutil.which("apt-get") is None or os.environ.get("FORKVM_SKIP_NETWORK") == "1",
    reason="needs apt-get and Debian's package mirror")
pytestmark = NEEDS_E2FS


def has_interp(path):
    """Whether an ELF file has a PT_INTERP (is dynamically linked)."""
    data = open(path, "rb").read()
    phoff, = struct.unpack_from("<Q", data, 32)
    phentsize, phnum = struct.unpack_from("<HH", data, 54)
    return any(struct.unpack_from("<I", data, phoff + i * phentsize)[0] == 3 for i in range(phnum))


@pytest.fixture(scope="module")
def agent():
    """A static forkvm-agent: this build's, or build/'s (a sanitizer build links it dynamically)."""
    for cand in (os.path.join(ROOT, BUILD, "forkvm-agent"), os.path.join(ROOT, "build", "forkvm-agent")):
        if os.path.exists(cand) and not has_interp(cand):
            return cand
    pytest.fail("no static forkvm-agent: run 'make build/forkvm-agent'")


def build(*args, cache, agent, stdin=None, timeout=600):
    env = dict(os.environ, FORKVM_CACHE=str(cache))
    return subprocess.run([FORKVM, "image", "build", "--agent", agent, *args], input=stdin,
                          capture_output=True, env=env, timeout=timeout)


def tool(*args, check=True):
    r = subprocess.run(list(args), capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, PATH=SBIN))
    if check:
        assert r.returncode == 0, f"{args}: {r.stdout}{r.stderr}"
    return r


def ls(image, path="/"):
    """{name: mode} of one directory of the image, through debugfs."""
    out = {}
    for line in tool("debugfs", "-R", f"ls -l {path}", str(image)).stdout.splitlines():
        f = line.split()
        if len(f) >= 9 and f[1].isdigit():
            out[f[-1]] = int(f[1], 8)
    return out


def cat(image, path):
    return subprocess.run(["debugfs", "-R", f"cat {path}", str(image)], capture_output=True,
                          timeout=300, env=dict(os.environ, PATH=SBIN)).stdout


def fsck(image):
    r = tool("e2fsck", "-fn", str(image), check=False)
    assert r.returncode == 0, r.stdout + r.stderr


def leftovers(*dirs):
    return [os.path.join(d, n) for d in dirs if os.path.isdir(d) for n in os.listdir(d)
            if ".tmp." in n or (n.startswith("rootfs.") and n[7:8].isdigit())]


@pytest.fixture
def tree(tmp_path):
    src = tmp_path / "src"
    (src / "etc").mkdir(parents=True)
    (src / "etc" / "motd").write_text("hello from the tree\n")
    (src / "usr" / "bin").mkdir(parents=True)
    (src / "usr" / "bin" / "tool").write_text("#!/bin/sh\necho tool\n")
    (src / "usr" / "bin" / "tool").chmod(0o755)
    os.symlink("usr/bin", src / "bin")
    os.symlink("/etc/motd", src / "motd-link")
    os.mkfifo(src / "fifo")
    return src


def check_tree_image(out, agent):
    image = out / "rootfs.ext4"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["image"]["size"] == image.stat().st_size
    assert manifest["image"]["sha256"] == hashlib.sha256(image.read_bytes()).hexdigest()
    top = ls(image)
    for name in ("etc", "usr", "tmp", "proc", "sys", "dev", "run", "bin", "motd-link"):
        assert name in top, top
    assert "fifo" not in top
    assert top["tmp"] == 0o41777
    assert top["bin"] & 0o170000 == 0o120000
    assert cat(image, "/etc/motd") == b"hello from the tree\n"
    assert cat(image, "/usr/sbin/forkvm-agent") == open(agent, "rb").read()
    assert ls(image, "/usr/sbin")["forkvm-agent"] == 0o100755
    assert b"root:x:0:0" in cat(image, "/etc/passwd")
    fsck(image)
    assert not leftovers(str(out)), "temp files left behind"
    return manifest


def test_rootfs_from_dir(tree, tmp_path, agent):
    out = tmp_path / "out"
    r = build("--rootfs-dir", str(tree), "--out", str(out), cache=tmp_path / "cache", agent=agent)
    assert r.returncode == 0, r.stderr.decode()
    assert b"skipping fifo" in r.stderr
    manifest = check_tree_image(out, agent)
    assert manifest["source"] == "dir" and manifest["source_path"] == str(tree)
    assert not leftovers(str(tmp_path / "cache" / "tmp"))


def test_rootfs_is_reproducible(tree, tmp_path, agent):
    shas = []
    for i in range(2):
        out = tmp_path / f"out{i}"
        r = build("--rootfs-dir", str(tree), "--out", str(out), cache=tmp_path / "cache",
                  agent=agent)
        assert r.returncode == 0, r.stderr.decode()
        shas.append(json.loads((out / "manifest.json").read_text())["image"]["sha256"])
        time.sleep(1.1)  # directory and link times of the two stagings differ
    assert shas[0] == shas[1]


def make_tar(path, members):
    with tarfile.open(path, "w") as t:
        for name, kind, data in members:
            info = tarfile.TarInfo(name)
            info.mtime = 1700000000
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                t.addfile(info)
            elif kind == "link":
                info.type, info.linkname = tarfile.SYMTYPE, data
                t.addfile(info)
            elif kind == "chr":
                info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
                t.addfile(info)
            else:
                info.size, info.mode = len(data), 0o644
                t.addfile(info, io.BytesIO(data))


def test_rootfs_from_tar_file_and_stdin(tree, tmp_path, agent):
    tar = tmp_path / "tree.tar"
    with tarfile.open(tar, "w") as t:
        for name in sorted(os.listdir(tree)):
            if name != "fifo":
                t.add(tree / name, arcname=name)
    out = tmp_path / "out"
    r = build("--rootfs-tar", str(tar), "--out", str(out), cache=tmp_path / "cache", agent=agent)
    assert r.returncode == 0, r.stderr.decode()
    check_tree_image(out, agent)
    # docker export C | forkvm image build --rootfs-tar -
    out2 = tmp_path / "out2"
    members = [("./", "dir", None), ("./etc", "dir", None), ("./etc/motd", "file", b"hello from the tree\n"),
               ("./usr/bin/tool", "file", b"#!/bin/sh\n"), ("./bin", "link", "usr/bin"),
               ("./motd-link", "link", "/etc/motd"), ("./dev/null", "chr", None)]
    make_tar(tmp_path / "stream.tar", members)
    r = build("--rootfs-tar", "-", "--out", str(out2), cache=tmp_path / "cache", agent=agent,
              stdin=(tmp_path / "stream.tar").read_bytes())
    assert r.returncode == 0, r.stderr.decode()
    assert b"skipping dev/null" in r.stderr
    check_tree_image(out2, agent)
    assert "null" not in ls(out2 / "rootfs.ext4", "/dev")


@pytest.mark.parametrize("name", ["../evil", "etc/../../evil", "/etc/evil"])
def test_rootfs_tar_refuses_escaping_paths(tmp_path, agent, name):
    tar = tmp_path / "evil.tar"
    make_tar(tar, [("etc/ok", "file", b"ok\n"), (name, "file", b"evil\n")])
    out = tmp_path / "out"
    r = build("--rootfs-tar", str(tar), "--out", str(out), cache=tmp_path / "cache", agent=agent)
    assert r.returncode == 1
    assert f'member "{name}"'.encode() in r.stderr and b"refusing the archive" in r.stderr
    assert not (out / "rootfs.ext4").exists()
    assert not (tmp_path / "evil").exists()
    assert not leftovers(str(out), str(tmp_path / "cache" / "tmp"))


def test_rootfs_tar_refuses_extracting_through_a_symlink(tmp_path, agent):
    tar = tmp_path / "through.tar"
    make_tar(tar, [("up", "link", str(tmp_path)), ("up/escaped", "file", b"x\n")])
    r = build("--rootfs-tar", str(tar), "--out", str(tmp_path / "out"), cache=tmp_path / "cache",
              agent=agent)
    assert r.returncode == 1
    assert b"symlink" in r.stderr
    assert not (tmp_path / "escaped").exists()


def test_rootfs_tar_corrupt(tmp_path, agent):
    good = tmp_path / "good.tar"
    make_tar(good, [("big", "file", os.urandom(100000))])
    data = good.read_bytes()
    cases = {"truncated": data[:50000], "garbage": b"not a tar archive\n" * 100, "empty": b""}
    for what, content in cases.items():
        out = tmp_path / f"out-{what}"
        r = build("--rootfs-tar", "-", "--out", str(out), cache=tmp_path / "cache", agent=agent,
                  stdin=content)
        assert r.returncode == 1, what
        assert b"corrupt" in r.stderr and b"tar archive" in r.stderr, (what, r.stderr)
        assert not (out / "rootfs.ext4").exists()
    assert not leftovers(str(tmp_path / "cache" / "tmp"))


def test_rootfs_image_too_small(tmp_path, agent):
    src = tmp_path / "src"
    src.mkdir()
    (src / "blob").write_bytes(os.urandom(24 << 20))
    out = tmp_path / "out"
    r = build("--rootfs-dir", str(src), "--out", str(out), "--size", "16",
              cache=tmp_path / "cache", agent=agent)
    assert r.returncode == 1
    assert b"too small for the tree" in r.stderr and b"--size" in r.stderr
    assert b"making the ext4 image: mke2fs" in r.stderr  # the failing command, with its stderr
    assert not (out / "rootfs.ext4").exists()
    assert not leftovers(str(out), str(tmp_path / "cache" / "tmp"))


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts a small tmpfs (root)")
@pytest.mark.parametrize("blob_kib", [7000, 12000])
def test_rootfs_out_on_a_full_filesystem(tmp_path, agent, blob_kib):
    """7000 KiB passes the free-space check and mke2fs hits ENOSPC; 12000 KiB fails the check."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "blob").write_bytes(os.urandom(blob_kib << 10))
    out = tmp_path / "tiny"
    out.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8M", "tmpfs", str(out)]).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        r = build("--rootfs-dir", str(src), "--out", str(out), cache=tmp_path / "cache",
                  agent=agent)
        assert r.returncode == 1
        assert b"no space left on device" in r.stderr, r.stderr.decode()
        assert os.listdir(out) == [], "a half-written image or temp file was left"
    finally:
        subprocess.run(["umount", str(out)])


@pytest.mark.parametrize("args", [
    ["--rootfs", "--module", "virtio_blk"],
    ["--rootfs", "--kernel-package", "linux-image-cloud-amd64"],
    ["--packages", "curl"],
    ["--size", "100"],
    ["--rootfs", "--size", "100", "--free", "10"],
    ["--rootfs", "--packages", "Bad_Name"],
    ["--rootfs", "--rootfs-dir", "/tmp"],
    ["--rootfs-dir", "/tmp", "--packages", "curl"],
    ["--rootfs", "--size", "4"],
    ["--rootfs", "--free", "lots"],
])
def test_rootfs_usage_errors(tmp_path, agent, args):
    r = build(*args, cache=tmp_path / "cache", agent=agent)
    assert r.returncode == 2, (args, r.stderr)
    assert b"usage:" in r.stderr


def resolve_in(root, path, depth=0):
    """path inside the tree at root, following symlinks as the guest would (within root)."""
    assert depth < 40, "symlink loop"
    cur = ""
    parts = [p for p in path.split("/") if p]
    for i, part in enumerate(parts):
        nxt = f"{cur}/{part}"
        full = root + nxt
        if os.path.islink(full):
            target = os.readlink(full)
            base = "" if target.startswith("/") else cur
            return resolve_in(root, f"{base}/{target}/" + "/".join(parts[i + 1:]), depth + 1)
        cur = nxt
    return root + cur


def elf_interp(path):
    data = open(path, "rb").read()
    phoff, = struct.unpack_from("<Q", data, 32)
    phentsize, phnum = struct.unpack_from("<HH", data, 54)
    for i in range(phnum):
        ptype, _, off, _, _, filesz = struct.unpack_from("<IIQQQQ", data, phoff + i * phentsize)
        if ptype == 3:
            return data[off:off + filesz].rstrip(b"\0").decode()
    return None


@NEEDS_APT
def test_rootfs_from_debian_packages(tmp_path, agent):
    out = tmp_path / "out"
    start = time.monotonic()
    r = build("--rootfs", "--packages", "less", "--cache", CACHE, "--out", str(out),
              cache=CACHE, agent=agent)
    elapsed = time.monotonic() - start
    assert r.returncode == 0, r.stderr.decode()
    print(f"rootfs build took {elapsed:.1f} s (cache {CACHE})")
    assert elapsed < 300
    manifest = json.loads((out / "manifest.json").read_text())
    for pkg in ("python3", "python3-pip", "bash", "coreutils", "ca-certificates", "libc6", "less"):
        assert pkg in manifest["packages"], pkg
    image = out / "rootfs.ext4"
    fsck(image)
    top = ls(image)
    for d in ("bin", "sbin", "lib", "lib64"):
        assert top[d] & 0o170000 == 0o120000, d  # usr-merge links
    # The tree as the guest sees it: python3 and its ELF interpreter resolve inside it.
    tree = tmp_path / "tree"
    tree.mkdir()
    tool("debugfs", "-R", f"rdump / {tree}", str(image))
    python = resolve_in(str(tree), "/usr/bin/python3")
    assert os.path.isfile(python), python
    interp = elf_interp(python)
    assert interp, "python3 is not dynamically linked?"
    assert os.path.isfile(resolve_in(str(tree), interp)), interp
    assert os.path.isfile(resolve_in(str(tree), "/bin/sh"))
    assert os.path.getsize(resolve_in(str(tree), "/etc/ssl/certs/ca-certificates.crt")) > 100000
    if os.geteuid() == 0:
        r2 = subprocess.run(["chroot", str(tree), "/usr/bin/python3", "-c",
                             "import ssl, sys; print(sys.version_info[0], ssl.OPENSSL_VERSION)"],
                            capture_output=True, text=True, timeout=60)
        assert r2.returncode == 0 and r2.stdout.startswith("3 OpenSSL"), r2.stderr
    # Same inputs: the image is reused, not rebuilt.
    start = time.monotonic()
    r = build("--rootfs", "--packages", "less", "--cache", CACHE, "--out", str(out),
              cache=CACHE, agent=agent)
    assert r.returncode == 0, r.stderr.decode()
    assert b"rootfs: reusing" in r.stdout
    print(f"cached rootfs build took {time.monotonic() - start:.1f} s")
    assert json.loads((out / "manifest.json").read_text()) == manifest
