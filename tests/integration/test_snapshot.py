"""Snapshot and restore on real KVM: round trips, idempotence, backends, strictness, atomicity."""
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

from forkvm_vm import (VM, WORK, file_sha256, forkvm_cmd, region_hashes,
                       restore_children)

pytestmark = pytest.mark.kvm
MEM = 64 << 20


@pytest.fixture
def tmp():
    d = tempfile.mkdtemp(prefix="forkvm-snap-")
    yield d
    subprocess.run(["sh", "-c", f"for s in {d}/run/*.sock; do [ -S $s ] && "
                    f"{os.path.join(os.path.dirname(__file__), '../../')}"
                    f"{os.environ.get('FORKVM_BUILD', 'build')}/forkvm stop $s; done"],
                   capture_output=True)
    shutil.rmtree(d, ignore_errors=True)


def snapshot(vm, path, force=False):
    req = {"cmd": "snapshot", "dir": path}
    if force:
        req["force"] = True
    return vm.ok(req, timeout=600)


def snap_digests(path):
    return {name: file_sha256(os.path.join(path, name)) for name in ("vmstate", "memory", "meta.json")}


def restore_one(snapdir, tmp, backing="file", paused=False, name="r"):
    run = os.path.join(tmp, "run")
    os.makedirs(run, exist_ok=True)
    extra = ("--paused",) if paused else ()
    r, children = restore_children(snapdir, backing, 1, run, name=name, extra=extra)
    assert r.returncode == 0, r.stderr
    return children[0]


def test_round_trip_every_page_and_counter(tmp):
    src = VM(mem="64M")
    try:
        src.ok({"cmd": "fill", "gpa": WORK, "len": MEM - WORK, "seed": 11})
        src.ok({"cmd": "pause"})
        before = region_hashes(src, MEM)
        counter = src.mailbox()["counter"]
        reply = snapshot(src, os.path.join(tmp, "s"))
        assert reply["paused_us"] == 0  # it was paused by us, snapshot left it paused
        src.ok({"cmd": "resume"})
    finally:
        src.stop()
    meta = json.load(open(os.path.join(tmp, "s", "meta.json")))
    assert meta["mem_bytes"] == MEM and meta["format_version"] == 1 and meta["parent"] is None
    assert meta["guest"] == "probe" and meta["vcpus"] == 1
    # Sparse: zero pages stay holes.
    assert os.stat(os.path.join(tmp, "s", "memory")).st_blocks * 512 < MEM
    child = restore_one(os.path.join(tmp, "s"), tmp, paused=True)
    try:
        assert region_hashes(child, MEM) == before
        assert child.mailbox()["counter"] == counter
        child.ok({"cmd": "resume"})
        assert child.ok({"cmd": "counter"})["counter"] == counter + 1
        guest = child.ok({"cmd": "checksum", "gpa": WORK, "len": MEM - WORK})["checksum"]
        assert guest == child.ok({"cmd": "memhash", "gpa": WORK, "len": MEM - WORK})["checksum"]
    finally:
        child.stop()


def sections(path):
    r = forkvm_cmd("snapshot", "verify", path, "--sections")
    assert r.returncode == 0, r.stderr
    return {(s["section"], s["instance"]): s["xxh64"] for s in json.loads(r.stdout.splitlines()[1])}


def test_state_idempotent_snapshot_restore_snapshot(tmp):
    src = VM(mem="64M", vcpus=2)
    try:
        src.ok({"cmd": "fill", "gpa": WORK, "len": 8 << 20, "seed": 3})
        snapshot(src, os.path.join(tmp, "a"))
    finally:
        src.stop()
    child = restore_one(os.path.join(tmp, "a"), tmp, paused=True)
    try:
        snapshot(child, os.path.join(tmp, "b"))
    finally:
        child.stop()
    a, b = sections(os.path.join(tmp, "a")), sections(os.path.join(tmp, "b"))
    assert a.keys() == b.keys()
    clocks = {"clock", "msrs", "pit2", "lapic", "tsc_khz"}  # time moves between the two
    differ = {k for k in a if a[k] != b[k]}
    assert {k[0] for k in differ} <= clocks, differ
    for name in ("regs", "sregs", "xsave", "xcrs", "cpuid", "mp_state", "vcpu_events",
                 "debugregs", "pic_master", "pic_slave", "ioapic", "serial", "config"):
        assert not any(k[0] == name for k in differ), name
    assert file_sha256(os.path.join(tmp, "a", "memory")) == file_sha256(os.path.join(tmp, "b", "memory"))


