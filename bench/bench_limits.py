"""The physical-limit table (docs/PERFORMANCE.md): each forkvm measure next to its reference
measured in the same run, the ratio, and the target.

  cow pause window         vs a bare fork() of a process holding the same resident RAM
  cow fan-out, N children  vs N fork()ed children each making a minimal KVM VM (the kernel's
                           floor for a VM per child; bare fork() printed too)
  private memory per idle cow child  vs that of an idle bare fork()ed child
  full snapshot to tmpfs   vs pwrite() of the same bytes to the same file system (and memcpy)
  uffd restore (hot pages) vs the file backend, guest touching its working set

Rows and reference come from tests/tools/bench_ref.c (built by make tests / make bench).
Output: the table, bench/out/limits.json, bench/out/limits.png (ratios, target lines).

--quick (CI, < 2 min) runs fewer sizes and runs and compares each ratio with
bench/baseline.json: a ratio more than 30 % above its baseline fails the run (exit 1), after
one re-measure of that row (a regression must reproduce; one noisy run on a 2-core host is
not one). --update-baseline writes the ratios of this run there.
"""
import argparse
import json
import os
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import OUT, ROOT  # noqa: E402
from forkvm_vm import BUILD, VM, WORK, call  # noqa: E402

MIB = 1 << 20
REF = os.path.join(ROOT, BUILD, "tools", "bench_ref")
BASELINE = os.path.join(ROOT, "bench", "baseline.json")
TOLERANCE = 1.30


def ref(*args):
    out = subprocess.run([REF, *map(str, args)], capture_output=True, text=True, timeout=600)
    if out.returncode:
        raise RuntimeError(f"bench_ref {' '.join(map(str, args))}: {out.stderr.strip()}")
    return out.stdout.strip()


def filled_vm(mem_mib, backing="anon"):
    vm = VM(mem=f"{mem_mib + 8}M", backing=backing)
    low = min(mem_mib * MIB + 8 * MIB, 3 << 30)
    vm.ok({"cmd": "fill", "gpa": WORK, "len": low - WORK, "seed": 1}, timeout=900)
    if mem_mib * MIB + 8 * MIB > low:
        vm.ok({"cmd": "fill", "gpa": 4 << 30, "len": mem_mib * MIB + 8 * MIB - low, "seed": 1},
              timeout=900)
    return vm


def end_branch(reply):
    """Kill the children, stop the template, and wait until every one of them is gone: a VMM's
    exit tears down its VM and address space, work that must not land in the next run."""
    pids = [c["pid"] for c in reply.get("children", [])]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if reply.get("template"):
        try:
            pids.append(call(reply["template"], {"cmd": "status"}, timeout=10)["pid"])
            call(reply["template"], {"cmd": "stop"}, timeout=10)
        except (OSError, KeyError):
            pass
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and any(os.path.exists(f"/proc/{p}") for p in pids):
        time.sleep(0.01)
    time.sleep(0.05)


def cow(vm, run, prefix, count, paused):
    reply = call(vm.sock, {"cmd": "branch", "strategy": "cow", "count": count, "prefix": prefix,
                           "run_dir": run, "paused": paused}, timeout=120)
    assert reply["ok"], reply
    return reply


def pause_row(mem_mib, runs, work):
    """forkvm: the source's pause window of a cow branch (source RAM resident, dirtying 16 MiB
    between branches); reference: fork() of a process with the same RAM resident."""
    vm = filled_vm(mem_mib)
    ours = []
    try:
        for i in range(runs):
            vm.ok({"cmd": "dirty", "pages": 4096, "seed": i})
            reply = cow(vm, work, f"p{mem_mib}x{i}x{time.monotonic_ns()}", 1, True)
            ours.append(reply["paused_us"])
            end_branch(reply)
    finally:
        vm.stop()
    theirs = [float(x) for x in ref("fork", mem_mib, runs).split()]
    return ours, theirs


