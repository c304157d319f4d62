"""VM generation ID on real KVM, VMM side: a Linux VM gets one in guest RAM at boot; every
restore (each backend, uffd included) and every branch child (each strategy) gets a new one
before its vCPUs run; the source keeps its own; probe VMs have none.

The VMs stay paused: this host cannot run a stock kernel far (docs/LINUX.md), and the IDs are
written by the VMM, not the guest. The guest side (the vmgenid driver bound, its reseed on the
GED notify, two restored clones reading different /proc/sys/kernel/random/uuid) runs in the
nested-Linux suite (tests/linux/) on hosts that boot Linux to userspace."""
import os
import re
import shutil
import tempfile

import pytest

import test_uffd
from forkvm_vm import VM, Child, call, forkvm_cmd, restore_children
from linux_image import image_paths

pytestmark = pytest.mark.kvm
GPA = 0xEF000  # LAYOUT_VMGENID
MEM = "128M"  # the Debian vmlinux loads at 16-62 MiB
HUGEPAGES_PER_CHILD = 128 // 2
# Paused Linux clones: the agent fix-up needs a running guest (and no agent runs here); the
# generation ID does not, it is written by the VMM.
PAUSED = ("--paused", "--no-agent-sync")


@pytest.fixture(scope="module")
def vmlinux():
    paths = image_paths()
    if isinstance(paths, str):
        pytest.skip(paths)
    return paths[0]


@pytest.fixture
def env():
    d = tempfile.mkdtemp(prefix="forkvm-vmgenid-")
    run = os.path.join(d, "run")
    os.makedirs(run)
    state = {"dir": d, "run": run, "vms": []}
    yield state
    for vm in state["vms"]:
        vm.kill()
    for name in os.listdir(run):
        if name.endswith(".template.sock"):
            try:
                call(os.path.join(run, name), {"cmd": "stop"}, timeout=10)
            except OSError:
                pass
    shutil.rmtree(d, ignore_errors=True)


def linux_vm(env, vmlinux, backing="anon"):
    vm = VM(mem=MEM, backing=backing, extra=("--kernel", vmlinux, "--paused"))
    env["vms"].append(vm)
    return vm


def vmgenid(vm):
    """The ID the VMM reports, checked against the 16 bytes the guest would read."""
    gen = vm.ok({"cmd": "status"})["vmgenid"]
    assert re.fullmatch(r"[0-9a-f]{32}", gen), gen
    assert vm.peek(GPA, 16) == bytes.fromhex(gen)
    assert gen != "0" * 32
    return gen


def snapshot(vm, path):
    vm.ok({"cmd": "snapshot", "dir": path}, timeout=300)
    return path


def children_ids(env, kids):
    env["vms"].extend(kids)
    ids = []
    for k in kids:
        gen = vmgenid(k)
        assert f"vmgenid: new generation ID {gen[:8]} for this restored VM" in k.stderr()
        assert k.ok({"cmd": "status"})["state"] == "paused"
        ids.append(gen)
    return ids


def test_boot_writes_an_id_into_reserved_guest_ram(env, vmlinux):
    src = linux_vm(env, vmlinux)
    gen = vmgenid(src)
    assert f"vmgenid: generation ID {gen[:8]} at 0xef000, GED on GSI 23" in src.stderr()
    # Not usable RAM for the guest: the VMM's own e820 log leaves 0xef000 out.
    for a, b, kind in re.findall(r"e820: \[mem (0x[0-9a-f]+)-(0x[0-9a-f]+)\] (\w+)", src.stderr()):
        if kind == "usable":
            assert not int(a, 16) <= GPA <= int(b, 16)
    other = linux_vm(env, vmlinux)
    assert vmgenid(other) != gen  # two cold boots differ too