def clock_offset_us(vm):
    """kvmclock minus vCPU 0's TSC in time units: constant while a VM lives (both tick with
    the host's TSC), and what a clone must inherit unchanged. The VMM reads the clock between
    two TSC readings, taken again when preempted (spread_ns: how far apart they were)."""
    c = vm.ok({"cmd": "clock"})
    assert c["spread_ns"] < 1_000_000, c
    return c["kvmclock_ns"] / 1000 - c["tsc"] * 1000 / c["tsc_khz"]


def test_clock_reads_both_clocks_at_one_instant(tmp):
    """`clock`: kvmclock and vCPU 0's TSC read together, so their distance is constant in a
    running VM (both tick with the host's TSC), paused or not."""
    src = VM(mem="64M", vcpus=2)
    try:
        first = clock_offset_us(src)
        src.ok({"cmd": "fill", "gpa": WORK, "len": 8 << 20, "seed": 1})
        assert abs(clock_offset_us(src) - first) < 50
        src.ok({"cmd": "pause"})
        assert abs(clock_offset_us(src) - first) < 50
        assert src.ok({"cmd": "status"})["state"] == "paused"  # a paused VM stays paused
        src.ok({"cmd": "resume"})
    finally:
        src.stop()


def test_clones_keep_the_distance_between_kvmclock_and_the_tsc(tmp):
    """kvmclock and the TSCs are saved at one instant and a restore starts them from one
    instant (TSC offsets set from the restored clock, docs/SNAPSHOT.md), so a clone has its
    source's distance between the two; a clone whose clocks moved apart has its TSC marked
    unstable by Linux's clocksource watchdog."""
    src = VM(mem="64M", vcpus=2)
    try:
        # Stretch the gaps a restore puts between the two (devices, vCPUs, another VM's work).
        src.ok({"cmd": "fill", "gpa": WORK, "len": 16 << 20, "seed": 1})
        src.ok({"cmd": "pause"})
        before = clock_offset_us(src)
        snapshot(src, os.path.join(tmp, "a"))
        src.ok({"cmd": "resume"})
    finally:
        src.stop()
    for backing in ("file", "memfd"):
        child = restore_one(os.path.join(tmp, "a"), tmp, backing=backing, name=f"c{backing}")
        try:
            got = clock_offset_us(child)
            assert abs(got - before) < 100, (backing, got, before)
        finally:
            child.stop()


