"""uffd restores through the page server: correctness, sharing, prefetch, bad lists, failures."""
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

import pytest

from forkvm_vm import FORKVM, VM, WORK, Child, forkvm_cmd, region_hashes, restore_children
from pageserver import PageServer

pytestmark = pytest.mark.kvm
MEM = 64 << 20
FILL = 8 << 20  # the template's working set: filled before the snapshot, checksummed after


@pytest.fixture(scope="module")
def template():
    """A 64 MiB probe snapshot whose work area starts with FILL bytes of a seeded pattern."""
    d = tempfile.mkdtemp(prefix="forkvm-uffd-")
    src = VM(mem="64M")
    try:
        src.ok({"cmd": "fill", "gpa": WORK, "len": FILL, "seed": 11}, timeout=120)
        expect = src.ok({"cmd": "checksum", "gpa": WORK, "len": FILL})["checksum"]
        hashes = region_hashes(src, MEM)
        src.ok({"cmd": "snapshot", "dir": os.path.join(d, "snap")}, timeout=300)
    finally:
        src.stop()
    yield {"dir": d, "snap": os.path.join(d, "snap"), "checksum": expect, "hashes": hashes}
    shutil.rmtree(d, ignore_errors=True)


def vmm_logs(run):
    if not os.path.isdir(run):
        return []
    return [open(os.path.join(run, n), errors="replace").read()
            for n in os.listdir(run) if n.endswith(".log")]


@pytest.fixture
def env(template):
    """A fresh run dir and page server per test; everything stopped afterwards."""
    d = tempfile.mkdtemp(prefix="forkvm-uffd-run-")
    ps = PageServer(os.path.join(d, "ps.sock"))
    state = {"dir": d, "ps": ps, "vms": [], "snap": template["snap"]}
    yield state
    for vm in state["vms"]:
        vm.kill()
    ps.stop()  # graceful: under FORKVM_SAN=1 this runs LeakSanitizer on the server
    logs = [ps.log_text()] + vmm_logs(os.path.join(d, "run"))
    for name in ("hotpages", "access.log"):
        try:
            os.unlink(os.path.join(template["snap"], name))
        except FileNotFoundError:
            pass
    shutil.rmtree(d, ignore_errors=True)
    assert not any("Sanitizer" in text for text in logs), "\n".join(logs)


def restore(env, name, *extra, server=None, expect_ok=True, env_extra=None):
    run = os.path.join(env["dir"], "run")
    os.makedirs(run, exist_ok=True)
    ps = server or env["ps"]
    e = dict(os.environ, FORKVM_RUN_DIR=run, **(env_extra or {}))
    r = forkvm_cmd("restore", env["snap"], "--backend", "uffd", "--count", "1", "--name", name,
                   "--pageserver", ps.path, *extra, env=e, timeout=120)
    if not expect_ok:
        return r, None
    assert r.returncode == 0, r.stderr
    _, pid, sock = r.stdout.split()
    child = Child(sock, int(pid))
    env["vms"].append(child)
    return r, child


def checksum(vm):
    return vm.ok({"cmd": "checksum", "gpa": WORK, "len": FILL}, timeout=300)["checksum"]


def test_every_page_equals_the_snapshot(env, template):
    _, vm = restore(env, "all", "--no-prefetch")
    assert region_hashes(vm, MEM) == template["hashes"]
    assert checksum(vm) == template["checksum"]
    st = env["ps"].vm("all-0")
    assert st["demand_faults"] > 0 and st["pages_prefetched"] == 0
    assert st["bytes_copied"] > 0 and st["first_fault_us"] is not None
    r = forkvm_cmd("pageserver", "--status", "--socket", env["ps"].path)
    assert r.returncode == 0, r.stderr
    assert [v["name"] for v in json.loads(r.stdout)["vms"]] == ["all-0"]


