"""Confinement: seccomp filters on every thread, a violation kills, one cgroup v2 per VM."""
import os
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

from forkvm_vm import FORKVM, VM, Child, call, kill_all, restore_children

SIGSYS_MSG = "killed by SIGSYS (seccomp violation)"


def seccomp_modes(pid):
    """{tid: Seccomp field} of every thread of pid (kernel workers included: KVM's)."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            status = open(f"/proc/{pid}/task/{tid}/status").read()
        except FileNotFoundError:
            continue
        out[int(tid)] = int(status.split("Seccomp:")[1].split()[0])
    return out


def all_filtered(pid, mode=2, timeout=30):
    """Each thread loads its filter first thing when it first runs; on a loaded host a
    thread may not have been scheduled yet when the socket is ready: wait for it."""
    deadline = time.monotonic() + timeout
    while True:
        modes = seccomp_modes(pid)
        if all(m == mode for m in modes.values()) or time.monotonic() > deadline:
            return modes, all(m == mode for m in modes.values())
        time.sleep(0.05)


def wait_gone(pid, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = open(f"/proc/{pid}/stat").read().split(")")[-1].split()[0]
            if state == "Z":
                return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


def cgroup_root():
    for root in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified"):
        r = subprocess.run(["stat", "-fc", "%T", root], capture_output=True, text=True)
        if r.stdout.strip() == "cgroup2fs" and os.access(root, os.W_OK):
            return root
    return None


def own_cow_cgroup(cgroot, pid, name):
    """A cow template or child's cgroup: ROOT/forkvm/NAME<pid of the process that made it>
    (it starts there, clone3 CLONE_INTO_CGROUP), holding that one process."""
    cg = cgroup_of(pid)
    procs = open(os.path.join(cgroot + cg, "cgroup.procs")).read().split()
    # Besides it, only kernel threads (Linux < 6.4 attaches KVM's per-VM workers there).
    others = [p for p in procs if p != str(pid)]
    return (cg.startswith(f"/forkvm/{name}") and str(pid) in procs and
            all(open(f"/proc/{p}/cmdline", "rb").read() == b"" for p in others))


def cgroup_of(pid):
    for line in open(f"/proc/{pid}/cgroup"):
        if line.startswith("0::"):
            return line[3:].strip()
    return None


def wait_for(pred, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


@pytest.fixture
def probe_env(monkeypatch):
    monkeypatch.setenv("FORKVM_TEST_SECCOMP_PROBE", "1")
    monkeypatch.delenv("FORKVM_SECCOMP", raising=False)


def test_every_thread_of_a_vmm_is_filtered():
    d = tempfile.mkdtemp(prefix="forkvm-confine-")
    vm = VM(vcpus=2, extra=("--vsock", os.path.join(d, "v.sock")))
    try:
        vm.ok({"cmd": "ping"})
        modes, ok = all_filtered(vm.proc.pid)
        # main/control + 2 vCPUs + the vsock device thread (+ KVM's kernel workers)
        assert len(modes) >= 4 and ok, modes
    finally:
        assert vm.stop() == 0


def test_page_server_is_filtered():
    d = tempfile.mkdtemp(prefix="forkvm-confine-")
    path = os.path.join(d, "ps.sock")
    with open(path + ".log", "wb") as log:
        ps = subprocess.Popen([FORKVM, "pageserver", "--socket", path], stdout=log, stderr=log,
                              stdin=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: os.path.exists(path)), open(path + ".log").read()
        assert call(path, {"cmd": "status"})["ok"]
        modes, ok = all_filtered(ps.pid)
        assert modes and ok, modes
    finally:
        ps.send_signal(signal.SIGTERM)
        assert ps.wait(timeout=30) == 0, open(path + ".log").read()


def test_forbidden_syscall_kills_the_vmm_with_sigsys(probe_env):
    vm = VM()
    try:
        assert all_filtered(vm.proc.pid)[1]
        with pytest.raises((ConnectionError, OSError)):
            vm.call({"cmd": "seccomp_probe"}, timeout=10)
        assert vm.proc.wait(timeout=30) == -signal.SIGSYS
        assert "calling mount(2)" in vm.stderr()
    finally:
        vm.kill()


def end_branch(src, pids, run, prefix):
    """Kill a cow branch's children, stop its source and its template PREFIX.template."""
    kill_all(pids)
    src.stop()
    try:
        call(os.path.join(run, f"{prefix}.template.sock"), {"cmd": "stop"}, timeout=10)
    except OSError:
        pass


