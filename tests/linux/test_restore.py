"""Snapshot and restore of a Linux guest with every memory backend: the snapshot's state is in
every clone, clones are isolated, each clone has its own randomness and the host's clock, and
`exec` works as soon as `forkvm restore` returns."""
import os
import subprocess
import time

import pytest

from forkvm_vm import FORKVM
from linuxlib import guest_time
from pageserver import PageServer

BACKENDS = ["file", "memfd", "hugetlb", "anon", "uffd", "uffd-hot"]
COUNT = 3


@pytest.fixture
def hugepages():
    """Hugepages reserved by a test are given back after it (L1 has 4 GiB in all)."""
    path = "/proc/sys/vm/nr_hugepages"
    old = int(open(path).read())
    yield path
    with open(path, "w") as f:
        f.write(str(old))


def prepared_source(env, mem="256M"):
    """A source with state in guest memory (tmpfs file, a sleeping process) and a snapshot."""
    src = env.boot("src", mem=mem)
    marker = os.urandom(16).hex()
    src.sh(f"echo {marker} > /tmp/marker; sleep 100000 & echo $! > /tmp/sleeper")
    return src, marker


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
def test_restore_backend(env, backend, hugepages):
    src, marker = prepared_source(env)
    snap = env.snapshot(src)
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


def test_clock_after_restoring_an_old_snapshot(env):
    src = env.boot("src")
    # The snapshot is five minutes old as far as the guest's clock is concerned.
    src.sh("date -s @$(( $(date +%s) - 300 )) >/dev/null")
    t0, g, t1 = guest_time(src)
    assert g < t0 - 250
    snap = env.snapshot(src)
    kid = env.restore(snap, 1, "file", name="clk")[0]
    t0, g, t1 = guest_time(kid)
    assert t0 - 1.5 <= g <= t1 + 1, f"restored clone's clock off by {g - t0:+.2f} s"


def test_exec_right_after_restore_of_a_busy_guest(env):
    """The clone's vsock transport is reset on restore while the guest is busy; the fix-up
    and the first exec still succeed."""
    src = env.boot("src")
    src.sh("(while :; do :; done) >/dev/null 2>&1 & (while :; do cat /proc/uptime >/dev/null; done) &")
    snap = env.snapshot(src)
    kids = env.restore(snap, 2, "file", name="busy")
    for k in kids:
        assert k.run(["sh", "-c", "exit 0"], bound=10)[0] == 0
