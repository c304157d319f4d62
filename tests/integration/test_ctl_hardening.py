"""Control socket against a hostile local client: slow readers, pipelining, out-of-range
integers, vsock without a device, idle connections, --force on foreign directories, stale
snapshot temp dirs of zombie writers. Every test checks that the VM is unharmed after."""
import json
import os
import select
import signal
import socket
import subprocess
import threading
import time

import pytest

from forkvm_vm import VM, WORK, kill_all, read_line

pytestmark = pytest.mark.kvm


@pytest.fixture
def vm():
    v = VM(mem="64M")
    yield v
    v.kill()


def connect(vm, timeout=10):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(vm.sock)
    return s


def timed_status(vm):
    t0 = time.monotonic()
    reply = vm.call({"cmd": "status"}, timeout=10)
    return reply, time.monotonic() - t0


def read_lines(s, n):
    """n reply lines from s (which may hold more than one line per recv)."""
    buf = b""
    while buf.count(b"\n") < n:
        try:
            chunk = s.recv(1 << 20)
        except ConnectionResetError:
            break  # closed with our unread requests in its queue: EOF as a reset
        if not chunk:
            break
        buf += chunk
    return [json.loads(line) for line in buf.split(b"\n") if line]


def assert_healthy(vm):
    assert vm.proc.poll() is None, vm.stderr()
    assert vm.ok({"cmd": "ping", "nonce": 7})["vcpu"] == 0
    assert vm.ok({"cmd": "status"})["state"] == "running"


def test_unread_replies_do_not_stall_the_loop(vm):
    peek = (json.dumps({"cmd": "peek", "gpa": WORK, "len": 65536}) + "\n").encode()
    hog = connect(vm)
    hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    hog.sendall(peek * 40)  # about 3.5 MB of replies, never read
    time.sleep(0.5)
    reply, took = timed_status(vm)
    assert reply["ok"] and took < 1.0, f"status took {took:.2f} s behind an unread client"
    assert_healthy(vm)
    # Past 4 MiB of unsent replies the client is cut off, and the VMM says so.
    big = connect(vm)
    big.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    big.sendall(peek * 80)
    deadline = time.monotonic() + 10
    while "unread replies" not in vm.stderr() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "unread replies" in vm.stderr()
    reply, took = timed_status(vm)
    assert reply["ok"] and took < 1.0
    # SIGTERM is not held up by the unread replies either.
    t0 = time.monotonic()
    vm.proc.send_signal(signal.SIGTERM)
    vm.proc.wait(timeout=10)
    assert time.monotonic() - t0 < 2.0
    hog.close()
    big.close()


def test_pipelined_lines_behind_a_waiting_request_all_answered(vm):
    vm.ok({"cmd": "pause"})
    s = connect(vm, timeout=30)
    n = 3000  # ~130 KiB of requests: twice the 64 KiB input buffer, behind a waiting ping
    lines = [json.dumps({"cmd": "ping", "nonce": 5, "id": "p"})]
    lines += [json.dumps({"cmd": "status", "id": i}) for i in range(n)]
    data = ("\n".join(lines) + "\n").encode()
    sender = threading.Thread(target=s.sendall, args=(data,))
    sender.start()
    time.sleep(0.5)
    vm.ok({"cmd": "resume"})  # the ping completes; everything behind it follows, in order
    replies = read_lines(s, n + 1)
    sender.join(timeout=30)
    assert len(replies) == n + 1
    assert replies[0]["ok"] and replies[0]["id"] == "p"
    assert [r["id"] for r in replies[1:]] == list(range(n))
    assert all(r["ok"] for r in replies)
    s.close()
    assert_healthy(vm)


def test_half_closed_client_still_gets_every_reply(vm):
    s = connect(vm)
    peek = json.dumps({"cmd": "peek", "gpa": WORK, "len": 65536, "id": "peek"})
    s.sendall(("\n".join([json.dumps({"cmd": "ping", "id": "ping"}), peek,
                          json.dumps({"cmd": "status", "id": "status"})]) + "\n").encode())
    s.shutdown(socket.SHUT_WR)
    replies = read_lines(s, 4)
    assert [r["id"] for r in replies] == ["ping", "peek", "status"], replies
    assert all(r["ok"] for r in replies)
    s.close()
    assert_healthy(vm)


def test_line_over_the_cap_is_answered_then_closed(vm):
    s = connect(vm)
    s.sendall(b'{"cmd":"status","id":1}\n' + b"x" * (70 << 10))
    replies = read_lines(s, 3)
    assert replies[0]["ok"] and replies[0]["id"] == 1
    assert not replies[1]["ok"] and "longer than 65536" in replies[1]["error"]
    assert len(replies) == 2  # then EOF
    s.close()
    assert_healthy(vm)