def test_eight_vms_from_one_template(env, template):
    e = dict(os.environ, FORKVM_RUN_DIR=os.path.join(env["dir"], "run"))
    os.makedirs(e["FORKVM_RUN_DIR"], exist_ok=True)
    r, children = restore_children(env["snap"], "uffd", 8, e["FORKVM_RUN_DIR"], name="e",
                                   extra=("--pageserver", env["ps"].path))
    env["vms"].extend(children)
    assert r.returncode == 0, r.stderr
    assert len(children) == 8
    for k, c in enumerate(children):
        assert checksum(c) == template["checksum"], f"child {k}"
        c.ok({"cmd": "fill", "gpa": WORK, "len": 1 << 20, "seed": 100 + k})
    sums = {c.ok({"cmd": "checksum", "gpa": WORK, "len": 1 << 20})["checksum"] for c in children}
    assert len(sums) == 8, "children share memory"
    names = {v["name"] for v in env["ps"].status()["vms"] if v["state"] != "gone"}
    assert {f"e-{k}" for k in range(8)} <= names


def test_two_vms_fault_the_same_pages_concurrently(env, template):
    _, a = restore(env, "ca", "--no-prefetch")
    _, b = restore(env, "cb", "--no-prefetch")
    out = {}
    threads = [threading.Thread(target=lambda v=v: out.__setitem__(v.sock, checksum(v)))
               for v in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert out == {a.sock: template["checksum"], b.sock: template["checksum"]}
    assert env["ps"].vm("ca-0")["demand_faults"] > 0
    assert env["ps"].vm("cb-0")["demand_faults"] > 0


def wait_for(pred, timeout=60, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def record_template(env):
    # a window long enough that a slow CI machine never settles before the workload starts
    _, rec = restore(env, "rec", "--record", "--record-settle", "1500")
    assert checksum(rec) == TEMPLATE_SUM[0]
    hot = os.path.join(env["snap"], "hotpages")
    wait_for(lambda: os.path.exists(hot) and os.path.exists(os.path.join(env["snap"], "access.log")),
             what="the recorder to settle and save")
    st = env["ps"].vm("rec-0")
    assert "saved" in st.get("record_result", ""), st
    assert st["settle_us"] is not None
    rec.stop()
    return hot


TEMPLATE_SUM = [None]


def read_uvarint(buf, pos):
    x = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        x |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return x, pos


def test_record_then_prefetch_cuts_demand_faults(env, template):
    TEMPLATE_SUM[0] = template["checksum"]
    hot = record_template(env)
    data = open(hot, "rb").read()
    assert data[:4] == b"HPL1"
    count, pos = read_uvarint(data, 4)
    entries = []
    for _ in range(count):
        region, pos = read_uvarint(data, pos)
        page, pos = read_uvarint(data, pos)
        entries.append((region, page))
    assert pos == len(data) and entries == sorted(set(entries))
    # the working set (FILL bytes from 4 MiB) is in the list
    assert all((0, (WORK >> 12) + i) in set(entries) for i in range(0, FILL >> 12, 97))

    _, cold = restore(env, "cold", "--no-prefetch")
    assert checksum(cold) == template["checksum"]
    _, warm = restore(env, "warm")
    assert checksum(warm) == template["checksum"]
    c, w = env["ps"].vm("cold-0"), env["ps"].vm("warm-0")
    assert w["hot_pages"] == count and w["pages_prefetched"] >= count
    assert w["access_log_pages"] > 0
    assert c["demand_faults"] >= 50
    assert w["demand_faults"] * 10 <= c["demand_faults"], (c, w)


def corrupt_cases(good):
    n = len(good)
    return {
        "bad magic": (b"HPL2" + good[4:], "bad magic"),
        "truncated": (good[: n - 1], "truncated"),
        "trailing bytes": (good + b"\x00", "trailing bytes"),
        "out of range": (b"HPL1\x01\x00" + bytes([0xff, 0xff, 0x7f]), "outside guest RAM"),
    }


def test_bad_hot_page_lists_and_access_log(env, template):
    TEMPLATE_SUM[0] = template["checksum"]
    hot = record_template(env)
    good = open(hot, "rb").read()
    for case, (data, message) in corrupt_cases(good).items():
        with open(hot, "wb") as f:
            f.write(data)
        r, _ = restore(env, "bad", expect_ok=False)
        assert r.returncode != 0, case
        log = r.stderr
        assert "refused the restore" in log and message in log, (case, log)
        # the user may choose to go on without prefetch
        _, vm = restore(env, "lenient", "--ignore-bad-hotpages")
        assert checksum(vm) == template["checksum"]
        st = env["ps"].vm("lenient-0")
        assert st["hot_pages"] == 0 and message in st["prefetch_note"], (case, st)
        vm.stop()
    with open(hot, "wb") as f:
        f.write(good)
    alog = os.path.join(env["snap"], "access.log")
    data = bytearray(open(alog, "rb").read())
    data[20] ^= 1
    open(alog, "wb").write(data)
    r, _ = restore(env, "badlog", expect_ok=False)
    log = r.stderr
    assert r.returncode != 0 and "access.log: checksum mismatch" in log, log


def test_handshake_timeout_and_missing_server(env):
    fake_path = os.path.join(env["dir"], "fake.sock")
    fake = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    fake.bind(fake_path)
    fake.listen(8)  # accepts (in the kernel) and never answers
    try:
        run = os.path.join(env["dir"], "run")
        os.makedirs(run, exist_ok=True)
        t0 = time.monotonic()
        r = forkvm_cmd("run", "--restore", env["snap"], "--backing", "uffd", "--pageserver",
                       fake_path, "--pageserver-timeout", "1000", "--socket",
                       os.path.join(run, "t.sock"), timeout=60)
        assert r.returncode == 1, r.stderr
        assert "did not acknowledge the restore within 1000 ms" in r.stderr
        assert time.monotonic() - t0 < 20
        assert not os.path.exists(os.path.join(run, "t.sock"))
        # SIGTERM cancels the wait at once instead of sitting out the 30 s deadline
        t0 = time.monotonic()
        p = subprocess.Popen([FORKVM, "run", "--restore", env["snap"], "--backing", "uffd",
                              "--pageserver", fake_path, "--socket", os.path.join(run, "c.sock")],
                             stderr=subprocess.PIPE, text=True)
        time.sleep(0.5)
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=20)
        assert p.returncode != 0 and "Operation canceled" in err, err
        assert time.monotonic() - t0 < 10
    finally:
        fake.close()
    r = forkvm_cmd("run", "--restore", env["snap"], "--backing", "uffd", "--pageserver",
                   os.path.join(env["dir"], "nobody.sock"), "--pageserver-timeout", "300",
                   "--socket", os.path.join(env["dir"], "n.sock"), timeout=60)
    assert r.returncode == 1 and "no page server answered" in r.stderr, r.stderr


def test_children_that_cannot_become_ready_keep_their_logs(env):
    """A restore whose children never become ready (a page server that never acknowledges)
    or exit (no page server at all): the error names the child and quotes the end of its
    log, which is kept; nothing is left running."""
    run = os.path.join(env["dir"], "run")
    os.makedirs(run, exist_ok=True)
    e = dict(os.environ, FORKVM_RUN_DIR=run)
    fake_path = os.path.join(env["dir"], "mute.sock")
    fake = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    fake.bind(fake_path)
    fake.listen(8)  # accepts (in the kernel) and never answers
    try:
        t0 = time.monotonic()
        r = forkvm_cmd("restore", env["snap"], "--backend", "uffd", "--count", "2", "--name",
                       "mute", "--pageserver", fake_path, "--pageserver-timeout", "30000",
                       "--timeout", "1500", env=e, timeout=60)
        assert r.returncode == 1 and time.monotonic() - t0 < 15, r.stderr
        assert "child 0 (mute-0): not ready within 1500 ms (2 of 2 children not ready)" in r.stderr
        log = os.path.join(run, "mute-0.sock.log")
        assert f"its log {log}" in r.stderr, r.stderr
        # Neither became ready: both keep their logs; no socket is left.
        assert os.path.exists(log) and os.path.exists(os.path.join(run, "mute-1.sock.log"))
        assert not [n for n in os.listdir(run) if n.endswith((".sock", ".vsock"))]
    finally:
        fake.close()
    r = forkvm_cmd("restore", env["snap"], "--backend", "uffd", "--count", "1", "--name", "gone",
                   "--pageserver", os.path.join(env["dir"], "nobody.sock"),
                   "--pageserver-timeout", "300", env=e, timeout=60)
    assert r.returncode == 1, r.stderr
    log = os.path.join(run, "gone-0.sock.log")
    assert "child 0 (gone-0): " in r.stderr and f"its log {log} ends:" in r.stderr, r.stderr
    quoted = [l[len("    | "):] for l in r.stderr.splitlines() if l.startswith("    | ")]
    assert quoted and "no page server answered" in quoted[-1], r.stderr
    assert quoted[-1] in open(log).read()
    time.sleep(0.2)
    leftover = subprocess.run(["pgrep", "-f", f"--socket {run}/"], capture_output=True, text=True)
    assert leftover.stdout.strip() == "", "children left running"


def make_uffd():
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.syscall(323, os.O_CLOEXEC | os.O_NONBLOCK)  # userfaultfd (x86-64)
    assert fd >= 0, os.strerror(ctypes.get_errno())
    return fd


def test_server_refuses_a_wrong_layout(env, template):
    regions = [{"gpa": 0, "size": MEM, "offset": 0}]
    req = {"cmd": "register", "version": 1, "snapshot": os.path.realpath(env["snap"]),
           "name": "liar", "pid": os.getpid(), "base": 1 << 30, "size": MEM // 2,
           "file_offset": 0, "page_size": 4096, "regions": regions, "record": False,
           "prefetch": False, "allow_bad_hotpages": False, "settle_ms": 1000,
           "record_max_ms": 60000}
    uffd = make_uffd()
    try:
        for change, message in (({}, "RAM size 33554432 differs"),
                                ({"size": MEM, "regions": [{"gpa": 0, "size": MEM, "offset": 4096}]},
                                 "region 0"),
                                ({"size": MEM, "page_size": 2 << 20}, "page size"),
                                ({"size": MEM, "bogus": 1}, "unknown field 'bogus'")):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(30)
                s.connect(env["ps"].path)
                line = (json.dumps(dict(req, **change)) + "\n").encode()
                s.sendmsg([line], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, bytes(ctypes.c_int(uffd)))])
                reply = json.loads(s.makefile().readline())
            assert reply["ok"] is False and message in reply["error"], (change, reply)
        # without a userfaultfd attached
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(env["ps"].path)
            s.sendall((json.dumps(dict(req, size=MEM)) + "\n").encode())
            reply = json.loads(s.makefile().readline())
        assert reply["ok"] is False and "userfaultfd" in reply["error"]
    finally:
        os.close(uffd)
    assert env["ps"].proc.poll() is None


