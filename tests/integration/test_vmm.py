"""VMM foundation on real KVM: boot the probe guest, command it, pause/resume, clean shutdown."""
import os
import re
import signal
import socket
import subprocess
import time

import pytest

from forkvm_vm import FORKVM, VM, WORK, call, range_hash_of_fill

pytestmark = pytest.mark.kvm


@pytest.fixture
def vm():
    v = VM(mem="64M")
    yield v
    v.kill()


def test_boot_then_ping(vm):
    reply = vm.ok({"cmd": "ping", "nonce": 99})
    assert reply["vcpu"] == 0
    assert vm.mailbox()["magic"] == 0x45424F5250564B46
    assert vm.stop() == 0


def test_fill_checksum_matches_host_hash(vm):
    length = 8 << 20
    vm.ok({"cmd": "fill", "gpa": WORK, "len": length, "seed": 42})
    guest = vm.ok({"cmd": "checksum", "gpa": WORK, "len": length})["checksum"]
    host = vm.ok({"cmd": "memhash", "gpa": WORK, "len": length})["checksum"]
    assert guest == host
    # An independent Python implementation agrees on a small range.
    small = vm.ok({"cmd": "checksum", "gpa": WORK, "len": 64 << 10})["checksum"]
    assert int(small, 16) == range_hash_of_fill(WORK, 64 << 10, 42)
    # A different seed gives a different image.
    vm.ok({"cmd": "fill", "gpa": WORK, "len": length, "seed": 43})
    assert vm.ok({"cmd": "checksum", "gpa": WORK, "len": length})["checksum"] != guest


def check_dirty_consistent(vm, c0, pages):
    """At a pause: counter == c0 + iterations, and every page holds the stamp it must."""
    mb = vm.mailbox()
    n = mb["dirty_iters"]
    # The guest stores the counter, then dirty_iters: a pause may fall between the two, when
    # iteration n is complete but not yet counted in dirty_iters. Anything else is lost work.
    done = mb["counter"] - c0
    assert done in (n, n + 1), f"lost or duplicated work: counter {mb['counter']}, c0 {c0}, iters {n}"
    data = vm.peek(WORK, pages * 4096)
    stamp = lambda p: int.from_bytes(data[p * 4096:p * 4096 + 8], "little")
    # Iteration `done - pages` shares its page with iteration `done`, checked below.
    for j in range(max(0, done - pages + 1), done):
        assert stamp(j % pages) == c0 + j, f"page {j % pages} after {done} iterations"
    # Iteration `done` may have been interrupted after its stamp but before the counter moved:
    # its page holds iteration `done - pages`'s stamp, or its own.
    if done >= pages:
        assert stamp(done % pages) in (c0 + done - pages, c0 + done)
    return mb


def test_200_pause_resume_cycles_while_dirty(vm):
    pages = 16
    c0 = vm.ok({"cmd": "dirty", "pages": pages, "stride": 1, "seed": 5})["counter"]
    for _ in range(200):
        vm.ok({"cmd": "pause"})
        mb = check_dirty_consistent(vm, c0, pages)
        time.sleep(0.002)
        assert vm.mailbox() == mb, "guest memory changed while paused"
        vm.ok({"cmd": "resume"})
        deadline = time.monotonic() + 5
        while vm.mailbox()["dirty_iters"] == mb["dirty_iters"]:
            assert time.monotonic() < deadline, "guest made no progress after resume"
    vm.ok({"cmd": "dirty", "pages": 0})
    status = vm.ok({"cmd": "status"})
    assert status["pause_count"] == 200 and status["state"] == "running"


def test_pause_twice_and_resume_unpaused_are_errors(vm):
    vm.ok({"cmd": "pause"})
    assert "already paused" in vm.call({"cmd": "pause"})["error"]
    assert vm.ok({"cmd": "status"})["state"] == "paused"
    vm.ok({"cmd": "resume"})
    assert "not paused" in vm.call({"cmd": "resume"})["error"]


