"""cgroup v2 per VM with a Linux guest (docs/SECURITY.md, "cgroup v2 per VM"): the VMM's own
cgroup carries memory.max, cpu.max, cpu.weight and pids.max as asked, pids.max is enforced on
the VMM's threads, cow children enter cgroups of their own with the source's limits (in a
jailed family too, inside the family's cgroup, which carries the daemon's budget), and every
cgroup is removed when its VMM ends. Needs a cgroup2 hierarchy at /sys/fs/cgroup offering the
memory, cpu and pids controllers: the nested rig's L1 mounts one there, and the VMM enables the
controllers for its children (ROOT and ROOT/forkvm cgroup.subtree_control)."""
import json
import os
import subprocess

import pytest

from daemonlib import Daemon
from forkvm_vm import FORKVM, VM, call
from linuxlib import pid_alive, wait_for

ROOT = "/sys/fs/cgroup"
NEEDED = ("memory", "cpu", "pids")
LIMITS = ("--mem-limit", "600M", "--cpu-max", "200000/100000", "--cpu-weight", "200",
          "--pids-max", "64")
WANT = {"memory.max": str(600 << 20), "cpu.max": "200000 100000", "cpu.weight": "200",
        "pids.max": "64"}


def read(path, name):
    with open(os.path.join(path, name)) as f:
        return f.read().strip()


def write(path, name, value):
    with open(os.path.join(path, name), "w") as f:
        f.write(value)


def only_process(path, pid):
    """pid is in the cgroup at path, and nothing else but kernel threads KVM attached there
    (Linux < 6.4 attaches its per-VM workers, kvm-nx-lpage-recovery, to the VMM's cgroup)."""
    procs = open(os.path.join(path, "cgroup.procs")).read().split()
    others = [p for p in procs if p != str(pid)]
    return str(pid) in procs and all(open(f"/proc/{p}/cmdline", "rb").read() == b""
                                     for p in others)


def cgroup_dir(pid):
    """The cgroup2 directory of pid, from /proc/PID/cgroup's "0::" line."""
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            if line.startswith("0::"):
                return ROOT + line[3:].strip()
    raise AssertionError(f"pid {pid} has no cgroup v2 line")


@pytest.fixture(scope="module")
def cgroot():
    # /proc/self/mounts, not stat -f: busybox's stat (the rig's L1) has no name for cgroup2.
    with open("/proc/self/mounts") as f:
        types = [line.split()[2] for line in f if line.split()[1] == ROOT]
    if not types or types[-1] != "cgroup2" or not os.access(ROOT, os.W_OK):
        pytest.skip(f"{ROOT} is not a writable cgroup2 mount (mounted: {types or 'nothing'})")
    offered = read(ROOT, "cgroup.controllers").split()
    missing = [c for c in NEEDED if c not in offered]
    if missing:
        pytest.skip(f"{ROOT} does not offer {', '.join(missing)} (cgroup.controllers: "
                    f"{' '.join(offered) or 'none'})")
    return ROOT


def test_limits_enforced_inherited_and_removed(env, cgroot):
    g = env.boot("cg", extra=LIMITS)
    path = cgroup_dir(g.pid)
    assert path.startswith(f"{ROOT}/forkvm/") and path.endswith(f"-{g.pid}"), path
    assert str(g.pid) in read(path, "cgroup.procs").split()
    for name, value in WANT.items():
        assert read(path, name) == value, name
    with open(env.path("cg.stderr"), errors="replace") as f:
        assert "limits not applied" not in f.read()
    # Guest RAM is charged here (the VMM moved in before it existed), under the limit.
    assert 16 << 20 < int(read(path, "memory.current")) <= 600 << 20

    # pids.max at the VMM's current thread count: the snapshot worker cannot start, the
    # request says why, and the VM runs on.
    current = int(read(path, "pids.current"))
    write(path, "pids.max", str(current))
    try:
        r = g.control({"cmd": "snapshot", "dir": env.path("refused.snap")})
        assert r["ok"] is False, r
        assert "starting the worker thread: Resource temporarily unavailable" in r["error"], r
        events = dict(line.split() for line in read(path, "pids.events").splitlines())
        assert int(events["max"]) >= 1, events
        assert g.sh("echo alive").strip() == "alive"
    finally:
        write(path, "pids.max", "64")

    # A cow child: a cgroup of its own with the source's limits; the template has none of
    # them (a pids.max there could stop it forking children).
    reply, kids = env.branch(g, "cow", count=1)
    kid = kids[0]
    tpid = call(reply["template"], {"cmd": "status"})["pid"]
    kpath, tpath = cgroup_dir(kid.pid), cgroup_dir(tpid)
    # Each starts in its own (clone3 CLONE_INTO_CGROUP), named with the pid of the process that
    # made it: the template for a child, the double fork's middle process for the template.
    for path_, pid_, name in ((kpath, kid.pid, "-0-"), (tpath, tpid, "-template-")):
        assert name in os.path.basename(path_), path_
        assert only_process(path_, pid_), path_
    for name, value in WANT.items():
        assert read(kpath, name) == value, name
    assert read(tpath, "pids.max") == "max" and read(tpath, "memory.max") == "max"
    assert kid.sh("echo child").strip() == "child"

    # Every cgroup goes with its VMM: the child's, the source's, then the template's (it
    # exits once its source and children are gone).
    kid.ok({"cmd": "stop"})
    assert wait_for(lambda: not pid_alive(kid.pid), 60)
    assert wait_for(lambda: not os.path.exists(kpath), 30), kpath
    g.ok({"cmd": "stop"})
    assert g.proc.wait(timeout=120) == 0
    assert not os.path.exists(path), path
    assert wait_for(lambda: not os.path.exists(tpath), 60), tpath


