"""Cost of a VM's host networking (docs/NET.md): `forkvm run --detach` -> the VM answers its
first `status`, without networking and with each mode, measured in one run and interleaved
(none, isolated, nat, nat + publish, jailed, jailed + nat + publish, none, ...) so machine
noise hits all alike; a jailed VMM's network is made by its broker (docs/NET.md). Probe guest,
64 MiB. Also the VMM's own count of the time net_create took (status: net.create_ms). Needs
root, /dev/kvm and /dev/net/tun.

    /usr/bin/python3 bench/bench_net.py [--runs 15]
"""
import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

from benchlib import report
from forkvm_vm import call, forkvm_cmd

MODES = {
    "no network": (),
    "--net isolated": ("--net", "isolated"),
    "--net nat": ("--net", "nat"),
    "--net nat --publish 0:80": ("--net", "nat", "--publish", "0:80"),
    # jailed: the network comes from the broker the VMM forks before its jail (NET.md)
    "--jail": ("--jail", "--jail-uid-base", "300000000"),
    "--jail --net nat --publish 0:80": ("--jail", "--jail-uid-base", "300000000", "--net", "nat",
                                        "--publish", "0:80"),
}


def start_and_stop(run_dir, name, args):
    """(ms from spawn to the first status reply, net.create_ms or None)."""
    env = dict(os.environ, FORKVM_RUN_DIR=run_dir)
    t0 = time.monotonic()
    r = forkvm_cmd("run", "--name", name, "--mem", "64M", "--detach", *args, env=env)
    if r.returncode != 0:
        raise RuntimeError(f"start {name} {args}: {r.stderr.strip()[-800:]}")
    pid, sock = r.stdout.split()
    st = call(sock, {"cmd": "status"}, timeout=60)
    ms = (time.monotonic() - t0) * 1e3
    if not st.get("ok"):
        raise RuntimeError(f"status {sock}: {st}")
    call(sock, {"cmd": "stop"}, timeout=60)
    while os.path.exists(f"/proc/{pid}") and \
            open(f"/proc/{pid}/stat").read().split(")")[1].split()[0] != "Z":
        time.sleep(0.005)
    return ms, st.get("net", {}).get("create_ms")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=15)
    args = ap.parse_args()
    if os.geteuid() != 0 or not os.path.exists("/dev/net/tun") or not os.path.exists("/dev/kvm"):
        print("bench_net: skipped (needs root, /dev/kvm and /dev/net/tun)")
        return 0
    run_dir = tempfile.mkdtemp(prefix="forkvm-bench-net-")
    start = {m: [] for m in MODES}
    create = {m: [] for m in MODES}
    try:
        for i in range(args.runs):
            for j, (mode, margs) in enumerate(MODES.items()):
                ms, cms = start_and_stop(run_dir, f"n{i}-{j}", margs)
                start[mode].append(ms)
                if cms is not None:
                    create[mode].append(cms)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    rows = [(f"start, {m}", v) for m, v in start.items()]
    rows += [(f"net_create, {m}", v) for m, v in create.items() if v]
    report("net", rows, "ms")
    base = statistics.median(start["no network"])
    print("\n  median start -> first status, side by side (ms):")
    print(f"  {'mode':<34} {'start':>8} {'added':>8} {'net_create':>11}")
    for m in MODES:
        med = statistics.median(start[m])
        nc = f"{statistics.median(create[m]):.1f}" if create[m] else "-"
        print(f"  {m:<34} {med:8.1f} {med - base:+8.1f} {nc:>11}")
    jail = statistics.median(start["--jail"])
    broker = statistics.median(start["--jail --net nat --publish 0:80"])
    plain = statistics.median(start["--net nat --publish 0:80"])
    print(f"\n  nat + publish, jailed (broker) vs unjailed: {broker:.1f} vs {plain:.1f} ms "
          f"({broker - plain:+.1f}); the network's cost under the jail: {broker - jail:+.1f} ms "
          f"(unjailed: {plain - base:+.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
