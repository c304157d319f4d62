"""DISK benchmarks on this host's KVM (probe guest; docs/DISK.md), each number next to a
reference measured in the same run:

1. `forkvm image build --rootfs` with the package cache warm (new --out each run) and with
   unchanged inputs (reuse); reference: `mke2fs -d` alone on the same tree, apt's solver alone.
2. Host disk per idle branch child (every file it added: its top overlay, log, console), for
   N children per strategy; reference: the base's allocated size (a full copy per child).
3. Branch request -> the child's first successful blk_io read of a block the source wrote;
   reference: the same branch of a VM without a disk -> first ping.
4. virtio-blk throughput through the probe driver (1 MiB requests, 64 MiB); reference: the
   host's own pread/pwrite of the same file (base) or a fresh file next to the top (writes).

Package downloads come from the shared cache (~/.cache/forkvm or $FORKVM_CACHE); the images
are written to a private --out. Table on stdout, bench/out/disk.json, bench/out/disk.png."""
import argparse
import base64
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import tempfile
import time

from benchlib import OUT, chart, pct
from forkvm_vm import FORKVM, VM, call

MIB = 1 << 20
KIB = 1 << 10
BUF = 8 << 20       # guest buffer written to the disk (1 MiB)
RBUF = 10 << 20     # guest buffer the disk is read into (1 MiB); blk_io's area is at 12 MiB
CHUNK = 1 << 20     # PROBE_BLK_MAX_LEN: the largest request blk_io sends
T_IN, T_OUT, T_FLUSH = 0, 1, 4
SRC_SECTOR = 4096   # where the source writes the block its children read first (2 MiB)
ROOTS = ["base-files", "base-passwd", "bash", "ca-certificates", "coreutils", "dash", "python3",
         "python3-pip"]  # src/image/rootfs.c: the default --rootfs roots
ROWS = []           # (section, label, values, unit, ref_label, ref_values)


def med(v):
    s = sorted(v)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def row(section, label, values, unit, ref_label=None, ref_values=None):
    values = values if isinstance(values, list) else [values]
    if ref_values is not None and not isinstance(ref_values, list):
        ref_values = [ref_values]
    ROWS.append((section, label, values, unit, ref_label, ref_values))


def fmt(v, unit):
    if unit == "s":
        return f"{v:.2f} s" if v >= 1 else f"{v * 1e3:.0f} ms"
    if unit == "ms":
        return f"{v:.2f} ms" if v < 10 else f"{v:.1f} ms" if v < 100 else f"{v:.0f} ms"
    if unit == "B":
        if v >= MIB:
            return f"{v / MIB:.1f} MiB"
        return f"{v / KIB:.0f} KiB" if v >= KIB or v == 0 else f"{v:.0f} B"
    if unit == "MB/s":
        return f"{v:.0f} MB/s"
    return f"{v:.3g} {unit}"


def print_table():
    w = max(len(r[1]) for r in ROWS) + 2
    wr = max(len(r[4] or "") for r in ROWS) + 2
    section = None
    print("\n== disk (medians; p90 over n runs; reference measured in the same run)")
    print(f"  {'measurement':<{w}}{'median':>11}{'p90':>11}{'n':>4}   {'reference':<{wr}}"
          f"{'median':>11}{'ratio':>10}")
    for sec, label, vals, unit, ref_label, ref in ROWS:
        if sec != section:
            section = sec
            print(f" {sec}")
        line = f"  {label:<{w}}{fmt(med(vals), unit):>11}{fmt(pct(vals, 90), unit):>11}{len(vals):>4}"
        if ref:
            r = med(ref)
            q = med(vals) / r if r else None
            ratio = "-" if q is None else f"{q:.2f}x" if q >= 0.01 else f"1/{1 / q:,.0f}" \
                if q else "0"
            line += f"   {ref_label:<{wr}}{fmt(r, unit):>11}{ratio:>10}"
        print(line)


