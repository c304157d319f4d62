"""Cost of confinement (docs/SECURITY.md): VM start, restore, cow fan-out to N = 10 and 100
children, and `forkvm snapshot create` of 256 MiB (a jailed VM's snapshot is staged by the CLI
and adopted), each with and without the jail, measured in the same run and interleaved
(jailed, unjailed, jailed, ...) so machine noise hits both alike. Probe guest.

    /usr/bin/python3 bench/bench_jail.py [--runs 15] [--fanout 10,100] [--fanout-runs 3]
                                         [--snap-runs 5] [--snap-dir /var/tmp]
"""
import argparse
import json
import os
import shutil
import tempfile
import time

from benchlib import chart, report
from forkvm_vm import call, forkvm_cmd, kill_all

UID_BASE = "310000000"  # --jail-uid-base of this bench: uid = UID_BASE + pid
MODES = {"jail": ("--jail", "--jail-uid-base", UID_BASE), "no jail": ("--no-jail",)}
ENV = {"jail": {"FORKVM_JAIL": "1", "FORKVM_JAIL_UID_BASE": UID_BASE},
       "no jail": {"FORKVM_JAIL": "0"}}


def env_of(run_dir, mode):
    return dict(os.environ, FORKVM_RUN_DIR=run_dir, **ENV[mode])


def start(run_dir, name, mode, mem="64M"):
    """`forkvm run --detach` (returns once the VM is ready) -> (pid, socket)."""
    r = forkvm_cmd("run", "--name", name, "--mem", mem, "--detach", *MODES[mode],
                   env=env_of(run_dir, mode))
    if r.returncode != 0:
        raise RuntimeError(f"start {name} ({mode}): {r.stderr.strip()[-800:]}")
    pid, sock = r.stdout.split()
    return int(pid), sock


def ping(sock):
    reply = call(sock, {"cmd": "ping"}, timeout=60)
    if not reply.get("ok"):
        raise RuntimeError(f"ping {sock}: {reply}")


def bench_start(run_dir, runs):
    """Spawn -> the VM answers its first ping."""
    out = {m: [] for m in MODES}
    for i in range(runs):
        for mode in MODES:
            t0 = time.monotonic()
            pid, sock = start(run_dir, f"s{i}{mode[0]}", mode)
            ping(sock)
            out[mode].append((time.monotonic() - t0) * 1e3)
            kill_all([pid])
    return out


def bench_restore(run_dir, runs):
    """`forkvm restore --count 1` of a 64 MiB probe snapshot -> the clone answers a ping."""
    pid, sock = start(run_dir, "snapsrc", "no jail")
    snap = os.path.join(run_dir, "snap")
    try:
        r = forkvm_cmd("snapshot", "create", sock, snap)
        if r.returncode != 0:
            raise RuntimeError(f"snapshot: {r.stderr.strip()[-800:]}")
    finally:
        kill_all([pid])
    out = {m: [] for m in MODES}
    for i in range(runs):
        for mode in MODES:
            t0 = time.monotonic()
            r = forkvm_cmd("restore", snap, "--count", "1", "--name", f"r{i}{mode[0]}",
                           env=env_of(run_dir, mode))
            if r.returncode != 0:
                raise RuntimeError(f"restore ({mode}): {r.stderr.strip()[-800:]}")
            _, cpid, csock = r.stdout.split()
            ping(csock)
            out[mode].append((time.monotonic() - t0) * 1e3)
            kill_all([int(cpid)])
    return out


def bench_fanout(run_dir, counts, runs):
    """A cow branch of N children, paused=false: request -> reply (every child ready)."""
    out = {(m, n): [] for m in MODES for n in counts}
    for n in counts:
        for i in range(runs):
            for mode in MODES:
                pid, sock = start(run_dir, f"f{n}x{i}{mode[0]}", mode)
                kids = []
                try:
                    t0 = time.monotonic()
                    reply = call(sock, {"cmd": "branch", "strategy": "cow", "count": n,
                                        "prefix": f"k{n}x{i}{mode[0]}", "run_dir": run_dir},
                                 timeout=900)
                    ms = (time.monotonic() - t0) * 1e3
                    if not reply.get("ok"):
                        raise RuntimeError(f"cow fan-out {n} ({mode}): {reply}")
                    kids = [c["pid"] for c in reply["children"]]
                    ping(reply["children"][-1]["socket"])
                    out[(mode, n)].append(ms)
                finally:
                    kill_all(kids + [pid])
                    time.sleep(0.5)  # the template exits once its source is gone
    return out


