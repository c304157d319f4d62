"""The per-VMM jail (docs/SECURITY.md): namespaces, minimal root, uid, no capabilities, every path."""
import errno
import json
import os
import shutil
import signal
import stat
import subprocess
import tempfile
import time

import pytest

from forkvm_vm import FORKVM, WORK, call, forkvm_cmd, proc_status, read_line
from vsock_client import recv_exact, vsock_connect

pytestmark = pytest.mark.kvm
BASE = 300000000  # --jail-uid-base of these tests: uid = BASE + pid
FILL = 4 << 20


status = proc_status


def cgroup2_root():
    """The writable cgroup2 mount the VMM uses (as src/jail/cgroup.c finds it), or None."""
    mounts = {}
    with open("/proc/self/mounts") as f:
        for line in f:
            fields = line.split()
            mounts[fields[1]] = fields[2]
    for path in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified"):
        if mounts.get(path) == "cgroup2" and os.access(path, os.W_OK):
            return path
    return None


def cgroup_of(pid):
    with open(f"/proc/{pid}/cgroup") as f:
        line = next(line for line in f if line.startswith("0::"))
    return cgroup2_root() + line[3:].strip()


def ns(pid, kind):
    return os.readlink(f"/proc/{pid}/ns/{kind}")


def assert_confined(pid, uid=None):
    st = status(pid)
    for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(st[cap], 16) == 0, (cap, st[cap])
    assert st["NoNewPrivs"] == "1"
    uids = {int(x) for x in st["Uid"].split()}
    gids = {int(x) for x in st["Gid"].split()}
    assert len(uids) == 1 and len(gids) == 1 and uids == gids, (st["Uid"], st["Gid"])
    got = uids.pop()
    assert got != 0
    if uid is not None:
        assert got == uid
    me = os.getpid()
    for kind in ("mnt", "net", "ipc", "uts"):
        assert ns(pid, kind) != ns(me, kind), kind
    return got


@pytest.fixture
def rundir():
    d = tempfile.mkdtemp(prefix="forkvm-jail-")
    pids = []
    yield d, pids
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    shutil.rmtree(d, ignore_errors=True)


def env_of(run_dir, **extra):
    return dict(os.environ, FORKVM_RUN_DIR=run_dir, **extra)


def start(rundir, name, *extra, jail=("--jail", "--jail-uid-base", str(BASE)), env_extra=None):
    d, pids = rundir
    mem = () if "--restore" in extra else ("--mem", "64M")
    r = forkvm_cmd("run", "--name", name, *mem, "--detach", *jail, *extra,
                   env=env_of(d, **(env_extra or {})))
    assert r.returncode == 0, r.stderr
    pid, sock = r.stdout.split()
    pids.append(int(pid))
    return int(pid), sock


def start_pageserver(rundir, ps_sock, *args, **env):
    """`forkvm pageserver --socket PS_SOCK ARGS`, once its socket exists."""
    d, pids = rundir
    with open(ps_sock + ".log", "ab") as log:
        ps = subprocess.Popen([FORKVM, "pageserver", *args, "--socket", ps_sock], stdout=log,
                              stderr=log, stdin=subprocess.DEVNULL, env=env_of(d, **env))
    pids.append(ps.pid)
    deadline = time.monotonic() + 20
    while not os.path.exists(ps_sock):
        assert ps.poll() is None and time.monotonic() < deadline, open(ps_sock + ".log").read()
        time.sleep(0.05)
    return ps


def ok(sock, req):
    reply = call(sock, req)
    assert reply.get("ok") is True, (req, reply)
    return reply


def checksum(sock):
    return ok(sock, {"cmd": "checksum", "gpa": WORK, "len": FILL})["checksum"]


def log_of(rundir, name):
    with open(os.path.join(rundir[0], name + ".sock.log")) as f:
        return f.read()


def test_run_is_confined(rundir):
    pid, sock = start(rundir, "j")
    assert_confined(pid, BASE + pid)
    assert ok(sock, {"cmd": "ping"})
    # The root holds only what the VMM needs: /dev (3 nodes; /dev/userfaultfd only for
    # memfd guest RAM), /proc, /usr and the loader links, and the parents of its own
    # directory and of the forkvm binary.
    root = f"/proc/{pid}/root"
    want = {"dev", "proc", "usr", rundir[0].split("/")[1], FORKVM.split("/")[1]}
    want |= {n for n in ("lib", "lib64") if os.path.lexists("/" + n)}
    if cgroup2_root():  # its family's cgroup, bound at the cgroup2 mount's path
        want.add("sys")
    assert set(os.listdir(root)) == want
    assert sorted(os.listdir(root + "/dev")) == ["kvm", "null", "urandom"]
    # a node of its own, 0600: the host's is root's
    st = os.stat(f"{root}/dev/kvm")
    assert (st.st_uid, st.st_mode & 0o777) == (BASE + pid, 0o600)
    jail_dir = os.path.join(rundir[0], "j.jail")
    assert sorted(os.listdir(root + jail_dir)) == sorted(os.listdir(jail_dir))
    assert os.listdir(root + rundir[0]) == ["j.jail"]  # not the rest of the run directory
    assert os.readlink(sock) == "j.jail/j.sock"
    assert "jail: j confined" in log_of(rundir, "j")
    assert forkvm_cmd("stop", sock).returncode == 0