def test_vcpus_says_what_each_vcpu_does_and_leaves_the_run_state():
    vm = VM(mem="64M", vcpus=2)
    try:
        vm.ok({"cmd": "dirty", "vcpu": 1, "gpa": WORK, "pages": 4})
        text = vm.ok({"cmd": "vcpus"})["vcpus"]
        parts = text.split("; ")
        assert [p.split(" (")[0] for p in parts] == ["vcpu 0", "vcpu 1"], text
        for p in parts:
            assert re.search(r"\(\d+ exits to forkvm\): \S+, rip 0x[0-9a-f]+, IF [01], "
                             r"pending: NMI \d+", p), text
        assert vm.ok({"cmd": "status"})["state"] == "running"
        before = vm.mailbox(1)["dirty_iters"]
        deadline = time.monotonic() + 5
        while vm.mailbox(1)["dirty_iters"] == before:
            assert time.monotonic() < deadline, "vcpu 1 did not run on after the look"
        vm.ok({"cmd": "pause"})
        assert "vcpu 1 (" in vm.ok({"cmd": "vcpus"})["vcpus"]
        assert vm.ok({"cmd": "status"})["state"] == "paused"
        vm.ok({"cmd": "resume"})
    finally:
        assert vm.stop() == 0


def test_probe_command_waits_for_resume(vm):
    vm.ok({"cmd": "pause"})
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(vm.sock)
        s.sendall(b'{"cmd":"ping"}\n')
        s.settimeout(0.3)
        with pytest.raises(socket.timeout):
            s.recv(100)  # paused: the guest cannot answer
        vm.ok({"cmd": "resume"})
        s.settimeout(10)
        assert b'"ok":true' in s.recv(1000)


def test_two_vcpus():
    vm = VM(mem="64M", vcpus=2)
    try:
        for v in (0, 1):
            assert vm.ok({"cmd": "ping", "vcpu": v})["vcpu"] == v
        vm.ok({"cmd": "fill", "vcpu": 1, "gpa": WORK, "len": 1 << 20, "seed": 9})
        a = vm.ok({"cmd": "checksum", "vcpu": 0, "gpa": WORK, "len": 1 << 20})["checksum"]
        b = vm.ok({"cmd": "checksum", "vcpu": 1, "gpa": WORK, "len": 1 << 20})["checksum"]
        assert a == b
        vm.ok({"cmd": "dirty", "vcpu": 0, "gpa": WORK, "pages": 8})
        vm.ok({"cmd": "dirty", "vcpu": 1, "gpa": WORK + (1 << 20), "pages": 8})
        time.sleep(0.05)
        vm.ok({"cmd": "pause"})
        m0, m1 = vm.mailbox(0), vm.mailbox(1)
        assert m0["dirty_iters"] > 0 and m1["dirty_iters"] > 0
        time.sleep(0.02)
        assert (vm.mailbox(0), vm.mailbox(1)) == (m0, m1), "a vCPU ran while paused"
        vm.ok({"cmd": "resume"})
        assert "vcpu 2" in vm.call({"cmd": "ping", "vcpu": 2})["error"]
    finally:
        assert vm.stop() == 0


def test_memfd_backing_is_shared_memory():
    vm = VM(mem="32M", backing="memfd")
    try:
        vm.ok({"cmd": "fill", "gpa": WORK, "len": 1 << 20, "seed": 3})
        lines = [l for l in open(f"/proc/{vm.proc.pid}/maps") if "forkvm-guest-ram" in l]
        assert lines and lines[0].split()[1] == "rw-s", lines
        assert vm.ok({"cmd": "status"})["backing"] == "memfd"
    finally:
        vm.stop()


