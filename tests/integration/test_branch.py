"""BRANCH on real KVM, every strategy: exact images, isolation, repetition, grandchildren, kills."""
import json
import subprocess
import os
import shutil
import signal
import tempfile
import time

import pytest

from forkvm_vm import VM, WORK, Child, call, forkvm_cmd

pytestmark = pytest.mark.kvm
MEM = 64 << 20
STRATEGIES = ["full", "diff", "live", "cow"]


@pytest.fixture
def env():
    d = tempfile.mkdtemp(prefix="forkvm-branch-")
    run = os.path.join(d, "run")
    os.makedirs(run)
    pids = []
    yield {"dir": d, "run": run, "pids": pids}
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    shutil.rmtree(d, ignore_errors=True)


def source(strategy, mem="64M"):
    return VM(mem=mem, backing="memfd" if strategy == "live" else "anon")


def branch(vm, env, strategy, count=2, prefix=None, paused=True, hashes=True, sock=None):
    prefix = prefix or f"{strategy}{len(env['pids'])}"
    req = {"cmd": "branch", "strategy": strategy, "count": count, "prefix": prefix,
           "run_dir": env["run"], "paused": paused, "record_hashes": hashes}
    if strategy != "cow":
        req["dir"] = os.path.join(env["dir"], f"snap-{strategy}")
    reply = call(sock or vm.sock, req, timeout=300)
    assert reply["ok"], reply
    kids = [Child(c["socket"], c["pid"]) for c in reply["children"]]
    env["pids"].extend(c.pid for c in kids)
    return reply, kids


def whole(vm):
    return vm.ok({"cmd": "memhash", "gpa": 0, "len": MEM})["checksum"]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_children_hold_the_branch_instant_image_and_stay_isolated(env, strategy):
    src = source(strategy)
    try:
        src.ok({"cmd": "fill", "gpa": WORK, "len": 32 << 20, "seed": 7})
        src.ok({"cmd": "dirty", "pages": 512, "seed": 8})  # writing while we branch
        time.sleep(0.02)
        reply, kids = branch(src, env, strategy, count=3)
        image = reply["image_hashes"][0]
        assert reply["paused_us"] > 0
        for k in kids:
            assert whole(k) == image, f"{strategy}: child differs from the branch instant"
        # The source keeps writing after the branch: no child sees it.
        src.ok({"cmd": "fill", "gpa": WORK + (8 << 20), "len": 4 << 20, "seed": 99})
        for k in kids:
            assert whole(k) == image
        # A child's writes stay in that child.
        kids[0].ok({"cmd": "resume"})
        kids[0].ok({"cmd": "dirty", "pages": 0})
        kids[0].ok({"cmd": "fill", "gpa": WORK, "len": 4 << 20, "seed": 1234})
        assert whole(kids[1]) == image and whole(kids[2]) == image
        src_region = src.ok({"cmd": "memhash", "gpa": WORK, "len": 4 << 20})["checksum"]
        assert src_region != kids[0].ok({"cmd": "memhash", "gpa": WORK, "len": 4 << 20})["checksum"]
        # Children run on from the branch state: the dirty workload continues.
        kids[1].ok({"cmd": "resume"})
        n = kids[1].mailbox()["dirty_iters"]
        time.sleep(0.05)
        assert kids[1].mailbox()["dirty_iters"] > n
        for k in kids:
            assert k.stop() == 0
    finally:
        src.stop()


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_twenty_consecutive_branches_and_grandchildren(env, strategy):
    src = source(strategy)
    try:
        src.ok({"cmd": "dirty", "pages": 256, "seed": 3})
        for i in range(20):
            reply, kids = branch(src, env, strategy, count=1, prefix=f"r{i}")
            assert whole(kids[0]) == reply["image_hashes"][0], f"branch {i}"
            kids[0].stop()
        if strategy == "live":
            return  # children restore on file-backed RAM; live needs a memfd source
        reply, kids = branch(src, env, strategy, count=1, prefix="parent", paused=False)
        child = kids[0]
        child.ok({"cmd": "fill", "gpa": WORK, "len": 1 << 20, "seed": 5})
        greply, grandkids = branch(child, env, strategy if strategy != "diff" else "full",
                                   count=2, prefix="grand", sock=child.sock)
        for g in grandkids:
            assert whole(g) == greply["image_hashes"][0]
            g.stop()
        child.stop()
    finally:
        src.stop()