@pytest.mark.parametrize("role", ["vcpu", "device"])
def test_vcpu_and_device_threads_signal_only_their_own_process(probe_env, role):
    """The VMMs of a jailed family share a uid, so the threads that handle guest-controlled
    data may signal their own process only: a new thread of the role signals itself (allowed:
    the pid in its filter is this process's), then its parent process, and dies."""
    vm = VM()
    try:
        with pytest.raises((ConnectionError, OSError)):
            vm.call({"cmd": "seccomp_probe", "role": role}, timeout=10)
        assert vm.proc.wait(timeout=30) == -signal.SIGSYS
        assert f"a {role} thread signals its parent process" in vm.stderr()
    finally:
        vm.kill()


def test_a_cow_child_filter_names_its_own_pid(probe_env):
    """Filters are compiled once in the source; a cow child installs them with its own pid in
    the own-process rule: it may signal itself, not its source."""
    run = tempfile.mkdtemp(prefix="forkvm-confine-")
    src = VM()
    kid = None
    try:
        reply = src.ok({"cmd": "branch", "strategy": "cow", "count": 1, "prefix": "o",
                        "run_dir": run, "paused": False}, timeout=120)
        kid = Child(reply["children"][0]["socket"], reply["children"][0]["pid"])
        with pytest.raises((ConnectionError, OSError)):
            kid.call({"cmd": "seccomp_probe", "role": "device"}, timeout=10)
        assert wait_gone(kid.pid)
        log = open(kid.sock + ".log").read()
        assert "a device thread signals its parent process" in log, log
        log = os.path.join(run, "o.template.sock.log")
        assert wait_for(lambda: SIGSYS_MSG in open(log).read()), open(log).read()
        src.ok({"cmd": "ping"})
    finally:
        end_branch(src, [kid.pid] if kid else [], run, "o")
        shutil.rmtree(run, ignore_errors=True)


def filters_of_main_thread(pid):
    """Seccomp_filters of pid's main thread: how many filters each of its syscalls runs."""
    status = open(f"/proc/{pid}/task/{pid}/status").read()
    return int(status.split("Seccomp_filters:")[1].split()[0])


def test_cow_generations_do_not_stack_control_filters():
    """A cow child's control thread holds its source's control filter already (forked from the
    branch worker, which holds its creator's): it loads it no second time, and a child of a
    child no third. Before, each generation added one: every syscall ran one filter more, and
    a deep enough chain would reach the kernel's bound on a thread's filters."""
    run = tempfile.mkdtemp(prefix="forkvm-confine-")
    src = VM()
    pids = []
    try:
        base = filters_of_main_thread(src.proc.pid)
        assert base >= 1
        parent = src
        for gen in range(3):
            reply = call(parent.sock, {"cmd": "branch", "strategy": "cow", "count": 1,
                                       "prefix": f"gen{gen}", "run_dir": run}, timeout=120)
            assert reply["ok"], reply
            kid = Child(reply["children"][0]["socket"], reply["children"][0]["pid"])
            pids.append(kid.pid)
            kid.ok({"cmd": "ping"})
            assert filters_of_main_thread(kid.pid) == base, f"generation {gen + 1}"
            assert all_filtered(kid.pid)[1]
            parent = kid
    finally:
        kill_all(pids)
        src.stop()
        for gen in range(3):
            try:
                call(os.path.join(run, f"gen{gen}.template.sock"), {"cmd": "stop"}, timeout=10)
            except OSError:
                pass
        shutil.rmtree(run, ignore_errors=True)