BAD_REQUESTS = [
    (b"not json\n", "invalid JSON"),
    (b"[1,2]\n", "JSON object"),
    (b'{"nocmd":1}\n', "'cmd'"),
    (b'{"cmd":5}\n', "'cmd'"),
    (b'{"cmd":"explode"}\n', "unknown command"),
    (b'{"cmd":"fill","gpa":4194304}\n', "needs field 'len'"),
    (b'{"cmd":"fill","gpa":"x","len":4096}\n', "'gpa'"),
    (b'{"cmd":"fill","gpa":-4096,"len":4096}\n', "'gpa'"),
    (b'{"cmd":"status","bogus":1}\n', "no field 'bogus'"),
    (b'{"cmd":"fill","gpa":0,"len":4096}\n', "work area"),
    (b'{"cmd":"fill","gpa":4194305,"len":4096}\n', "work area"),
    (b'{"cmd":"checksum","gpa":4194304,"len":1099511627776}\n', "work area"),
    (b'{"cmd":"dirty","pages":5,"stride":0}\n', "work area"),
    (b'{"cmd":"ping","vcpu":7}\n', "vcpu 7"),
    (b'{"cmd":"peek","gpa":0,"len":100000}\n', "65536"),
    (b'{"cmd":"memhash","gpa":1,"len":4096}\n', "page aligned"),
    (b'{"cmd":"ping","cmd":"stop"}\n', "duplicate"),
]


@pytest.mark.parametrize("raw,needle", BAD_REQUESTS)
def test_bad_requests_get_errors_and_vm_keeps_running(vm, raw, needle):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(vm.sock)
        s.sendall(raw)
        reply = s.recv(4096).decode()
    assert '"ok":false' in reply and needle in reply, reply
    vm.ok({"cmd": "ping"})


def test_overlong_line_is_rejected_and_connection_closed(vm):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(vm.sock)
        s.sendall(b"x" * 70000)
        reply = s.recv(4096).decode()
        assert "longer than" in reply
    vm.ok({"cmd": "ping"})


def test_pipelined_requests_on_one_connection(vm):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(vm.sock)
        s.sendall(b'{"cmd":"ping","id":1}\n{"cmd":"status","id":2}\n{"cmd":"ping","id":3}\n')
        buf = b""
        while buf.count(b"\n") < 3:
            buf += s.recv(65536)
    ids = [line for line in buf.decode().splitlines()]
    assert len(ids) == 3 and '"id": 2' not in ids[0]


def test_stop_leaves_no_process_socket_or_fd_growth(vm):
    base = vm.fd_count()
    for _ in range(50):
        call(vm.sock, {"cmd": "status"})
    clients = [socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(20)]
    for c in clients:
        c.connect(vm.sock)
    for c in clients:
        c.close()
    vm.ok({"cmd": "ping"})
    # The loop closes its side when it sees each EOF: give it a moment to drain them.
    deadline = time.monotonic() + 5
    while vm.fd_count() > base:
        assert time.monotonic() < deadline, f"fds grew from {base} to {vm.fd_count()}"
        time.sleep(0.01)
    pid = vm.proc.pid
    assert subprocess.run([FORKVM, "stop", vm.sock]).returncode == 0
    assert vm.proc.wait(timeout=10) == 0
    assert not os.path.exists(vm.sock)
    assert not os.path.exists(f"/proc/{pid}")


def test_sigterm_stops_cleanly(vm):
    vm.ok({"cmd": "dirty", "pages": 4})
    vm.proc.send_signal(signal.SIGTERM)
    assert vm.proc.wait(timeout=10) == 0
    assert not os.path.exists(vm.sock)


def test_guest_crash_ends_vm_with_status_3(vm):
    reply = vm.call({"cmd": "crash"})
    assert reply["ok"] is False and "ended" in reply["error"]
    assert vm.proc.wait(timeout=10) == 3
    assert "triple fault" in vm.stderr()


def test_guest_log_reaches_vmm_log(vm):
    vm.ok({"cmd": "ping"})
    assert "probe guest up on vcpu 0" in vm.stderr()


def test_socket_in_use_is_refused(vm):
    r = subprocess.run([FORKVM, "run", "--socket", vm.sock, "--mem", "16M"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "already answers" in r.stderr
    vm.ok({"cmd": "ping"})
