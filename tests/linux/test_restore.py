"""Snapshot and restore of a Linux guest with every memory backend: the snapshot's state (memory,
a sleeping process, a raw disk) is in every clone, clones are isolated in memory and on disk,
each clone has its own randomness and the host's clock even from a snapshot whose guest clock
was 5 minutes behind, and `exec` works as soon as `forkvm restore` returns."""
import os
import subprocess
import time

import pytest

from forkvm_vm import FORKVM, file_sha256
from linuxlib import Env, base_hex, guest_time, raw_base, read_marker, sector_hex, write_marker
from pageserver import PageServer

BACKENDS = ["file", "memfd", "hugetlb", "anon", "uffd", "uffd-hot"]
COUNT = 2


@pytest.fixture
def hugepages():
    """Hugepages reserved by a test are given back after it (L1 has 4 GiB in all)."""
    path = "/proc/sys/vm/nr_hugepages"
    old = int(open(path).read())
    yield path
    with open(path, "w") as f:
        f.write(str(old))


def prepared_source(env, mem="256M"):
    """A source with state in guest memory (tmpfs file, a sleeping process) and on a raw disk,
    its guest clock 5 minutes behind the host's (clones must get the host's)."""
    base = raw_base(env)
    digest = file_sha256(base)
    src = env.boot("src", mem=mem, extra=("--disk", base))
    src.raw, src.raw_digest = base, digest
    marker = os.urandom(16).hex()
    src.sh(f"echo {marker} > /tmp/marker; sleep 100000 & echo $! > /tmp/sleeper")
    write_marker(src, 4096, "at the snapshot")
    src.sh("date -s @$(( $(date +%s) - 300 )) >/dev/null")
    t0, g, _ = guest_time(src)
    assert g < t0 - 250
    return src, marker


@pytest.fixture(scope="module")
def snapped():
    """One prepared source and its snapshot, shared by every backend's restores: the clones
    only read the snapshot (uffd-hot, last, adds its hot-page list), and booting and preparing
    a source per backend cost about 30 s each in the nested rig. After the snapshot the source
    writes its disk, which no clone may see."""
    env = Env("restore-source")
    try:
        src, marker = prepared_source(env)
        snap = env.snapshot(src)
        write_marker(src, 4096, "source, later")
        yield src, snap, marker
    finally:
        env.cleanup()


def check_disk_and_clock(src, kids):
    """Each clone sees the disk at the snapshot (not the source's later write) and the host's
    clock; a clone's disk write is in no sibling, the source keeps its own, the base is
    untouched."""
    base = src.raw
    assert [read_marker(k, 4096) for k in kids] == ["at the snapshot"] * len(kids)
    write_marker(kids[0], 8192, "clone 0")
    assert read_marker(kids[0], 8192) == "clone 0"
    for k in kids[1:]:
        assert sector_hex(k, 8192) == base_hex(base, 8192), k.name
    assert read_marker(src, 4096) == "source, later"
    for k in kids:
        t0, g, t1 = guest_time(k)
        assert t0 - 1.5 <= g <= t1 + 1, f"{k.name}: clock off by {g - t0:+.2f} s"
    assert file_sha256(base) == src.raw_digest


def check_clones(src, kids, marker):
    """Snapshot state in each clone; isolation; distinct randomness."""
    uuids, rands = {src.uuid()}, {src.urandom32()}
    for k in kids:
        # exec answers at once: restore returned only after each clone's fix-up.
        code, out, _ = k.run(["cat", "/tmp/marker"], bound=10)
        assert out.decode().strip() == marker, f"{k.name}: marker {out!r}"
        pid = k.sh("cat /tmp/sleeper").strip()
        assert k.sh(f"test -d /proc/{pid} && echo alive").strip() == "alive"
        uuids.add(k.uuid())
        rands.add(k.urandom32())
    assert len(uuids) == len(kids) + 1, f"clones share /proc/sys/kernel/random/uuid: {uuids}"
    assert len(rands) == len(kids) + 1, "clones read the same bytes from /dev/urandom"
    kids[0].sh("echo mine > /tmp/private")
    for other in [src, *kids[1:]]:
        assert other.sh("cat /tmp/private 2>/dev/null || echo none").strip() == "none"


@pytest.mark.parametrize("backend", BACKENDS)
def test_restore_backend(env, backend, hugepages, snapped):
    src, snap, marker = snapped
    extra, ps = [], None
    if backend == "hugetlb":
        with open(hugepages, "w") as f:
            f.write(str(COUNT * 130))
    if backend.startswith("uffd"):
        ps = PageServer(env.path("ps.sock"))
        extra = ["--pageserver", ps.path]
        if backend == "uffd-hot":
            # Record the hot set with one restore, then restore with prefetch.
            rec = env.restore(snap, 1, "uffd", name="rec", extra=[*extra, "--record"])
            rec[0].run(["cat", "/tmp/marker"])
            deadline = time.monotonic() + 120
            while not os.path.exists(os.path.join(snap, "hotpages")):
                assert time.monotonic() < deadline, "no hotpages recorded"
                time.sleep(0.5)
            rec[0].kill()
    try:
        kids = env.restore(snap, COUNT, backend.split("-")[0], name=backend, extra=extra)
        assert len(kids) == COUNT
        check_clones(src, kids, marker)
        check_disk_and_clock(src, kids)
        if ps:
            st = subprocess.run([FORKVM, "pageserver", "--status", "--socket", ps.path],
                                capture_output=True, text=True, timeout=60)
            assert st.returncode == 0, st.stderr
            print(st.stdout)
    finally:
        for g in env.guests:
            g.kill()
        if ps:
            ps.stop()


def test_exec_right_after_restore_of_a_busy_guest(env):
    """The clone's vsock transport is reset on restore while the guest is busy; the fix-up
    and the first exec still succeed."""
    src = env.boot("src")
    src.sh("(while :; do :; done) >/dev/null 2>&1 & (while :; do cat /proc/uptime >/dev/null; done) &")
    snap = env.snapshot(src)
    kids = env.restore(snap, 2, "file", name="busy")
    for k in kids:
        assert k.run(["sh", "-c", "exit 0"], bound=10)[0] == 0
