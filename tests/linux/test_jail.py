"""Jailed Linux VMMs (docs/SECURITY.md): a Linux guest booted in the jail, snapshotted into
its jail directory, and restored in jails of their own with the vsock device the agent needs;
the agent answers through the public socket paths, and every VMM runs unprivileged."""
import json
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
    """The default: no --jail and no FORKVM_JAIL (the harness's 0 dropped) jails every VMM
    root starts. The CLI takes the snapshot out of the source's jail to a directory outside
    it (root's), restores of it run in jails of their own, and a cow child is reached by name
    through the links `forkvm branch` makes in the run directory."""
    default = dict(env.environ, FORKVM_JAIL_UID_BASE=str(BASE))
    default.pop("FORKVM_JAIL", None)
    src = env.boot("src", extra=("--name", "src"), environ=default)
    confined(src.pid)
    marker = os.urandom(8).hex()
    src.sh(f"echo {marker} > /tmp/marker")
    # Written in the jail's directory, then adopted by the CLI to where it was asked for.
    snap = env.path("snap")
    r = forkvm("snapshot", "create", src.sock, snap, env=default, check=False)
    assert r.returncode == 0, f"{r.stderr}\n{src.tail()}\n{open(env.path('src.stderr')).read()}"
    assert json.loads(r.stdout)["dir"] == snap
    for name in os.listdir(snap):
        st = os.lstat(os.path.join(snap, name))
        assert (st.st_uid, st.st_mode & 0o777) == (0, 0o600), name
    assert not [n for n in os.listdir(os.path.join(env.run_dir, "src.jail")) if "adopt" in n]
    for backend in ("file", "memfd"):
        r = forkvm("restore", snap, "--backend", backend, "--count", "2", "--name",
                   "j" + backend, env=default)
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
    # A cow child of the jailed source, by name: its sockets are in the source's jail.
    r = forkvm("branch", "src", "--count", "1", "--name", "kid", env=default)
    child = json.loads(r.stdout)["children"][0]
    public = os.path.join(env.run_dir, "kid-0.sock")
    assert os.readlink(public) == child["socket"] and os.path.islink(public + ".vsock")
    kid = Guest(env, "kid-0", public, child["pid"])
    env.guests.append(kid)
    assert proc_status(kid.pid)["Uid"] == proc_status(src.pid)["Uid"]  # the source's jail
    assert kid.sh("cat /tmp/marker").strip() == marker
    r = forkvm("exec", "kid-0", "--", "cat", "/tmp/marker", env=default)
    assert r.stdout.strip() == marker
