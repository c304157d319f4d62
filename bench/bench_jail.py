"""Cost of confinement (docs/SECURITY.md): VM start, restore, and cow fan-out to N = 10 and 100
children, each with and without the jail, measured in the same run and interleaved (jailed,
unjailed, jailed, ...) so machine noise hits both alike. Probe guest, 64 MiB.

    /usr/bin/python3 bench/bench_jail.py [--runs 15] [--fanout 10,100] [--fanout-runs 3]
"""
import argparse
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


def start(run_dir, name, mode):
    """`forkvm run --detach` (returns once the VM is ready) -> (pid, socket)."""
    r = forkvm_cmd("run", "--name", name, "--mem", "64M", "--detach", *MODES[mode],
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


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--fanout", default="10,100")
    ap.add_argument("--fanout-runs", type=int, default=3)
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
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    rows = [(f"start -> first ping, {m}", st[m]) for m in MODES]
    rows += [(f"restore -> first ping, {m}", rs[m]) for m in MODES]
    rows += [(f"cow fan-out N={n}, {m}", fo[(m, n)]) for n in counts for m in MODES]
    res = report("jail", rows, "ms")
    print("\n  cost of the jail (median jailed - median unjailed):")
    for what in ["start -> first ping", "restore -> first ping"] + \
            [f"cow fan-out N={n}" for n in counts]:
        j, u = res[f"{what}, jail"]["median"], res[f"{what}, no jail"]["median"]
        print(f"    {what:<28} {j - u:+8.1f} ms  ({(j / u - 1) * 100:+.0f} %)")
    chart("jail", "cow fan-out with and without the jail (probe guest, 64 MiB)", "children",
          "ms (median)", {m: [(n, res[f"cow fan-out N={n}, {m}"]["median"]) for n in counts]
                          for m in MODES}, logy=False)


if __name__ == "__main__":
    main()