def ping_all(children, timeout=60):
    """Ping every child at once from this one thread: connect and send to each, then read the
    replies as they come. (A pool of threads, as before, cost the client ~0.3 ms per child on
    a 2-core host, which the row then counted as the children's.)"""
    sel = selectors.DefaultSelector()
    replies = {}
    try:
        for c in children:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            replies[s] = b""
            s.settimeout(timeout)
            s.connect(c["socket"])
            s.sendall(b'{"cmd": "ping"}\n')
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ, c["name"])
        deadline = time.monotonic() + timeout
        while sel.get_map():
            events = sel.select(max(0.0, deadline - time.monotonic()))
            assert events, f"{len(sel.get_map())} children did not answer ping in {timeout} s"
            for key, _ in events:
                chunk = key.fileobj.recv(1 << 16)
                assert chunk, f"child {key.data} closed its socket before answering ping"
                replies[key.fileobj] += chunk
                if replies[key.fileobj].endswith(b"\n"):
                    reply = json.loads(replies[key.fileobj])
                    assert reply.get("ok") is True, f"child {key.data}: ping -> {reply}"
                    sel.unregister(key.fileobj)
    finally:
        sel.close()
        for s in replies:
            s.close()


def fanout_row(n, runs, work, mem_mib=256):
    """forkvm: branch request -> N cow children all answering ping (all pinged at once).
    References, each run interleaved with ours: N fork()ed children of a process with the same
    RAM, each making the minimum a VM needs from KVM (VM, irqchip, memslot over the inherited
    RAM, one vCPU) and answering over a pipe -- the kernel's floor for a VM per child -- and
    the same without KVM (bare fork). Also private memory per idle child, ours and bare."""
    vm = VM(mem=f"{mem_mib}M", backing="anon")
    ours, floor, bare, priv, tpriv = [], [], [], [], []
    try:
        vm.ok({"cmd": "fill", "gpa": WORK, "len": 64 * MIB, "seed": 3})
        for i in range(runs):
            t0 = time.monotonic()
            reply = cow(vm, work, f"f{n}x{i}x{time.monotonic_ns()}", n, False)
            ping_all(reply["children"])
            ours.append((time.monotonic() - t0) * 1e3)
            if i == 0:
                time.sleep(0.3)
                priv += [private_kib(c["pid"]) / 1024 for c in reply["children"][:10]]
            end_branch(reply)
            floor.append(float(ref("kvmfan", mem_mib, n).split()[0]))
            ms, kib = ref("fanout", mem_mib, n).split()
            bare.append(float(ms))
            tpriv.append(int(kib) / 1024)
    finally:
        vm.stop()
    return (ours, floor, bare), (priv, tpriv)


def private_kib(pid):
    total = 0
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith(("Private_Clean:", "Private_Dirty:")):
                total += int(line.split()[1])
    return total


def huge_tmpfs(work):
    """A tmpfs mounted huge=always (THP page cache), or None where it cannot be mounted."""
    path = os.path.join(work, "huge")
    os.makedirs(path, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "huge=always,size=6g", "forkvm-bench", path],
                       capture_output=True, text=True)
    return path if r.returncode == 0 else None


def snapshot_row(mem_mib, runs, where):
    """forkvm: full snapshot (paused window: capture + memory written + fsync + rename) into
    WHERE; reference: pwrite of the same bytes into a new file there (and memcpy)."""
    vm = filled_vm(mem_mib)
    ours = []
    try:
        for i in range(runs + 1):
            d = os.path.join(where, "snap")
            shutil.rmtree(d, ignore_errors=True)
            reply = vm.ok({"cmd": "snapshot", "dir": d}, timeout=900)
            if i:  # the first write of a size pays the file system's first allocation
                ours.append(reply["paused_us"] / 1e3)
            shutil.rmtree(d, ignore_errors=True)
    finally:
        vm.stop()
    out = ref("copy", mem_mib, os.path.join(where, "ref"), runs + 1)
    mc, pw = out.split(" / ")
    return ours, [float(x) for x in pw.split()[2:]], [float(x) for x in mc.split()[1:]]


def uffd_row(spec, reps):
    """forkvm: restore -> guest touched its working set, uffd + hot pages vs the file backend
    (page cache warm), both from the same snapshot (bench_uffd.py's procedure)."""
    import bench_uffd as bu
    mem, ws_mib = spec.split(":")
    ws = int(ws_mib) << 20
    tmp = tempfile.mkdtemp(prefix="forkvm-bench-limits-uffd-")
    ps_box = [None]
    try:
        snap, expect = bu.make_template(tmp, mem, ws)
        bu.record(snap, ws, tmp)
        ours, theirs = [], []
        for _ in range(reps):  # interleaved: both see the same moment of the machine
            theirs.append(bu.one_restore(snap, expect, ws, "file", False, tmp, ps_box)[1])
            ours.append(bu.one_restore(snap, expect, ws, "uffd+hot", False, tmp, ps_box)[1])
        return ours, theirs
    finally:
        if ps_box[0]:
            ps_box[0].stop()
        shutil.rmtree(tmp, ignore_errors=True)