def test_explicit_uid_and_env(rundir):
    pid, sock = start(rundir, "u", jail=("--jail", "--jail-uid", "312345678"))
    assert_confined(pid, 312345678)
    d, pids = rundir
    r = forkvm_cmd("run", "--name", "e", "--mem", "64M", "--detach", "--jail-uid-base", str(BASE),
                   env=env_of(d, FORKVM_JAIL="1"))
    assert r.returncode == 0, r.stderr
    pids.append(int(r.stdout.split()[0]))
    assert_confined(pids[-1], BASE + pids[-1])


def test_no_jail_warns(rundir):
    for jail, env in ((("--no-jail",), {}), ((), {"FORKVM_JAIL": "0"})):
        d, pids = rundir
        name = f"n{len(pids)}"
        r = forkvm_cmd("run", "--name", name, "--mem", "64M", "--detach", *jail,
                       env=env_of(d, **env))
        assert r.returncode == 0, r.stderr
        pid = int(r.stdout.split()[0])
        pids.append(pid)
        assert "JAIL DISABLED" in log_of(rundir, name)
        assert status(pid)["Uid"].split()[0] == "0"
        assert ns(pid, "mnt") == ns(os.getpid(), "mnt")


def test_snapshot_and_restores(rundir):
    d, pids = rundir
    pid, sock = start(rundir, "src")
    ok(sock, {"cmd": "fill", "gpa": WORK, "len": FILL, "seed": 7})
    want = checksum(sock)
    # A jailed VMM writes only its own directory: elsewhere fails loudly.
    outside = tempfile.mkdtemp(prefix="forkvm-jail-out-")
    try:
        bad = call(sock, {"cmd": "snapshot", "dir": outside + "/snap"})
        assert bad.get("ok") is not True and not os.path.exists(outside + "/snap"), bad
    finally:
        shutil.rmtree(outside, ignore_errors=True)
    snap = os.path.join(d, "src.jail", "snap")
    ok(sock, {"cmd": "snapshot", "dir": snap})
    assert forkvm_cmd("stop", sock).returncode == 0

    ps_sock = os.path.join(d, "ps.sock")
    ps = start_pageserver(rundir, ps_sock, "--jail", FORKVM_JAIL_UID_BASE=str(BASE))
    try:
        deadline = time.monotonic() + 20
        # The socket is bound as root and appears just before the jail is entered; nothing is
        # served until then (ps_serve). Wait for the jail, not for the file.
        def jailed(st):
            return int(st["Uid"].split()[0]) == BASE + ps.pid and st["NoNewPrivs"] == "1"

        while not jailed(status(ps.pid)):
            assert ps.poll() is None and time.monotonic() < deadline, status(ps.pid)
            time.sleep(0.01)
        st = status(ps.pid)
        assert int(st["Uid"].split()[0]) == BASE + ps.pid and st["NoNewPrivs"] == "1"
        assert int(st["CapBnd"], 16) == 0x6  # CAP_DAC_OVERRIDE + CAP_DAC_READ_SEARCH only
        assert ns(ps.pid, "net") != ns(os.getpid(), "net")
        for backing in ("file", "memfd", "uffd"):
            extra = ("--pageserver", ps_sock) if backing == "uffd" else ()
            cpid, csock = start(rundir, "r-" + backing, "--restore", snap, "--backing", backing,
                                *extra)
            assert_confined(cpid, BASE + cpid)
            assert checksum(csock) == want, backing
            assert forkvm_cmd("stop", csock).returncode == 0
    finally:
        ps.send_signal(signal.SIGTERM)
        ps.wait(timeout=30)
    assert ps.returncode == 0 and not os.path.exists(ps_sock)  # cleaned up from inside


