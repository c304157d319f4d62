"""VMM foundation benchmarks: boot->ping, command round trip, pause/resume, fill MiB/s."""
import argparse
import socket
import time

from benchlib import report
from forkvm_vm import VM, WORK

GIB = 1 << 30


def boot_to_ping(runs):
    times = []
    for _ in range(runs):
        t0 = time.monotonic()
        vm = VM(mem="256M")
        vm.ok({"cmd": "ping"})
        times.append((time.monotonic() - t0) * 1e3)
        vm.stop()
    return times


def round_trips(vm, n):
    """Client-observed ping over one connection, and the VMM's post->doorbell latency."""
    client, vmm = [], []
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(vm.sock)
        f = s.makefile("rb")
        for _ in range(n):
            t0 = time.monotonic()
            s.sendall(b'{"cmd":"ping"}\n')
            line = f.readline()
            client.append((time.monotonic() - t0) * 1e6)
            vmm.append(float(line.split(b'"latency_us":')[1].split(b"}")[0].split(b",")[0]))
    return client, vmm


def pause_resume(vm, n):
    pause, both = [], []
    vm.ok({"cmd": "dirty", "pages": 4096, "vcpu": 0})
    for _ in range(n):
        t0 = time.monotonic()
        pause.append(vm.ok({"cmd": "pause"})["pause_us"])
        vm.ok({"cmd": "resume"})
        both.append((time.monotonic() - t0) * 1e6)
        time.sleep(0.005)
    vm.ok({"cmd": "dirty", "pages": 0})
    return pause, both


def fill_rate(hugepage, runs):
    rates = []
    for _ in range(runs):
        vm = VM(mem="1200M", extra=() if hugepage else ("--no-hugepage",))
        t0 = time.monotonic()
        vm.ok({"cmd": "fill", "gpa": WORK, "len": GIB, "seed": 1}, timeout=300)
        rates.append(1024 / (time.monotonic() - t0))
        vm.stop()
    return rates


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer runs (smoke)")
    a = ap.parse_args()
    runs = 5 if a.quick else 21
    report("vmm_boot", [("probe boot -> first ping", boot_to_ping(runs))], "ms")
    vm = VM(mem="1200M")
    try:
        client, vmm = round_trips(vm, 200 if not a.quick else 50)
        report("vmm_roundtrip", [("ping, client over socket", client),
                                 ("ping, VMM post -> guest doorbell", vmm)], "us")
        vm.ok({"cmd": "fill", "gpa": WORK, "len": GIB, "seed": 2}, timeout=300)
        pause, both = pause_resume(vm, 50 if not a.quick else 10)
        report("vmm_pause", [("pause, 1 GiB resident, guest dirtying", pause),
                             ("pause+resume, client observed", both)], "us")
    finally:
        vm.stop()
    fill_runs = 2 if a.quick else 3
    report("vmm_fill", [("guest fills 1 GiB, MADV_HUGEPAGE", fill_rate(True, fill_runs)),
                        ("guest fills 1 GiB, 4 KiB pages", fill_rate(False, fill_runs))], "MiB/s")


if __name__ == "__main__":
    main()