def med(values):
    return statistics.median(values) if values else float("nan")


def chart(rows, path):
    if not shutil.which("gnuplot"):
        return None
    data = path + ".dat"
    with open(data, "w") as f:
        for i, r in enumerate(rows):
            f.write(f'{i} "{r["name"]}" {r["ratio"]:.4f} {r["target_ratio"] or 0:.4f}\n')
    png = path + ".png"
    script = "\n".join([
        'set terminal pngcairo size 1100,600 font "sans,10"', f'set output "{png}"',
        'set title "forkvm / reference, same run (lower is better; target ratios as boxes)"',
        "set style fill solid 0.6", "set boxwidth 0.4", "set grid ytics", "set yrange [0:*]",
        "set xtics rotate by -30 left", 'set ylabel "ratio to reference"', "set key top left",
        f'plot "{data}" using ($1-0.2):3:xtic(2) with boxes title "measured ratio", '
        f'"{data}" using ($1+0.2):($4 > 0 ? $4 : 1/0) with boxes title "target ratio"'])
    subprocess.run(["gnuplot"], input=script, text=True, check=True)
    return png


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="CI mode: < 2 min, baseline check")
    ap.add_argument("--update-baseline", action="store_true",
                    help="write this run's ratios to bench/baseline.json")
    ap.add_argument("--calibrate", type=int, metavar="K",
                    help="--quick K times; bench/baseline.json gets each ratio's highest "
                         "median (the noise of this host kind stays inside the baseline)")
    ap.add_argument("--runs", type=int, default=11)
    a = ap.parse_args()
    if a.calibrate:
        calibrate(a.calibrate)
        return
    if not os.access(REF, os.X_OK):
        sys.exit(f"{REF} missing: run make tests (or make bench) first")
    runs = 5 if a.quick else a.runs
    work = tempfile.mkdtemp(prefix="forkvm-bench-limits-", dir="/dev/shm")
    os.makedirs(os.path.join(work, "run"))
    run = os.path.join(work, "run")
    huge = None
    rows = []

    def add(name, unit, ours, theirs, target_ratio=None, target_abs=None, ref_name="reference"):
        o, t = med(ours), med(theirs)
        row = {"name": name, "unit": unit, "ours": o, "reference": t, "ref_name": ref_name,
               "ratio": o / t if t else float("nan"), "target_ratio": target_ratio,
               "target_abs": target_abs, "n": len(ours), "ours_runs": ours, "ref_runs": theirs}
        row["meets"] = ((target_ratio is None or row["ratio"] <= target_ratio) and
                        (target_abs is None or o <= target_abs))
        rows.append(row)
        print(f"  {name:<44} {o:10.2f} {unit:<4} {ref_name:<30} {t:10.2f}   ratio {row['ratio']:6.2f}"
              f"   target {fmt_target(row)}  {'meets' if row['meets'] else 'MISSES'}", flush=True)
        return row

    remeasure = {}  # row name -> (function, argument) that measures it again

    def measure_pause(mib):
        # Cheap per run and the noisiest row: more runs even in --quick.
        o, t = pause_row(mib, max(runs, 9), run)
        return add(f"cow pause window, {mib} MiB resident", "us", o, t, 1.2, None,
                   "bare fork(), same RAM")

    def measure_fanout(n):
        (o, f, b), (p, tp) = fanout_row(n, 3 if a.quick else 5, run)
        r = add(f"{n} cow children answering ping", "ms", o, f, None, {10: 10, 100: 100}.get(n),
                f"{n} minimal KVM VMs (floor)")
        print(f"  {'':<44} ({n} bare fork()s answering, no KVM: {med(b):.1f} ms)")
        r["bare_fork_ms"] = med(b)
        if p:
            add(f"private memory per idle cow child (N={n})", "MiB", p, tp, None, 0.1,
                "idle bare fork()ed child")
        return r

    def measure_snapshot(mib, where, label):
        o, t, m = snapshot_row(mib, 3 if a.quick else 5, where)
        r = add(f"full snapshot {mib} MiB to {label}", "ms", o, t, None,
                300 if mib == 1024 else None, "pwrite() of the same bytes there")
        print(f"  {'':<44} (memcpy of the same bytes, resident: {med(m):.1f} ms)")
        r["memcpy_ms"] = med(m)
        return r

    def measure_uffd(spec):
        o, t = uffd_row(spec, 3 if a.quick else 5)
        return add(f"uffd+hot restore -> working set, {spec}", "ms", o, t, 1.2, None,
                   "file backend, page cache warm")

    try:
        print("== forkvm vs the physical limit (medians; reference measured in this run)")
        sizes = [256, 1024]
        huge = huge_tmpfs(work)
        plan = [(measure_pause, mib) for mib in sizes] + [(measure_fanout, n) for n in (10, 100)]
        plan.append((measure_snapshot, (1024, work, "tmpfs (/dev/shm)")))
        if huge:
            plan.append((measure_snapshot, (1024, huge, "tmpfs huge=always")))
        plan.append((measure_uffd, "256M:64" if a.quick else "1G:256"))
        for fn, arg in plan:
            before = len(rows)
            fn(*arg) if isinstance(arg, tuple) else fn(arg)
            for r in rows[before:]:
                remeasure[r["name"]] = (fn, arg)
        if a.quick:
            # A ratio over the line is measured once more: a regression must reproduce.
            for name in sorted({r["name"] for r in regressions(rows)}):
                fn, arg = remeasure[name]
                print(f"  (measuring '{name}' again)")
                again = len(rows)
                fn(*arg) if isinstance(arg, tuple) else fn(arg)
                fresh = {r["name"] for r in rows[again:]}
                rows[:again] = [r for r in rows[:again] if r["name"] not in fresh]
    finally:
        if huge:
            subprocess.run(["umount", huge], check=False)
        shutil.rmtree(work, ignore_errors=True)
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "limits.json"), "w") as f:
        json.dump({"quick": a.quick, "rows": rows}, f, indent=2)
    png = chart(rows, os.path.join(OUT, "limits"))
    if png:
        print(f"  chart: {png}")
    if a.update_baseline:
        write_baseline(rows)
    if a.quick:
        sys.exit(check_baseline(rows))


