"""Helpers of the Linux suite: start Linux VMs, reach their agents, run commands, branch and
restore them, and clean up every process, socket and directory a test made."""
import contextlib
import os
import random
import re
import shutil
import signal
import subprocess
import tempfile
import time

from agentclient import AgentClient, output_bytes
from forkvm_vm import FORKVM, call
from vsock_client import vsock_connect

AGENT_PORT = 52
# Emulated timings in the rig: generous bounds, correctness only.
BOOT_BOUND_S = float(os.environ.get("FORKVM_LINUX_USERSPACE_BOUND", "240"))
READY_BOUND_S = 120


class LinuxError(AssertionError):
    pass


def forkvm(*args, env=None, timeout=600, check=True):
    r = subprocess.run([FORKVM, *args], capture_output=True, text=True, timeout=timeout,
                       env=env)
    if check and r.returncode != 0:
        raise LinuxError(f"forkvm {' '.join(args)} -> {r.returncode}\nstdout: {r.stdout}\n"
                         f"stderr: {r.stderr}")
    return r


def pid_alive(pid):
    try:
        state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def find_dev(g, serial):
    """The guest's name for our disk, by its serial (a root disk may be vda before it)."""
    out = g.sh("for d in /sys/block/vd*; do [ \"$(cat $d/serial 2>/dev/null)\" = " + serial +
               " ] && echo ${d##*/}; done; true").split()
    assert len(out) == 1, f"no single virtio disk with serial {serial}: {out}"
    return "/dev/" + out[0]


# A raw data disk (docs/DISK.md): random bytes of a fixed seed, markers written and read by
# sector through the guest's /dev/vdX with its page cache dropped, so what is read is the disk.
BASE_BYTES = 64 << 20


def raw_base(env, name="raw.img", seed=7):
    """A 64 MiB raw base image of random bytes in the test's directory; its name is the disk's
    serial in the guest."""
    path = env.path(name)
    with open(path, "wb") as f:
        f.write(random.Random(seed).randbytes(BASE_BYTES))
    return path


def dev_of(g):
    """The raw disk in g (restores and children: found again by its serial)."""
    if not hasattr(g, "dev"):
        g.dev = find_dev(g, "raw.img")
    return g.dev


def drop_caches(g):
    g.sh("sync; echo 3 > /proc/sys/vm/drop_caches")


def sector_hex(g, sector, count=8, dev=None):
    """count sectors at sector, read from the device (the raw disk unless dev; caches dropped
    first), as hex."""
    drop_caches(g)
    return g.sh(f"dd if={dev or dev_of(g)} bs=512 skip={sector} count={count} 2>/dev/null | "
                "od -An -tx1 -v | tr -d ' \\n'").strip()


def write_marker(g, sector, text):
    """text, NUL-padded to 4 KiB, at sector; synced to the device."""
    g.sh(f"printf '%s' '{text}' > /tmp/m && dd if=/tmp/m of={dev_of(g)} bs=4096 seek={sector // 8} "
         "conv=sync,fsync,notrunc 2>/dev/null && sync")


def read_marker(g, sector):
    """What write_marker wrote at sector (only call it where one was written)."""
    drop_caches(g)
    return g.sh(f"dd if={dev_of(g)} bs=4096 skip={sector // 8} count=1 2>/dev/null | tr -d '\\000'")


def base_hex(base, sector, count=8):
    with open(base, "rb") as f:
        f.seek(sector * 512)
        return f.read(count * 512).hex()


PY = "python3 -c 'import json, sqlite3; print(2+2)'"


def rootfs_image():
    """The cached root filesystem image (ext4 with Debian's python3) every Linux VM boots from."""
    cache = os.environ.get("FORKVM_CACHE") or os.path.expanduser("~/.cache/forkvm")
    path = os.path.join(cache, "rootfs", "rootfs.ext4")
    if not os.path.exists(path):
        # The rig always builds one; a direct run on a hardware host needs the build first.
        raise LinuxError(f"no {path}: run `forkvm image build --rootfs` first")
    return path


def on_rootfs(g):
    """The guest's / is the ext4 disk (not the initramfs) and python3 answers."""
    mounts = g.sh("cat /proc/mounts")
    root = [line.split() for line in mounts.splitlines() if line.split()[1] == "/"]
    assert root and root[-1][0].startswith("/dev/vd") and root[-1][2] == "ext4", mounts
    assert g.sh(PY).strip() == "4"