def branch_jailed(d, source, strategy, prefix):
    """`forkvm branch SOURCE` into 2 children named PREFIX-N (a full branch's image in the
    source's jail directory): the reply's JSON."""
    args = ["branch", source, "--strategy", strategy, "--count", "2", "--name", prefix]
    if strategy == "full":
        args += ["--dir", os.path.join(d, source + ".jail", "full")]
    r = forkvm_cmd(*args, env=env_of(d))
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_branch_children_are_jailed(rundir):
    d, _ = rundir
    pid, sock = start(rundir, "b")
    kids = []
    try:
        uid = assert_confined(pid)
        ok(sock, {"cmd": "fill", "gpa": WORK, "len": FILL, "seed": 3})
        want = checksum(sock)
        for strategy in ("cow", "full"):
            for child in branch_jailed(d, "b", strategy, "b" + strategy)["children"]:
                kids.append(child)
                # Inside the source's jail: same uid and mount namespace, its own directory.
                assert assert_confined(child["pid"], uid) == uid
                assert ns(child["pid"], "mnt") == ns(pid, "mnt")
                assert os.path.dirname(child["socket"]) == os.path.join(d, "b.jail")
                assert checksum(child["socket"]) == want, strategy
                # Not dumpable, though a full child was exec'd (execve makes a process
                # dumpable again): the family's other VMMs share its uid and must not read
                # its memory. /proc/PID of a non-dumpable process is root's.
                assert os.stat(f"/proc/{child['pid']}/mem").st_uid == 0, strategy
        # The jailed source still reads its own page map (opened before the uid change made
        # /proc/self root's): the huge-page repair after its cow branch runs
        # (mem/thp_repair.c).
        deadline = time.monotonic() + 30
        while (st := ok(sock, {"cmd": "status"})["thp_repair"])["passes"] < 1 \
                and st["unavailable"] is None:
            assert time.monotonic() < deadline, st
            time.sleep(0.1)
        assert st["unavailable"] is None, st
        for child in kids:
            assert forkvm_cmd("stop", child["socket"]).returncode == 0
        assert forkvm_cmd("stop", sock).returncode == 0
    finally:  # a failed assertion leaves no VMM behind
        for p in [c["pid"] for c in kids] + [pid]:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass


def family_of(root, pid):
    """A jailed source's cgroup (a leaf) and its family's, as src/jail/cgroup.c makes them."""
    leaf = cgroup_of(pid)
    fam = os.path.dirname(leaf)
    assert os.path.dirname(fam) == f"{root}/forkvm", leaf
    return fam, leaf


def as_uid(uid, script):
    """sh -c script as uid: (returncode, stderr)."""
    r = subprocess.run(["sh", "-c", script], user=uid, capture_output=True, text=True)
    return r.returncode, r.stderr


def wait_gone(paths, what, timeout=30):
    deadline = time.monotonic() + timeout
    while any(os.path.exists(p) for p in paths):
        assert time.monotonic() < deadline, what()
        time.sleep(0.1)


def test_each_vm_of_a_jailed_family_has_its_own_cgroup(rundir):
    """A jailed source's cgroup is a leaf of a family cgroup delegated to its jail's uid: its
    cow template and children and its full children each get a cgroup of their own there,
    made from inside the jail. Only the directory and cgroup.procs are delegated: the
    family's limits, its controllers and cgroup bounds, and the source's leaf stay root's,
    and nothing outside the family can be written. Each VM's cgroup goes with it; the next
    start reaps the family's."""
    root = cgroup2_root()
    assert root, "no writable cgroup2 mount at /sys/fs/cgroup or /sys/fs/cgroup/unified"
    d, pids = rundir
    pid, sock = start(rundir, "fam")
    uid = BASE + pid
    fam, leaf = family_of(root, pid)
    assert (fam, leaf) == (f"{root}/forkvm/fam-{pid}", f"{fam}/fam-{pid}")
    for name in ("", "cgroup.procs", "leaving/cgroup.procs"):
        assert os.stat(os.path.join(fam, name)).st_uid == uid, name
    for path in ("cgroup.max.descendants", "cgroup.max.depth", "cgroup.subtree_control",
                 "cgroup.threads", "leaving", os.path.basename(leaf),
                 os.path.basename(leaf) + "/cgroup.procs"):
        assert os.stat(os.path.join(fam, path)).st_uid == 0, path
    assert open(f"{fam}/cgroup.max.depth").read().strip() == "1"
    assert open(f"{fam}/cgroup.max.descendants").read().strip() == "4096"
    outside = f"{root}/forkvm/outside-{os.getpid()}"
    os.mkdir(outside)
    try:
        for script in (f"echo 1 > {fam}/cgroup.max.descendants",  # its bounds
                       f"echo -pids > {fam}/cgroup.subtree_control",  # resets every limit
                       f"echo {pid} > {outside}/cgroup.procs",  # a cgroup not the family's
                       f"mkdir {fam}/x && mkdir {fam}/x/y"):  # deeper than the reaper goes
            rc, err = as_uid(uid, script)
            assert rc != 0 and ("Permission denied" in err or "Resource temporarily" in err), \
                (script, err)
    finally:
        os.rmdir(outside)
        if os.path.isdir(f"{fam}/x"):
            os.rmdir(f"{fam}/x")
    kids = []
    for strategy in ("cow", "full"):
        reply = branch_jailed(d, "fam", strategy, "f" + strategy)
        kids += reply["children"]
        if strategy == "cow":
            template = call(reply["template"], {"cmd": "status"})["pid"]
    pids += [k["pid"] for k in kids] + [template]
    paths = {}
    for k in kids + [{"name": "fcow-template", "pid": template}]:
        path = cgroup_of(k["pid"])
        # In the family, named NAME-<the pid of the process that made it>; the jail's uid's
        assert os.path.dirname(path) == fam, path
        assert os.path.basename(path).startswith(k["name"] + "-"), path
        assert os.stat(path).st_uid == uid, path
        assert open(f"{path}/cgroup.procs").read().split() == [str(k["pid"])], path
        paths[k["pid"]] = path
    assert len(set(paths.values())) == 5
    for k in kids:
        assert forkvm_cmd("stop", k["socket"]).returncode == 0
        # a child names its cgroup as the host sees it (inside, ROOT is the family's)
        assert f"/forkvm/fam-{pid}/" in log_of(rundir, "fam.jail/" + k["name"]) or \
            "limits not applied" not in log_of(rundir, "fam.jail/" + k["name"])
    wait_gone([paths[k["pid"]] for k in kids], lambda: os.listdir(fam))
    assert forkvm_cmd("stop", sock).returncode == 0
    # The template ends with its source; the family's cgroup is root's to remove: the next
    # VMM start does. Any VMM started on this host reaps dead families, so one started by
    # something else meanwhile may have removed it already (seen once in CI): then nothing of
    # it is left, which is what this checks.
    wait_gone([paths[template], leaf, f"/proc/{pid}"],
              lambda: os.listdir(fam) if os.path.isdir(fam) else "(reaped)")
    if os.path.isdir(fam):
        assert sorted(e for e in os.listdir(fam) if os.path.isdir(os.path.join(fam, e))) == \
            ["leaving"]
    # --family-budget sizes the family's cgroup: only for a VMM entering a jail of its own
    for extra in ((), ("--no-jail",), ("--jail", "--no-cgroup")):
        r = forkvm_cmd("run", "--name", "nb", "--mem", "16M", "--family-budget", "2", *extra,
                       env=env_of(d))
        assert r.returncode == 2 and "--family-budget is for a VMM entering a jail" in \
            r.stderr, (extra, r.returncode, r.stderr)
    left = os.path.isdir(fam)
    start(rundir, "next", "--family-budget", "3")
    assert not os.path.exists(fam)
    if left:  # there a moment before: this start removed it
        assert f"removed the stale cgroup {fam}" in log_of(rundir, "next")


