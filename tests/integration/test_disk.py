"""virtio-blk with copy-on-write disks on real KVM, driven by the probe guest's blk_io command:
requests, snapshots and restores on every backend, branch children, damaged chains."""
import os
import random
import shutil
import signal
import tempfile

import pytest

from forkvm_vm import Child, VM, call, file_sha256, forkvm_cmd, peek
from pageserver import PageServer

pytestmark = pytest.mark.kvm
BASE_BYTES = 16 << 20
BUF = 8 << 20     # guest buffer written to the disk
RBUF = 9 << 20    # guest buffer the disk is read into
CHUNK = 64 << 10
T_IN, T_OUT, T_FLUSH, T_GET_ID = 0, 1, 4, 8
S_OK, S_IOERR, S_UNSUPP = 0, 1, 2


@pytest.fixture
def env():
    d = tempfile.mkdtemp(prefix="forkvm-disk-")
    run = os.path.join(d, "run")
    os.makedirs(run)
    base = os.path.join(d, "base.img")
    with open(base, "wb") as f:
        f.write(random.Random(5).randbytes(BASE_BYTES))
    state = {"dir": d, "run": run, "base": base, "sha": file_sha256(base), "vms": [], "pids": []}
    yield state
    for vm in state["vms"]:
        vm.kill()
    for pid in state["pids"]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    # The base is never written, whatever happened.
    assert file_sha256(base) == state["sha"]
    shutil.rmtree(d, ignore_errors=True)


def source(env, *extra, mem="64M", backing="anon"):
    vm = VM(mem=mem, backing=backing, extra=("--disk", env["base"], *extra))
    env["vms"].append(vm)
    return vm


def io(vm, kind, sector=0, length=0, buf=RBUF, expect=S_OK, **kw):
    r = vm.ok({"cmd": "blk_io", "type": kind, "sector": sector, "buf": buf, "len": length, **kw})
    assert r["status"] == expect, r
    return r


def write(vm, sector, seed, length=CHUNK):
    """The guest writes length bytes of a seeded pattern at sector; returns them."""
    vm.ok({"cmd": "fill", "gpa": BUF, "len": length, "seed": seed})
    io(vm, T_OUT, sector, length, buf=BUF)
    return peek(vm, BUF, length)


def read(vm, sector, length=CHUNK):
    vm.ok({"cmd": "fill", "gpa": RBUF, "len": length, "seed": 0xdead})  # no stale match
    r = io(vm, T_IN, sector, length)
    assert r["used"] == length + 1, r
    return peek(vm, RBUF, length)


def base_bytes(env, sector, length=CHUNK):
    with open(env["base"], "rb") as f:
        f.seek(sector * 512)
        return f.read(length)


def disk(vm):
    return vm.ok({"cmd": "status"})["disks"][0]


def run_files(env):
    return sorted(n for n in os.listdir(env["run"]) if ".disk" in n)


def restore(env, snap, backend, count, name, extra=()):
    e = dict(os.environ, FORKVM_RUN_DIR=env["run"])
    r = forkvm_cmd("restore", snap, "--backend", backend, "--count", str(count), "--name", name,
                   *extra, env=e, timeout=300)
    assert r.returncode == 0, r.stderr
    kids = []
    for line in r.stdout.split("\n"):
        if line.strip():
            _, pid, sock = line.split()
            kids.append(Child(sock, int(pid)))
    env["vms"].extend(kids)
    return kids