@pytest.mark.parametrize("backend", ["file", "memfd", "hugetlb"])
def test_eight_children_per_backend_diverge_independently(tmp, backend, hugepages):
    src = VM(mem="64M")
    try:
        src.ok({"cmd": "fill", "gpa": WORK, "len": 16 << 20, "seed": 1})
        snapshot(src, os.path.join(tmp, "s"))
    finally:
        src.stop()
    before = snap_digests(os.path.join(tmp, "s"))
    if backend == "hugetlb":
        hugepages(8 * MEM // (2 << 20) + 8)
    run = os.path.join(tmp, "run")
    os.makedirs(run)
    r, children = restore_children(os.path.join(tmp, "s"), backend, 8, run)
    assert r.returncode == 0, r.stderr
    try:
        sums = []
        for k, c in enumerate(children):
            c.ok({"cmd": "fill", "gpa": WORK, "len": 4 << 20, "seed": 100 + k})
        for k, c in enumerate(children):
            s = c.ok({"cmd": "checksum", "gpa": WORK, "len": 16 << 20})["checksum"]
            assert s == c.ok({"cmd": "memhash", "gpa": WORK, "len": 16 << 20})["checksum"]
            sums.append(s)
            assert c.ok({"cmd": "status"})["backing"] == backend
        assert len(set(sums)) == 8, "children share memory"
    finally:
        for c in children:
            assert c.stop() == 0
    assert snap_digests(os.path.join(tmp, "s")) == before, "restore modified the snapshot"


def test_snapshot_while_dirty_is_consistent(tmp):
    src = VM(mem="64M")
    pages = 16
    try:
        c0 = src.ok({"cmd": "dirty", "pages": pages, "seed": 9})["counter"]
        time.sleep(0.05)
        src.ok({"cmd": "pause"})
        want = region_hashes(src, MEM)
        snapshot(src, os.path.join(tmp, "paused"))
        src.ok({"cmd": "resume"})
        time.sleep(0.05)
        snapshot(src, os.path.join(tmp, "live"))  # snapshot pauses by itself
        assert src.ok({"cmd": "status"})["state"] == "running"
    finally:
        src.stop()
    child = restore_one(os.path.join(tmp, "paused"), tmp, paused=True, name="p")
    try:
        assert region_hashes(child, MEM) == want
    finally:
        child.stop()
    child = restore_one(os.path.join(tmp, "live"), tmp, paused=True, name="l")
    try:
        mb = child.mailbox()
        n = mb["dirty_iters"]
        done = mb["counter"] - c0  # n, or n + 1 if paused between the counter and dirty_iters
        assert n > 0 and done in (n, n + 1)
        data = child.peek(WORK, pages * 4096)
        for j in range(max(0, done - pages), done):
            assert int.from_bytes(data[(j % pages) * 4096:][:8], "little") == c0 + j
        child.ok({"cmd": "resume"})
        time.sleep(0.05)
        assert child.ok({"cmd": "counter"})["dirty_iters"] > n, "restored guest keeps dirtying"
    finally:
        child.stop()


@pytest.fixture(scope="module")
def good_snapshot():
    d = tempfile.mkdtemp(prefix="forkvm-good-")
    src = VM(mem="32M")
    try:
        src.ok({"cmd": "fill", "gpa": WORK, "len": 1 << 20, "seed": 2})
        snapshot(src, os.path.join(d, "s"))
    finally:
        src.stop()
    yield os.path.join(d, "s")
    shutil.rmtree(d, ignore_errors=True)


def corrupt(good, tmp, how):
    bad = os.path.join(tmp, "bad")
    shutil.copytree(good, bad)
    vmstate = os.path.join(bad, "vmstate")
    data = bytearray(open(vmstate, "rb").read())
    if how == "magic":
        data[0:8] = b"NOTASNAP"
    elif how == "version":
        data[8] = 99
    elif how == "checksum":
        data[16 + 24 + 8] ^= 0xFF  # a byte inside the first section's payload (config)
    elif how == "truncated":
        data = data[:len(data) // 2]
    elif how == "trailing":
        data += b"\0" * 16
    elif how == "memsize":
        with open(os.path.join(bad, "memory"), "r+b") as f:
            f.truncate(1 << 20)
    elif how == "nomemory":
        os.unlink(os.path.join(bad, "memory"))
    elif how == "cpuid":
        tool = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
            os.path.abspath(__file__)))), os.environ.get("FORKVM_BUILD", "build"), "tools",
            "snap_edit")
        # A leaf-7 feature this host's CPU lacks (so its KVM cannot offer it either).
        leaf, reg, bit = absent_cpu_feature()
        assert subprocess.run([tool, bad, "cpuid-set", leaf, reg, bit]).returncode == 0
        return bad
    open(vmstate, "wb").write(data)
    return bad


# (cpuinfo flag, CPUID leaf, register, bit): rare features; hosts differ in which they have.
RARE_FEATURES = [("avx512_4vnniw", "7", "edx", "2"), ("avx512_4fmaps", "7", "edx", "3"),
                 ("amx_tile", "7", "edx", "24"), ("avx512_fp16", "7", "edx", "23"),
                 ("pconfig", "7", "edx", "18")]


def absent_cpu_feature():
    flags = set()
    for line in open("/proc/cpuinfo"):
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
    for name, leaf, reg, bit in RARE_FEATURES:
        if name not in flags:
            return leaf, reg, bit
    pytest.skip("this CPU has every feature of RARE_FEATURES")


