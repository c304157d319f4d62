"""forkvmd for tests: a daemon on a fresh state directory, driven through the Python SDK
(tests/integration/test_daemon.py, tests/linux/test_service.py)."""
import contextlib
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile

from forkvm_vm import FORKVM, JAIL_FROM_HARNESS, ROOT, call

sys.path.insert(0, os.path.join(ROOT, "sdk", "python"))
import forkvm as sdk  # noqa: E402


def pid_alive(pid):
    """True while pid runs (a zombie nobody reaped yet counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return open(f"/proc/{pid}/stat").read().split(") ")[1].split()[0] != "Z"


def daemon_environ():
    """The environment a daemon starts with: the harness's FORKVM_JAIL=0 (forkvm_vm.py) is
    not the daemon's, whose VMMs are jailed unless a test says otherwise."""
    env = dict(os.environ)
    if JAIL_FROM_HARNESS:
        env.pop("FORKVM_JAIL", None)
    return env


class Daemon:
    """A forkvmd on a fresh state directory (short: VM socket paths must fit sun_path)."""

    def __init__(self, state=None, extra=(), env=None):
        self.state = state or tempfile.mkdtemp(prefix="fvd-", dir="/tmp")
        self.sock = os.path.join(self.state, "api.sock")
        self.extra = list(extra)
        self.env = env
        self.proc = None
        self.log = os.path.join(self.state, "daemon.log")

    def start(self, expect_ok=True):
        r, w = os.pipe()
        logf = open(self.log, "ab")
        self.proc = subprocess.Popen(
            [FORKVM, "daemon", "--state-dir", self.state, "--ready-fd", str(w), *self.extra],
            pass_fds=(w,), stdout=logf, stderr=subprocess.STDOUT,
            env=dict(daemon_environ(), **(self.env or {})))
        os.close(w)
        logf.close()
        ready = os.read(r, 1) if expect_ok else b""
        os.close(r)
        if expect_ok:
            assert ready == b"r", f"daemon did not get ready: {open(self.log).read()}"
        return self

    def client(self, **kw):
        return sdk.Client(socket_path=self.sock, **kw)

    def req(self, method, path, body=None, raw=None, query=None):
        return self.client().request(method, path, body=body, raw=raw, query=query)

    def kill9(self):
        self.proc.kill()
        self.proc.wait(timeout=30)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            assert self.proc.wait(timeout=30) == 0, open(self.log).read()
            # under ASan/UBSan (FORKVM_SAN builds) a finding, a leak included, is a failure
            with open(self.log, errors="replace") as f:
                bad = [line for line in f if "Sanitizer" in line or "runtime error" in line]
            assert not bad, "".join(bad[:20])

    def cleanup(self):
        """End every VM the daemon knows (through it when it runs), then the daemon."""
        if self.proc and self.proc.poll() is None:
            try:
                for s in self.req("GET", "/v1/sandboxes"):
                    self.req("DELETE", f"/v1/sandboxes/{s['id']}")
            except sdk.ForkvmError:
                pass
            self.stop()
        run = os.path.join(self.state, "run")
        for name in os.listdir(run) if os.path.isdir(run) else []:
            if name.endswith(".sock"):
                try:
                    call(os.path.join(run, name), {"cmd": "stop"}, timeout=5)
                except OSError:
                    pass
        shutil.rmtree(self.state, ignore_errors=True)


@contextlib.contextmanager
def agent_backed_sandbox():
    """(daemon, SDK sandbox) whose exec reaches the real guest agent. Linux guests cannot
    boot on this host, so the sandbox is a probe VM whose record says "linux" and whose vsock
    socket is a stand-in (vsock_proxy.py) relaying to the agent running here on a Unix socket.
    The daemon runs --no-jail: for a jailed VM it accepts an answer on the VM's sockets from
    the VM's own process only, which the stand-in is not (tests/linux/test_service.py runs
    the jailed path with a real agent)."""
    from agentclient import start_agent, stop_agent
    from vsock_proxy import VsockProxy
    d = Daemon(extra=["--no-jail"]).start()
    tmp = tempfile.mkdtemp(prefix="fvd-agent-")
    agent = proxy = None
    try:
        sb = sdk.Sandbox.create(mem_mib=32, client=d.client())
        db = sqlite3.connect(os.path.join(d.state, "state.db"), timeout=30)
        with db:
            db.execute("UPDATE sandboxes SET guest='linux' WHERE id=?", (sb.id,))
        db.close()
        agent_sock = os.path.join(tmp, "agent.sock")
        agent = start_agent(agent_sock)
        proxy = VsockProxy(sb.info["socket"] + ".vsock", agent_sock)
        yield d, sb
    finally:
        if proxy:
            proxy.close()
        if agent:
            stop_agent(agent)
        d.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)