def test_requests_through_the_device(env):
    vm = source(env)
    d = disk(vm)
    assert d["slot"] == 0 and d["bytes"] == BASE_BYTES and not d["read_only"]
    assert d["top"].startswith(vm.sock) and os.path.exists(d["top"])
    assert read(vm, 0) == base_bytes(env, 0)
    data = write(vm, 100, seed=7)
    assert read(vm, 100) == data
    assert read(vm, 100 - 7, 4096) == base_bytes(env, 93, 7 * 512) + data[:4096 - 7 * 512]
    # A sub-cluster write (copied up first) between untouched base bytes.
    vm.ok({"cmd": "fill", "gpa": BUF, "len": 4096, "seed": 8})
    part = peek(vm, BUF, 512)
    io(vm, T_OUT, 1001, 512, buf=BUF)
    got = read(vm, 1000, 4096)
    assert got == base_bytes(env, 1000, 512) + part + base_bytes(env, 1002, 3072)
    io(vm, T_FLUSH)
    r = io(vm, T_GET_ID, length=4096)
    assert r["used"] == 21 and peek(vm, RBUF, 20).rstrip(b"\0") == b"base.img"
    # A guest's bad requests get error statuses; the device keeps serving.
    io(vm, 11, expect=S_UNSUPP)
    io(vm, T_IN, BASE_BYTES // 512, 512, expect=S_IOERR)
    io(vm, T_IN, (1 << 63) - 1, 512, expect=S_IOERR)
    io(vm, T_OUT, 0, 100, buf=BUF, expect=S_IOERR)
    assert read(vm, 100) == data
    d = disk(vm)
    assert d["writes"] == 2 and d["reads"] == 5 and d["flushes"] == 1 and d["errors"] == 3
    top = d["top"]
    assert vm.stop() == 0
    assert not os.path.exists(top) and run_files(env) == []


def test_read_only_disk_and_slots(env):
    vsock = os.path.join(env["dir"], "v.sock")
    vm = source(env, "--disk", env["base"] + ",ro", "--vsock", vsock)
    disks = vm.ok({"cmd": "status"})["disks"]
    # vsock keeps slot 0; the disks follow in order.
    assert [(x["slot"], x["mmio"], x["read_only"]) for x in disks] == \
        [(1, 0xd0001000, False), (2, 0xd0002000, True)]
    assert disks[1]["top"] is None
    ro = {"mmio": 0xd0002000}
    io(vm, T_IN, 3, 4096, **ro)
    assert peek(vm, RBUF, 4096) == base_bytes(env, 3, 4096)
    io(vm, T_OUT, 3, 4096, buf=BUF, expect=S_IOERR, **ro)
    io(vm, T_FLUSH, **ro)
    r = vm.call({"cmd": "blk_io", "type": 0, "mmio": 0xd0000000})
    assert not r["ok"] and "no virtio-blk device" in r["error"]


def test_bad_disk_options(env):
    def run(*args):
        return forkvm_cmd("run", "--socket", os.path.join(env["run"], "x.sock"), *args, timeout=60)
    r = run("--disk", os.path.join(env["dir"], "missing.img"))
    assert r.returncode != 0 and "missing.img" in r.stderr and "No such file" in r.stderr
    r = run("--disk", env["base"] + ",rw")
    assert r.returncode == 2 and "the only option is ',ro'" in r.stderr
    r = run(*(["--disk", env["base"]] * 5))
    assert r.returncode == 2 and "at most 4 disks" in r.stderr
    r = run("--restore", env["dir"], "--disk", env["base"])
    assert r.returncode == 2 and "comes from the snapshot" in r.stderr
    empty = os.path.join(env["dir"], "empty.img")
    open(empty, "wb").close()
    r = run("--disk", empty)
    assert r.returncode != 0 and "is empty" in r.stderr
    assert run_files(env) == []


@pytest.fixture
def pageserver(env):
    ps = PageServer(os.path.join(env["dir"], "ps.sock"))
    yield ps
    ps.stop()


@pytest.mark.parametrize("backend", ["file", "memfd", "anon", "uffd"])
def test_restores_see_the_snapshot_and_never_each_other(env, backend, request):
    vm = source(env)
    a = write(vm, 10, seed=1)
    snap = os.path.join(env["dir"], "snap")
    vm.ok({"cmd": "snapshot", "dir": snap})
    assert sorted(os.listdir(snap)) == ["disk0-0.ovl", "memory", "meta.json", "vmstate"]
    v = forkvm_cmd("snapshot", "verify", snap)
    assert v.returncode == 0 and '"disks":1' in v.stdout, v.stderr
    # The source goes on, on a new top above the sealed layer.
    d = disk(vm)
    assert d["sealed_layers"] == 1 and d["top"] == vm.sock + ".disk0.1.ovl"
    b = write(vm, 10, seed=2)
    extra = ()
    if backend == "uffd":
        extra = ("--pageserver", request.getfixturevalue("pageserver").path)
    kids = restore(env, snap, backend, 2, "r", extra)
    tops = [disk(k)["top"] for k in kids]
    assert len(set(tops)) == 2 and all(t.startswith(env["run"]) for t in tops)
    assert [read(k, 10) for k in kids] == [a, a]
    c = write(kids[0], 10, seed=3)
    d2 = write(kids[1], 10, seed=4)
    assert read(kids[0], 10) == c and read(kids[1], 10) == d2 and read(vm, 10) == b
    assert read(kids[0], 2000) == base_bytes(env, 2000)
    for k in kids:
        assert k.stop() == 0
    assert not any(os.path.exists(t) for t in tops)
    # The snapshot is untouched by its restores: a third one still sees the source's data.
    kid = restore(env, snap, "file", 1, "again")[0]
    assert read(kid, 10) == a


def test_chains_grow_with_snapshots_of_restores(env):
    vm = source(env)
    a = write(vm, 10, seed=1)
    s1, s2 = os.path.join(env["dir"], "s1"), os.path.join(env["dir"], "s2")
    vm.ok({"cmd": "snapshot", "dir": s1})
    kid = restore(env, s1, "file", 1, "k")[0]
    b = write(kid, 1000, seed=2)
    kid.ok({"cmd": "snapshot", "dir": s2})
    # The restore's chain: s1's layer + its own sealed top, linked into s2.
    assert sorted(n for n in os.listdir(s2) if n.endswith(".ovl")) == ["disk0-0.ovl", "disk0-1.ovl"]
    assert os.stat(os.path.join(s2, "disk0-0.ovl")).st_ino == \
        os.stat(os.path.join(s1, "disk0-0.ovl")).st_ino
    # A snapshot with nothing new written seals nothing.
    s3 = os.path.join(env["dir"], "s3")
    kid.ok({"cmd": "snapshot", "dir": s3})
    assert sorted(n for n in os.listdir(s3) if n.endswith(".ovl")) == ["disk0-0.ovl", "disk0-1.ovl"]
    shutil.rmtree(s1)  # s2 stands alone
    k2 = restore(env, s2, "memfd", 1, "k2")[0]
    assert read(k2, 10) == a and read(k2, 1000) == b


def test_damaged_chains_are_refused_by_verify_and_restore(env):
    vm = source(env)
    write(vm, 10, seed=1)
    snap = os.path.join(env["dir"], "snap")
    vm.ok({"cmd": "snapshot", "dir": snap})
    vm.stop()
    layer = os.path.join(snap, "disk0-0.ovl")
    good = open(layer, "rb").read()

    def refused(needle):
        v = forkvm_cmd("snapshot", "verify", snap)
        assert v.returncode != 0 and needle in v.stderr, v.stderr
        e = dict(os.environ, FORKVM_RUN_DIR=env["run"])
        r = forkvm_cmd("restore", snap, "--count", "1", "--name", "bad", env=e, timeout=120)
        assert r.returncode != 0 and needle in r.stderr, r.stderr
        assert run_files(env) == []

    def damage(off, xor):
        data = bytearray(good)
        data[off] ^= xor
        with open(layer, "wb") as f:
            f.write(data)

    damage(0, 1)
    refused("bad magic")
    damage(20, 1)
    refused("header checksum mismatch")
    damage(4096 + 100, 0x10)
    refused("bitmap checksum mismatch")
    with open(layer, "wb") as f:
        f.write(good[:4096])
    refused("truncated bitmap")
    os.unlink(layer)
    refused("disk0-0.ovl: No such file")
    with open(layer, "wb") as f:
        f.write(good)
    assert forkvm_cmd("snapshot", "verify", snap).returncode == 0
    # The base moved on (same size, other bytes): the chain belongs to another base.
    saved = env["base"] + ".saved"
    os.rename(env["base"], saved)
    with open(env["base"], "wb") as f:
        f.write(random.Random(6).randbytes(BASE_BYTES))
    try:
        refused("is not the recorded base")
    finally:
        os.rename(saved, env["base"])


STRATEGIES = ["full", "diff", "live", "cow"]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_branch_children_get_their_own_tops(env, strategy):
    vm = source(env, backing="memfd" if strategy == "live" else "anon")
    a = write(vm, 10, seed=1)

    def branch(prefix):
        req = {"cmd": "branch", "strategy": strategy, "count": 2, "prefix": prefix,
               "run_dir": env["run"], "paused": False}
        if strategy != "cow":
            req["dir"] = os.path.join(env["dir"], "snap-" + strategy)
        r = call(vm.sock, req, timeout=300)
        assert r["ok"], r
        kids = [Child(c["socket"], c["pid"]) for c in r["children"]]
        env["vms"].extend(kids)
        if r.get("template"):
            env["pids"].append(call(r["template"], {"cmd": "status"})["pid"])
        return kids

    kids = branch("b")
    b = write(vm, 10, seed=2)  # after the branch instant: no child sees it
    assert [read(k, 10) for k in kids] == [a, a]
    c = [write(k, 10, seed=10 + i) for i, k in enumerate(kids)]
    assert [read(k, 10) for k in kids] == c and read(vm, 10) == b
    tops = {disk(k)["top"] for k in kids}
    assert len(tops | {disk(vm)["top"]}) == 3
    if strategy == "diff":  # the second diff branch writes a layer, with the disk chain
        kids2 = branch("b2")
        assert [read(k, 10) for k in kids2] == [b, b]
        tip = os.path.join(env["dir"], "snap-diff", "layer-1")
        assert os.path.exists(os.path.join(tip, "disk0-1.ovl"))
        # Compacting the chain carries the disk layers along.
        out = os.path.join(env["dir"], "compact")
        r = forkvm_cmd("snapshot", "compact", tip, out)
        assert r.returncode == 0, r.stderr
        kid = restore(env, out, "file", 1, "cmp")[0]
        assert read(kid, 10) == b
        kid.stop()
    for k in kids:
        assert k.stop() == 0
    assert not any(os.path.exists(t) for t in tops)