def test_server_killed_mid_restore(env, template):
    _, vm = restore(env, "victim", "--no-prefetch")
    result = {}

    def work():
        try:
            result["reply"] = vm.call({"cmd": "checksum", "gpa": WORK, "len": FILL}, timeout=120)
        except (OSError, ConnectionError, ValueError) as e:
            result["error"] = str(e)
    t = threading.Thread(target=work)
    t.start()
    wait_for(lambda: env["ps"].vm("victim-0")["demand_faults"] > 5, what="faults to start")
    env["ps"].kill()
    t.join(120)
    # the VM never computed over zeroes: either an error, or the right answer
    reply = result.get("reply")
    if reply and reply.get("ok"):
        assert reply["checksum"] == template["checksum"]
    wait_for(lambda: not vm.alive(), timeout=60, what="the VMM to stop")
    log = open(vm.stderr_path).read()
    assert "page server" in log and "closed the connection" in log, log
    # a new server serves new VMs normally
    ps2 = PageServer(os.path.join(env["dir"], "ps2.sock"))
    try:
        for k in range(2):
            _, other = restore(env, f"after{k}", "--no-prefetch", server=ps2)
            assert checksum(other) == template["checksum"]
    finally:
        for v in env["vms"]:
            v.kill()
        ps2.kill()