def test_diff_layers_restore_and_compact(env):
    src = source("diff")
    try:
        src.ok({"cmd": "fill", "gpa": WORK, "len": 16 << 20, "seed": 1})
        r1, k1 = branch(src, env, "diff", count=1, prefix="d1")
        src.ok({"cmd": "fill", "gpa": WORK, "len": 1 << 20, "seed": 2})
        r2, k2 = branch(src, env, "diff", count=1, prefix="d2")
        src.ok({"cmd": "fill", "gpa": WORK + (2 << 20), "len": 1 << 20, "seed": 3})
        r3, k3 = branch(src, env, "diff", count=1, prefix="d3")
        assert r1["snapshot"].endswith("/base") and r3["snapshot"].endswith("/layer-2")
        assert r3["bytes_written"] < (2 << 20) + (64 << 10), "a layer holds only dirty pages"
        assert whole(k3[0]) == r3["image_hashes"][0]
        out = os.path.join(env["dir"], "compacted")
        r = forkvm_cmd("snapshot", "compact", r3["snapshot"], out)
        assert r.returncode == 0, r.stderr
        meta = json.load(open(os.path.join(out, "meta.json")))
        assert meta["parent"] is None and not os.path.exists(os.path.join(out, "pages"))
        r = forkvm_cmd("restore", out, "--count", "1", "--name", "cmp", "--paused",
                       env=dict(os.environ, FORKVM_RUN_DIR=env["run"]))
        assert r.returncode == 0, r.stderr
        _, pid, sock = r.stdout.split()
        env["pids"].append(int(pid))
        assert whole(Child(sock, int(pid))) == r3["image_hashes"][0]
        Child(sock, int(pid)).stop()
        # A layer whose parent changed is refused, naming the layer.
        with open(os.path.join(r1["snapshot"], "vmstate"), "r+b") as f:
            f.seek(100)
            f.write(b"\xff")
        r = forkvm_cmd("run", "--restore", r3["snapshot"], "--socket",
                       os.path.join(env["run"], "x.sock"), timeout=60)
        assert r.returncode == 1 and "changed since the layer was written" in r.stderr, r.stderr
    finally:
        src.stop()