def evaluate(g, code, **fields):
    """The agent's eval reply for Python code in guest g's warm interpreter (docs/AGENT.md)."""
    with g.agent() as a:
        r = a.request("eval", code=code, lang="python", timeout_ms=120000, **fields)
    assert r["ok"], f"{g.name}: eval {code!r}: {r}"
    assert r["error"] is None, f"{g.name}: eval {code!r}: {r['error']}"
    return r


class Guest:
    """A running Linux VM (source, restore or child) addressed by its control socket. log is
    its console; errlog, for a VMM this suite started, that VMM's stderr."""

    def __init__(self, env, name, sock, pid, proc=None, log=None, errlog=None):
        self.env, self.name, self.sock, self.pid, self.proc, self.log = env, name, sock, pid, proc, log
        self.errlog = errlog

    def control(self, request, timeout=300):
        return call(self.sock, request, timeout)

    def ok(self, request, timeout=300):
        r = self.control(request, timeout)
        if not r.get("ok"):
            raise LinuxError(f"{self.name}: {request} -> {r}")
        return r

    def agent(self, bound=30):
        """An AgentClient connected over vsock, retrying while the guest settles."""
        deadline = time.monotonic() + bound
        last = None
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise LinuxError(f"{self.name}: VMM exited {self.proc.returncode}: "
                                 f"{self.tail()}")
            try:
                s, hp = vsock_connect(self.sock + ".vsock", AGENT_PORT)
                if hp is not None:
                    return AgentClient(s, timeout=120)
                s.close()
                last = "no agent listening"
            except OSError as e:
                last = str(e)
            if time.monotonic() > deadline:
                raise LinuxError(f"{self.name}: agent not reachable within {bound} s ({last}); "
                                 f"{self.vcpus()}\n{self.tail()}")
            time.sleep(0.2)

    def run(self, argv, check=True, timeout_ms=60000, stdin=None, bound=30):
        """(exit_code, stdout bytes, stderr bytes) of argv in the guest."""
        with self.agent(bound) as a:
            kw = {"timeout_ms": timeout_ms}
            if stdin is not None:
                kw["stdin"] = stdin
            try:
                r = a.exec(argv, **kw)
            except (OSError, AssertionError) as e:
                raise LinuxError(f"{self.name}: exec {argv}: {e}\n{self.vcpus()}\n"
                                 f"{self.tail()}") from e
        out, err = output_bytes(r, "stdout"), output_bytes(r, "stderr")
        if check and r["exit_code"] != 0:
            raise LinuxError(f"{self.name}: {argv} -> {r['exit_code']}: {out!r} {err!r}")
        return r["exit_code"], out, err

    def sh(self, script, **kw):
        return self.run(["sh", "-c", script], **kw)[1].decode()

    def write_file(self, path, data):
        with self.agent() as a:
            a.write_file(path, data)

    def read_file(self, path):
        with self.agent() as a:
            return a.read_file(path)[0]

    def uuid(self):
        return self.sh("cat /proc/sys/kernel/random/uuid").strip()

    def urandom32(self):
        return self.sh("head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n'")

    def vcpus(self):
        """What the VMM says each vCPU is doing (control `vcpus`), for a guest that stopped
        answering."""
        try:
            return f"its vCPUs: {self.control({'cmd': 'vcpus'}, timeout=30).get('vcpus')}"
        except (OSError, ValueError) as e:
            return f"its vCPUs could not be read: {e}"

    def vmm_log(self):
        """This guest's VMM log (the run's log for a source, SOCKET.log for a clone)."""
        path = self.log or self.sock + ".log"
        return open(path, "rb").read().decode(errors="replace") if os.path.exists(path) else ""

    def tail(self, n=40):
        """The last lines of this guest's console and VMM log, for failure messages."""
        out = []
        for path in (self.errlog, self.log, self.sock + ".log", self.sock + ".console"):
            if path and os.path.exists(path):
                lines = open(path, "rb").read().decode(errors="replace").splitlines()
                out.append(f"last lines of {path}:\n" + "\n".join(lines[-n:]))
        return "\n".join(out) or "(no log)"

    def kill(self):
        if self.pid and pid_alive(self.pid):
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.proc is not None:
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass


class Env:
    """One test's directory, run dir and every guest it started; cleanup kills them all."""

    def __init__(self, name):
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:40]
        self.dir = tempfile.mkdtemp(prefix=f"fl-{safe}-")
        self.run_dir = os.path.join(self.dir, "run")
        os.makedirs(self.run_dir)
        self.guests = []
        self.environ = dict(os.environ, FORKVM_RUN_DIR=self.run_dir)

    def path(self, *parts):
        return os.path.join(self.dir, *parts)

    def boot_restore(self, snap, name, extra=()):
        """`forkvm run --restore SNAP` with extra options (e.g. a network); the Guest once its
        agent answers."""
        return self.boot(name, restore=snap, extra=extra)

    def boot(self, name="src", mem="256M", vcpus=None, backing="anon", extra=(), restore=None,
             environ=None):
        """Boot the cached image; return the Guest once its agent answers. vCPUs: 2, or
        $FORKVM_LINUX_VCPUS (the rig's one-CPU L1 runs 1-vCPU guests). environ: the VMM's
        environment (default: this process's)."""
        vcpus = vcpus or int(os.environ.get("FORKVM_LINUX_VCPUS", "2"))
        sock = os.path.join(self.run_dir, f"{name}.sock")
        console = self.path(f"{name}.console")
        errlog = self.path(f"{name}.stderr")
        r, w = os.pipe()
        if restore:
            args = [FORKVM, "run", "--restore", restore, "--socket", sock, "--console", console,
                    "--ready-fd", str(w), *extra]
        else:
            args = [FORKVM, "run", "--linux", "--mem", mem, "--vcpus", str(vcpus), "--backing",
                    backing, "--socket", sock, "--console", console, "--ready-fd", str(w),
                    *extra]
        with open(errlog, "wb") as err:
            proc = subprocess.Popen(args, pass_fds=(w,), stderr=err, stdin=subprocess.DEVNULL,
                                    env=environ)
        os.close(w)
        with os.fdopen(r, "rb") as rf:
            if rf.read(1) != b"R":
                proc.wait(timeout=30)
                raise LinuxError(f"VMM {name} did not start: {open(errlog).read()}")
        g = Guest(self, name, sock, proc.pid, proc=proc, log=console, errlog=errlog)
        self.guests.append(g)
        t0 = time.monotonic()
        g.agent(BOOT_BOUND_S).close()
        g.boot_s = time.monotonic() - t0
        return g

    def snapshot(self, g, name="snap"):
        d = self.path(name)
        forkvm("snapshot", "create", g.sock, d, env=self.environ)
        return d

    def restore(self, snap, count=1, backend="file", name="r", extra=(), check=True):
        r = forkvm("restore", snap, "--backend", backend, "--count", str(count), "--name", name,
                   *extra, env=self.environ, check=check)
        kids = []
        if r.returncode == 0:
            for line in r.stdout.splitlines():
                n, pid, sock = line.split()
                kids.append(Guest(self, n, sock, int(pid)))
            self.guests.extend(kids)
        return (r, kids) if not check else kids

    def branch(self, g, strategy, count=3, prefix=None, timeout=600):
        prefix = prefix or f"{g.name}-{strategy}"
        req = {"cmd": "branch", "strategy": strategy, "count": count, "prefix": prefix,
               "run_dir": self.run_dir}
        if strategy != "cow":
            req["dir"] = self.path(f"{prefix}.snap")
        reply = g.control(req, timeout=timeout)
        if not reply.get("ok"):
            raise LinuxError(f"branch {strategy} of {g.name}: {reply.get('error')}")
        kids = [Guest(self, c["name"], c["socket"], c["pid"]) for c in reply["children"]]
        self.guests.extend(kids)
        return reply, kids

    def cleanup(self):
        for g in self.guests:
            g.kill()
        # Cow templates exit once their source and children are gone; page servers by test.
        if os.environ.get("FORKVM_LINUX_KEEP") != "1":  # debugging: keep logs and consoles
            shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def stress_env(name):
    """The Env of a debugging aid (tests/linux/stress_*.py): an exception ends the stress with
    its message instead of a traceback (the caller prints its tally after), and every guest
    is killed."""
    env = Env(name)
    try:
        yield env
    except Exception as e:  # noqa: BLE001
        print(f"STRESS aborted: {type(e).__name__}: {str(e)[-3000:]}", flush=True)
    finally:
        env.cleanup()


def host_time():
    return time.time()


def guest_time(g):
    """(host before, guest wall clock, host after) around one `date` in the guest (busybox
    date: whole seconds, so the guest's value may lag the host's by up to 1 s)."""
    t0 = time.time()
    out = g.sh("date +%s")
    t1 = time.time()
    return t0, float(out.strip()), t1


def wait_for(pred, bound_s, step_s=0.5):
    """True once pred() holds, False after bound_s (emulated guests can be slow)."""
    deadline = time.monotonic() + bound_s
    while True:
        if pred():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(step_s)
