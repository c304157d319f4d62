"""Probe-guest vsock: small-frame round trip (median) and 16 MiB echo stream throughput."""
import argparse
import os
import tempfile
import threading
import time

from benchlib import report
from forkvm_vm import VM
from vsock_client import recv_exact, vsock_connect

PORT = 5000


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rtt", type=int, default=2000, help="round trips")
    ap.add_argument("--streams", type=int, default=5, help="16 MiB transfers")
    args, _ = ap.parse_known_args()
    path = os.path.join(tempfile.mkdtemp(prefix="forkvm-bench-"), "v.sock")
    vm = VM(mem="64M", extra=("--vsock", path))
    try:
        vm.ok({"cmd": "vsock_listen", "port": PORT})
        s, _ = vsock_connect(path, PORT)
        rtt = []
        for _ in range(args.rtt):
            t0 = time.perf_counter()
            s.sendall(b"p" * 64)
            recv_exact(s, 64)
            rtt.append((time.perf_counter() - t0) * 1e6)
        s.close()
        mbps = []
        data = os.urandom(16 << 20)
        for _ in range(args.streams):
            s, _ = vsock_connect(path, PORT, timeout=120)
            t = threading.Thread(target=s.sendall, args=(data,))
            t0 = time.perf_counter()
            t.start()
            got = recv_exact(s, len(data))
            t.join()
            dt = time.perf_counter() - t0
            s.close()
            assert got == data, "echoed stream differs"
            mbps.append(len(data) / dt / 1e6)
        exits = vm.ok({"cmd": "status"})["vcpus"][0]
    finally:
        vm.stop()
    report("vsock_rtt", [("64-byte frame round trip (us)", rtt)], "us")
    report("vsock_stream", [("16 MiB echo, host->guest->host (MB/s)", mbps)], "MB/s")
    print(f"  vCPU exits over the run: io {exits['exits_io']}, mmio {exits['exits_mmio']}")


if __name__ == "__main__":
    main()
