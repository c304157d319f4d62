"""The agent fix-up of Linux clones, wired through every path that makes them: `forkvm
restore`, `forkvm run --restore` (also --detach) and `forkvm branch` (full through
restore_many, cow through its template). On this host a Linux guest stalls in early boot
(docs/LINUX.md), so it never brings up its vsock driver and agent: every fix-up meets "no
agent listening" until its deadline. That is the failure path, end to end: the error names
the clone, the attempts and the last error, quotes the clone's log (which is kept), and no
clone is left running. The success path needs the agent: tests/agent_sync's stand-ins here,
tests/linux on a host (or the nested rig) where Linux boots."""
import os
import re
import shutil
import subprocess
import tempfile
import time

import pytest

from forkvm_vm import VM, Child, forkvm_cmd
from linux_image import host_cannot_run_linux, image_paths

pytestmark = [pytest.mark.kvm, pytest.mark.slow]


@pytest.fixture(scope="module")
def linux():
    """A Linux source VM (stalled in early boot here) and a snapshot of it."""
    if not host_cannot_run_linux():
        pytest.skip("Linux boots here: its agent would answer (tests/linux covers that)")
    paths = image_paths(build=False)
    if isinstance(paths, str):
        pytest.skip(paths)
    vmlinux, _, initrd = paths
    d = tempfile.mkdtemp(prefix="forkvm-lxfix-")
    src = VM(mem="128M", extra=("--kernel", vmlinux, "--initrd", initrd))
    try:
        src.ok({"cmd": "snapshot", "dir": os.path.join(d, "snap")}, timeout=300)
        yield {"dir": d, "src": src, "snap": os.path.join(d, "snap")}
    finally:
        src.stop()
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def run(linux):
    path = tempfile.mkdtemp(prefix="run-", dir=linux["dir"])
    yield path
    for n in os.listdir(path):
        if n.endswith(".sock") and not n.endswith(".template.sock"):
            forkvm_cmd("stop", os.path.join(path, n), timeout=30)
    left = subprocess.run(["pgrep", "-f", f"--socket {path}/"], capture_output=True, text=True)
    assert left.stdout.strip() == "", "clones left running"


def assert_fixup_failed(stderr, name):
    assert f"{name}: agent fix-up (reseed_entropy + set_clock) through " in stderr, stderr
    assert "gave up at the deadline after " in stderr and "vsock port 52" in stderr, stderr
    assert "last error: " in stderr and "no agent listening on vsock port 52" in stderr, stderr
    attempts = int(stderr.split("gave up at the deadline after ")[1].split()[0])
    assert attempts >= 3, stderr  # retried with backoff, not given up at the first refusal


def assert_vcpus_reported(text):
    """The clone's vCPUs as the fix-up gave up (vm_describe_vcpus): each one's KVM state."""
    assert re.search(r"its vCPUs then: vcpu 0 \(\d+ exits to forkvm\): [a-z-]+, rip 0x[0-9a-f]+, "
                     r"IF [01], pending: NMI \d+", text), text


def no_clone_sockets(run):
    return not [n for n in os.listdir(run) if n.endswith((".sock", ".vsock"))]


def test_restore_fixes_up_every_clone_or_none(linux, run):
    e = dict(os.environ, FORKVM_RUN_DIR=run)
    t0 = time.monotonic()
    r = forkvm_cmd("restore", linux["snap"], "--count", "2", "--name", "r", "--timeout", "1500",
                   env=e, timeout=120)
    assert r.returncode == 1, r.stderr
    assert time.monotonic() - t0 < 30
    assert_fixup_failed(r.stderr, "child 0 (r-0)")
    assert_vcpus_reported(r.stderr)
    log = os.path.join(run, "r-0.sock.log")
    assert f"its log {log} ends:" in r.stderr and "\n    | " in r.stderr, r.stderr
    # The clone that failed keeps its log; its sibling, killed for it, leaves nothing.
    assert os.path.exists(log) and not os.path.exists(os.path.join(run, "r-1.sock.log"))
    assert no_clone_sockets(run)
    # Without the fix-up the same clones come up (and are the caller's to fix).
    r = forkvm_cmd("restore", linux["snap"], "--count", "2", "--name", "n", "--no-agent-sync",
                   env=e, timeout=120)
    assert r.returncode == 0, r.stderr
    for line in r.stdout.splitlines():
        _, pid, sock = line.split()
        assert Child(sock, int(pid)).stop() == 0