def test_a_family_cgroup_outlives_its_source_while_a_child_runs(rundir):
    """The source killed outright while its cow child runs: a VMM start then leaves the
    family's cgroup and its leaving leaf alone (the child leaves through it at exit) and
    removes them once the child is gone too."""
    root = cgroup2_root()
    assert root, "no writable cgroup2 mount at /sys/fs/cgroup or /sys/fs/cgroup/unified"
    d, pids = rundir
    pid, sock = start(rundir, "src")
    fam, _ = family_of(root, pid)
    reply = branch_jailed(d, "src", "cow", "kid")
    kid = reply["children"][0]
    pids += [c["pid"] for c in reply["children"]]
    for c in reply["children"][1:]:
        assert forkvm_cmd("stop", c["socket"]).returncode == 0
    kid_cg = cgroup_of(kid["pid"])
    os.kill(pid, signal.SIGKILL)
    wait_gone([f"/proc/{pid}"], lambda: "source still there")
    start(rundir, "mid")  # its start reaps what it can
    assert os.path.isdir(f"{fam}/leaving") and os.path.isdir(kid_cg)
    assert ok(kid["socket"], {"cmd": "ping"})
    assert forkvm_cmd("stop", kid["socket"]).returncode == 0
    wait_gone([kid_cg, f"/proc/{kid['pid']}"], lambda: os.listdir(fam))
    assert "leaving the cgroup" not in log_of(rundir, "src.jail/kid-0")
    template = reply["template"]
    wait_gone([template], lambda: "template still there", timeout=60)
    start(rundir, "last")
    assert not os.path.exists(fam), os.listdir(fam)


