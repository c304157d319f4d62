"""Socket and path security: 0600 sockets in 0700 directories whatever the umask, peers of
another uid refused (even on a 0666 socket), path-bearing request fields confined to the
configured roots, and the one stale-socket rule shared by all three listeners."""
import os
import shutil
import socket
import stat
import subprocess
import tempfile
import time

import pytest

from forkvm_vm import FORKVM, VM, Child, call

pytestmark = pytest.mark.kvm
NOBODY = 65534


def mode(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


class PageServer:
    def __init__(self, path):
        self.path = path
        self.log = os.path.join(os.path.dirname(os.path.dirname(path)), "ps.log")
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([FORKVM, "pageserver", "--socket", path], stdout=log,
                                         stderr=log, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                call(path, {"cmd": "status"}, timeout=10)
                return
            except OSError:
                assert self.proc.poll() is None, self.text()
                time.sleep(0.05)
        raise RuntimeError("page server did not come up: " + self.text())

    def text(self):
        with open(self.log, "rb") as f:
            return f.read().decode(errors="replace")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def world():
    """At umask 000: a VM with --vsock in a directory it creates, and a page server."""
    base = tempfile.mkdtemp(prefix="forkvm-sec-")
    old = os.umask(0)
    try:
        vm = VM(mem="64M", extra=("--vsock", os.path.join(base, "vs", "v.vsock")))
        ps = PageServer(os.path.join(base, "ps", "ps.sock"))
    finally:
        os.umask(old)
    yield {"base": base, "vm": vm, "ps": ps, "vsock": os.path.join(base, "vs", "v.vsock")}
    ps.stop()
    vm.stop()
    shutil.rmtree(base, ignore_errors=True)
    shutil.rmtree(vm.dir, ignore_errors=True)


def test_sockets_are_0600_in_0700_dirs_at_umask_000(world):
    for path in (world["vm"].sock, world["vsock"], world["ps"].path):
        assert stat.S_ISSOCK(os.lstat(path).st_mode), path
        assert mode(path) == 0o600, (path, oct(mode(path)))
        assert mode(os.path.dirname(path)) == 0o700, path
    # No staging directory is left behind.
    for d in (os.path.dirname(world["vsock"]), os.path.dirname(world["ps"].path)):
        assert not [n for n in os.listdir(d) if n.startswith(".forkvm-")]


def as_nobody(path, payload):
    """Connect as uid 65534 in a forked child; returns the bytes it got before EOF."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 2
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(10)
            s.connect(path)
            got = b""
            try:
                s.sendall(payload)
                while True:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    got += chunk
            except (ConnectionResetError, BrokenPipeError):
                pass
            os.write(w, b"C" + got)
            code = 0
        except BaseException as e:  # noqa: BLE001 - reported to the parent
            os.write(w, b"E" + repr(e).encode())
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        out = f.read()
    os.waitpid(pid, 0)
    assert out[:1] == b"C", out
    return out[1:]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become user nobody")
def test_other_user_refused_even_on_a_0666_socket(world):
    targets = [(world["vm"].sock, b'{"cmd":"status"}\n'),
               (world["vsock"], b"CONNECT 5000\n"),
               (world["ps"].path, b'{"cmd":"status"}\n')]
    # A careless admin opens everything up; the peer check still holds.
    os.chmod(world["base"], 0o711)
    for path, _ in targets:
        os.chmod(os.path.dirname(path), 0o711)
        os.chmod(path, 0o666)
    try:
        for path, payload in targets:
            assert as_nobody(path, payload) == b"", path
            assert as_nobody(path, payload) == b"", path
    finally:
        for path, _ in targets:
            os.chmod(path, 0o600)
            os.chmod(os.path.dirname(path), 0o700)
        os.chmod(world["base"], 0o700)
    # Our own uid still gets through, and the refusal was logged once per listener.
    assert world["vm"].ok({"cmd": "status"})["state"] == "running"
    assert call(world["ps"].path, {"cmd": "status"})["ok"] is True
    vmm_log = world["vm"].stderr()
    assert vmm_log.count("control socket: refused a connection from uid 65534") == 1, vmm_log
    assert vmm_log.count("vsock socket: refused a connection from uid 65534") == 1, vmm_log
    assert world["ps"].text().count("refused a connection from uid 65534") == 1


def refused(reply, field):
    assert reply["ok"] is False, reply
    assert f"'{field}'" in reply["error"], reply
    return reply["error"]


def test_path_fields_are_confined(world):
    vm, base = world["vm"], world["base"]
    outside = "/etc/forkvm-sec-test-snap"
    err = refused(vm.call({"cmd": "snapshot", "dir": outside}), "dir")
    assert "outside the allowed roots" in err and not os.path.exists(outside)
    refused(vm.call({"cmd": "snapshot", "dir": "/tmp/../etc/forkvm-sec-x"}), "dir")
    refused(vm.call({"cmd": "snapshot", "dir": vm.dir + "/./x"}), "dir")
    # A symlink inside a root that leads out of it is resolved and refused.
    link = os.path.join(base, "escape")
    os.symlink("/etc", link)
    refused(vm.call({"cmd": "snapshot", "dir": link + "/forkvm-sec-y"}), "dir")
    # A dangling symlink as the last component would be followed on creation.
    dangling = os.path.join(base, "dangling")
    os.symlink("/etc/forkvm-sec-z", dangling)
    refused(vm.call({"cmd": "snapshot", "dir": dangling}), "dir")
    assert not os.path.exists("/etc/forkvm-sec-z")
    # A root itself is not a snapshot directory (force would replace it).
    refused(vm.call({"cmd": "snapshot", "dir": "/tmp", "force": True}), "dir")
    br = {"cmd": "branch", "strategy": "full", "prefix": "c", "run_dir": vm.dir}
    refused(vm.call({**br, "run_dir": "/etc"}), "run_dir")
    refused(vm.call({**br, "run_dir": link}), "run_dir")
    refused(vm.call({**br, "dir": "/usr/forkvm-sec"}), "dir")
    for bad in ("../up", ".hidden", "a/b", ""):
        refused(vm.call({**br, "prefix": bad}), "prefix")
    # Inside a root it works: the VM's own run directory.
    snap = os.path.join(vm.dir, "snap")
    assert vm.ok({"cmd": "snapshot", "dir": snap})["dir"] == snap
    assert os.path.isdir(snap)


def test_snapshot_roots_env_replaces_the_defaults(tmp_path):
    root = tempfile.mkdtemp(prefix="forkvm-roots-", dir="/var/tmp")
    old = os.environ.get("FORKVM_SNAPSHOT_ROOTS")
    os.environ["FORKVM_SNAPSHOT_ROOTS"] = root + ":/nonexistent"
    try:
        vm = VM(mem="64M")
    finally:
        if old is None:
            del os.environ["FORKVM_SNAPSHOT_ROOTS"]
        else:
            os.environ["FORKVM_SNAPSHOT_ROOTS"] = old
    try:
        err = refused(vm.call({"cmd": "snapshot", "dir": str(tmp_path / "s")}), "dir")
        assert root in err
        vm.ok({"cmd": "snapshot", "dir": os.path.join(root, "s")})
        vm.ok({"cmd": "snapshot", "dir": os.path.join(vm.dir, "s")})  # its run dir stays
    finally:
        assert vm.stop() == 0
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(vm.dir, ignore_errors=True)


def start_failure(sock_path):
    """Run a VMM at sock_path that is expected not to start; returns its stderr."""
    r = subprocess.run([FORKVM, "run", "--mem", "64M", "--socket", sock_path,
                        "--console", "/dev/null"], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0, r
    return r.stderr


def test_stale_socket_replaced_regular_file_kept(tmp_path):
    d = tempfile.mkdtemp(prefix="forkvm-stale-")
    try:
        path = os.path.join(d, "vm.sock")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(path)
        s.close()  # the file stays, nobody listens: a dead VMM's leftover
        vm_sock = path
        old = os.umask(0)
        try:
            p = subprocess.Popen([FORKVM, "run", "--mem", "64M", "--socket", vm_sock,
                                  "--console", "/dev/null"], stderr=subprocess.PIPE)
        finally:
            os.umask(old)
        deadline = time.monotonic() + 30
        while True:
            try:
                assert call(vm_sock, {"cmd": "status"}, timeout=10)["ok"] is True
                break
            except OSError:
                assert p.poll() is None and time.monotonic() < deadline
                time.sleep(0.05)
        assert mode(vm_sock) == 0o600
        # A live socket is never taken over.
        assert "already answers" in start_failure(vm_sock)
        call(vm_sock, {"cmd": "stop"})
        p.wait(timeout=30)
        assert not os.path.exists(vm_sock)
        # A regular file where the socket would go is left alone.
        with open(path, "w") as f:
            f.write("precious")
        assert "is not a socket" in start_failure(path)
        assert open(path).read() == "precious"
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_unsafe_directories_refused():
    d = tempfile.mkdtemp(prefix="forkvm-dirs-")
    try:
        shared = os.path.join(d, "shared")
        os.mkdir(shared)
        os.chmod(shared, 0o777)
        assert "world-writable" in start_failure(os.path.join(shared, "vm.sock"))
        assert not os.listdir(shared)
        if os.geteuid() == 0:
            theirs = os.path.join(d, "theirs")
            os.mkdir(theirs, 0o700)
            os.chown(theirs, NOBODY, NOBODY)
            assert "owned by uid 65534" in start_failure(os.path.join(theirs, "vm.sock"))
            assert not os.listdir(theirs)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_socket_in_a_readable_directory_is_staged():
    """A 0755 directory (others may enter it): the socket is bound in a private staging
    directory and moved in already 0600, so no other user ever sees a wider mode."""
    d = tempfile.mkdtemp(prefix="forkvm-stage-")
    try:
        pub = os.path.join(d, "pub")
        os.mkdir(pub)
        os.chmod(pub, 0o755)
        old = os.umask(0)
        try:
            ps = PageServer(os.path.join(pub, "ps.sock"))
        finally:
            os.umask(old)
        try:
            assert mode(ps.path) == 0o600 and mode(pub) == 0o755
            assert os.listdir(pub) == ["ps.sock"]
        finally:
            ps.stop()
        assert not os.listdir(pub)
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become user nobody")
def test_cow_template_socket_refuses_other_users_and_keeps_serving(world):
    """The cow template's socket: 0600 like the others, and its accept checks the peer
    (SO_PEERCRED) as the control socket does, even when an admin opened the mode up."""
    run = os.path.join(world["base"], "tpl")
    os.mkdir(run, 0o700)
    reply = world["vm"].ok({"cmd": "branch", "strategy": "cow", "count": 1, "prefix": "t",
                            "run_dir": run, "paused": True}, timeout=300)
    tpl = reply["template"]
    kids = [Child(c["socket"], c["pid"]) for c in reply["children"]]
    try:
        assert tpl == os.path.join(run, "t.template.sock")
        assert stat.S_ISSOCK(os.lstat(tpl).st_mode) and mode(tpl) == 0o600, oct(mode(tpl))
        assert mode(run) == 0o700
        tpid = call(tpl, {"cmd": "status"})["pid"]
        os.chmod(world["base"], 0o711)
        os.chmod(run, 0o711)
        os.chmod(tpl, 0o666)
        try:
            # Refused unheard, a "stop" included; twice, the log says it once.
            assert as_nobody(tpl, b'{"cmd":"stop"}\n') == b""
            assert as_nobody(tpl, b'{"cmd":"status"}\n') == b""
        finally:
            os.chmod(tpl, 0o600)
            os.chmod(run, 0o700)
            os.chmod(world["base"], 0o700)
        # The template still serves its own uid: status, and a new child.
        status = call(tpl, {"cmd": "status"})
        assert status["ok"] and status["pid"] == tpid and status["live"] == 1, status
        more = call(tpl, {"cmd": "spawn", "count": 1, "paused": True})
        assert more["ok"], more
        kids += [Child(c["socket"], c["pid"]) for c in more["children"]]
        with open(tpl + ".log", errors="replace") as f:
            log = f.read()
        assert log.count("template socket: refused a connection from uid 65534") == 1, log
    finally:
        for k in kids:
            k.stop()
        try:
            call(tpl, {"cmd": "stop"}, timeout=10)
        except OSError:
            pass
