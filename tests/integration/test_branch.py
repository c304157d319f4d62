"""BRANCH on real KVM, every strategy: exact images, isolation, repetition, grandchildren, kills."""
import json
import subprocess
import os
import shutil
import signal
import socket
import tempfile
import time

import pytest

from forkvm_vm import VM, WORK, Child, call, forkvm_cmd, read_line

pytestmark = pytest.mark.kvm
MEM = 64 << 20
# live-populate: live with the kernel's unpopulated write-protect (Linux 6.4+) hidden by the
# test knob, so the source's RAM is populated before the pause, as on Linux 5.19-6.3.
STRATEGIES = ["full", "diff", "live", "live-populate", "cow"]
UFFD_FEATURE_WP_UNPOPULATED = 1 << 13
MASK_ENV = "FORKVM_UFFD_FEATURES_MASK"


def kernel_at_least(major, minor):
    rel = os.uname().release.split("-")[0].split(".")
    return (int(rel[0]), int(rel[1])) >= (major, minor)


def use(strategy, monkeypatch):
    """The real strategy of a test parameter; live-populate hides WP_UNPOPULATED from the
    source VMMs started after this (they inherit the environment)."""
    if strategy == "live-populate":
        monkeypatch.setenv(MASK_ENV, hex(((1 << 64) - 1) & ~UFFD_FEATURE_WP_UNPOPULATED))
        return "live"
    monkeypatch.delenv(MASK_ENV, raising=False)
    return strategy


def check_live_mode(reply, populate):
    """The probe's choice: the kernel's unpopulated write-protect where it has it (6.4+) and
    the knob does not hide it, else guest RAM populated before the pause."""
    if populate:
        assert reply["wp_unpopulated"] is False, reply
    elif kernel_at_least(6, 4):
        assert reply["wp_unpopulated"] is True, reply
    if reply["wp_unpopulated"]:
        assert reply["populate_ms"] == 0 and reply["populated_bytes"] == 0, reply
    else:
        assert reply["populate_ms"] > 0, reply


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
def test_children_hold_the_branch_instant_image_and_stay_isolated(env, strategy, monkeypatch):
    param, strategy = strategy, use(strategy, monkeypatch)
    src = source(strategy)
    try:
        src.ok({"cmd": "fill", "gpa": WORK, "len": 32 << 20, "seed": 7})
        src.ok({"cmd": "dirty", "pages": 512, "seed": 8})  # writing while we branch
        time.sleep(0.02)
        reply, kids = branch(src, env, strategy, count=3)
        image = reply["image_hashes"][0]
        assert reply["paused_us"] > 0
        if strategy == "cow":  # where the fan-out went, in the order it happens
            stamps = [reply[k] for k in ("template_ms", "first_fork_ms", "last_fork_ms",
                                         "ready_ms", "total_ms")]
            assert 0 < stamps[0] and stamps == sorted(stamps), reply
            assert reply["capture_us"] > 0 and reply["fork_us"] > 0, reply
        else:
            assert "template_ms" not in reply, reply
        if strategy == "live":
            check_live_mode(reply, param == "live-populate")
            # The dirty workload wrote protected pages during the copy, and waited for it.
            assert reply["wp_faults"] > 0, reply
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
        deadline = time.monotonic() + 5  # a loaded host may not schedule it within 50 ms
        while kids[1].mailbox()["dirty_iters"] == n and time.monotonic() < deadline:
            time.sleep(0.05)
        assert kids[1].mailbox()["dirty_iters"] > n
        for k in kids:
            assert k.stop() == 0
    finally:
        src.stop()


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_twenty_consecutive_branches_and_grandchildren(env, strategy, monkeypatch):
    strategy = use(strategy, monkeypatch)
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