def test_a_stray_family_variable_changes_nothing(rundir):
    """FORKVM_CGROUP_FAMILY (and FORKVM_JAILED) in the environment of a root VMM without
    CAP_SYS_ADMIN in its bounding set, as in a container: it is not in a jailed family and
    makes its cgroup in ROOT/forkvm as always, never in ROOT itself."""
    import ctypes
    root = cgroup2_root()
    assert root, "no writable cgroup2 mount at /sys/fs/cgroup or /sys/fs/cgroup/unified"
    d, pids = rundir
    libc = ctypes.CDLL(None, use_errno=True)

    def no_sys_admin():
        assert libc.prctl(24, 21, 0, 0, 0) == 0  # PR_CAPBSET_DROP CAP_SYS_ADMIN
        assert libc.prctl(38, 1, 0, 0, 0) == 0  # PR_SET_NO_NEW_PRIVS
    r = subprocess.run([FORKVM, "run", "--name", "stray", "--mem", "16M", "--detach"],
                       env=env_of(d, FORKVM_JAILED="1", FORKVM_CGROUP_FAMILY=root),
                       preexec_fn=no_sys_admin, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    vmm = int(r.stdout.split()[0])
    pids.append(vmm)
    assert cgroup_of(vmm) == f"{root}/forkvm/stray-{vmm}"


def landlock_abi():
    """The kernel's Landlock ABI version; 0 without Landlock."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    v = libc.syscall(444, None, ctypes.c_size_t(0), ctypes.c_uint32(1))  # create_ruleset
    return max(v, 0)


def test_a_jailed_vm_signals_only_the_vms_it_made(rundir):
    """The VMs of a jail share its uid; each enters a Landlock domain scoping its signals
    (jail/scope.h), nested in its source's, so its control thread (which may kill, for the
    children it makes) reaches itself and the VMs branched from it, never its source or a
    sibling. Kernels without Landlock's signal scope (ABI < 6): said in the log."""
    d, pids = rundir
    pid, sock = start(rundir, "sig", env_extra={"FORKVM_TEST_SECCOMP_PROBE": "1"})
    cows = branch_jailed(d, "sig", "cow", "sc")["children"]
    full = branch_jailed(d, "sig", "full", "sf")["children"]
    pids += [k["pid"] for k in cows + full]
    everyone = [{"pid": pid, "socket": sock}] + cows + full

    def kill_errno(frm, to):
        return ok(frm["socket"], {"cmd": "seccomp_probe", "call": "kill", "pid": to["pid"]})[
            "errno"]

    if landlock_abi() < 6:
        assert not ok(sock, {"cmd": "status"})["signals_scoped"]
        assert "signals not scoped to its own VMs" in log_of(rundir, "sig")
        return
    for vm in everyone:
        assert ok(vm["socket"], {"cmd": "status"})["signals_scoped"] is True, vm
        assert kill_errno(vm, vm) == 0  # itself
    for kid in cows + full:
        assert kill_errno(everyone[0], kid) == 0  # the source reaches what it made ...
        assert kill_errno(kid, everyone[0]) == errno.EPERM  # ... they do not reach it
        for other in cows + full:
            if other is not kid:
                assert kill_errno(kid, other) == errno.EPERM, (kid, other)  # nor each other
    for vm in everyone:
        assert forkvm_cmd("stop", vm["socket"]).returncode == 0


def test_jail_bind_is_a_snapshot_target(rundir):
    target = tempfile.mkdtemp(prefix="forkvm-jail-bind-")
    try:
        os.chmod(target, 0o777)  # the jail's uid must be able to write it: the caller's job
        pid, sock = start(rundir, "jb", "--jail-bind", target)
        assert_confined(pid, BASE + pid)
        ok(sock, {"cmd": "snapshot", "dir": target + "/snap"})
        assert sorted(os.listdir(target + "/snap")) == ["memory", "meta.json", "vmstate"]
        assert forkvm_cmd("stop", sock).returncode == 0
    finally:
        shutil.rmtree(target, ignore_errors=True)


def test_restores_of_a_snapshot_with_vsock_are_jailed(rundir):
    """A snapshot with a vsock device (every Linux guest has one) restores in its own jail:
    its device threads start after the jail point, so the restore is still single-threaded
    there. The restored guest's echo answers through the public socket path, for every
    backing; the source's connection lives on."""
    d, pids = rundir
    pid, sock = start(rundir, "vs", "--vsock", os.path.join(d, "vs.sock.vsock"))
    assert_confined(pid, BASE + pid)
    assert ok(sock, {"cmd": "vsock_listen", "port": 5000})["result"][0] == 3
    old, hp = vsock_connect(os.path.join(d, "vs.sock.vsock"), 5000)
    assert hp is not None
    snap = os.path.join(d, "vs.jail", "snap")
    ok(sock, {"cmd": "snapshot", "dir": snap})
    ps_sock = os.path.join(d, "ps.sock")
    ps = start_pageserver(rundir, ps_sock)
    try:
        for backing in ("file", "memfd", "uffd"):
            extra = ("--pageserver", ps_sock) if backing == "uffd" else ()
            name = "rv-" + backing
            cpid, csock = start(rundir, name, "--restore", snap, "--backing", backing, *extra)
            assert_confined(cpid, BASE + cpid)
            public = os.path.join(d, name + ".sock.vsock")
            assert os.path.islink(public)  # to the socket inside the child's own jail
            s, hp = vsock_connect(public, 5000)
            assert hp is not None, (backing, log_of(rundir, name))
            s.sendall(b"after a jailed restore")
            assert recv_exact(s, 22) == b"after a jailed restore"
            s.close()
            assert forkvm_cmd("stop", csock).returncode == 0
    finally:
        ps.send_signal(signal.SIGTERM)
        ps.wait(timeout=30)
    old.sendall(b"still")
    assert recv_exact(old, 5) == b"still"
    old.close()
    assert forkvm_cmd("stop", sock).returncode == 0


def default_env(run_dir):
    """The environment of a user who asked for nothing: no FORKVM_JAIL (the harness sets 0)."""
    env = env_of(run_dir, FORKVM_JAIL_UID_BASE=str(BASE))
    env.pop("FORKVM_JAIL", None)
    return env


