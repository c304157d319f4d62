"""Hostile inputs: snapshot files that are FIFOs or huge, and agent frames built to bloat memory.

Each case must be refused quickly with a message naming the file or the limit, and must not
stop the same process from serving others (the page server's other VMs, the agent's other
connections).
"""
import os
import shutil
import subprocess
import tempfile
import time

import pytest

from agentclient import AgentClient, agent_binary, encode_frame, start_agent, stop_agent
from forkvm_vm import FORKVM, VM, WORK, Child, call, forkvm_cmd
from pageserver import PageServer

AGENT = agent_binary()
MIB = 1 << 20
# Peak memory of one agent connection: 64 MiB; an ASan/UBSan agent (FORKVM_BUILD=build-san)
# carries shadow memory and a quarantine of freed blocks, so it gets 160 MiB: still far below
# the 345 MiB the unbounded parse took.
HWM_BOUND_KIB = (160 if "san" in os.environ.get("FORKVM_BUILD", "") else 64) * 1024


# --- guest agent: one frame must not cost many times its size --------------------------------

def conn_children(pid):
    """Connection processes forked by the agent (its direct children)."""
    kids = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/children") as f:
            kids += [int(k) for k in f.read().split()]
    return kids


def vm_hwm_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmHWM for {pid}")


def crafted_frames():
    """Payloads just under the 16 MiB frame limit whose parsed form would be huge."""
    room = 16 * MIB - 64
    zeros = b'{"op":"ping","x":[' + b"0," * (room // 2) + b'0]}'
    arrays = b'{"op":"ping","x":[' + b"[]," * (room // 3) + b'[]]}'
    objects = b'{"op":"ping","x":[' + b"{}," * (room // 3) + b'{}]}'
    return {"zeros": zeros, "arrays": arrays, "objects": objects}


@pytest.mark.skipif(not os.path.exists(AGENT), reason=f"{AGENT} not built")
@pytest.mark.parametrize("kind", sorted(crafted_frames()))
def test_agent_frame_does_not_bloat_memory(kind, tmp_path):
    sock = os.path.join(tempfile.mkdtemp(prefix="forkvm-harden-"), "agent.sock")
    log = open(str(tmp_path / "agent.log"), "wb")
    proc = start_agent(sock, stderr=log)
    try:
        payload = crafted_frames()[kind]
        assert len(payload) <= 16 * MIB
        with AgentClient.unix(sock, timeout=60) as c:
            c.ping()  # the connection process exists from here on
            kids = conn_children(proc.pid)
            assert len(kids) == 1, kids
            c.send_raw(encode_frame(payload))
            reply = c.recv()
            assert reply["ok"] is False and "JSON values" in reply["error"], reply
            hwm = vm_hwm_kib(kids[0])
            # the connection is still usable afterwards
            assert c.ping()["ok"] is True
        # frame buffer (16 MiB) + a little: far below the hundreds of MiB a parse would take
        assert hwm < HWM_BOUND_KIB, f"{kind}: connection process peaked at {hwm} KiB"
    finally:
        status = stop_agent(proc)
        log.close()
        shutil.rmtree(os.path.dirname(sock), ignore_errors=True)
    assert status == 0


@pytest.mark.skipif(not os.path.exists(AGENT), reason=f"{AGENT} not built")
def test_agent_large_string_frame_stays_bounded(tmp_path):
    """One 16 MiB string is legal JSON; it costs its text a few times over, not more."""
    sock = os.path.join(tempfile.mkdtemp(prefix="forkvm-harden-"), "agent.sock")
    proc = start_agent(sock)
    try:
        payload = b'{"op":"ping","x":"' + b"a" * (16 * MIB - 64) + b'"}'
        with AgentClient.unix(sock, timeout=60) as c:
            c.ping()
            kid = conn_children(proc.pid)[0]
            c.send_raw(encode_frame(payload))
            c.recv()
            hwm = vm_hwm_kib(kid)
        assert hwm < HWM_BOUND_KIB, f"connection process peaked at {hwm} KiB"
    finally:
        stop_agent(proc)
        shutil.rmtree(os.path.dirname(sock), ignore_errors=True)


# --- snapshot files: a FIFO or a huge sparse file in a file's place ---------------------------

needs_kvm = pytest.mark.skipif(not os.path.exists(FORKVM) or not os.access("/dev/kvm", os.W_OK),
                               reason="needs forkvm and /dev/kvm")


@pytest.fixture(scope="module")
def snap():
    """A 64 MiB probe snapshot with a vsock device and a few MiB of data."""
    if not os.path.exists(FORKVM) or not os.access("/dev/kvm", os.W_OK):
        pytest.skip("needs forkvm and /dev/kvm")
    d = tempfile.mkdtemp(prefix="forkvm-harden-snap-")
    # with a vsock device, so that its two sections are in the snapshot
    src = VM(mem="64M", extra=("--vsock", os.path.join(d, "v.sock")))
    try:
        src.ok({"cmd": "fill", "gpa": WORK, "len": 4 * MIB, "seed": 5})
        src.ok({"cmd": "snapshot", "dir": os.path.join(d, "good")}, timeout=300)
    finally:
        src.stop()
    yield d
    shutil.rmtree(d, ignore_errors=True)


def variant(snap, name, file, kind):
    """A copy of the good snapshot with `file` replaced by a FIFO or a 1 GiB sparse file."""
    bad = os.path.join(snap, name)
    shutil.rmtree(bad, ignore_errors=True)
    subprocess.run(["cp", "-r", "--sparse=always", os.path.join(snap, "good"), bad], check=True)
    path = os.path.join(bad, file)
    if os.path.exists(path):
        os.unlink(path)
    if kind == "fifo":
        os.mkfifo(path)
    else:
        with open(path, "wb") as f:
            f.truncate(1 << 30)
    return bad


def timed(*args, env=None):
    t0 = time.monotonic()
    r = forkvm_cmd(*args, env=env, timeout=30)
    return r, time.monotonic() - t0


@needs_kvm
def test_fifo_vmstate_fails_verify_and_restore_at_once(snap, tmp_path):
    bad = variant(snap, "fifo-vmstate", "vmstate", "fifo")
    r, took = timed("snapshot", "verify", bad)
    assert r.returncode == 1 and "not a regular file" in r.stderr, r.stderr
    assert took < 1.0, took
    sock = str(tmp_path / "x.sock")
    r, took = timed("run", "--restore", bad, "--socket", sock)
    assert r.returncode == 1 and "not a regular file" in r.stderr, r.stderr
    assert took < 1.0, took
    r, _ = timed("snapshot", "verify", os.path.join(snap, "good"))
    assert r.returncode == 0, r.stderr


@pytest.fixture
def server(tmp_path):
    d = tempfile.mkdtemp(prefix="forkvm-harden-ps-")
    ps = PageServer(os.path.join(d, "ps.sock"))
    state = {"ps": ps, "run": os.path.join(d, "run"), "vms": []}
    os.makedirs(state["run"])
    yield state
    for vm in state["vms"]:
        vm.kill()
    ps.stop()
    shutil.rmtree(d, ignore_errors=True)


def uffd_restore(server, snapdir, name):
    env = dict(os.environ, FORKVM_RUN_DIR=server["run"])
    r, took = timed("restore", snapdir, "--backend", "uffd", "--count", "1", "--name", name,
                    "--pageserver", server["ps"].path, env=env)
    if r.returncode == 0:
        _, pid, sock = r.stdout.split()
        server["vms"].append(Child(sock, int(pid)))
    return r, took


@needs_kvm
@pytest.mark.parametrize("file,kind,needle", [
    ("hotpages", "fifo", "not a regular file"),
    ("access.log", "fifo", "not a regular file"),
    ("vmstate", "fifo", "not a regular file"),
    ("hotpages", "sparse", "1073741824 bytes, above the limit"),
    ("access.log", "sparse", "1073741824 bytes, above the limit"),
])
def test_page_server_refuses_bad_file_and_keeps_serving(snap, server, file, kind, needle):
    # a VM restored before the bad one must keep being served during and after it
    r, _ = uffd_restore(server, os.path.join(snap, "good"), "before")
    assert r.returncode == 0, r.stderr
    bad = variant(snap, f"{kind}-{file}", file, kind)
    r, took = uffd_restore(server, bad, "bad")
    assert r.returncode != 0 and needle in r.stderr, r.stderr
    assert took < 5.0, took  # a whole restore attempt, refused: no reading of a GiB
    r, took = uffd_restore(server, os.path.join(snap, "good"), "after")
    assert r.returncode == 0, r.stderr
    for vm in server["vms"]:
        # every page comes from the server: a stuck server would hang this
        assert vm.ok({"cmd": "checksum", "gpa": WORK, "len": 4 * MIB}, timeout=60)["checksum"]
    st = call(server["ps"].path, {"cmd": "status"}, timeout=10)
    assert st["ok"] and len(st["vms"]) == 2, st


# --- verify refuses what restore refuses ---------------------------------------------------------

SNAP_EDIT = os.path.join(os.path.dirname(FORKVM), "tools", "snap_edit")


@needs_kvm
@pytest.mark.parametrize("edit,needle", [
    (["add", "99", "0", "8"], "section type 99"),
    (["add", "21", "0", "8"], "'probe'"),                   # SNAP_SEC_PROBE: never written
    (["add", "4", "1", "144"], "unexpected section 'regs' instance 1"),  # a 1-vCPU snapshot
    (["add", "17", "1", "8"], "unexpected section 'clock' instance 1"),
    (["set-u64", "12", "0", "0"], "tsc_khz"),               # SNAP_SEC_TSC_KHZ of vCPU 0
    (["set-u64", "1", "0", "0"], "RAM size 0"),             # config: mem_size
    (["drop", "20", "0"], "section 'vsock' instance 0 is missing"),  # half a vsock device
    (["drop", "19", "0"], "section 'virtio_mmio' instance 0 is missing"),
    (["drop", "99", "0"], None),                            # no change: the good snapshot
])
def test_verify_and_restore_agree(snap, tmp_path, edit, needle):
    bad = os.path.join(snap, "edit-" + "-".join(edit))
    shutil.rmtree(bad, ignore_errors=True)
    subprocess.run(["cp", "-r", "--sparse=always", os.path.join(snap, "good"), bad], check=True)
    assert subprocess.run([SNAP_EDIT, bad, *edit]).returncode == 0
    verify = forkvm_cmd("snapshot", "verify", bad, timeout=30)
    sock = str(tmp_path / "x.sock")
    run = subprocess.Popen([FORKVM, "run", "--restore", bad, "--socket", sock],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if needle is None:
        assert verify.returncode == 0, verify.stderr
        deadline = time.monotonic() + 30
        while not os.path.exists(sock) and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert run.poll() is None, run.communicate()[1]
        run.kill()
        run.wait()
        return
    _, err = run.communicate(timeout=30)
    assert verify.returncode == 1 and needle in verify.stderr, verify.stderr
    assert run.returncode == 1 and needle in err, err


@needs_kvm
def test_large_access_log_is_read_in_steps(server, tmp_path):
    """A legitimate 2 MiB access log (1 GiB of RAM) loads over several event-loop steps."""
    import ctypes
    import ctypes.util
    import struct
    lib = ctypes.util.find_library("xxhash")
    if not lib:
        pytest.skip("libxxhash not found")
    xxh64 = ctypes.CDLL(lib).XXH64
    xxh64.restype = ctypes.c_uint64
    xxh64.argtypes = (ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint64)
    d = tempfile.mkdtemp(prefix="forkvm-harden-big-")
    try:
        src = VM(mem="1G")
        try:
            src.ok({"cmd": "fill", "gpa": WORK, "len": MIB, "seed": 9})
            src.ok({"cmd": "snapshot", "dir": os.path.join(d, "big")}, timeout=300)
        finally:
            src.stop()
        pages = (1 << 30) // 4096
        body = b"FKAL" + struct.pack("<IQ", 1, pages) + struct.pack("<Q", WORK // 4096) * pages
        log = body + struct.pack("<Q", xxh64(body, len(body), 0))
        with open(os.path.join(d, "big", "access.log"), "wb") as f:
            f.write(log)
        r, _ = uffd_restore(server, os.path.join(d, "big"), "big")
        assert r.returncode == 0, r.stderr
        st = call(server["ps"].path, {"cmd": "status"}, timeout=10)
        assert [v["access_log_pages"] for v in st["vms"]] == [pages], st
        # one byte more than one entry per page is refused before reading
        with open(os.path.join(d, "big", "access.log"), "ab") as f:
            f.write(b"\0" * 8)
        r, _ = uffd_restore(server, os.path.join(d, "big"), "big2")
        assert r.returncode != 0 and "above the limit" in r.stderr, r.stderr
    finally:
        shutil.rmtree(d, ignore_errors=True)