@pytest.mark.parametrize("request_, field, rng", [
    ({"cmd": "ping", "vcpu": 4294967296}, "vcpu", "0..15"),
    ({"cmd": "counter", "vcpu": 16}, "vcpu", "0..15"),
    ({"cmd": "vsock_listen", "port": 4294967296}, "port", "0..4294967295"),
    ({"cmd": "branch", "strategy": "cow", "prefix": "c", "run_dir": "/tmp",
      "timeout_ms": 4294967295}, "timeout_ms", "0..2147483647"),
    ({"cmd": "branch", "strategy": "cow", "prefix": "c", "run_dir": "/tmp",
      "count": 4294967297}, "count", "0..1000"),
])
def test_out_of_range_integers_are_refused(vm, request_, field, rng):
    before = vm.mailbox()["cmd_seq"]
    reply = vm.call(request_)
    assert not reply["ok"]
    assert f"field '{field}'" in reply["error"] and rng in reply["error"], reply
    assert vm.mailbox()["cmd_seq"] == before  # nothing reached the guest
    assert_healthy(vm)


def test_vsock_listen_without_vsock_is_refused(vm):
    reply = vm.call({"cmd": "vsock_listen", "port": 52})
    assert not reply["ok"] and "no vsock device" in reply["error"], reply
    assert_healthy(vm)


def test_vsock_listen_with_bogus_mmio_is_refused(tmp_path):
    v = VM(mem="64M", extra=("--vsock", str(tmp_path / "v.sock")))
    try:
        for mmio in (0x1000, 0xd0001000, 0xfee00000):
            reply = v.call({"cmd": "vsock_listen", "port": 52, "mmio": mmio})
            assert not reply["ok"] and "'mmio'" in reply["error"], reply
        assert_healthy(v)
        assert v.ok({"cmd": "vsock_listen", "port": 52})["result"][0] == 3
        assert_healthy(v)
    finally:
        v.kill()


def test_idle_client_is_closed(monkeypatch):
    monkeypatch.setenv("FORKVM_CTL_IDLE_MS", "500")
    v = VM(mem="64M")
    try:
        s = connect(v)
        busy = connect(v)
        t0 = time.monotonic()
        for _ in range(6):  # a client that keeps talking is not idle
            time.sleep(0.2)
            busy.sendall(b'{"cmd":"status"}\n')
            assert json.loads(read_line(busy))["ok"]
        replies = read_lines(s, 2)  # the idle one: a last word, then EOF
        took = time.monotonic() - t0
        assert len(replies) == 1 and "idle" in replies[0]["error"], replies
        assert 0.4 < took < 3, took
        assert_healthy(v)
        s.close()
        busy.close()
    finally:
        v.kill()


def test_full_table_drops_the_oldest_idle_client(vm):
    conns = [connect(vm) for _ in range(64)]
    for i, c in enumerate(conns):  # each one active once, in order: conns[0] is the oldest
        c.sendall(json.dumps({"cmd": "status", "id": i}).encode() + b"\n")
        assert json.loads(read_line(c))["id"] == i
    reply, took = timed_status(vm)
    assert reply["ok"] and took < 1.0
    last = read_lines(conns[0], 2)
    assert len(last) == 1 and "connection table is full" in last[0]["error"], last
    conns[1].sendall(b'{"cmd":"status"}\n')  # the others are still served
    assert json.loads(read_line(conns[1]))["ok"]
    for c in conns:
        c.close()
    assert_healthy(vm)


def test_force_refuses_a_directory_that_only_has_a_vmstate(vm, tmp_path):
    victim = tmp_path / "precious"
    victim.mkdir()
    (victim / "vmstate").write_bytes(b"my own data")
    (victim / "thesis.tex").write_text("years of work")
    reply = vm.call({"cmd": "snapshot", "dir": str(victim), "force": True})
    assert not reply["ok"]
    assert "not a complete forkvm snapshot" in reply["error"] and "meta.json" in reply["error"]
    (victim / "meta.json").write_text('{"format_version": 1}')
    reply = vm.call({"cmd": "snapshot", "dir": str(victim), "force": True})
    assert not reply["ok"] and "FKVMSNAP" in reply["error"], reply
    assert (victim / "thesis.tex").read_text() == "years of work"
    # A real snapshot is replaced.
    snap = str(tmp_path / "snap")
    vm.ok({"cmd": "snapshot", "dir": snap})
    vm.ok({"cmd": "snapshot", "dir": snap, "force": True})
    assert sorted(os.listdir(snap)) == ["memory", "meta.json", "vmstate"]
    assert_healthy(vm)