def test_default_memory_max_and_a_vmm_without_threads(cgroot, tmp_path):
    """Without options: memory.max is guest RAM + 256 MiB, the rest unlimited. With pids.max
    1 the VMM cannot start a single thread: it fails with an error, no hang, no crash, and
    leaves no cgroup behind. (Probe guests: these need no Linux boot.)"""
    vm = VM(mem="64M")
    path = None
    try:
        path = cgroup_dir(vm.proc.pid)
        assert read(path, "memory.max") == str((64 + 256) << 20)
        assert read(path, "pids.max") == "max"
        assert read(path, "cpu.max").split()[0] == "max"
        assert "limits not applied" not in vm.stderr()
    finally:
        assert vm.stop() == 0
    assert path and not os.path.exists(path)
    before = set(os.listdir(f"{ROOT}/forkvm"))
    r = subprocess.run([FORKVM, "run", "--mem", "16M", "--pids-max", "1", "--socket",
                        str(tmp_path / "one.sock")], capture_output=True, text=True, timeout=120)
    assert r.returncode > 0 and ": error: " in r.stderr, (r.returncode, r.stderr)
    assert set(os.listdir(f"{ROOT}/forkvm")) <= before


def test_the_family_cgroup_of_a_hand_run_jail(cgroot):
    """`forkvm run --jail`: the VM's own cgroup has its limits, and the family's cgroup
    (where the VMs it branches make theirs) --family-budget times them, 1 by default, with
    the VM's cpu.weight. Probe guests."""
    for budget, extra in ((1, ()), (3, ("--family-budget", "3"))):
        vm = VM(mem="64M", extra=(*LIMITS, "--jail", *extra))
        try:
            leaf = cgroup_dir(vm.proc.pid)
            fam = os.path.dirname(leaf)
            assert os.path.dirname(fam) == f"{ROOT}/forkvm", leaf
            assert {f: read(leaf, f) for f in WANT} == WANT
            assert {f: read(fam, f) for f in WANT} == {
                "memory.max": str(budget * (600 << 20)),
                "cpu.max": f"{budget * 200000} 100000", "cpu.weight": "200",
                "pids.max": str(budget * 64)}, budget
        finally:
            assert vm.stop() == 0
    # A restore learns its RAM from the snapshot, after its cgroup is made and before its
    # jail: the family's memory.max follows then, as its own does.
    src = VM(mem="64M", extra=("--jail",))
    try:
        jail = next(d for d in os.listdir(src.dir) if d.endswith(".jail"))
        snap = os.path.join(src.dir, jail, "snap")
        assert src.ok({"cmd": "snapshot", "dir": snap})
    finally:
        assert src.stop() == 0
    vm = VM(extra=("--restore", snap, "--jail", "--family-budget", "2"), mem=None)
    try:
        leaf = cgroup_dir(vm.proc.pid)
        assert read(leaf, "memory.max") == str((64 + 256) << 20)
        assert read(os.path.dirname(leaf), "memory.max") == str(2 * ((64 + 256) << 20))
    finally:
        assert vm.stop() == 0


