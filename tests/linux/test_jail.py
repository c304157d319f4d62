"""Jailed Linux VMMs (docs/SECURITY.md): a Linux guest booted in the jail, snapshotted into
its jail directory, and restored in jails of their own with the vsock device the agent needs;
the agent answers through the public socket paths, and every VMM runs unprivileged."""
import os

from forkvm_vm import proc_status
from linuxlib import Guest, forkvm

BASE = 310000000  # uid = BASE + the VMM's pid


def confined(pid):
    st = proc_status(pid)
    for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(st[cap], 16) == 0, (pid, cap, st[cap])
    assert st["NoNewPrivs"] == "1"
    uid = int(st["Uid"].split()[0])
    assert uid == BASE + pid, (pid, st["Uid"])
    assert os.readlink(f"/proc/{pid}/ns/mnt") != os.readlink("/proc/self/ns/mnt")
    return uid


def test_linux_boot_snapshot_and_restores_in_jails(env):
    jail = ("--name", "src", "--jail", "--jail-uid-base", str(BASE))
    src = env.boot("src", extra=jail)
    confined(src.pid)
    marker = os.urandom(8).hex()
    src.sh(f"echo {marker} > /tmp/marker")
    # The snapshot goes into the jail's own directory: the only place it may write.
    snap = os.path.join(env.run_dir, "src.jail", "snap")
    r = forkvm("snapshot", "create", src.sock, snap, env=env.environ, check=False)
    assert r.returncode == 0, f"{r.stderr}\n{src.tail()}\n{open(env.path('src.stderr')).read()}"
    jailed = dict(env.environ, FORKVM_JAIL="1", FORKVM_JAIL_UID_BASE=str(BASE))
    for backend in ("file", "memfd"):
        r = forkvm("restore", snap, "--backend", backend, "--count", "2", "--name",
                   "j" + backend, env=jailed)
        kids = []
        for line in r.stdout.splitlines():
            name, pid, sock = line.split()
            kids.append((name, int(pid), sock))
        assert len(kids) == 2, r.stdout
        guests = [Guest(env, n, s, p) for n, p, s in kids]
        env.guests.extend(guests)
        uids = set()
        for g in guests:
            uids.add(confined(g.pid))
            assert os.path.islink(g.sock + ".vsock"), g.sock  # into the clone's own jail
            assert g.sh("cat /tmp/marker").strip() == marker, g.name
        assert len(uids) == 2  # one uid per VMM
        # Clones stay apart: a write in one is not in the other or the source.
        guests[0].sh("echo mine > /tmp/private")
        for other in (guests[1], src):
            assert other.sh("cat /tmp/private 2>/dev/null || echo none").strip() == "none"
        for g in guests:
            g.kill()
