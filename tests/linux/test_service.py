"""forkvmd with Linux guests (docs/DAEMON.md): the routes that reach the guest agent -- exec,
files -- and a branch whose children each run commands, all through the Python SDK. The
daemon's other routes: tests/integration/test_daemon.py (probe guest, this host's KVM)."""
import hashlib
import os
import time

import pytest

from daemonlib import Daemon, sdk


@pytest.fixture
def daemon():
    d = Daemon().start()
    yield d
    d.cleanup()


def test_linux_sandbox_exec_files_and_fork_through_the_sdk(daemon):
    vcpus = int(os.environ.get("FORKVM_LINUX_VCPUS", "2"))
    client = daemon.client()
    sb = sdk.Sandbox.create(guest="linux", mem_mib=256, vcpus=vcpus, client=client)
    r = sb.commands.run("python3 -c 'import json, sqlite3; print(2 + 2)'")
    assert (r.exit_code, r.stdout) == (0, b"4\n"), (r.exit_code, r.stdout, r.stderr)
    r = sb.exec(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (r.exit_code, r.stdout, r.stderr) == (3, b"out\n", b"err\n")
    assert sb.exec(["cat"], stdin=b"\x00\xffbytes").stdout == b"\x00\xffbytes"
    r = sb.exec(["sleep", "30"], timeout_ms=500)
    assert r.timed_out and r.signal == 9
    with pytest.raises(sdk.GuestError):
        sb.exec(["/no/such/program"])
    # streamed: the first line arrives while the command still sleeps; no output bound
    events, stamps = [], []
    for ev in sb.exec_stream("echo early; sleep 3; head -c 2097152 /dev/zero; echo late >&2"):
        events.append(ev)
        stamps.append(time.monotonic())
    assert events[0] == ("stdout", b"early\n") and events[-1][0] == "exit", events[:2]
    assert stamps[-1] - stamps[0] >= 2.5, "the first line came only at the end"
    assert events[-1][1].exit_code == 0
    assert sum(len(d) for k, d in events if k == "stdout") == 6 + (2 << 20)
    assert b"".join(d for k, d in events if k == "stderr") == b"late\n"
    data = bytes(range(256)) * 1000
    sb.files.write("/root/blob", data)
    assert sb.files.read("/root/blob") == data
    assert sb.exec(["sha256sum", "/root/blob"]).stdout.split()[0].decode() == \
        hashlib.sha256(data).hexdigest()
    with pytest.raises(sdk.GuestError):
        sb.files.read("/no/such/file")
    assert sb.eval("x = 41").error is None
    assert sb.eval("print(x + 1)").stdout == b"42\n"
    err = sb.eval("1 / 0").error
    assert err["name"] == "ZeroDivisionError", err
    with pytest.raises(sdk.Conflict) as e:  # its disk's base is the cached rootfs
        client.request("DELETE", "/v1/images/rootfs")
    assert e.value.code == "in_use"
    assert {i["kind"] for i in client.request("GET", "/v1/images")} == {"kernel", "rootfs"}
    sb.files.write("/root/marker", "before the fork\n")
    kids = sb.fork(count=2)
    uuids = {sb.exec(["cat", "/proc/sys/kernel/random/uuid"]).stdout}
    for k in kids:
        assert k.files.read("/root/marker") == b"before the fork\n"
        k.files.write("/root/marker", f"child {k.id}\n")
        uuids.add(k.exec(["cat", "/proc/sys/kernel/random/uuid"]).stdout)
        assert k.eval("x").result == "41"  # the warm interpreter came along
        k.eval("x = 0")
    assert sb.files.read("/root/marker") == b"before the fork\n"
    assert sb.eval("x").result == "41"
    assert len(uuids) == 3, uuids
    for k in kids:
        k.kill()
    sb.kill()
    assert sdk.Sandbox.list(client=client) == []


def test_a_guest_that_is_not_ready_in_time_is_a_clear_error(daemon):
    client = daemon.client()
    with pytest.raises(sdk.Unavailable) as e:
        sdk.Sandbox.create(guest="linux", mem_mib=256, ready_timeout_ms=1000, client=client)
    assert e.value.status == 504 and e.value.code == "agent_not_ready", e.value
    assert "did not answer within 1000 ms" in e.value.message and "its log" in e.value.message
    assert sdk.Sandbox.list(client=client) == []  # the VM was ended and forgotten