def test_breakers(env, template):
    # FORKVM_UFFD=0: the file backing, no page server needed at all
    for how in ({"env_extra": {"FORKVM_UFFD": "0"}}, {"extra": ("--no-uffd",)}):
        dead = type("Dead", (), {"path": os.path.join(env["dir"], "none.sock")})
        _, vm = restore(env, "brk", *how.get("extra", ()), server=dead,
                        env_extra=how.get("env_extra"))
        assert vm.ok({"cmd": "status"})["backing"] == "file"
        assert checksum(vm) == template["checksum"]
        vm.stop()
    # FORKVM_PREFETCH=0: uffd, but neither prefetch nor recording
    _, vm = restore(env, "nopf", "--record", env_extra={"FORKVM_PREFETCH": "0"})
    assert vm.ok({"cmd": "status"})["backing"] == "uffd"
    assert checksum(vm) == template["checksum"]
    st = env["ps"].vm("nopf-0")
    assert st["pages_prefetched"] == 0 and not st["recording"] and not st["sequential"]
    assert st["demand_faults"] > 0


def test_graceful_server_stop_keeps_vms_running(env, template):
    _, vm = restore(env, "drained", "--no-prefetch")
    assert vm.ok({"cmd": "status"})["backing"] == "uffd"
    assert env["ps"].vm("drained-0")["demand_faults"] < (FILL >> 12)  # most RAM still missing
    env["ps"].stop()  # SIGTERM: populate every VM's RAM, tell the VMMs, exit
    assert env["ps"].proc.returncode == 0, env["ps"].log_text()
    assert "populated all guest RAM" in open(vm.stderr_path).read()
    assert vm.alive()
    assert region_hashes(vm, MEM) == template["hashes"]
    assert checksum(vm) == template["checksum"]