def bench_snapshot(run_dir, snap_dir, runs):
    """`forkvm snapshot create VM DIR` of a 256 MiB VM with 192 MiB written, DIR outside the
    run directory: the CLI's wall time (jailed: staged, adopted, renamed), and the guest's
    pause window."""
    out = {(m, k): [] for m in MODES for k in ("cli", "paused")}
    base = tempfile.mkdtemp(prefix="forkvm-bench-jail-snap-", dir=snap_dir)
    try:
        for i in range(runs):
            for mode in MODES:
                pid, sock = start(run_dir, f"p{i}{mode[0]}", mode, mem="256M")
                try:
                    reply = call(sock, {"cmd": "fill", "gpa": 4 << 20, "len": 192 << 20,
                                        "seed": i}, timeout=120)
                    if not reply.get("ok"):
                        raise RuntimeError(f"fill ({mode}): {reply}")
                    t0 = time.monotonic()
                    r = forkvm_cmd("snapshot", "create", sock, os.path.join(base, f"s{i}{mode[0]}"),
                                   env=env_of(run_dir, mode))
                    ms = (time.monotonic() - t0) * 1e3
                    if r.returncode != 0:
                        raise RuntimeError(f"snapshot ({mode}): {r.stderr.strip()[-800:]}")
                    out[(mode, "cli")].append(ms)
                    out[(mode, "paused")].append(json.loads(r.stdout)["paused_us"] / 1e3)
                finally:
                    kill_all([pid])
                    shutil.rmtree(os.path.join(base, f"s{i}{mode[0]}"), ignore_errors=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--fanout", default="10,100")
    ap.add_argument("--fanout-runs", type=int, default=3)
    ap.add_argument("--snap-runs", type=int, default=5)
    ap.add_argument("--snap-dir", default="/var/tmp")
    a = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench_jail: the jail needs root (namespaces, uid change)")
    counts = [int(x) for x in a.fanout.split(",") if x]
    run_dir = tempfile.mkdtemp(prefix="forkvm-bench-jail-")
    os.chmod(run_dir, 0o700)
    try:
        st = bench_start(run_dir, a.runs)
        rs = bench_restore(run_dir, a.runs)
        fo = bench_fanout(run_dir, counts, a.fanout_runs)
        sn = bench_snapshot(run_dir, a.snap_dir, a.snap_runs) if a.snap_runs else None
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    rows = [(f"start -> first ping, {m}", st[m]) for m in MODES]
    rows += [(f"restore -> first ping, {m}", rs[m]) for m in MODES]
    rows += [(f"cow fan-out N={n}, {m}", fo[(m, n)]) for n in counts for m in MODES]
    snaps = []
    if sn:
        snaps = ["snapshot 256 MiB (CLI)", "snapshot 256 MiB, guest paused"]
        rows += [(f"{snaps[0]}, {m}", sn[(m, "cli")]) for m in MODES]
        rows += [(f"{snaps[1]}, {m}", sn[(m, "paused")]) for m in MODES]
    res = report("jail", rows, "ms")
    print("\n  cost of the jail (median jailed - median unjailed):")
    for what in ["start -> first ping", "restore -> first ping"] + \
            [f"cow fan-out N={n}" for n in counts] + snaps:
        j, u = res[f"{what}, jail"]["median"], res[f"{what}, no jail"]["median"]
        print(f"    {what:<32} {j - u:+8.1f} ms  ({(j / u - 1) * 100:+.0f} %)")
    chart("jail", "cow fan-out with and without the jail (probe guest, 64 MiB)", "children",
          "ms (median)", {m: [(n, res[f"cow fan-out N={n}, {m}"]["median"]) for n in counts]
                          for m in MODES}, logy=False)


if __name__ == "__main__":
    main()
