"""BRANCH benchmarks: pause window vs RAM per strategy, fan-out to N children, PSS per child."""
import argparse
import os
import shutil
import signal
import tempfile
import time

from benchlib import chart, report, summary
from forkvm_vm import VM, WORK, call

MIB = 1 << 20
# live-populate: live with the kernel's unpopulated write-protect (Linux 6.4+) hidden, as on
# Linux 5.19-6.3: the source's RAM is populated before the pause (docs/BRANCH.md).
MASK_ENV = "FORKVM_UFFD_FEATURES_MASK"
NO_WP_UNPOPULATED = hex(((1 << 64) - 1) & ~(1 << 13))
LIVE_COST = ("populate_ms", "complete_ms", "total_ms")


def start_source(strategy, mem):
    """A source VM for the strategy; live-populate's VMM gets the knob in its environment."""
    backing = "memfd" if strategy.startswith("live") else "anon"
    if strategy != "live-populate":
        return VM(mem=mem, backing=backing)
    old = os.environ.get(MASK_ENV)
    os.environ[MASK_ENV] = NO_WP_UNPOPULATED
    try:
        return VM(mem=mem, backing=backing)
    finally:
        if old is None:
            del os.environ[MASK_ENV]
        else:
            os.environ[MASK_ENV] = old


def kill_children(reply):
    for c in reply.get("children", []):
        try:
            os.kill(c["pid"], signal.SIGKILL)
        except ProcessLookupError:
            pass
    if reply.get("template"):
        try:
            call(reply["template"], {"cmd": "stop"}, timeout=10)
        except OSError:
            pass


def do_branch(vm, strategy, run, snapdir, count, prefix, paused=True):
    req = {"cmd": "branch", "strategy": "live" if strategy.startswith("live") else strategy,
           "count": count, "prefix": prefix, "run_dir": run, "paused": paused}
    if strategy != "cow":
        req["dir"] = snapdir
    reply = call(vm.sock, req, timeout=900)
    assert reply["ok"], reply
    return reply


def pause_windows(strategy, mem_mib, runs, work):
    """Source RAM resident (filled) and dirtying 16 MiB while branching."""
    vm = start_source(strategy, f"{mem_mib + 8}M")
    run = os.path.join(work, "run")
    snapdir = os.path.join(work, f"snap-{strategy}-{mem_mib}")
    windows, extra = [], {"arm_us": [], "bytes_written": [], **{k: [] for k in LIVE_COST}}
    try:
        fill = mem_mib * MIB - WORK + 8 * MIB
        vm.ok({"cmd": "fill", "gpa": WORK, "len": min(fill, (3 << 30) - WORK), "seed": 1},
              timeout=900)
        if mem_mib * MIB + 8 * MIB > 3 << 30:
            vm.ok({"cmd": "fill", "gpa": 4 << 30, "len": mem_mib * MIB + 8 * MIB - (3 << 30),
                   "seed": 1}, timeout=900)
        vm.ok({"cmd": "dirty", "pages": 4096, "seed": 2})
        for i in range(runs + (1 if strategy == "diff" else 0)):
            reply = do_branch(vm, strategy, run, snapdir, 1, f"p{strategy}{mem_mib}x{i}")
            kill_children(reply)
            if strategy == "diff" and i == 0:
                continue  # the first diff branch writes the full base
            windows.append(reply["paused_us"])
            for k in extra:
                extra[k].append(reply.get(k, 0))
            time.sleep(0.05)
    finally:
        vm.stop()
        shutil.rmtree(snapdir, ignore_errors=True)
    return windows, extra


def fan_out(strategy, n, work):
    vm = VM(mem="256M", backing="memfd" if strategy == "live" else "anon")
    run = os.path.join(work, "run")
    try:
        vm.ok({"cmd": "fill", "gpa": WORK, "len": 64 * MIB, "seed": 3})
        t0 = time.monotonic()
        reply = do_branch(vm, strategy, run, os.path.join(work, f"fan-{strategy}"), n,
                          f"f{strategy}{n}", paused=False)
        for c in reply["children"]:
            assert call(c["socket"], {"cmd": "ping"})["ok"]
        elapsed = (time.monotonic() - t0) * 1e3
        pss = []
        if n == 10:
            time.sleep(0.3)
            for c in reply["children"]:
                fields = {}
                for line in open(f"/proc/{c['pid']}/smaps_rollup"):
                    parts = line.split()
                    if len(parts) >= 2 and parts[1].isdigit():
                        fields[parts[0].rstrip(":")] = int(parts[1])
                pss.append((fields["Pss"], fields["Private_Clean"] + fields["Private_Dirty"]))
        kill_children(reply)
        return elapsed, pss
    finally:
        vm.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--strategies", default="cow,live,live-populate,diff,full",
                    help="pause-window rows to run (fan-out runs for cow and full if listed)")
    ap.add_argument("--sizes", help="guest RAM sizes in MiB, comma-separated")
    a = ap.parse_args()
    strategies = a.strategies.split(",")
    sizes = [256, 1024] if a.quick else [256, 1024, 2048, 4096]
    if a.sizes:
        sizes = [int(x) for x in a.sizes.split(",")]
    runs = 3 if a.quick else a.runs
    work = tempfile.mkdtemp(prefix="forkvm-bench-", dir="/dev/shm")
    os.makedirs(os.path.join(work, "run"))
    series, rows, live_rows = {}, [], []
    try:
        for strategy in strategies:
            for mib in sizes:
                w, extra = pause_windows(strategy, mib, runs, work)
                rows.append((f"{strategy} {mib} MiB", w))
                series.setdefault(strategy, []).append((mib, summary(w)["median"]))
                if strategy.startswith("live"):
                    rows.append((f"  {strategy} {mib} MiB: arm", extra["arm_us"]))
                    live_rows += [(f"{strategy} {mib} MiB: {k[:-3]}", extra[k]) for k in LIVE_COST]
        report("branch_pause", rows, "us (source paused -> resumed)")
        if live_rows:
            report("branch_live_cost", live_rows,
                   "ms (populate: before the pause, kernels < 6.4 only; complete: pause -> "
                   "image complete; total: request -> child ready)")
        chart("branch_pause", "BRANCH pause window vs guest RAM (source dirtying 16 MiB)",
              "guest RAM resident (MiB)", "pause window (us, median)", series,
              xtics=[(f"{s}M" if s < 1024 else f"{s // 1024}G", s) for s in sizes])
        fan, pss_rows = [], []
        for strategy in [x for x in ("cow", "full") if x in strategies]:
            for n in (1, 10, 100):
                ms, pss = fan_out(strategy, n, work)
                fan.append((f"{strategy} N={n}: all children answer ping", [ms]))
                if pss:
                    pss_rows.append((f"{strategy}: PSS per idle child", [p[0] / 1024 for p in pss]))
                    pss_rows.append((f"{strategy}: private per idle child", [p[1] / 1024 for p in pss]))
        if fan:
            report("branch_fanout", fan, "ms")
        if pss_rows:
            report("branch_child_memory", pss_rows, "MiB")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