def fmt_target(row):
    parts = []
    if row["target_ratio"] is not None:
        parts.append(f"<= {row['target_ratio']}x")
    if row["target_abs"] is not None:
        parts.append(f"<= {row['target_abs']} {row['unit']}")
    return ", ".join(parts) or "-"


def calibrate(k):
    worst = {}
    for i in range(k):
        r = subprocess.run([sys.executable, os.path.abspath(__file__), "--quick"], text=True)
        if r.returncode not in (0, 1):
            sys.exit(f"calibration run {i + 1} failed (status {r.returncode})")
        with open(os.path.join(OUT, "limits.json")) as f:
            for row in json.load(f)["rows"]:
                worst[row["name"]] = max(worst.get(row["name"], 0), row["ratio"])
    write_baseline([{"name": n, "ratio": v} for n, v in worst.items()])


def write_baseline(rows):
    data = {r["name"]: round(r["ratio"], 4) for r in rows}
    tmp = BASELINE + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, BASELINE)
    print(f"  baseline written: {BASELINE}")


def load_baseline():
    try:
        with open(BASELINE) as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def regressions(rows):
    base = load_baseline() or {}
    return [r for r in rows if r["name"] in base and r["ratio"] > base[r["name"]] * TOLERANCE]


def check_baseline(rows):
    """0 when no ratio is more than TOLERANCE x its baseline; 1 (naming each) otherwise."""
    base = load_baseline()
    if base is None:
        print(f"bench: no {BASELINE}; nothing to compare (run with --update-baseline)")
        return 1
    missing = [r["name"] for r in rows if r["name"] not in base]
    if missing:
        print(f"bench: not in the baseline (not compared): {', '.join(missing)}")
    bad = regressions(rows)
    for r in bad:
        print(f"bench: REGRESSION {r['name']}: ratio {r['ratio']:.2f} > {TOLERANCE} x baseline "
              f"{base[r['name']]:.2f}")
    print(f"bench: {len(rows) - len(bad)} ratios within {int((TOLERANCE - 1) * 100)} % of "
          f"bench/baseline.json, {len(bad)} regressed")
    return 1 if bad else 0


if __name__ == "__main__":
    main()