def test_probe_is_unreachable_without_the_env_var(monkeypatch):
    monkeypatch.delenv("FORKVM_TEST_SECCOMP_PROBE", raising=False)
    vm = VM()
    try:
        r = vm.call({"cmd": "seccomp_probe"})
        assert not r["ok"] and "test hook" in r["error"], r
        vm.ok({"cmd": "ping"})
    finally:
        assert vm.stop() == 0


def test_log_mode_and_off_mode(probe_env, monkeypatch):
    monkeypatch.setenv("FORKVM_SECCOMP", "log")
    vm = VM()
    try:
        assert all_filtered(vm.proc.pid)[1]
        r = vm.call({"cmd": "seccomp_probe"})
        assert not r["ok"] and "no filter killed" in r["error"], r
        vm.ok({"cmd": "ping"})
        assert "LOG mode" in vm.stderr()
    finally:
        assert vm.stop() == 0
    monkeypatch.setenv("FORKVM_SECCOMP", "0")
    vm = VM()
    try:
        assert all(m == 0 for m in seccomp_modes(vm.proc.pid).values())
        assert "seccomp DISABLED" in vm.stderr()
    finally:
        assert vm.stop() == 0
    monkeypatch.setenv("FORKVM_SECCOMP", "bogus")
    r = subprocess.run([FORKVM, "run", "--mem", "16M", "--socket", "/tmp/forkvm-confine-x.sock"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "FORKVM_SECCOMP=bogus" in r.stderr


def test_cow_children_run_filtered_and_the_template_reports_sigsys(probe_env):
    run = tempfile.mkdtemp(prefix="forkvm-confine-")
    src = VM()
    pids = []
    try:
        reply = src.ok({"cmd": "branch", "strategy": "cow", "count": 2, "prefix": "k",
                        "run_dir": run, "paused": False}, timeout=120)
        kids = [Child(c["socket"], c["pid"]) for c in reply["children"]]
        pids = [k.pid for k in kids]
        for k in kids:
            k.ok({"cmd": "ping"})
            modes, ok = all_filtered(k.pid)
            assert len(modes) >= 2 and ok, modes
            if cgroup_root():  # each cow child starts in a cgroup of its own, not the source's
                assert own_cow_cgroup(cgroup_root(), k.pid, "k-"), cgroup_of(k.pid)
        cg0 = cgroup_root() and cgroup_root() + cgroup_of(kids[0].pid)
        with pytest.raises((ConnectionError, OSError)):
            kids[0].call({"cmd": "seccomp_probe"}, timeout=10)
        assert wait_gone(kids[0].pid)
        if cg0:  # killed, it could not remove its cgroup: its template does
            assert wait_for(lambda: not os.path.exists(cg0)), cg0
        log = os.path.join(run, "k.template.sock.log")
        assert wait_for(lambda: SIGSYS_MSG in open(log).read()), open(log).read()
        kids[1].ok({"cmd": "ping"})  # its sibling lives on
        src.ok({"cmd": "ping"})
    finally:
        end_branch(src, pids, run, "k")


@pytest.fixture
def cgroot():
    root = cgroup_root()
    if not root:
        pytest.skip("no writable cgroup v2 hierarchy on this host")
    return root


def not_applied(stderr):
    """The one "limits not applied" line of a VMM's log (exactly one, or none: "")."""
    lines = [ln for ln in stderr.splitlines() if "limits not applied" in ln]
    assert len(lines) <= 1, lines
    return lines[0] if lines else ""


def controllers(path):
    with open(os.path.join(path, "cgroup.controllers")) as f:
        return f.read().split()


def missing_controller(cgroot, ctl):
    """None when ctl is usable under cgroot, else why not (for a skip message)."""
    offered = controllers(cgroot)
    if ctl in offered:
        return None
    why = (f"the {ctl} controller is not available in the cgroup v2 hierarchy {cgroot} "
           f"(its cgroup.controllers: {' '.join(offered) or 'none'})")
    if cgroot.endswith("/unified"):
        why += f"; this cgroup v1/v2 hybrid host binds {ctl} to cgroup v1"
    return why


def test_each_vm_has_its_own_cgroup_removed_at_stop(cgroot):
    vm = VM(extra=("--pids-max", "64", "--cpu-max", "50000/100000", "--mem-limit", "300M"))
    pid = vm.proc.pid
    cg = cgroup_of(pid)
    assert cg and cg.startswith("/forkvm/") and cg.endswith(f"-{pid}"), cg
    path = cgroot + cg
    assert os.path.isdir(path)
    assert str(pid) in open(os.path.join(path, "cgroup.procs")).read().split()
    avail = open(os.path.join(path, "cgroup.controllers")).read().split()
    expect = {"memory": ("memory.max", str(300 << 20)), "pids": ("pids.max", "64"),
              "cpu": ("cpu.max", "50000 100000")}
    for ctl, (f, want) in expect.items():
        if ctl in avail:
            assert open(os.path.join(path, f)).read().strip() == want, f
        else:  # a hybrid host (controllers bound to cgroup v1): said once, not dropped
            line = not_applied(vm.stderr())
            assert f"{f}={want}" in line and ctl in line.split("(", 1)[1], line
    if not set(expect) <= set(avail):
        assert "not offered by " + cgroot in not_applied(vm.stderr())
    else:
        assert "limits not applied" not in vm.stderr()
    vm.ok({"cmd": "ping"})
    assert vm.stop() == 0
    assert not os.path.exists(path)


def test_default_memory_max_is_guest_ram_plus_overhead(cgroot):
    vm = VM(mem="64M")
    try:
        path = cgroot + cgroup_of(vm.proc.pid)
        if "memory" in open(os.path.join(path, "cgroup.controllers")).read().split():
            assert int(open(os.path.join(path, "memory.max")).read()) == (64 + 256) << 20
        else:
            assert f"memory.max={(64 + 256) << 20}" in not_applied(vm.stderr())
    finally:
        assert vm.stop() == 0


def test_killed_vms_cgroup_is_reaped_at_next_start(cgroot):
    vm = VM()
    path = cgroot + cgroup_of(vm.proc.pid)
    vm.kill()
    assert os.path.isdir(path)  # nobody could remove it
    nxt = VM()
    try:
        # this start's reaper (or a concurrent VMM's) removed it
        assert not os.path.exists(path)
    finally:
        assert nxt.stop() == 0


def test_no_cgroup_option_stays_put(cgroot):
    before = cgroup_of(os.getpid())
    vm = VM(extra=("--no-cgroup",))
    try:
        assert cgroup_of(vm.proc.pid) == before
    finally:
        assert vm.stop() == 0


def test_bad_cgroup_options_are_usage_errors():
    for opt in (("--pids-max", "0"), ("--cpu-max", "10"), ("--mem-limit", "1x"),
                ("--cpu-weight", "20000")):
        r = subprocess.run([FORKVM, "run", *opt], capture_output=True, text=True, timeout=30)
        assert r.returncode == 2, (opt, r.stderr)


def test_pids_max_stops_the_vmm_creating_threads(cgroot, tmp_path):
    """pids.max is enforced on the VMM: at its current thread count, a snapshot (which starts
    a worker thread) fails with a clear error and the VM runs on; a VMM that may not start a
    single thread fails to start, cleanly."""
    why = missing_controller(cgroot, "pids")
    if why:
        pytest.skip(why)
    vm = VM(vcpus=2, extra=("--pids-max", "64"))
    path = None
    try:
        path = cgroot + cgroup_of(vm.proc.pid)

        def read(name):
            with open(os.path.join(path, name)) as f:
                return f.read().strip()

        assert read("pids.max") == "64"
        current = int(read("pids.current"))
        assert current >= 3, current  # main, two vCPUs (and KVM's workers)
        with open(os.path.join(path, "pids.max"), "w") as f:
            f.write(str(current))
        r = vm.call({"cmd": "snapshot", "dir": str(tmp_path / "s1")})
        assert r["ok"] is False, r
        assert "starting the worker thread" in r["error"], r
        assert "Resource temporarily unavailable" in r["error"], r
        events = dict(ln.split() for ln in read("pids.events").splitlines())
        assert int(events["max"]) >= 1, events
        vm.ok({"cmd": "ping"})
        with open(os.path.join(path, "pids.max"), "w") as f:
            f.write("64")
        assert vm.ok({"cmd": "snapshot", "dir": str(tmp_path / "s2")}, timeout=120)["ok"]
        vm.ok({"cmd": "ping"})
    finally:
        assert vm.stop() == 0
    assert path and not os.path.exists(path)
    r = subprocess.run([FORKVM, "run", "--mem", "16M", "--pids-max", "1", "--socket",
                        str(tmp_path / "one.sock")], capture_output=True, text=True, timeout=60)
    # Its first thread (a vCPU's, or KVM's worker) is refused: an error, not a hang or a crash.
    assert r.returncode > 0 and ": error: " in r.stderr, (r.returncode, r.stderr)


def test_cow_children_inherit_the_sources_limits(cgroot, tmp_path):
    """Each cow child enters its own cgroup with the source's options (the template gets none
    of them: a pids.max there could stop it forking); where a controller is missing, the
    child's log names the inherited limit it could not apply."""
    run = str(tmp_path / "run")
    os.mkdir(run, 0o700)
    src = VM(extra=("--pids-max", "48", "--cpu-weight", "300", "--mem-limit", "200M"))
    pids = []
    try:
        reply = src.ok({"cmd": "branch", "strategy": "cow", "count": 1, "prefix": "inh",
                        "run_dir": run, "paused": True}, timeout=120)
        kid = Child(reply["children"][0]["socket"], reply["children"][0]["pid"])
        tpid = call(reply["template"], {"cmd": "status"})["pid"]
        pids = [kid.pid, tpid]
        kpath = cgroot + cgroup_of(kid.pid)
        tpath = cgroot + cgroup_of(tpid)
        assert own_cow_cgroup(cgroot, kid.pid, "inh-0-"), kpath
        assert own_cow_cgroup(cgroot, tpid, "inh-template-"), tpath
        want = {"memory": ("memory.max", str(200 << 20)), "pids": ("pids.max", "48"),
                "cpu": ("cpu.weight", "300")}
        avail = controllers(kpath)
        log = open(kid.stderr_path, errors="replace").read()
        for ctl, (f, value) in want.items():
            if ctl in avail:
                assert open(os.path.join(kpath, f)).read().strip() == value, f
                assert open(os.path.join(tpath, f)).read().strip() in ("max", "100"), f
            else:
                assert f"{f}={value}" in not_applied(log), log
        kid.ok({"cmd": "resume"})
        kid.ok({"cmd": "ping"})
        assert kid.stop() == 0
        assert wait_for(lambda: not os.path.exists(kpath))
    finally:
        kill_all(pids)
        src.stop()


def test_forkvm_restore_passes_cgroup_options_to_its_children(cgroot, tmp_path):
    src = VM()
    try:
        src.ok({"cmd": "snapshot", "dir": str(tmp_path / "snap")}, timeout=120)
    finally:
        assert src.stop() == 0
    run = str(tmp_path / "run")
    os.mkdir(run, 0o700)
    r, kids = restore_children(str(tmp_path / "snap"), "file", 1, run, name="cgr",
                               extra=("--pids-max", "40", "--mem-limit", "100M"))
    assert r.returncode == 0, r.stderr
    kid = kids[0]
    try:
        path = cgroot + cgroup_of(kid.pid)
        avail = controllers(path)
        log = open(kid.stderr_path, errors="replace").read()
        for ctl, f, value in (("pids", "pids.max", "40"), ("memory", "memory.max", str(100 << 20))):
            if ctl in avail:
                assert open(os.path.join(path, f)).read().strip() == value, f
            else:
                assert f"{f}={value}" in not_applied(log), log
    finally:
        assert kid.stop() == 0