@pytest.mark.parametrize("how,needle", [
    ("magic", "bad magic"),
    ("version", "version 99"),
    ("checksum", "checksum mismatch in section 'config'"),
    ("truncated", "truncated"),
    ("trailing", "trailing"),
    ("memsize", "memory file is 1048576 bytes"),
    ("nomemory", "memory"),
    ("cpuid", "this host's KVM does not offer"),
])
def test_bad_snapshots_give_one_clear_error_and_no_vm(good_snapshot, tmp, how, needle):
    bad = corrupt(good_snapshot, tmp, how)
    if how != "cpuid":
        r = forkvm_cmd("snapshot", "verify", bad)
        assert r.returncode == 1 and needle in r.stderr, r.stderr
    sock = os.path.join(tmp, "x.sock")
    r = forkvm_cmd("run", "--restore", bad, "--socket", sock, timeout=60)
    assert r.returncode == 1 and needle in r.stderr, r.stderr
    assert not os.path.exists(sock)
    run = os.path.join(tmp, "run")
    os.makedirs(run, exist_ok=True)
    r, children = restore_children(bad, "memfd", 3, run)
    assert r.returncode == 1 and "child " in r.stderr and needle in r.stderr, r.stderr
    assert children == [] and not [f for f in os.listdir(run) if f.endswith(".sock")]


def test_existing_snapshot_needs_force(good_snapshot, tmp):
    path = os.path.join(tmp, "s")
    vm = VM(mem="32M")
    try:
        snapshot(vm, path)
        before = snap_digests(path)
        reply = vm.call({"cmd": "snapshot", "dir": path})
        assert not reply["ok"] and "already exists" in reply["error"]
        assert snap_digests(path) == before
        vm.ok({"cmd": "fill", "gpa": WORK, "len": 1 << 20, "seed": 77})
        snapshot(vm, path, force=True)
        assert snap_digests(path)["memory"] != before["memory"]
        assert sorted(os.listdir(tmp)) == ["s"], "temp or old directories left behind"
    finally:
        vm.stop()


def test_sigkill_during_snapshot_leaves_previous_snapshot_restorable(tmp):
    path = os.path.join(tmp, "s")
    vm = VM(mem="1G")
    try:
        vm.ok({"cmd": "fill", "gpa": WORK, "len": 64 << 20, "seed": 5})
        snapshot(vm, path)
        first = snap_digests(path)
        vm.ok({"cmd": "fill", "gpa": WORK, "len": (1 << 30) - WORK, "seed": 6}, timeout=300)
        import socket as s_
        conn = s_.socket(s_.AF_UNIX, s_.SOCK_STREAM)
        conn.connect(vm.sock)
        conn.sendall((json.dumps({"cmd": "snapshot", "dir": path, "force": True}) + "\n").encode())
        # Kill once the temp directory exists: in the middle of writing 1 GiB.
        deadline = time.monotonic() + 20
        while not [d for d in os.listdir(tmp) if ".tmp-" in d]:
            assert time.monotonic() < deadline
            time.sleep(0.001)
        time.sleep(0.02)
        vm.proc.send_signal(signal.SIGKILL)
        vm.proc.wait(timeout=30)
        conn.close()
    finally:
        vm.kill()
    assert snap_digests(path) == first
    assert forkvm_cmd("snapshot", "verify", path).returncode == 0
    child = restore_one(path, tmp)
    try:
        assert child.ok({"cmd": "checksum", "gpa": WORK, "len": 64 << 20})["checksum"]
    finally:
        child.stop()
    # The next snapshot to the same place cleans the dead writer's leftovers.
    vm2 = VM(mem="32M")
    try:
        snapshot(vm2, path, force=True)
    finally:
        vm2.stop()
    assert not [d for d in os.listdir(tmp) if ".tmp-" in d]


@pytest.fixture
def small_tmpfs(tmp):
    """A tmpfs of its own, mounted for the test: its size is the test's to choose."""
    mounted = []

    def mount(size):
        mnt = os.path.join(tmp, f"tmpfs-{len(mounted)}")
        os.makedirs(mnt)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", mnt], check=True)
        mounted.append(mnt)
        return mnt

    yield mount
    for mnt in mounted:
        subprocess.run(["umount", mnt], check=False)


