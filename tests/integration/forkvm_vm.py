"""Test helpers: start a forkvm VMM, talk to its control socket, check it cleans up."""
import base64
import hashlib
import json
import os
import socket
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.path.join(ROOT, os.environ.get("FORKVM_BUILD", "build"))
FORKVM = os.path.join(BUILD, "forkvm")
WORK = 4 << 20  # first guest-physical byte the probe commands may touch
MAILBOX = 0x30000  # probe mailbox of vCPU 0; vCPU i at + i * 4096

# `forkvm run` as root jails its VMM unless told not to (docs/SECURITY.md). The tests and
# benchmarks of each mechanism run their VMMs unjailed unless the environment says
# otherwise; the jail's own tests ask for it (--jail, or FORKVM_JAIL=1 in a test's env), and
# so do the tests of the default (test_jail.py, which drops this variable). A daemon is
# started without it (daemonlib.py): its VMMs are jailed, as in production.
JAIL_FROM_HARNESS = "FORKVM_JAIL" not in os.environ
os.environ.setdefault("FORKVM_JAIL", "0")


def call(sock_path, request, timeout=60):
    """Send one JSON request line, return the parsed reply."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(sock_path)
        s.sendall((json.dumps(request) + "\n").encode())
        return json.loads(read_line(s))


def read_line(s):
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = s.recv(1 << 20)
        if not chunk:
            raise ConnectionError("control socket closed before a full reply")
        buf += chunk
    return buf


class VM:
    """One forkvm VMM process running the probe guest."""

    def __init__(self, mem="64M", vcpus=1, backing="anon", extra=(), console=None):
        self.dir = tempfile.mkdtemp(prefix="forkvm-test-")
        self.sock = os.path.join(self.dir, "vm.sock")
        self.console = console or os.path.join(self.dir, "console.log")
        self.stderr_path = os.path.join(self.dir, "vmm.stderr")
        r, w = os.pipe()
        size = () if mem is None else ("--mem", str(mem), "--vcpus", str(vcpus))  # None: --restore
        args = [FORKVM, "run", *size, "--backing", backing,
                "--socket", self.sock, "--console", self.console, "--ready-fd", str(w), *extra]
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(args, pass_fds=(w,), stderr=err, stdin=subprocess.DEVNULL)
        os.close(w)
        self.ready_s = None
        t0 = time.monotonic()
        with os.fdopen(r, "rb") as rf:
            byte = rf.read(1)
        if byte != b"R":
            self.proc.wait(timeout=30)
            raise RuntimeError(f"VMM did not start (exit {self.proc.returncode}): {self.stderr()}")
        self.ready_s = time.monotonic() - t0

    def stderr(self):
        with open(self.stderr_path, "rb") as f:
            return f.read().decode(errors="replace")

    def call(self, request, timeout=60):
        return call(self.sock, request, timeout)

    def ok(self, request, timeout=60):
        reply = self.call(request, timeout)
        assert reply.get("ok") is True, f"{request} -> {reply}"
        return reply

    def peek(self, gpa, length):
        return base64.b64decode(self.ok({"cmd": "peek", "gpa": gpa, "len": length})["data"])

    def mailbox(self, vcpu=0):
        """Decode the fields of a probe mailbox the tests look at."""
        raw = self.peek(MAILBOX + vcpu * 4096, 256)
        u64 = lambda off: int.from_bytes(raw[off:off + 8], "little")
        return {"magic": u64(0), "cmd_seq": u64(16), "done_seq": u64(24),
                "counter": u64(0x78), "dirty_iters": u64(0x80),
                "dirty_active": int.from_bytes(raw[0x88:0x8c], "little")}

    def fd_count(self):
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def stop(self, timeout=30):
        if self.proc.poll() is None:
            try:
                self.call({"cmd": "stop"}, timeout=10)
            except (OSError, ConnectionError):
                pass
            self.proc.wait(timeout=timeout)
        return self.proc.returncode

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


def fill_word(seed, gpa):
    return (((gpa ^ seed) * 0x9E3779B97F4A7C15) + seed) & (2**64 - 1)


def mix64(x):
    m = 2**64 - 1
    x ^= x >> 33
    x = (x * 0xFF51AFD7ED558CCD) & m
    x ^= x >> 33
    x = (x * 0xC4CEB9FE1A85EC53) & m
    x ^= x >> 33
    return x


def page_hash(words):
    """Independent Python version of probe_page_hash() (guests/probe/probe_abi.h)."""
    m = 2**64 - 1
    lanes = [1, 2, 3, 4]
    for i in range(0, 512, 4):
        for k in range(4):
            lanes[k] = ((lanes[k] ^ words[i + k]) * 0x100000001B3) & m
    a, b, c, d = lanes
    return mix64(a ^ mix64(b ^ mix64(c ^ mix64(d))))


def range_hash_of_fill(gpa, length, seed):
    m = 2**64 - 1
    h = 0x6A09E667F3BCC908
    for page in range(gpa, gpa + length, 4096):
        words = [fill_word(seed, page + 8 * i) for i in range(512)]
        h = (mix64(h ^ page_hash(words)) + 0x9E3779B97F4A7C15) & m
    return h


def peek(vm, gpa, length):
    """length bytes of guest RAM at gpa, through the control socket's peek (64 KiB a call)."""
    out = b""
    while len(out) < length:
        n = min(65536, length - len(out))
        out += base64.b64decode(vm.ok({"cmd": "peek", "gpa": gpa + len(out), "len": n})["data"])
    return out


def proc_status(pid):
    """/proc/PID/status as {field: text}."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = v.strip()
    return out


def kill_all(pids):
    """SIGKILL each pid that still exists (a test's leftover VMMs)."""
    import signal
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def forkvm_cmd(*args, env=None, timeout=600):
    """Run the forkvm CLI; returns CompletedProcess with text output."""
    import subprocess as sp
    return sp.run([FORKVM, *args], capture_output=True, text=True, timeout=timeout, env=env)


def region_hashes(vm, mem_bytes):
    """Host-side hash of every RAM region (below 3 GiB, and from 4 GiB)."""
    low = min(mem_bytes, 3 << 30)
    out = [vm.ok({"cmd": "memhash", "gpa": 0, "len": low})["checksum"]]
    if mem_bytes > low:
        out.append(vm.ok({"cmd": "memhash", "gpa": 4 << 30, "len": mem_bytes - low})["checksum"])
    return out


def file_sha256(path):
    """SHA-256 of a host file's bytes, as hex (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class Child(VM):
    """A VMM started by `forkvm restore` / `run --restore`: attach by socket, stop via socket."""

    def __init__(self, sock, pid):  # pylint: disable=super-init-not-called
        self.sock = sock
        self.pid = pid
        self.proc = None
        self.stderr_path = sock + ".log"

    def fd_count(self):
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def alive(self):
        try:
            state = open(f"/proc/{self.pid}/stat").read().split(")")[-1].split()[0]
            return state != "Z"
        except FileNotFoundError:
            return False

    def stop(self, timeout=30):
        r = forkvm_cmd("stop", self.sock)
        return r.returncode

    def kill(self):
        if self.alive():
            os.kill(self.pid, 9)


def restore_children(snapdir, backend, count, run_dir, name="c", extra=()):
    env = dict(os.environ, FORKVM_RUN_DIR=run_dir)
    r = forkvm_cmd("restore", snapdir, "--backend", backend, "--count", str(count), "--name", name,
                   *extra, env=env)
    children = []
    if r.returncode == 0:
        for line in r.stdout.splitlines():
            _, pid, sock = line.split()
            children.append(Child(sock, int(pid)))
    return r, children