def test_paused_linux_restores_need_no_agent_sync(linux, run):
    e = dict(os.environ, FORKVM_RUN_DIR=run)
    r = forkvm_cmd("restore", linux["snap"], "--paused", "--name", "p", env=e, timeout=60)
    assert r.returncode == 1 and "--no-agent-sync" in r.stderr and "paused" in r.stderr
    assert os.listdir(run) == []  # refused before anything started
    r = forkvm_cmd("run", "--restore", linux["snap"], "--paused", "--socket",
                   os.path.join(run, "q.sock"), timeout=60)
    assert r.returncode == 1 and "--no-agent-sync" in r.stderr, r.stderr
    r = forkvm_cmd("restore", linux["snap"], "--paused", "--no-agent-sync", "--name", "p",
                   env=e, timeout=60)
    assert r.returncode == 0, r.stderr


def test_run_restore_fixes_up_its_clone(linux, run):
    sock = os.path.join(run, "one.sock")
    r = forkvm_cmd("run", "--restore", linux["snap"], "--name", "one", "--socket", sock,
                   "--agent-timeout", "800", timeout=60)
    assert r.returncode == 1, r.stderr
    assert_fixup_failed(r.stderr, "restored Linux clone one")
    assert_vcpus_reported(r.stderr)
    assert not os.path.exists(sock) and not os.path.exists(sock + ".vsock")
    # Detached, the parent reports once the fix-up failed, quoting the VMM's log.
    sock = os.path.join(run, "two.sock")
    r = forkvm_cmd("run", "--restore", linux["snap"], "--socket", sock, "--agent-timeout", "800",
                   "--detach", timeout=60)
    assert r.returncode == 1 and f"its log {sock}.log ends:" in r.stderr, r.stderr
    assert "agent fix-up" in r.stderr
    sock = os.path.join(run, "three.sock")
    r = forkvm_cmd("run", "--restore", linux["snap"], "--socket", sock, "--no-agent-sync",
                   "--detach", timeout=60)
    assert r.returncode == 0, r.stderr
    assert forkvm_cmd("stop", sock).returncode == 0


@pytest.mark.parametrize("strategy", ["full", "cow"])
def test_branch_fixes_up_every_child_or_none(linux, run, strategy):
    src = linux["src"]
    req = {"cmd": "branch", "strategy": strategy, "count": 2, "prefix": f"b{strategy}",
           "run_dir": run, "timeout_ms": 1500}
    if strategy == "full":
        req["dir"] = os.path.join(run, "snap")
    r = src.call(req, timeout=120)
    assert not r["ok"]
    err = r["error"]
    # full children come from restore_many, cow children from the template
    assert_fixup_failed(err, "child 0 (bfull-0)" if strategy == "full" else "child bcow-0")
    assert_vcpus_reported(err)
    log = os.path.join(run, f"b{strategy}-0.sock.log")
    assert f"its log {log} ends:" in err and os.path.exists(log), err
    time.sleep(0.3)  # the cow template exits after reporting
    assert no_clone_sockets(run), os.listdir(run)
    assert src.ok({"cmd": "status"})["state"] == "running"


def test_paused_linux_branches_need_no_agent_sync(linux, run):
    r = linux["src"].call({"cmd": "branch", "strategy": "cow", "count": 1, "prefix": "pb",
                           "run_dir": run, "paused": True})
    assert not r["ok"] and "no_agent_sync" in r["error"] and "paused" in r["error"], r
    assert os.listdir(run) == []
    r = linux["src"].call({"cmd": "branch", "strategy": "cow", "count": 1, "prefix": "pb",
                           "run_dir": run, "paused": True, "no_agent_sync": True}, timeout=120)
    assert r["ok"], r
    forkvm_cmd("template", "stop", r["template"])
