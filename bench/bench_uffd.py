"""uffd restore benchmark: restore → first ping and → working set touched, per backend.

Backends: file, memfd, uffd (no prefetch), uffd + hot pages (then sequential), uffd + hot
pages + ordered (access log). Snapshots of 256 MiB and 1 GiB whose guest filled 64 / 256 MiB;
page cache cold (drop_caches, fresh page server) and warm. Demand faults come from the page
server's counters. Output: table, bench/out/uffd.json, bench/out/uffd.png (or .svg).
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import OUT  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "tests", "integration"))
from forkvm_vm import FORKVM, VM, WORK, call  # noqa: E402
from test_uffd import PageServer  # noqa: E402

BACKENDS = ["file", "memfd", "uffd", "uffd+hot", "uffd+hot+ordered"]


def drop_caches():
    subprocess.run(["sync"], check=False)
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def make_template(tmp, mem, ws):
    snap = os.path.join(tmp, f"snap-{mem}")
    src = VM(mem=mem)
    try:
        src.ok({"cmd": "fill", "gpa": WORK, "len": ws, "seed": 5}, timeout=600)
        expect = src.ok({"cmd": "checksum", "gpa": WORK, "len": ws}, timeout=600)["checksum"]
        src.ok({"cmd": "snapshot", "dir": snap}, timeout=600)
    finally:
        src.stop()
    return snap, expect


def start(snap, backing, sock, extra=()):
    """forkvm run --restore; returns (proc, seconds until the control socket was ready)."""
    r, w = os.pipe()
    t0 = time.monotonic()
    proc = subprocess.Popen([FORKVM, "run", "--restore", snap, "--backing", backing,
                             "--socket", sock, "--console", "/dev/null", "--ready-fd", str(w),
                             *extra], pass_fds=(w,), stderr=subprocess.DEVNULL,
                            stdin=subprocess.DEVNULL)
    os.close(w)
    with os.fdopen(r, "rb") as rf:
        ok = rf.read(1) == b"R"
    if not ok:
        proc.wait(timeout=60)
        raise RuntimeError(f"restore {backing} of {snap} failed")
    return proc, t0


def one_restore(snap, expect, ws, backend, cold, tmp, ps_box):
    if cold:
        if ps_box[0]:
            ps_box[0].stop()  # its mapping would keep the memory file cached
            ps_box[0] = None
        drop_caches()
    if backend.startswith("uffd") and not ps_box[0]:
        ps_box[0] = PageServer(os.path.join(tmp, "ps.sock"))
    hot = os.path.join(snap, "hotpages")
    alog = os.path.join(snap, "access.log")
    for path, want in ((hot, backend != "uffd"), (alog, backend == "uffd+hot+ordered")):
        if want and not os.path.exists(path):
            os.rename(path + ".saved", path)
        if not want and os.path.exists(path):
            os.rename(path, path + ".saved")
    sock = os.path.join(tmp, "b.sock")
    extra = ()
    backing = backend
    if backend.startswith("uffd"):
        backing = "uffd"
        extra = ("--pageserver", ps_box[0].path, "--name", f"b{time.monotonic_ns()}")
        if backend == "uffd":
            extra += ("--no-prefetch",)
    proc, t0 = start(snap, backing, sock, extra)
    try:
        call(sock, {"cmd": "ping", "nonce": 1}, timeout=600)
        t_ping = time.monotonic() - t0
        got = call(sock, {"cmd": "checksum", "gpa": WORK, "len": ws}, timeout=600)["checksum"]
        t_ws = time.monotonic() - t0
        assert got == expect, f"{backend}: checksum {got} != {expect}"
        faults = None
        if backend.startswith("uffd"):
            name = extra[3]
            faults = next(v["demand_faults"] for v in ps_box[0].status()["vms"] if v["name"] == name)
        return t_ping * 1e3, t_ws * 1e3, faults
    finally:
        try:
            call(sock, {"cmd": "stop"}, timeout=30)
        except (OSError, ConnectionError):
            pass
        proc.wait(timeout=60)


def record(snap, ws, tmp):
    ps = PageServer(os.path.join(tmp, "rec.sock"))
    try:
        proc, _ = start(snap, "uffd", os.path.join(tmp, "rec.vm"),
                        ("--pageserver", ps.path, "--record", "--record-settle", "500"))
        call(os.path.join(tmp, "rec.vm"), {"cmd": "checksum", "gpa": WORK, "len": ws}, timeout=600)
        deadline = time.monotonic() + 120
        while not os.path.exists(os.path.join(snap, "access.log")) and time.monotonic() < deadline:
            time.sleep(0.1)
        call(os.path.join(tmp, "rec.vm"), {"cmd": "stop"})
        proc.wait(timeout=60)
    finally:
        ps.stop()
    for name in ("hotpages", "access.log"):
        os.rename(os.path.join(snap, name), os.path.join(snap, name + ".saved"))


def chart(results, path_base):
    data = path_base + ".dat"
    labels = [k for k in results]
    with open(data, "w") as f:
        f.write("config " + " ".join(BACKENDS) + "\n")
        for k in labels:
            f.write(k.replace(" ", "_") + " " + " ".join(
                f"{results[k][b]['ws_ms']:.1f}" for b in BACKENDS) + "\n")
    term = subprocess.run(["gnuplot", "-e", "set terminal"], capture_output=True, text=True)
    png = "pngcairo" in (term.stdout + term.stderr)
    out = path_base + (".png" if png else ".svg")
    script = f"""
set terminal {'pngcairo size 1000,500' if png else 'svg size 1000,500'}
set output '{out}'
set title 'restore -> working set touched (median ms, lower is better)'
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set key outside right
set logscale y
set ylabel 'ms'
set xtics rotate by -20 noenhanced
plot for [i=2:{len(BACKENDS) + 1}] '{data}' using i:xtic(1) title columnheader(i)
"""
    subprocess.run(["gnuplot"], input=script, text=True, check=False)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--sizes", default="256M:64,1G:256", help="MEM:WORKING_SET_MiB,...")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="forkvm-bench-uffd-")
    results = {}
    try:
        for spec in args.sizes.split(","):
            mem, ws_mib = spec.split(":")
            ws = int(ws_mib) << 20
            snap, expect = make_template(tmp, mem, ws)
            record(snap, ws, tmp)
            for cold in (False, True):
                key = f"{mem} {'cold' if cold else 'warm'}"
                results[key] = {}
                ps_box = [None]
                try:
                    for backend in BACKENDS:
                        runs = [one_restore(snap, expect, ws, backend, cold, tmp, ps_box)
                                for _ in range(args.reps)]
                        med = lambda i: statistics.median(r[i] for r in runs)  # noqa: E731
                        results[key][backend] = {
                            "ping_ms": med(0), "ws_ms": med(1),
                            "demand_faults": med(2) if runs[0][2] is not None else None,
                            "runs": runs}
                        f = results[key][backend]["demand_faults"]
                        print(f"{key:<10} {backend:<18} ping {med(0):9.1f} ms   working set "
                              f"{med(1):9.1f} ms   demand faults {'-' if f is None else int(f)}",
                              flush=True)
                finally:
                    if ps_box[0]:
                        ps_box[0].stop()
            shutil.rmtree(snap, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(OUT, exist_ok=True)
    import json
    with open(os.path.join(OUT, "uffd.json"), "w") as f:
        json.dump({"unit": "ms", "reps": args.reps, "results": results}, f, indent=2)
    print("chart:", chart(results, os.path.join(OUT, "uffd")))


if __name__ == "__main__":
    main()