def cli(env, *args):
    return forkvm_cmd(*args, env=env)


def listed(env):
    r = cli(env, "ls", "--json")
    assert r.returncode == 0, r.stderr
    return {row["name"]: row["state"] for row in json.loads(r.stdout)}


def test_hand_run_vmm_is_jailed_by_default_and_the_cli_works_around_its_jail(rundir):
    """`forkvm run` as root, with neither --jail nor --no-jail nor FORKVM_JAIL, confines its
    VMM. The CLI does for it what the jail keeps it from: a snapshot to a directory outside
    the jail is written inside and adopted (root's, 0700/0600, nothing left in the jail or
    the run directory), --force rules hold, a restore from it is jailed too and has the same
    memory, and cow children and the template are named in the run directory (forkvm ls,
    probe by name) though their sockets are in the source's jail."""
    d, pids = rundir
    env = default_env(d)
    r = cli(env, "run", "--name", "dflt", "--mem", "64M", "--detach")
    assert r.returncode == 0, r.stderr
    pid = int(r.stdout.split()[0])
    pids.append(pid)
    assert_confined(pid, BASE + pid)
    assert "JAIL" not in log_of(rundir, "dflt")  # neither DISABLED nor OFF: it is on
    assert listed(env) == {"dflt": "running"}
    sock = os.path.join(d, "dflt.sock")
    ok(sock, {"cmd": "fill", "gpa": WORK, "len": FILL, "seed": 11})
    want = checksum(sock)

    outside = tempfile.mkdtemp(prefix="forkvm-jail-adopt-", dir="/dev/shm")
    try:
        snap = os.path.join(outside, "snap")
        r = cli(env, "snapshot", "create", "dflt", snap)
        assert r.returncode == 0, r.stderr
        reply = json.loads(r.stdout)
        assert reply["dir"] == snap and reply["adopt_ms"] >= 0, reply
        assert reply["staged"] == "mount", reply  # on DIR's file system, mounted in its jail
        for dirpath, dirs, files in os.walk(snap):
            st = os.lstat(dirpath)
            assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (0, 0, 0o700), dirpath
            for f in files:
                st = os.lstat(os.path.join(dirpath, f))
                assert (st.st_uid, st.st_mode & 0o777) == (0, 0o600), f
        assert sorted(os.listdir(snap)) == ["memory", "meta.json", "vmstate"]
        assert not [n for n in os.listdir(os.path.join(d, "dflt.jail")) if "adopt" in n]
        assert not [n for n in os.listdir(d) if "adopt" in n]
        assert cli(env, "snapshot", "verify", snap).returncode == 0
        # An existing DIR without --force: refused before the VM is paused.
        pauses = ok(sock, {"cmd": "status"})["pause_count"]
        r = cli(env, "snapshot", "create", "dflt", snap)
        assert r.returncode == 1 and "already exists" in r.stderr, r.stderr
        assert ok(sock, {"cmd": "status"})["pause_count"] == pauses
        assert cli(env, "snapshot", "create", "dflt", snap, "--force").returncode == 0
        # --force never replaces what is not a snapshot.
        other = os.path.join(outside, "other")
        os.mkdir(other)
        open(os.path.join(other, "keep"), "w").close()
        r = cli(env, "snapshot", "create", "dflt", other, "--force")
        assert r.returncode == 1 and os.listdir(other) == ["keep"], r.stderr

        r = cli(env, "run", "--name", "back", "--restore", snap, "--detach")
        assert r.returncode == 0, r.stderr
        rpid = int(r.stdout.split()[0])
        pids.append(rpid)
        assert_confined(rpid, BASE + rpid)
        assert checksum(os.path.join(d, "back.sock")) == want
    finally:
        shutil.rmtree(outside, ignore_errors=True)

    # On the run directory's file system the adopted tree is renamed into place, not copied.
    same = os.path.join(d, "snap-same-fs")
    r = cli(env, "snapshot", "create", "dflt", same)
    assert r.returncode == 0 and json.loads(r.stdout)["dir"] == same, r.stderr
    assert json.loads(r.stdout)["staged"] == "mount"
    assert sorted(os.listdir(same)) == ["memory", "meta.json", "vmstate"]
    assert os.stat(os.path.join(same, "memory")).st_uid == 0
    assert cli(env, "snapshot", "verify", same).returncode == 0

    r = cli(env, "branch", "dflt", "--count", "2", "--name", "kid")
    assert r.returncode == 0, r.stderr
    kids = json.loads(r.stdout)["children"]
    pids.extend(k["pid"] for k in kids)
    for k in kids:
        assert os.path.dirname(k["socket"]) == os.path.join(d, "dflt.jail")
        assert os.readlink(os.path.join(d, k["name"] + ".sock")) == k["socket"]
        r = cli(env, "probe", "checksum", k["name"], "--gpa", str(WORK), "--len", str(FILL))
        assert r.returncode == 0 and json.loads(r.stdout)["checksum"] == want, r.stderr
    assert listed(env) == {"dflt": "running", "back": "running", "kid-0": "running",
                           "kid-1": "running", "kid.template": "template"}
    assert cli(env, "stop", "kid-0").returncode == 0
    wait_gone([os.path.join(d, "dflt.jail", "kid-0.sock")], lambda: "kid-0 did not stop")
    assert "kid-0" not in listed(env)  # its link is left dangling, and not listed
    # A full branch's image must be where the jailed VMM can write: said so.
    r = cli(env, "branch", "dflt", "--strategy", "full", "--dir", "/tmp/forkvm-x", "--name", "f")
    assert r.returncode == 1 and "is jailed: --dir must lie in its jail directory" in r.stderr
    assert cli(env, "template", "stop", "kid.template").returncode == 0
    for name in ("dflt", "back", "kid-1"):
        assert cli(env, "stop", name).returncode == 0