# 64 MiB: one writer thread. 160 MiB on tmpfs: two, the second copying into a mapping of the
# file, where a full file system is a SIGBUS the writer must turn into the same error.
@pytest.mark.parametrize("mem_mib,fill_mib", [(64, 32), (160, 128)], ids=["one-writer", "two-writers"])
def test_full_disk_is_a_clear_error_and_leaves_nothing(small_tmpfs, mem_mib, fill_mib):
    mnt = small_tmpfs(f"{fill_mib // 4}m")
    vm = VM(mem=f"{mem_mib}M")
    try:
        vm.ok({"cmd": "fill", "gpa": WORK, "len": fill_mib << 20, "seed": 4})
        reply = vm.call({"cmd": "snapshot", "dir": os.path.join(mnt, "s")}, timeout=120)
        assert not reply["ok"] and "No space left" in reply["error"], reply
        assert "/memory at offset " in reply["error"], reply
        assert os.listdir(mnt) == []
        vm.ok({"cmd": "ping"})
        assert vm.ok({"cmd": "status"})["state"] == "running"
        assert vm.proc.poll() is None
    finally:
        vm.stop()


def test_two_writers_on_tmpfs_round_trip_every_page(tmp, small_tmpfs):
    """Guest RAM above 64 MiB written to tmpfs by two threads (pwrite, and copies into a
    mapping): the snapshot restores every page and counter, and its zero pages stay holes."""
    mem = 160 << 20
    mnt = small_tmpfs("512m")
    src = VM(mem="160M")
    try:
        # 100 MiB, a 48 MiB hole, then the last 8 MiB (the chunk the helper writes first)
        src.ok({"cmd": "fill", "gpa": WORK, "len": 100 << 20, "seed": 12})
        src.ok({"cmd": "fill", "gpa": mem - (8 << 20), "len": 8 << 20, "seed": 13})
        src.ok({"cmd": "pause"})
        before = region_hashes(src, mem)
        counter = src.mailbox()["counter"]
        reply = snapshot(src, os.path.join(mnt, "s"))
        assert 0 < reply["memory_bytes_by_helper"] <= reply["memory_bytes_written"], reply
        src.ok({"cmd": "resume"})
    finally:
        src.stop()
    assert os.stat(os.path.join(mnt, "s", "memory")).st_blocks * 512 < (120 << 20)
    child = restore_one(os.path.join(mnt, "s"), tmp, paused=True)
    try:
        assert region_hashes(child, mem) == before
        assert child.mailbox()["counter"] == counter
    finally:
        child.stop()


def test_no_free_hugepages_is_a_clear_error(good_snapshot, tmp, hugepages):
    hugepages(0)
    sock = os.path.join(tmp, "h.sock")
    r = forkvm_cmd("run", "--restore", good_snapshot, "--backing", "hugetlb", "--socket", sock)
    assert r.returncode == 1 and "/proc/sys/vm/nr_hugepages" in r.stderr, r.stderr


def test_failing_child_is_named_and_none_left(good_snapshot, tmp, hugepages):
    hugepages(3 * 16)  # 32 MiB VMs: room for three children of five
    run = os.path.join(tmp, "run")
    os.makedirs(run)
    r, children = restore_children(good_snapshot, "hugetlb", 5, run)
    assert r.returncode == 1 and "child " in r.stderr and "nr_hugepages" in r.stderr, r.stderr
    assert not children
    time.sleep(0.2)
    leftover = subprocess.run(["pgrep", "-f", f"--socket {run}/"], capture_output=True, text=True)
    assert leftover.stdout.strip() == "", "half-started children left running"
    # The named child keeps its log, quoted at the end of the error; so does any other child
    # that failed on its own. Healthy siblings, killed for it, leave nothing.
    named = r.stderr.split("child ")[1].split(" ")[0]
    log = os.path.join(run, f"c-{named}.sock.log")
    assert f"its log {log} ends:" in r.stderr and "\n    | " in r.stderr, r.stderr
    left = sorted(os.listdir(run))
    assert f"c-{named}.sock.log" in left
    assert all(n.endswith((".sock.log", ".sock.console")) for n in left), left
    for n in left:
        if n.endswith(".log"):
            assert "nr_hugepages" in open(os.path.join(run, n)).read()