def test_cow_template_lifecycle_and_kills(env):
    src = source("cow")
    try:
        src.ok({"cmd": "dirty", "pages": 128})
        reply, kids = branch(src, env, "cow", count=3, prefix="t")
        tpl = reply["template"]
        status = call(tpl, {"cmd": "status"})
        assert status["ok"] and status["live"] == 3
        env["pids"].append(status["pid"])
        # More children later, without touching the source.
        more = call(tpl, {"cmd": "spawn", "count": 2, "paused": True})
        assert more["ok"] and len(more["children"]) == 2
        extra = [Child(c["socket"], c["pid"]) for c in more["children"]]
        env["pids"].extend(c.pid for c in extra)
        assert whole(extra[0]) == reply["image_hashes"][0]
        # Killing a child leaves the others and the template running.
        os.kill(kids[0].pid, signal.SIGKILL)
        time.sleep(0.2)
        assert call(tpl, {"cmd": "status"})["live"] == 4
        kids[1].ok({"cmd": "resume"})
        kids[1].ok({"cmd": "ping"})
        # Killing the template leaves its children and the source running.
        os.kill(status["pid"], signal.SIGKILL)
        time.sleep(0.2)
        kids[2].ok({"cmd": "resume"})
        kids[2].ok({"cmd": "ping"})
        src.ok({"cmd": "ping"})
        for k in kids[1:] + extra:
            assert k.stop() == 0
        # Killing the source mid-life: a fresh template outlives it, then exits with its last child.
        reply, kids = branch(src, env, "cow", count=1, prefix="u")
        tpid = call(reply["template"], {"cmd": "status"})["pid"]
        src.proc.send_signal(signal.SIGKILL)
        src.proc.wait(timeout=10)
        time.sleep(0.2)
        kids[0].ok({"cmd": "resume"})
        kids[0].ok({"cmd": "ping"})
        assert os.path.exists(f"/proc/{tpid}")
        kids[0].stop()
        deadline = time.monotonic() + 10
        while os.path.exists(f"/proc/{tpid}") and open(f"/proc/{tpid}/stat").read().split(")")[1].split()[0] != "Z":
            assert time.monotonic() < deadline, "template did not exit after its source and children"
            time.sleep(0.05)
        # Only the socket of the template we SIGKILLed can remain, and it answers nobody.
        leftovers = [f for f in os.listdir(env["run"]) if f.endswith(".sock")]
        assert leftovers in ([], ["t.template.sock"]), leftovers
        if leftovers:
            with pytest.raises(ConnectionRefusedError):
                call(tpl, {"cmd": "status"})
    finally:
        src.kill()


def test_strategy_preconditions_are_clear_errors(env):
    anon = VM(mem="32M")
    try:
        r = anon.call({"cmd": "branch", "strategy": "live", "count": 1, "prefix": "x",
                       "run_dir": env["run"], "dir": os.path.join(env["dir"], "l")})
        assert not r["ok"] and "memfd" in r["error"]
        r = anon.call({"cmd": "branch", "strategy": "full", "count": 1, "prefix": "x",
                       "run_dir": env["run"]})
        assert not r["ok"] and "directory" in r["error"]
        r = anon.call({"cmd": "branch", "strategy": "warp", "prefix": "x", "run_dir": env["run"]})
        assert not r["ok"] and "strategy" in r["error"]
        anon.ok({"cmd": "ping"})
    finally:
        anon.stop()
    memfd = VM(mem="32M", backing="memfd")
    try:
        r = memfd.call({"cmd": "branch", "strategy": "cow", "count": 1, "prefix": "x",
                        "run_dir": env["run"]})
        assert not r["ok"] and "anonymous" in r["error"]
    finally:
        memfd.stop()
    assert forkvm_cmd("branch", "vm", "--strategy", "full").returncode == 2


def test_agent_sync_reseeds_and_sets_clock_over_vsock(env):
    """The engine's fix-up for Linux children, against the real agent behind a vsock-style
    socket (this host cannot boot Linux guests: the agent runs on the host)."""
    from agentclient import start_agent, stop_agent
    from forkvm_vm import BUILD
    from vsock_proxy import VsockProxy
    agent_sock = os.path.join(env["dir"], "agent.sock")
    agent = start_agent(agent_sock)
    proxy = VsockProxy(os.path.join(env["dir"], "child.sock.vsock"), agent_sock)
    tool = os.path.join(BUILD, "tools", "agent_notify")
    try:
        r = subprocess.run([tool, proxy.path, "52"], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        assert proxy.connects == [b"CONNECT 52\n"]
        # The agent refuses a port nobody listens on: a clear error, not a hang.
        r = subprocess.run([tool, proxy.path, "53"], capture_output=True, text=True, timeout=30)
        assert r.returncode == 1 and "no agent listening on vsock port 53" in r.stderr
        r = subprocess.run([tool, os.path.join(env["dir"], "nobody.vsock"), "52"],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 1 and "connecting to" in r.stderr
    finally:
        proxy.close()
        stop_agent(agent)