def fake_jailed_vmm(jail_dir, uid, answer, sock_name="fake.sock"):
    """A process serving JAIL_DIR/SOCK_NAME as uid, as a jailed VMM taken over would (in this
    mount namespace: no real jail): every request gets answer(request) (a dict), and its
    "dir" is logged in JAIL_DIR/requests. Returns (pid, socket path)."""
    import socket as socketlib
    if not os.path.isdir(jail_dir):
        os.mkdir(jail_dir, 0o700)
        os.chown(jail_dir, uid, uid)
    sock = os.path.join(jail_dir, sock_name)
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(ready_r)
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            srv = socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_STREAM)
            srv.bind(sock)
            srv.listen(8)
            os.write(ready_w, b"r")
            while True:
                c, _ = srv.accept()
                try:
                    req = json.loads(read_line(c))
                except ConnectionError:  # the CLI's look at who serves the socket
                    c.close()
                    continue
                with open(os.path.join(jail_dir, "requests"), "a") as log:
                    log.write(f"{req['cmd']} {req.get('dir')}\n")
                c.sendall(json.dumps(answer(req)).encode() + b"\n")
                c.close()
        finally:
            os._exit(0)
    os.close(ready_w)
    assert os.read(ready_r, 1) == b"r"
    os.close(ready_r)
    return pid, sock


def planted(plant):
    """An answer that plants a snapshot where the request says, then says ok."""
    def answer(req):
        plant(req["dir"])
        return {"ok": True, "dir": req["dir"]}
    return answer


@pytest.mark.parametrize("entry", ["symlink", "hardlink", "fifo"])
def test_a_snapshot_a_hostile_jailed_vmm_writes_is_refused(rundir, entry):
    """What the CLI adopts from a jail was written by a VMM that may be hostile: a symlink
    (to a root file), a hard link to a file another uid owns, or a FIFO in the snapshot is
    refused with the entry named, and neither the target nor anything in the run directory
    is left behind."""
    d, pids = rundir
    uid = BASE + 4242
    victim = os.path.join(d, "root-secret")
    with open(victim, "w") as f:
        f.write("root's\n")
    os.chmod(victim, 0o600)
    jail_dir = os.path.join(d, "fake.jail")
    stash = os.path.join(jail_dir, "stash")

    def plant(snap_dir):
        os.mkdir(snap_dir, 0o700)
        with open(os.path.join(snap_dir, "vmstate"), "w") as f:
            f.write("x")
        mem = os.path.join(snap_dir, "memory")
        if entry == "symlink":
            os.symlink(victim, mem)
        elif entry == "hardlink":
            os.rename(stash, mem)  # a link root made: the uid may move it, not read it
        else:
            os.mkfifo(mem)

    os.chmod(d, 0o711)  # the fake is no real jail: it reaches its directory through d
    pid, sock = fake_jailed_vmm(jail_dir, uid, planted(plant))
    pids.append(pid)
    if entry == "hardlink":
        os.link(victim, stash)
    target = os.path.join(d, "out")
    r = cli(default_env(d), "snapshot", "create", sock, target)
    want = {"symlink": "a symbolic link", "hardlink": "owned by uid 0", "fifo": "a FIFO"}[entry]
    # staged in its jail directory: the fake shares this mount namespace, so gets no mount
    assert "staged in its jail directory" in r.stderr, r.stderr
    assert r.returncode == 1 and "taking it out of its jail to " + target in r.stderr, r.stderr
    assert want in r.stderr and "memory" in r.stderr, r.stderr
    assert not os.path.exists(target)
    assert not [n for n in os.listdir(d) if "adopt" in n or n.startswith("out")]
    assert not [n for n in os.listdir(jail_dir) if "adopt" in n]
    assert open(victim).read() == "root's\n"
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


