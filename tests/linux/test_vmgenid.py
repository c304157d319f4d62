"""The VM generation ID in real Linux guests (docs/LINUX.md, "VM generation ID"): the kernel's
vmgenid and GED drivers bind forkvm's ACPI devices, the guest reads the ID the VMM reports, and
every restored or branched clone reseeds its CRNG from its new ID by itself, without the agent
fix-up (--no-agent-sync / no_agent_sync), so clones of one snapshot draw different numbers.
The VMM side (every backend and strategy, paused VMs) is tests/integration/test_vmgenid.py."""
import time

from linuxlib import Guest

RESEED = "crng reseeded due to virtual machine fork"
PAGE = 0xEF000 // 4096  # LAYOUT_VMGENID


def guest_id(g):
    """The 16 bytes at 0xEF000 as the guest sees them (/dev/mem serves the first MiB)."""
    return g.sh(f"busybox dd if=/dev/mem bs=4096 skip={PAGE} count=1 2>/dev/null | "
                "busybox od -An -tx1 -N16 | busybox tr -d ' \\n'").strip()


def reseeds(g):
    return g.sh("busybox dmesg").count(RESEED)


def wait_reseed(g, bound=60):
    """The notify runs in the guest's ACPI workqueue after resume: poll its kernel log."""
    deadline = time.monotonic() + bound
    while reseeds(g) < 1:
        assert time.monotonic() < deadline, f"{g.name}: no '{RESEED}' within {bound} s"
        time.sleep(0.5)
    assert reseeds(g) == 1


def check_clones(src, kids):
    gens = {src.ok({"cmd": "status"})["vmgenid"]}
    uuids = {src.uuid()}
    for k in kids:
        gen = k.ok({"cmd": "status"})["vmgenid"]
        wait_reseed(k)
        assert guest_id(k) == gen, k.name
        # The vsock transport reset reached the guest and was handled (its event buffer
        # re-posted): the reset's interrupt must not be raised before the vCPUs' LAPIC state
        # is restored, which would lose it (docs/SNAPSHOT.md, "Restore order").
        assert "the guest handled the transport reset" in k.vmm_log(), k.tail()
        gens.add(gen)
        uuids.add(k.uuid())
    assert len(gens) == len(kids) + 1, gens
    assert len(uuids) == len(kids) + 1, f"clones share /proc/sys/kernel/random/uuid: {uuids}"
    assert reseeds(src) == 0


def test_restored_and_branched_clones_reseed_without_the_agent(env):
    src = env.boot("src")
    # The drivers bound forkvm's ACPI devices and read the ID the VMM reports.
    drivers = src.sh("ls /sys/bus/platform/drivers/vmgenid/ /sys/bus/platform/drivers/acpi-ged/")
    assert "VMGENCTR:00" in drivers and "ACPI0013:00" in drivers, drivers
    assert guest_id(src) == src.ok({"cmd": "status"})["vmgenid"]
    snap = env.snapshot(src)
    check_clones(src, env.restore(snap, count=2, backend="file", name="r",
                                  extra=("--no-agent-sync",)))
    reply = src.ok({"cmd": "branch", "strategy": "cow", "count": 2, "prefix": "cow",
                    "run_dir": env.run_dir, "no_agent_sync": True}, timeout=600)
    kids = [Guest(env, c["name"], c["socket"], c["pid"]) for c in reply["children"]]
    env.guests.extend(kids)
    check_clones(src, kids)
