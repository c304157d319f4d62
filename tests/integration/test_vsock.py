"""virtio-vsock with a real guest: the probe guest drives virtio-mmio by polling and echoes
every connection; the host speaks the Firecracker-style CONNECT protocol to the VM's socket."""
import hashlib
import os
import threading

import pytest

from forkvm_vm import VM
from vsock_client import recv_exact, vsock_connect

pytestmark = pytest.mark.kvm
PORT = 5000


@pytest.fixture(scope="module")
def echo_vm(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("vsock") / "v.sock")
    vm = VM(mem="64M", extra=("--vsock", path, "--vsock-cid", "7"))
    vm.vsock = path
    # Before a driver exists the device refuses connections (no OK, closed).
    s, hp = vsock_connect(path, PORT)
    assert hp is None
    s.close()
    r = vm.ok({"cmd": "vsock_listen", "port": PORT})
    assert r["result"][0] == 7  # the guest read its CID from the device's config space
    yield vm
    assert vm.stop() == 0
    assert not os.path.exists(path)  # the socket file goes with the VM


def test_echo(echo_vm):
    s, hp = vsock_connect(echo_vm.vsock, PORT)
    assert hp >= 1 << 30
    for msg in (b"x", b"hello vsock\n", os.urandom(5000)):
        s.sendall(msg)
        assert recv_exact(s, len(msg)) == msg
    s.close()


def test_concurrent_connections(echo_vm):
    n, size = 6, 512 << 10
    errors, ports = [], set()

    def one(i):
        try:
            s, hp = vsock_connect(echo_vm.vsock, PORT, timeout=60)
            ports.add(hp)
            data = bytes([i]) * 7 + os.urandom(size)
            t = threading.Thread(target=s.sendall, args=(data,))
            t.start()
            got = recv_exact(s, len(data))
            t.join()
            if got != data:
                errors.append(f"connection {i}: echoed bytes differ")
            s.close()
        except Exception as e:  # pylint: disable=broad-except
            errors.append(f"connection {i}: {e!r}")

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(ports) == n  # each connection got its own host port


def test_16mib_stream_with_credit(echo_vm):
    """16 MiB through a 256 KiB guest window and a 256 KiB host window: only credit-based
    flow control in both directions keeps every byte (the guest drops what exceeds its ring,
    the host resets a connection that overruns its credit)."""
    before = echo_vm.ok({"cmd": "vsock_stats"})["result"][1]
    data = os.urandom(16 << 20)
    s, _ = vsock_connect(echo_vm.vsock, PORT, timeout=120)
    t = threading.Thread(target=s.sendall, args=(data,))
    t.start()
    got = recv_exact(s, len(data))
    t.join()
    s.close()
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    after = echo_vm.ok({"cmd": "vsock_stats"})["result"][1]
    assert after - before == len(data)  # the guest's own count of echoed bytes


def test_refused_port(echo_vm):
    s, hp = vsock_connect(echo_vm.vsock, PORT + 1)
    assert hp is None  # guest answered RST: closed without OK
    s.close()


def test_bad_connect_line(echo_vm):
    import socket
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(echo_vm.vsock)
    s.sendall(b"LISTEN 5\n")
    assert s.recv(16) == b""
    s.close()
    # The device still serves good connections afterwards.
    s, hp = vsock_connect(echo_vm.vsock, PORT)
    s.sendall(b"ok?")
    assert recv_exact(s, 3) == b"ok?"
    s.close()


def test_client_close_is_seen_by_guest(echo_vm):
    accepted = echo_vm.ok({"cmd": "vsock_stats"})["result"][0]
    for _ in range(10):  # more than the guest's 8 connection slots: closed ones are freed
        s, hp = vsock_connect(echo_vm.vsock, PORT)
        assert hp is not None
        s.sendall(b"a")
        assert recv_exact(s, 1) == b"a"
        s.close()
    assert echo_vm.ok({"cmd": "vsock_stats"})["result"][0] == accepted + 10


def test_probe_still_answers(echo_vm):
    r = echo_vm.ok({"cmd": "ping", "nonce": 99})
    assert r["counter"] > 0


def test_snapshot_restore_resets_connections(echo_vm, tmp_path):
    """Queues survive a snapshot, connections do not: the restored guest gets a transport
    reset event, and new connections through the restored VMM's socket work."""
    import subprocess
    from forkvm_vm import FORKVM, Child

    # Fill all 8 of the guest's connection slots: after the restore a new connection is
    # accepted only if the transport reset event freed them.
    olds = [vsock_connect(echo_vm.vsock, PORT)[0] for _ in range(8)]
    for o in olds:
        o.sendall(b"before")
        assert recv_exact(o, 6) == b"before"
    refused, hp = vsock_connect(echo_vm.vsock, PORT)
    assert hp is None  # the slots really are full
    refused.close()
    old = olds[0]
    snap = str(tmp_path / "snap")
    echo_vm.ok({"cmd": "snapshot", "dir": snap})
    path = str(tmp_path / "restored.vsock")
    r = subprocess.run([FORKVM, "run", "--restore", snap, "--vsock", path, "--detach",
                        "--socket", str(tmp_path / "r.sock")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    pid, sock = r.stdout.split()
    child = Child(sock, int(pid))
    try:
        s, hp = vsock_connect(path, PORT)
        assert hp is not None
        s.sendall(b"after restore")
        assert recv_exact(s, 13) == b"after restore"
        s.close()
        # The source VM and its connection are untouched.
        old.sendall(b"still")
        assert recv_exact(old, 5) == b"still"
    finally:
        for o in olds:
            o.close()
        assert child.stop() == 0