def test_a_vmm_run_by_another_user_is_not_jailed_and_says_so(rundir):
    """Not root: the jail cannot be made, so the default is off with a warning in the log
    (not the JAIL DISABLED of --no-jail), and --jail is a clear error."""
    d, pids = rundir
    nobody = 65534
    os.chown(d, nobody, nobody)
    kvm = os.path.join(d, "kvm")
    os.mknod(kvm, 0o600 | stat.S_IFCHR, os.makedev(10, 232))
    os.chown(kvm, nobody, nobody)
    binary = os.path.join(d, "forkvm")  # the build tree may not be reachable by nobody
    shutil.copy(FORKVM, binary)
    os.chmod(binary, 0o755)
    base = f"{binary} run --mem 64M --kvm {kvm} --detach --name"
    rc, err = as_uid(nobody, f"env -u FORKVM_JAIL FORKVM_RUN_DIR={d} {base} plain")
    assert rc == 0, err
    pid = ok(os.path.join(d, "plain.sock"), {"cmd": "status"})["pid"]
    pids.append(pid)
    assert status(pid)["Uid"].split()[0] == str(nobody)
    log = log_of(rundir, "plain")
    assert "JAIL OFF: VMM plain runs as uid 65534, not root" in log and "DISABLED" not in log
    rc, err = as_uid(nobody, f"env -u FORKVM_JAIL FORKVM_RUN_DIR={d} {base} asked --jail")
    assert rc == 1 and "confining asked needs root" in err, err


def test_a_file_the_vmm_keeps_a_link_to_is_copied_not_taken(rundir):
    """A file of the VMM's own with a second name it kept (or a disk layer it linked into
    the snapshot): adopted as a root copy, so the name the VMM kept never becomes a root
    file with the VMM's bytes."""
    d, pids = rundir
    uid = BASE + 4243
    jail_dir = os.path.join(d, "keep.jail")
    kept = os.path.join(jail_dir, "kept")

    def plant(snap_dir):
        os.mkdir(snap_dir, 0o700)
        for name in ("vmstate", "memory"):
            with open(os.path.join(snap_dir, name), "w") as f:
                f.write(name)
        os.link(os.path.join(snap_dir, "memory"), kept)

    os.chmod(d, 0o711)
    pid, sock = fake_jailed_vmm(jail_dir, uid, planted(plant))
    pids.append(pid)
    target = os.path.join(d, "out")
    r = cli(default_env(d), "snapshot", "create", sock, target)
    assert r.returncode == 0, r.stderr
    got = os.stat(os.path.join(target, "memory"))
    assert got.st_uid == 0 and got.st_nlink == 1 and open(os.path.join(target, "memory")).read() == "memory"
    st = os.stat(kept)
    assert st.st_uid == uid and st.st_ino != got.st_ino
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


def test_the_cli_trusts_no_path_a_jailed_vmm_gives(rundir):
    """A VMM taken over names what it likes: branch children outside its jail, in another
    jail, not sockets, or with odd names get no link in the run directory, and no file there
    is replaced; a socket of its own that leads into a nested *.jail is no jail the CLI
    adopts from (the request goes to the VMM as it is)."""
    d, pids = rundir
    uid = BASE + 4244
    os.chmod(d, 0o711)
    jail_dir = os.path.join(d, "evil.jail")
    other = os.path.join(d, "other.jail")
    os.mkdir(other, 0o700)
    log = os.path.join(d, "victim.sock.log")
    with open(log, "w") as f:
        f.write("root's log\n")
    kids = [os.path.join(other, "victim.sock"), "/etc/passwd", os.path.join(jail_dir, "plain.sock"),
            os.path.join(jail_dir, "..", "victim.sock"), os.path.join(jail_dir, ".hidden.sock"),
            os.path.join(jail_dir, "victim.sock.log")]

    def answer(req):
        if req["cmd"] == "branch":
            return {"ok": True, "children": [{"name": f"k{i}", "pid": 1, "socket": s}
                                             for i, s in enumerate(kids)],
                    "template": os.path.join(jail_dir, "requests")}
        return {"ok": True}

    pid, sock = fake_jailed_vmm(jail_dir, uid, answer)
    pids.append(pid)
    open(os.path.join(jail_dir, "plain.sock"), "w").close()  # a file, not a socket
    before = sorted(os.listdir(d))
    r = cli(default_env(d), "branch", sock, "--count", "1", "--name", "k")
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(d)) == before, r.stderr
    assert open(log).read() == "root's log\n"
    # A second socket, in a directory named like a jail inside the jail: not a jail.
    nested = os.path.join(jail_dir, "inner.jail")
    os.mkdir(nested, 0o700)
    os.chown(nested, uid, uid)
    pid2, sock2 = fake_jailed_vmm(nested, uid, answer, "n.sock")
    pids.append(pid2)
    r = cli(default_env(d), "snapshot", "create", sock2, os.path.join(d, "snap-n"))
    assert "snapshot " + os.path.join(d, "snap-n") in open(os.path.join(nested, "requests")).read()
    assert not os.path.exists(os.path.join(d, "snap-n"))
    for p in (pid, pid2):
        os.kill(p, signal.SIGKILL)
        os.waitpid(p, 0)
