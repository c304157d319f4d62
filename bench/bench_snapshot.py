"""Snapshot/restore benchmarks: write time vs RAM, restore->ping per backend, restore-many,
PSS per child per backend, hugetlb vs 4 KiB populate."""
import argparse
import os
import shutil
import subprocess
import tempfile
import time

from benchlib import chart, report, summary
from forkvm_vm import FORKVM, VM, WORK, call

MIB = 1 << 20


def make_snapshot(path, mem_mib):
    vm = VM(mem=f"{mem_mib}M")
    try:
        low = min(mem_mib * MIB, 3 << 30)
        vm.ok({"cmd": "fill", "gpa": WORK, "len": low - WORK, "seed": 1}, timeout=900)
        if mem_mib * MIB > low:
            vm.ok({"cmd": "fill", "gpa": 4 << 30, "len": mem_mib * MIB - low, "seed": 1}, timeout=900)
        t = []
        for i in range(3):
            shutil.rmtree(path, ignore_errors=True)
            subprocess.run(["sync"])
            reply = vm.ok({"cmd": "snapshot", "dir": path}, timeout=900)
            t.append(reply["paused_us"] / 1e3)
        return t
    finally:
        vm.stop()


def restore(snap, backend, count, run, paused=False):
    env = dict(os.environ, FORKVM_RUN_DIR=run)
    t0 = time.monotonic()
    args = [FORKVM, "restore", snap, "--backend", backend, "--count", str(count), "--name",
            f"b{backend}{count}{int(t0 * 1000) % 100000}"]
    r = subprocess.run(args + (["--paused"] if paused else []), capture_output=True, text=True,
                       env=env, timeout=600)
    assert r.returncode == 0, r.stderr
    kids = [line.split() for line in r.stdout.splitlines()]
    for _, _, sock in kids:
        if not paused:
            assert call(sock, {"cmd": "ping"})["ok"]
    return (time.monotonic() - t0) * 1e3, kids


def stop_all(kids):
    for _, pid, sock in kids:
        subprocess.run([FORKVM, "stop", sock], capture_output=True)


def private_mib(pid):
    f = {}
    for line in open(f"/proc/{pid}/smaps_rollup"):
        p = line.split()
        if len(p) >= 2 and p[1].isdigit():
            f[p[0].rstrip(":")] = int(p[1])
    # hugetlb pages are not in Pss/Private_*: smaps accounts them separately.
    huge = f.get("Private_Hugetlb", 0)
    return (f["Pss"] + huge + f.get("Shared_Hugetlb", 0)) / 1024, \
        (f["Private_Clean"] + f["Private_Dirty"] + huge) / 1024


def set_hugepages(n):
    with open("/proc/sys/vm/nr_hugepages", "w") as f:
        f.write(str(n))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--skip-write", action="store_true", help="only the restore measurements")
    a = ap.parse_args()
    sizes = [256, 1024] if a.quick else [256, 1024, 2048, 4096]
    disk = tempfile.mkdtemp(prefix="forkvm-bench-", dir="/var/tmp")
    shm = tempfile.mkdtemp(prefix="forkvm-bench-", dir="/dev/shm")
    run = os.path.join(shm, "run")
    os.makedirs(run)
    rows, series = [], {"tmpfs (/dev/shm)": [], "work disk (/var/tmp)": []}
    try:
        for mib in ([] if a.skip_write else sizes):
            for label, base in (("tmpfs (/dev/shm)", shm), ("work disk (/var/tmp)", disk)):
                t = make_snapshot(os.path.join(base, f"s{mib}"), mib)
                rows.append((f"snapshot {mib} MiB to {label}", t))
                series[label].append((mib, summary(t)["median"]))
                if base == disk or mib > 1024:
                    shutil.rmtree(os.path.join(base, f"s{mib}"), ignore_errors=True)
        if rows:
            report("snapshot_write", rows, "ms (source paused -> resumed)")
        if rows:
            chart("snapshot_write", "Snapshot time vs guest RAM (all pages non-zero)",
              "guest RAM (MiB)", "ms (median of 3)", series,
              xtics=[(f"{s}M" if s < 1024 else f"{s // 1024}G", s) for s in sizes])
        # Restores use a 128 MiB snapshot: 50 memfd children are 50 full copies.
        snap = os.path.join(shm, "s128")
        make_snapshot(snap, 128)
        set_hugepages(50 * 64 + 64)
        first, many, mem = [], [], []
        for backend in ("file", "memfd", "hugetlb"):
            t = []
            for _ in range(5 if a.quick else 11):
                ms, kids = restore(snap, backend, 1, run)
                t.append(ms)
                stop_all(kids)
            first.append((f"restore 128 MiB -> first ping, {backend}", t))
            for n in ((1, 10) if a.quick else (1, 10, 50)):
                ms, kids = restore(snap, backend, n, run)
                many.append((f"restore-many {backend} N={n} (all answer ping)", [ms]))
                if n == 10:
                    time.sleep(0.3)
                    p = [private_mib(int(pid)) for _, pid, _ in kids]
                    mem.append((f"{backend}: PSS per idle child", [x[0] for x in p]))
                    mem.append((f"{backend}: private per idle child", [x[1] for x in p]))
                stop_all(kids)
        report("restore_first_ping", first, "ms")
        report("restore_many", many, "ms")
        report("restore_child_memory", mem, "MiB")
        big = os.path.join(shm, "s1024")
        if not os.path.exists(big):
            make_snapshot(big, 1024)
        set_hugepages(600)
        pop = []
        for backend in ("memfd", "hugetlb"):
            t = []
            for _ in range(3):
                ms, kids = restore(big, backend, 1, run, paused=True)
                t.append(ms)
                stop_all(kids)
            pop.append((f"populate 1 GiB memfd from the memory file, {backend}", t))
        report("populate_1g", pop, "ms (restore of a 1 GiB snapshot, paused)")
    finally:
        set_hugepages(0)
        shutil.rmtree(disk, ignore_errors=True)
        shutil.rmtree(shm, ignore_errors=True)


if __name__ == "__main__":
    main()