def post(sock_path, request):
    """Send a request without waiting for its reply; finish() reads it."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(300)
    s.connect(sock_path)
    s.sendall((json.dumps(request) + "\n").encode())
    return s


def finish(s):
    try:
        return json.loads(read_line(s))
    finally:
        s.close()


@pytest.mark.parametrize("strategy", ["live", "live-populate"])
def test_live_pages_first_written_after_the_branch_are_copied_before_the_write(
        env, strategy, monkeypatch):
    """The source's guest writes pages it never touched before the branch, after the branch
    and while the image is being copied: each write must wait until the page's branch-instant
    content (zeroes) is in the image. With WP_UNPOPULATED the kernel protects the missing pages
    itself. Without it (live-populate) every page is populated before the pause, and the fill,
    fast on present pages (about 0.15 ms per MiB against 4 ms unpopulated), catches up with the
    populate and ends with it, before the pause: what it checks there is that the pages the
    guest had not reached when the populate began were populated, and that the children hold
    the branch instant (writes to populated pages after the pause are trapped: the dirty
    workload of test_children_hold_the_branch_instant_image_and_stay_isolated)."""
    use(strategy, monkeypatch)
    mem = 256 << 20
    touched, fresh = (WORK, 64 << 20), (WORK + (64 << 20), 128 << 20)
    untouched = (fresh[0] + fresh[1], 1 << 20)  # nobody ever writes it
    src = source("live", mem="256M")
    try:
        src.ok({"cmd": "fill", "gpa": touched[0], "len": touched[1], "seed": 21}, timeout=120)
        # The guest's first touch of a page costs a KVM mapping fault (~10 ms per MiB here), so
        # this fill runs on through the branch and the copy. The copier starts with the 64 MiB
        # already filled: the fill's next pages are first written after the branch, before the
        # copier reaches them, and must trap.
        pending = post(src.sock, {"cmd": "fill", "gpa": fresh[0], "len": fresh[1], "seed": 22})
        time.sleep(0.05)
        reply, kids = branch(src, env, "live", count=2, prefix=strategy)
        check_live_mode(reply, strategy == "live-populate")
        assert finish(pending)["ok"], "the fill in flight during the branch failed"
        image = reply["image_hashes"][0]
        for k in kids:
            assert k.ok({"cmd": "memhash", "gpa": 0, "len": mem})["checksum"] == image, \
                f"{strategy}: child differs from the branch instant"
        head = (fresh[0], 1 << 20)
        assert kids[0].ok({"cmd": "memhash", "gpa": head[0], "len": head[1]})["checksum"] == \
            src.ok({"cmd": "memhash", "gpa": head[0], "len": head[1]})["checksum"], \
            "the fill had not started at the branch"
        if strategy == "live":
            # The scenario happened: the fill was cut by the branch (its end is zero in the
            # children, filled in the source) and source writes waited for the copier.
            zero = kids[0].ok({"cmd": "memhash", "gpa": untouched[0],
                               "len": untouched[1]})["checksum"]
            tail = (fresh[0] + fresh[1] - (1 << 20), 1 << 20)
            kid_tail = kids[0].ok({"cmd": "memhash", "gpa": tail[0], "len": tail[1]})["checksum"]
            src_tail = src.ok({"cmd": "memhash", "gpa": tail[0], "len": tail[1]})["checksum"]
            assert kid_tail == zero and src_tail != zero, "the fill finished before the branch"
            assert reply["wp_faults"] >= 16, reply
        else:
            # Populating allocated the fresh pages the guest had not reached yet (~128 MiB).
            assert reply["populated_bytes"] >= 64 << 20, reply
        for k in kids:
            assert k.stop() == 0
    finally:
        src.stop()


def test_uffd_feature_mask_names_the_missing_feature(env, monkeypatch):
    """Kernels without the features a userfaultfd user needs: a clear error naming the feature
    and the Linux version that has it, and nothing half done."""
    monkeypatch.setenv(MASK_ENV, "0")
    src = source("live", mem="32M")
    try:
        snap = os.path.join(env["dir"], "masked")
        r = src.call({"cmd": "branch", "strategy": "live", "count": 1, "prefix": "m",
                      "run_dir": env["run"], "dir": snap})
        assert not r["ok"], r
        assert "UFFD_FEATURE_WP_HUGETLBFS_SHMEM (Linux 5.19+)" in r["error"], r["error"]
        assert "FORKVM_UFFD_FEATURES_MASK hides" in r["error"], r["error"]
        assert not os.path.exists(snap) and os.listdir(env["run"]) == []
        src.ok({"cmd": "ping"})
    finally:
        src.stop()
    # The uffd backing (lazy restores) names its features the same way.
    monkeypatch.delenv(MASK_ENV)
    src = source("live", mem="32M")
    try:
        reply, kids = branch(src, env, "live", count=1, prefix="snap")
        kids[0].stop()
    finally:
        src.stop()
    r = forkvm_cmd("run", "--restore", reply["snapshot"], "--backing", "uffd", "--pageserver",
                   os.path.join(env["dir"], "nobody.sock"), "--pageserver-timeout", "300",
                   "--socket", os.path.join(env["run"], "u.sock"), timeout=60,
                   env=dict(os.environ, FORKVM_UFFD_FEATURES_MASK="0x40"))
    assert r.returncode == 1, r.stderr
    assert "UFFD_FEATURE_EVENT_REMOVE (Linux 4.11+)" in r.stderr, r.stderr
    assert "UFFD_FEATURE_EVENT_UNMAP" not in r.stderr, r.stderr
    r = forkvm_cmd("run", "--restore", reply["snapshot"], "--backing", "uffd", "--pageserver",
                   os.path.join(env["dir"], "nobody.sock"), "--pageserver-timeout", "300",
                   "--socket", os.path.join(env["run"], "v.sock"), timeout=60,
                   env=dict(os.environ, FORKVM_UFFD_FEATURES_MASK="lots"))
    assert r.returncode == 1 and "FORKVM_UFFD_FEATURES_MASK='lots'" in r.stderr, r.stderr


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
        deadline = time.monotonic() + 10  # the template reaps on SIGCHLD; loaded hosts are slow
        while call(tpl, {"cmd": "status"})["live"] != 4 and time.monotonic() < deadline:
            time.sleep(0.05)
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


def test_a_child_name_a_running_vm_has_is_refused_and_that_vm_kept(env):
    """Children named like a running VM (a second branch with the same prefix, a restore
    --count with that --name) are refused before anything happens: no pause, no snapshot
    written. Before, the child failed on the taken socket and its cleanup removed the
    running VM's socket, vsock socket and disk overlays, leaving that VM unreachable."""
    vm = VM(mem="32M")
    try:
        _, (kid,) = branch(vm, env, "cow", count=1, prefix="k", hashes=False)
        pauses = vm.ok({"cmd": "status"})["pause_count"]
        for strategy in ("full", "diff", "live"):
            snap = os.path.join(env["dir"], f"taken-{strategy}")
            r = vm.call({"cmd": "branch", "strategy": strategy, "count": 2, "prefix": "k",
                         "run_dir": env["run"], "dir": snap})
            assert not r["ok"], r
            assert f"child k-0: a running VM already answers at {env['run']}/k-0.sock" in \
                r["error"] and "choose another --name" in r["error"], r
            assert not os.path.exists(snap)
        assert vm.ok({"cmd": "status"})["pause_count"] == pauses  # never paused for them
        snap = os.path.join(env["dir"], "snap")
        vm.ok({"cmd": "snapshot", "dir": snap})
        r = forkvm_cmd("restore", snap, "--count", "2", "--name", "k",
                       env=dict(os.environ, FORKVM_RUN_DIR=env["run"]))
        assert r.returncode != 0 and "a running VM already answers at" in r.stderr, r.stderr
        assert sorted(os.listdir(env["run"])) == ["k-0.sock", "k-0.sock.console",
                                                  "k-0.sock.log", "k.template.sock",
                                                  "k.template.sock.log"]
        assert kid.ok({"cmd": "status"})["state"] == "paused"  # still its own, reachable
        kid.stop()
    finally:
        vm.stop()


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
        assert "attempts 1 " in r.stdout and "crng_reseeded 1" in r.stdout, r.stdout
        # A port nobody listens on may yet get a listener (a restored guest settling): it is
        # retried, then a clear error at the deadline, not a hang.
        r = subprocess.run([tool, proxy.path, "53", "500"], capture_output=True, text=True,
                           timeout=30)
        assert r.returncode == 1 and "no agent listening on vsock port 53" in r.stderr
        assert "gave up at the deadline" in r.stderr, r.stderr
        r = subprocess.run([tool, os.path.join(env["dir"], "nobody.vsock"), "52"],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 1 and "connecting to" in r.stderr
    finally:
        proxy.close()
        stop_agent(agent)