def save_json():
    os.makedirs(OUT, exist_ok=True)
    out = {}
    for sec, label, vals, unit, ref_label, ref in ROWS:
        entry = {"unit": unit, "n": len(vals), "median": med(vals), "p90": pct(vals, 90),
                 "values": vals}
        if ref:
            entry["reference"] = {"label": ref_label, "median": med(ref), "values": ref}
        out.setdefault(sec, {})[label] = entry
    path = os.path.join(OUT, "disk.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=2)
    print(f"  json: {path}")


def allocated(path):
    try:
        return os.lstat(path).st_blocks * 512
    except FileNotFoundError:
        return 0


# ---------------------------------------------------------------- 1. root image build

def timed_build(out, cache_env):
    """Run `image build --rootfs --out OUT`; return (total s, {phase: s}, stdout)."""
    t0 = time.monotonic()
    p = subprocess.Popen([FORKVM, "image", "build", "--rootfs", "--out", out],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=cache_env)
    marks, text = {}, []
    for line in p.stdout:
        text.append(line)
        for key in ("resolving", "staging", "making"):
            if f"info: {key}" in line:
                marks[key] = time.monotonic() - t0
    rc = p.wait()
    total = time.monotonic() - t0
    if rc != 0:
        raise RuntimeError(f"image build --rootfs failed (exit {rc}): {''.join(text)[-2000:]}")
    phases = {}
    if "staging" in marks and "making" in marks:
        phases = {"resolve (apt solver)": marks["staging"],
                  "stage + fix-ups": marks["making"] - marks["staging"],
                  "image (mke2fs, debugfs, fsync, sha256)": total - marks["making"]}
    return total, phases, "".join(text)


def image_sha(out):
    with open(os.path.join(out, "manifest.json")) as f:
        return json.load(f)["image"].get("sha256")


def bench_build(work, runs):
    """Returns the path of a built rootfs.ext4 (the base for the other sections) or None."""
    sec = "1. root image build (--rootfs, 60 packages, packages cached)"
    env = dict(os.environ)
    outs, totals, phases, shas = [], [], {}, set()
    try:
        for i in range(runs + 1):  # the first run warms the page cache and the package cache
            out = os.path.join(work, f"rootfs{i}")
            total, ph, text = timed_build(out, env)
            if i == 0:
                if "reusing" in text:
                    raise RuntimeError("a fresh --out was reused")
                outs.append(out)
                continue
            totals.append(total)
            shas.add(image_sha(out))
            for k, v in ph.items():
                phases.setdefault(k, []).append(v)
            outs.append(out)
            if i < runs:  # keep the last image as the base for the other sections
                shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(outs[0], ignore_errors=True)
    except (RuntimeError, OSError, KeyError, json.JSONDecodeError) as e:
        print(f"bench_disk: image build skipped: {e}")
        return None
    last = outs[-1]
    image = os.path.join(last, "rootfs.ext4")
    reuse = []
    for _ in range(runs):
        total, _, text = timed_build(last, env)
        assert "reusing" in text, text
        reuse.append(total)
    # Reference: the same tree (dumped from the image once) through mke2fs -d alone, same flags.
    tree = os.path.join(work, "tree")
    os.makedirs(tree)
    subprocess.run(["debugfs", "-R", f"rdump / {tree}", image], check=True,
                   capture_output=True)
    size_mib = os.path.getsize(image) // MIB
    inodes = subprocess.run(["dumpe2fs", "-h", image], capture_output=True, text=True).stdout
    nodes = next((ln.split()[-1] for ln in inodes.splitlines() if ln.startswith("Inode count:")),
                 None)
    ref_img = os.path.join(work, "ref.ext4")
    mkfs, mkfs_sync = [], []
    for _ in range(runs):
        if os.path.exists(ref_img):
            os.unlink(ref_img)
        t0 = time.monotonic()
        subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", "-b", "4096", "-m", "0",
                        *(["-N", nodes] if nodes else []), "-E", "root_owner=0:0",
                        "-d", tree, ref_img, f"{size_mib}M"], check=True, capture_output=True)
        mkfs.append(time.monotonic() - t0)
        fd = os.open(ref_img, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
        mkfs_sync.append(time.monotonic() - t0)
    os.unlink(ref_img)
    copy, hashing = [], []
    for i in range(runs):
        dst = os.path.join(work, f"tree-copy{i}")
        t0 = time.monotonic()
        subprocess.run(["cp", "-al", tree, dst], check=True, capture_output=True)
        copy.append(time.monotonic() - t0)
        shutil.rmtree(dst, ignore_errors=True)
        t0 = time.monotonic()
        h = hashlib.sha256()
        with open(image, "rb") as f:
            for chunk in iter(lambda: f.read(MIB), b""):
                h.update(chunk)
        hashing.append(time.monotonic() - t0)
    shutil.rmtree(tree, ignore_errors=True)
    apt = []
    for _ in range(runs):
        t0 = time.monotonic()
        subprocess.run(["apt-get", "-s", "-q", "-o", "Dir::State::status=/dev/null", "-o",
                        "Debug::NoLocking=1", "-o", "APT::Architectures=amd64", "install",
                        "--no-install-recommends", *ROOTS], check=True, capture_output=True)
        apt.append(time.monotonic() - t0)
    row(sec, "build, new --out each run", totals, "s", "mke2fs -d alone, same tree", mkfs)
    for k, v in phases.items():
        if k.startswith("image"):
            row(sec, f"  {k}", v, "s", "mke2fs -d + sha256 of the image",
                [m + h for m, h in zip(mkfs_sync, hashing)])
        elif k.startswith("resolve"):
            row(sec, f"  {k}", v, "s", "apt-get -s alone", apt)
        else:
            row(sec, f"  {k}", v, "s", "cp -al of the same tree", copy)
    row(sec, "unchanged inputs (reusing)", reuse, "s", "apt-get -s alone", apt)
    st = os.stat(image)
    print(f"  (image: {st.st_size // MIB} MiB, {st.st_blocks * 512 // MIB} MiB allocated, "
          f"sha256 {image_sha(last)[:16]}..., {len(totals)} builds gave "
          f"{'the same image' if len(shas) == 1 else f'{len(shas)} different images'})")
    return image


def random_base(work, mib=256):
    path = os.path.join(work, "random.img")
    rnd = random.Random(7)
    with open(path, "wb") as f:
        for _ in range(mib):
            f.write(rnd.randbytes(MIB))
    return path


# ---------------------------------------------------------------- helpers for the VMs

def disk_vm(base, mem="64M"):
    return VM(mem=mem, extra=(("--disk", base) if base else ()))


def blk(sock, kind, sector, length, buf):
    return call(sock, {"cmd": "blk_io", "type": kind, "sector": sector, "buf": buf, "len": length})


def peek(sock, gpa, length):
    r = call(sock, {"cmd": "peek", "gpa": gpa, "len": length})
    assert r["ok"], r
    return base64.b64decode(r["data"])


def source_writes(vm, mib):
    """The source writes `mib` MiB (1 MiB requests) from SRC_SECTOR on and flushes; returns the
    first 4 KiB it wrote."""
    vm.ok({"cmd": "fill", "gpa": BUF, "len": CHUNK, "seed": 11})
    for i in range(mib):
        r = blk(vm.sock, T_OUT, SRC_SECTOR + i * (CHUNK // 512), CHUNK, BUF)
        assert r["ok"] and r["status"] == 0, r
    assert blk(vm.sock, T_FLUSH, 0, 0, BUF)["status"] == 0
    return peek(vm.sock, BUF, 4096)


def branch(vm, strategy, count, prefix, run, snapdir):
    req = {"cmd": "branch", "strategy": strategy, "count": count, "prefix": prefix,
           "run_dir": run, "paused": False}
    if strategy != "cow":
        req["dir"] = snapdir
    reply = call(vm.sock, req, timeout=300)
    assert reply["ok"], reply
    return reply


def gone(pid):
    try:
        state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[-1].split()[0]
        return state == "Z"
    except FileNotFoundError:
        return True


def end_children(reply):
    """Stop every child (it removes its own top), then the cow template; SIGKILL stragglers."""
    kids = reply.get("children", [])
    for c in kids:
        try:
            call(c["socket"], {"cmd": "stop"}, timeout=10)
        except (OSError, ConnectionError, ValueError):
            pass
    deadline = time.monotonic() + 10
    for c in kids:
        while not gone(c["pid"]) and time.monotonic() < deadline:
            time.sleep(0.01)
        if not gone(c["pid"]):
            try:
                os.kill(c["pid"], signal.SIGKILL)
            except ProcessLookupError:
                pass
    if reply.get("template"):
        try:
            call(reply["template"], {"cmd": "stop"}, timeout=10)
        except (OSError, ConnectionError, ValueError):
            pass


def stop_vm(vm):
    try:
        vm.stop()
    except Exception:  # pylint: disable=broad-except
        vm.kill()
    shutil.rmtree(vm.dir, ignore_errors=True)


def child_files(run, child):
    """Every file the child has in the run directory: socket, top, log, console."""
    name = os.path.basename(child["socket"])
    return [os.path.join(run, f) for f in os.listdir(run) if f.startswith(name)]


def inodes_under(*dirs):
    """{(dev, ino): allocated bytes} of every regular file under dirs."""
    seen = {}
    for d in dirs:
        for root, _, files in os.walk(d):
            for n in files:
                try:
                    st = os.lstat(os.path.join(root, n))
                except FileNotFoundError:
                    continue
                seen[(st.st_dev, st.st_ino)] = st.st_blocks * 512
    return seen


# ---------------------------------------------------------------- 2. host disk per child

def bench_child_disk(base, work, counts, strategies, write_mib):
    sec = "2. host disk per idle child (base: %s)" % os.path.basename(base)
    base_alloc = allocated(base)
    run = os.path.join(work, "run2")
    os.makedirs(run)
    vm = disk_vm(base)
    series = {}
    try:
        source_writes(vm, write_mib)
        src_top = vm.ok({"cmd": "status"})["disks"][0]["top"]
        src_alloc = allocated(src_top)
        row(sec, f"source's own overlay ({write_mib} MiB written)", src_alloc, "B",
            "base allocated (full copy)", base_alloc)
        for strategy in strategies:
            for n in counts:
                before = inodes_under(work, vm.dir)
                # diff: one chain for all N (the second branch writes a layer on the first)
                snapdir = os.path.join(work, f"snap-{strategy}" + ("" if strategy == "diff"
                                                                   else f"-{n}"))
                reply = branch(vm, strategy, n, f"{strategy}{n}", run, snapdir)
                try:
                    per_child, tops, top_alone = [], [], []
                    for c in reply["children"]:
                        assert call(c["socket"], {"cmd": "ping"})["ok"]
                        tops.append(call(c["socket"], {"cmd": "status"})["disks"][0]["top"])
                    time.sleep(0.1)
                    mine = set()
                    for c, top in zip(reply["children"], tops):
                        files = child_files(run, c)
                        assert top in files, (top, files)
                        per_child.append(sum(allocated(f) for f in files))
                        top_alone.append(allocated(top))
                        mine.update((os.lstat(f).st_dev, os.lstat(f).st_ino) for f in files)
                    after = inodes_under(work, vm.dir)
                    shared = sum(b for k, b in after.items() if k not in before and k not in mine)
                    label = f"{strategy} N={n}: per idle child"
                    row(sec, label, per_child, "B", "base allocated (full copy)", base_alloc)
                    row(sec, "  of which its top overlay", top_alone, "B",
                        "source's own overlay", src_alloc)
                    what = "template + source's new top" if strategy == "cow" else \
                        "snapshot + source's new top"
                    row(sec, f"{strategy} N={n}: shared, once ({what})", shared, "B",
                        "base allocated (full copy)", base_alloc)
                    series.setdefault(strategy, []).append(
                        (n, (shared + sum(per_child)) / MIB))
                    if n == counts[0]:  # each child then writes 64 KiB of its own
                        for c in reply["children"]:
                            call(c["socket"], {"cmd": "fill", "gpa": BUF, "len": 65536,
                                               "seed": 5})
                            r = blk(c["socket"], T_OUT, 8192, 65536, BUF)
                            assert r["ok"] and r["status"] == 0, r
                        row(sec, f"{strategy} N={n}: per child after a 64 KiB write",
                            [sum(allocated(f) for f in child_files(run, c))
                             for c in reply["children"]], "B",
                            "base allocated (full copy)", base_alloc)
                finally:
                    end_children(reply)
                if strategy != "diff":
                    shutil.rmtree(snapdir, ignore_errors=True)
    finally:
        stop_vm(vm)
        shutil.rmtree(run, ignore_errors=True)
    series["full copy per child"] = [(n, n * base_alloc / MIB) for n in counts]
    return series


# ---------------------------------------------------------------- 3. branch -> first read

def first_touch(vm, strategy, run, snapdir, prefix, expect):
    """Seconds from the branch request to the child's first successful blk_io read of the
    block the source wrote (expect: its bytes) or, with expect None, its first ping."""
    t0 = time.perf_counter()
    reply = branch(vm, strategy, 1, prefix, run, snapdir)
    sock = reply["children"][0]["socket"]
    try:
        while True:
            try:
                if expect is not None:
                    r = blk(sock, T_IN, SRC_SECTOR, 4096, RBUF)
                    if r.get("ok") and r.get("status") == 0:
                        break
                elif call(sock, {"cmd": "ping"}).get("ok"):
                    break
            except (OSError, ConnectionError):
                pass
        dt = time.perf_counter() - t0
        if expect is not None:
            assert peek(sock, RBUF, 4096) == expect, "the child read other bytes"
    finally:
        end_children(reply)
    return dt


def bench_first_read(base, work, strategies, runs):
    """Per strategy, three sources alive at once, branched in turn (interleaved, so a busy
    moment of the host hits all three alike): no disk -> ping; disk -> read; disk -> ping."""
    sec = "3. branch request -> child's first disk read (count 1)"
    run = os.path.join(work, "run3")
    os.makedirs(run, exist_ok=True)
    for strategy in strategies:
        plain, reader, pinger = disk_vm(None), disk_vm(base), disk_vm(base)
        try:
            expect = source_writes(reader, 1)
            source_writes(pinger, 1)
            cases = [("ref", plain, None), ("read", reader, expect), ("ping", pinger, None)]
            got = {k: [] for k, _, _ in cases}
            for i in range(runs + 1):  # the first round warms up (page cache, snapshot files)
                for key, vm, exp in cases:
                    dt = first_touch(vm, strategy, run, os.path.join(work, f"snap3-{key}"),
                                     f"t{strategy}{key}{i}", exp)
                    if i:
                        got[key].append(dt)
        finally:
            for vm in (plain, reader, pinger):
                stop_vm(vm)
        row(sec, f"{strategy}: -> first blk_io read (4 KiB)", got["read"], "s",
            "no disk: -> first ping", got["ref"])
        row(sec, f"{strategy}: -> first ping, with disk", got["ping"], "s",
            "no disk: -> first ping", got["ref"])


# ---------------------------------------------------------------- 4. throughput

def host_io(path, offset, total, write, buf):
    fd = os.open(path, os.O_RDWR if write else os.O_RDONLY)
    try:
        t0 = time.perf_counter()
        for off in range(offset, offset + total, CHUNK):
            if write:
                os.pwrite(fd, buf, off)
            else:
                assert len(os.pread(fd, CHUNK, off)) == CHUNK
        return total / (time.perf_counter() - t0) / 1e6
    finally:
        os.close(fd)


def guest_io(sock, kind, offset, total):
    """(end-to-end MB/s incl. one control round trip per request, MB/s from the probe's own
    post -> doorbell latency)."""
    dev = 0.0
    t0 = time.perf_counter()
    for off in range(offset, offset + total, CHUNK):
        r = blk(sock, kind, off // 512, CHUNK, BUF if kind == T_OUT else RBUF)
        assert r["ok"] and r["status"] == 0, r
        dev += r["latency_us"]
    wall = time.perf_counter() - t0
    return total / wall / 1e6, total / dev


def bench_throughput(base, work, runs, total):
    sec = f"4. virtio-blk throughput, {total // MIB} MiB in 1 MiB requests"
    size = os.path.getsize(base)
    total = min(total, size // 2 // CHUNK * CHUNK)
    base_off = total  # [0, total): written by the guest; [total, 2 total): base only
    data = os.urandom(CHUNK)
    with open(base, "rb") as f:  # warm the page cache for both readers alike
        f.seek(base_off)
        f.read(total)
    res = {k: [] for k in ("wf", "wo", "rt", "rb", "wf_d", "wo_d", "rt_d", "rb_d",
                           "h_wf", "h_wo", "h_rt", "h_rb", "rtt", "l4k", "l1m", "lping",
                           "exits")}
    for _ in range(runs):
        vm = disk_vm(base)  # a fresh, empty top each run
        try:
            vm.ok({"cmd": "fill", "gpa": BUF, "len": CHUNK, "seed": 9})
            for key, kind, off in (("wf", T_OUT, 0), ("wo", T_OUT, 0), ("rt", T_IN, 0),
                                   ("rb", T_IN, base_off)):
                e2e, dev = guest_io(vm.sock, kind, off, total)
                res[key].append(e2e)
                res[key + "_d"].append(dev)
            t0 = time.perf_counter()
            for _ in range(20):
                res["lping"].append(vm.ok({"cmd": "ping"})["latency_us"] / 1e3)
            res["rtt"].append((time.perf_counter() - t0) / 20)
            e0 = vm.ok({"cmd": "status"})["vcpus"][0]["exits_mmio"]
            for _ in range(20):
                res["l4k"].append(blk(vm.sock, T_IN, base_off // 512, 4096, RBUF)["latency_us"] / 1e3)
            e1 = vm.ok({"cmd": "status"})["vcpus"][0]["exits_mmio"]
            res["exits"].append((e1 - e0) / 20)
            for _ in range(20):
                res["l1m"].append(blk(vm.sock, T_IN, base_off // 512, CHUNK, RBUF)["latency_us"] / 1e3)
        finally:
            stop_vm(vm)
        scratch = os.path.join(work, "host-top.img")  # same filesystem as the VM's top
        with open(scratch, "wb") as f:
            f.truncate(size)
        res["h_wf"].append(host_io(scratch, 0, total, True, data))
        res["h_wo"].append(host_io(scratch, 0, total, True, data))
        res["h_rt"].append(host_io(scratch, 0, total, False, None))
        res["h_rb"].append(host_io(base, base_off, total, False, None))
        os.unlink(scratch)
    names = {"wf": ("write, fresh clusters (top grows)", "host pwrite, new sparse file"),
             "wo": ("overwrite, clusters in the top", "host pwrite, same file again"),
             "rt": ("read back from the top", "host pread of that file"),
             "rb": ("read, never written (base)", "host pread of the base")}
    for key, (label, ref) in names.items():
        row(sec, f"{label}: end to end", res[key], "MB/s", ref, res["h_" + key])
        row(sec, "  in the guest (post -> doorbell)", res[key + "_d"], "MB/s", ref,
            res["h_" + key])
    row(sec, "one request in the guest: 4 KiB read", res["l4k"], "ms",
        "ping in the guest (post -> doorbell)", res["lping"])
    row(sec, "one request in the guest: 1 MiB read", res["l1m"], "ms",
        "one 4 KiB read request", res["l4k"])
    row(sec, "control round trip per request (ping, end to end)", [x * 1e3 for x in res["rtt"]],
        "ms")
    print(f"  (the probe driver resets and sets up the device for every blk_io: "
          f"{med(res['exits']):.0f} MMIO exits per request)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=9, help="branch -> first read runs")
    ap.add_argument("--build-runs", type=int, default=3)
    ap.add_argument("--io-runs", type=int, default=3)
    ap.add_argument("--counts", default="10,50", help="children per branch for section 2")
    ap.add_argument("--strategies", default="cow,full,diff", help="for section 2 (3: cow, full)")
    ap.add_argument("--write-mib", type=int, default=8, help="the source's writes before branching")
    ap.add_argument("--io-mib", type=int, default=64)
    ap.add_argument("--base", help="use this image as the base instead of building one")
    ap.add_argument("--quick", action="store_true")
    a, _ = ap.parse_known_args()
    if a.quick:
        a.runs, a.build_runs, a.io_runs, a.counts = 3, 2, 2, "10"
    counts = [int(x) for x in a.counts.split(",")]
    strategies = a.strategies.split(",")
    work = tempfile.mkdtemp(prefix="forkvm-bench-disk-", dir="/var/tmp")
    t_start = time.monotonic()
    try:
        base = a.base or bench_build(work, a.build_runs)
        if not base:
            base = random_base(work)
        # The base's identity (sha256) is cached next to it by the first VM that opens it.
        stop_vm(disk_vm(base))
        series = bench_child_disk(base, work, counts, strategies, a.write_mib)
        bench_first_read(base, work, [s for s in ("cow", "full") if s in strategies], a.runs)
        bench_throughput(base, work, a.io_runs, a.io_mib * MIB)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print_table()
    save_json()
    chart("disk", "Host disk for N idle branch children (probe VM, disk = %s)"
          % ("rootfs.ext4" if not a.base else os.path.basename(a.base)),
          "children (N)", "MiB of host disk added (all children + shared files)", series,
          xtics=[(str(n), n) for n in counts])
    print(f"  total bench_disk time: {time.monotonic() - t_start:.0f} s")


if __name__ == "__main__":
    main()