def test_the_cli_keeps_the_budget_of_a_hand_run_family(cgroot):
    """A jailed `forkvm run` (the default as root) without --family-budget leaves its
    family's budget to its keeper: a root-owned record of one VM's limits next to its jail,
    and `forkvm branch` / `forkvm template spawn` set the family's cgroup to that times the
    VMs in it (the source, the cow template, the children), as the daemon does. With
    --family-budget the budget is fixed: no record, and a branch leaves it as it is."""
    env = dict(os.environ)
    env.pop("FORKVM_JAIL", None)  # the default: jailed as root

    def budget(n):
        return {"memory.max": str(n * (600 << 20)), "cpu.max": f"{n * 200000} 100000",
                "pids.max": str(n * 64)}

    def family(path):
        return {f: read(path, f) for f in budget(1)}

    def cli(vm, *args):
        r = subprocess.run([FORKVM, *args], capture_output=True, text=True, timeout=120,
                           env=dict(env, FORKVM_RUN_DIR=vm.dir))
        assert r.returncode == 0, r.stderr
        return r.stdout

    vm = VM(mem="64M", extra=(*LIMITS, "--jail"))
    try:
        fam = os.path.dirname(cgroup_dir(vm.proc.pid))
        jail = next(d for d in os.listdir(vm.dir) if d.endswith(".jail"))
        record = os.path.join(vm.dir, jail + ".family")
        st = os.stat(record)
        assert (st.st_uid, st.st_mode & 0o777) == (0, 0o600)
        assert family(fam) == budget(1)
        out = cli(vm, "branch", vm.sock, "--count", "2", "--name", "k")
        assert family(fam) == budget(4)  # source, template, two children
        kids = json.loads(out)["children"]
        cli(vm, "stop", "k-0")
        assert wait_for(lambda: not pid_alive(kids[0]["pid"]), 30), "k-0 did not exit"
        assert wait_for(lambda: not [d for d in os.listdir(fam) if d.startswith("k-0-")],
                        30), os.listdir(fam)
        more = json.loads(cli(vm, "template", "spawn", "k.template", "--count", "1"))
        assert family(fam) == budget(4)  # k-0 gone, one more
        # Cgroups the family's uid makes and fills itself (here root plays it) do not count
        # beyond the VMs root let in: 4, plus the one child asked for now.
        squatters = []
        for i in range(3):
            cg = os.path.join(fam, f"squat-{i}")
            os.mkdir(cg)
            p = subprocess.Popen(["sleep", "120"])
            squatters.append((p, cg))
            with open(os.path.join(cg, "cgroup.procs"), "w") as f:
                f.write(str(p.pid))
        try:
            last = json.loads(cli(vm, "template", "spawn", "k.template", "--count", "1"))
            assert family(fam) == budget(5)  # not 8
        finally:
            for p, cg in squatters:
                p.kill()
                p.wait()
                assert wait_for(lambda: read(cg, "cgroup.events").find("populated 0") >= 0, 30)
                os.rmdir(cg)
        cli(vm, "template", "stop", "k.template")
        for k in kids[1:] + more["children"] + last["children"]:
            cli(vm, "stop", k["socket"])
    finally:
        assert vm.stop() == 0
    vm = VM(mem="64M", extra=(*LIMITS, "--jail", "--family-budget", "3"))
    try:
        fam = os.path.dirname(cgroup_dir(vm.proc.pid))
        assert not [d for d in os.listdir(vm.dir) if d.endswith(".family")]
        cli(vm, "branch", vm.sock, "--count", "3", "--name", "f")
        assert family(fam) == budget(3)
        for k in range(3):
            cli(vm, "stop", f"f-{k}")
        cli(vm, "template", "stop", "f.template")
    finally:
        assert vm.stop() == 0


def test_daemon_limits_and_the_budget_of_a_jailed_family(cgroot):
    """The daemon's "limits" (docs/DAEMON.md) as the kernel applies them, read back in the
    answers. Its VMMs are jailed: each VM of a jailed family (the source, its full children
    restored inside the jail, its cow children forked there) has a cgroup of its own with
    its limits, in the family's cgroup, which the jail's VMMs make their cgroups in
    (delegated to the jail's uid). The family's cgroup carries the bound a VMM taken over
    cannot lift: the daemon keeps it at one VM's limits times the VMs in it, before a
    branch's children start and after each one ends. Probe guests."""
    d = Daemon().start()

    def files(path):
        return {f: read(path, f) for f in WANT}

    def budget(n):
        return {"memory.max": str(n * (600 << 20)), "cpu.max": f"{n * 200000} 100000",
                "cpu.weight": "200", "pids.max": str(n * 64)}

    def family(path):
        return {f: read(path, f) for f in budget(1)}

    try:
        sb = d.req("POST", "/v1/sandboxes", body={
            "mem_mib": 64, "limits": {"memory_mib": 600, "cpus": 2, "cpu_weight": 200,
                                      "pids_max": 64}})
        assert sb["jailed"] and sb["limits"] == {"memory_mib": 600, "cpus": 2.0,
                                                  "cpu_weight": 200, "pids_max": 64}, sb
        leaf = cgroup_dir(sb["pid"])
        fam = os.path.dirname(leaf)
        assert os.path.dirname(fam) == f"{ROOT}/forkvm", fam
        assert files(leaf) == WANT and family(fam) == budget(1)
        (full,) = d.req("POST", f"/v1/sandboxes/{sb['id']}/branch",
                        body={"count": 1, "strategy": "full"})["children"]
        assert family(fam) == budget(2)
        cows = d.req("POST", f"/v1/sandboxes/{sb['id']}/branch",
                     body={"count": 2, "strategy": "cow"})["children"]
        assert family(fam) == budget(4)
        paths = [cgroup_dir(k["pid"]) for k in [full] + cows]
        assert len(set(paths + [leaf])) == 4, paths
        for k, path in zip([full] + cows, paths):
            assert os.path.dirname(path) == fam, path
            assert only_process(path, k["pid"]), path
            assert files(path) == WANT, path  # each its own, as the source's
            assert d.req("GET", f"/v1/sandboxes/{k['id']}")["limits"]["memory_mib"] == 600
        d.req("DELETE", f"/v1/sandboxes/{full['id']}")
        assert family(fam) == budget(3)
        assert wait_for(lambda: not os.path.exists(paths[0]), 30), paths[0]
        os.kill(cows[0]["pid"], 9)  # one that dies on its own: the reaper gives its part back
        assert wait_for(lambda: family(fam) == budget(2), 30), family(fam)
    finally:
        d.cleanup()