def test_probe_guest_has_no_generation_id(env):
    vm = VM(mem="64M", extra=("--paused",))
    env["vms"].append(vm)
    assert "vmgenid" not in vm.ok({"cmd": "status"})
    assert vm.peek(GPA, 16) == bytes(16)
    path = snapshot(vm, os.path.join(env["dir"], "probe"))
    r, kids = restore_children(path, "file", 1, env["run"], name="p", extra=("--paused",))
    assert r.returncode == 0, r.stderr
    env["vms"].extend(kids)
    assert "vmgenid" not in kids[0].ok({"cmd": "status"})
    assert kids[0].peek(GPA, 16) == bytes(16)
    assert "vmgenid" not in kids[0].stderr()


@pytest.mark.parametrize("backend", ["file", "memfd", "anon", "hugetlb"])
def test_every_restore_gets_a_new_id(env, vmlinux, backend, hugepages):
    if backend == "hugetlb":
        hugepages(3 * HUGEPAGES_PER_CHILD + 8)  # two children and a grandchild
    src = linux_vm(env, vmlinux)
    gen = vmgenid(src)
    path = snapshot(src, os.path.join(env["dir"], "s"))
    r, kids = restore_children(path, backend, 2, env["run"], name=backend, extra=PAUSED)
    assert r.returncode == 0, r.stderr
    ids = children_ids(env, kids)
    assert len({gen, *ids}) == 3, (gen, ids)
    assert vmgenid(src) == gen  # the source keeps its identity
    # A restore of a restore is a new clone again.
    again = snapshot(kids[0], os.path.join(env["dir"], "s2"))
    r, grand = restore_children(again, backend, 1, env["run"], name=backend + "g",
                                extra=PAUSED)
    assert r.returncode == 0, r.stderr
    assert children_ids(env, grand)[0] not in {gen, *ids}


def test_uffd_restore_writes_the_id_through_the_page_server(env, vmlinux):
    src = linux_vm(env, vmlinux)
    gen = vmgenid(src)
    path = snapshot(src, os.path.join(env["dir"], "s"))
    ps = test_uffd.PageServer(os.path.join(env["dir"], "ps.sock"))
    try:
        e = dict(os.environ, FORKVM_RUN_DIR=env["run"])
        r = forkvm_cmd("restore", path, "--backend", "uffd", "--count", "2", "--name", "u",
                       "--pageserver", ps.path, "--no-prefetch", *PAUSED, env=e, timeout=120)
        assert r.returncode == 0, r.stderr
        kids = [Child(sock, int(pid)) for _, pid, sock in (l.split() for l in r.stdout.splitlines())]
        ids = children_ids(env, kids)
        assert len({gen, *ids}) == 3, (gen, ids)
        # Paused, no vCPU ran: the page came in through the server for the VMM's own write.
        assert all(ps.vm(f"u-{i}")["demand_faults"] >= 1 for i in range(2))
    finally:
        for k in env["vms"][1:]:
            k.kill()
        ps.stop()


@pytest.mark.parametrize("strategy", ["full", "diff", "live", "cow"])
def test_every_branch_child_gets_a_new_id(env, vmlinux, strategy):
    src = linux_vm(env, vmlinux, backing="memfd" if strategy == "live" else "anon")
    gen = vmgenid(src)
    req = {"cmd": "branch", "strategy": strategy, "count": 2, "prefix": strategy,
           "run_dir": env["run"], "paused": True, "no_agent_sync": True}
    if strategy != "cow":
        req["dir"] = os.path.join(env["dir"], "snap-" + strategy)
    reply = src.ok(req, timeout=300)
    kids = [Child(c["socket"], c["pid"]) for c in reply["children"]]
    ids = children_ids(env, kids)
    assert len({gen, *ids}) == 3, (gen, ids)
    assert vmgenid(src) == gen
    if strategy == "cow":  # more children from the same template: new IDs again
        more = call(reply["template"], {"cmd": "spawn", "count": 1, "paused": True,
                                        "no_agent_sync": True})
        assert more["ok"], more
        extra = [Child(c["socket"], c["pid"]) for c in more["children"]]
        assert children_ids(env, extra)[0] not in {gen, *ids}