class _Range(ctypes.Structure):
    _fields_ = [("start", ctypes.c_uint64), ("len", ctypes.c_uint64)]


def test_remove_event_reads_zeroes_not_snapshot_data(env, template):
    """This process plays the VMM: its own uffd RAM, served by the server, then discarded."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    base = libc.mmap(None, MEM, 3, 0x22 | 0x4000, -1, 0)  # RW, private|anon|noreserve
    assert base and base != ctypes.c_void_p(-1).value
    uffd = make_uffd()
    api = (ctypes.c_uint64 * 3)(0xAA, (1 << 3) | (1 << 6), 0)  # EVENT_REMOVE | EVENT_UNMAP
    assert libc.ioctl(uffd, 0xC018AA3F, api) == 0, os.strerror(ctypes.get_errno())
    reg = (ctypes.c_uint64 * 4)(base, MEM, 1, 0)  # range, MODE_MISSING
    assert libc.ioctl(uffd, 0xC020AA00, reg) == 0, os.strerror(ctypes.get_errno())
    req = {"cmd": "register", "version": 1, "snapshot": os.path.realpath(env["snap"]),
           "name": "pyvmm", "pid": os.getpid(), "base": base, "size": MEM, "file_offset": 0,
           "page_size": 4096, "regions": [{"gpa": 0, "size": MEM, "offset": 0}],
           "record": False, "prefetch": False, "allow_bad_hotpages": False,
           "settle_ms": 1000, "record_max_ms": 60000}
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(30)
        s.connect(env["ps"].path)
        s.sendmsg([(json.dumps(req) + "\n").encode()],
                  [(socket.SOL_SOCKET, socket.SCM_RIGHTS, bytes(ctypes.c_int(uffd)))])
        assert json.loads(s.makefile().readline())["ok"] is True
        with open(os.path.join(env["snap"], "memory"), "rb") as f:
            f.seek(WORK)
            want = f.read(4096)
        assert want != bytes(4096)
        assert ctypes.string_at(base + WORK, 4096) == want  # served on demand
        assert ctypes.string_at(base + WORK + (40 << 20), 4096) == bytes(4096)  # a hole
        assert libc.madvise(base + WORK, 4096, 4) == 0  # MADV_DONTNEED → REMOVE event
        assert ctypes.string_at(base + WORK, 4096) == bytes(4096)  # discarded stays discarded
        st = env["ps"].vm("pyvmm")
        assert st["events_remove"] == 1 and st["demand_faults"] >= 3 and st["zero_faults"] >= 1
    finally:
        libc.ioctl(uffd, 0x8010AA01, ctypes.byref(_Range(base, MEM)))  # UFFDIO_UNREGISTER
        os.close(uffd)
        s.close()
        libc.munmap(base, MEM)