def test_force_does_not_hang_on_a_planted_fifo(vm, tmp_path):
    victim = tmp_path / "fifo"
    victim.mkdir()
    os.mkfifo(victim / "meta.json")
    (victim / "vmstate").write_bytes(b"FKVMSNAP")
    reply = vm.call({"cmd": "snapshot", "dir": str(victim), "force": True}, timeout=10)
    assert not reply["ok"] and "not a regular file" in reply["error"], reply
    assert_healthy(vm)


def wait_zombie(pid):
    for _ in range(2000):
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                return
        time.sleep(0.001)
    raise AssertionError(f"{pid} never became a zombie")


def test_stale_tmp_of_zombie_or_foreign_pid_is_cleaned(vm, tmp_path):
    snap = tmp_path / "snap"
    zombie = subprocess.Popen(["true"])  # exits; not reaped until the end of the test
    wait_zombie(zombie.pid)
    ztmp = tmp_path / f"snap.tmp-{zombie.pid}"
    foreign = tmp_path / f"snap.tmp-{os.getpid()}"  # alive, but a python, not a forkvm
    for d in (ztmp, foreign):
        d.mkdir()
        (d / "memory").write_bytes(b"half-written")
    vm.ok({"cmd": "snapshot", "dir": str(snap)})
    assert not ztmp.exists() and not foreign.exists()
    assert sorted(os.listdir(tmp_path)) == ["snap"]
    zombie.wait()
    assert_healthy(vm)


def poll_status_until_answered(v, s):
    """Ask status (and peek) until s has its reply; returns (reply, worst status s, polls)."""
    worst, answered, polls = 0.0, None, 0
    while answered is None:
        reply, took = timed_status(v)
        assert reply["ok"]
        worst = max(worst, took)
        polls += 1
        assert v.peek(WORK, 4096)
        if select.select([s], [], [], 0.05)[0]:
            answered = json.loads(read_line(s))
    return answered, worst, polls


def filled_1g_vm():
    v = VM(mem="1G")
    v.ok({"cmd": "fill", "gpa": WORK, "len": (1 << 30) - (8 << 20), "seed": 3}, timeout=120)
    return v


def test_snapshot_runs_off_the_loop(tmp_path):
    v = filled_1g_vm()
    try:
        s = connect(v, timeout=120)
        s.sendall(json.dumps({"cmd": "snapshot", "dir": str(tmp_path / "big"), "id": "snap"})
                  .encode() + b"\n")
        time.sleep(0.05)
        # A probe request and a pause wait for the snapshot; status and peek do not.
        later = connect(v, timeout=120)
        later.sendall(b'{"cmd":"ping","nonce":9,"id":"ping"}\n{"cmd":"pause","id":"pause"}\n')
        answered, worst, polls = poll_status_until_answered(v, s)
        assert answered["ok"] and answered["id"] == "snap", answered
        assert answered["memory_bytes_written"] >= (1 << 30) - (8 << 20)
        assert worst < 1.0, f"status took {worst:.2f} s during the snapshot"
        assert polls >= 2, "the snapshot finished before status could be asked"
        print(f"snapshot write {answered['write_ms']:.0f} ms, {polls} status polls, "
              f"worst {worst * 1000:.0f} ms")
        held = read_lines(later, 2)
        assert [r["id"] for r in held] == ["ping", "pause"] and all(r["ok"] for r in held), held
        v.ok({"cmd": "resume"})
        assert_healthy(v)
        s.close()
        later.close()
    finally:
        v.kill()


def test_branch_runs_off_the_loop(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    v = filled_1g_vm()
    kids = []
    try:
        s = connect(v, timeout=300)
        s.sendall(json.dumps({"cmd": "branch", "strategy": "full", "count": 1, "prefix": "k",
                              "run_dir": str(run), "dir": str(tmp_path / "snap"),
                              "paused": True, "id": "br"}).encode() + b"\n")
        answered, worst, polls = poll_status_until_answered(v, s)
        assert answered["ok"] and answered["id"] == "br", answered
        kids = [c["pid"] for c in answered["children"]]
        assert worst < 1.0 and polls >= 2, (worst, polls)
        print(f"branch {answered['total_ms']:.0f} ms, {polls} status polls, "
              f"worst {worst * 1000:.0f} ms")
        assert_healthy(v)
        s.close()
    finally:
        kill_all(kids)
        v.kill()
