"""Network throughput of a Linux guest (docs/NET.md, "Tests and cost"): guest -> host through
NAT, host -> guest through a published port, each next to the same transfer over L1's own
loopback measured in the same run. Run it in the nested rig (numbers there are emulated: they
show the path works at a sane rate, not what hardware does):

    tests/nested/rig.sh --kernel 6.12 --run 'python3 tests/linux/bench_net.py'

On a host with hardware virtualization: `python3 tests/linux/bench_net.py` as root."""
import argparse
import os
import socket
import statistics
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from linuxlib import Env  # noqa: E402

SINK_ADDR = "192.0.2.1"  # TEST-NET-1 on lo, as tests/linux/test_net.py
SINK_PORT = 8941
GUEST_PORT = 8942


def sink_server(addr, port):
    """Counts what each connection sends and answers with the count when it ends."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((addr, port))
    srv.listen(16)

    def one(c):
        n = 0
        while True:
            b = c.recv(1 << 20)
            if not b:
                break
            n += len(b)
        c.sendall(str(n).encode())
        c.close()

    def loop():
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            threading.Thread(target=one, args=(c,), daemon=True).start()
    threading.Thread(target=loop, daemon=True).start()
    return srv


def send_and_time(addr, port, nbytes):
    """Seconds to send nbytes to a sink and hear its count back."""
    chunk = b"x" * (1 << 20)
    t0 = time.monotonic()
    s = socket.create_connection((addr, port), timeout=120)
    left = nbytes
    while left:
        n = min(left, len(chunk))
        s.sendall(chunk[:n])
        left -= n
    s.shutdown(socket.SHUT_WR)
    got = int(s.recv(64).decode())
    s.close()
    assert got == nbytes, (got, nbytes)
    return time.monotonic() - t0


def guest_send(g, nbytes):
    code = ("import socket, time\n"
            f"s = socket.create_connection(({SINK_ADDR!r}, {SINK_PORT}), timeout=120)\n"
            "t0 = time.monotonic(); c = b'x' * (1 << 20)\n"
            f"left = {nbytes}\n"
            "while left:\n    n = min(left, len(c)); s.sendall(c[:n]); left -= n\n"
            "s.shutdown(socket.SHUT_WR); got = int(s.recv(64))\n"
            f"assert got == {nbytes}, got\n"
            "print(time.monotonic() - t0)")
    return float(g.run(["python3", "-c", code], timeout_ms=300000)[1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=64)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    nbytes = args.mib << 20
    subprocess.run(["ip", "addr", "add", f"{SINK_ADDR}/32", "dev", "lo"], check=False)
    sink = sink_server(SINK_ADDR, SINK_PORT)
    env = Env("bench-net")
    try:
        g = env.boot("bench", extra=["--net", "nat", "--publish", f"0:{GUEST_PORT}"])
        port = next(p["host_port"] for p in g.ok({"cmd": "status"})["net"]["published"])
        # the guest's own sink for host -> guest
        g.sh("cat > /tmp/sink.py <<'EOF'\nimport socket\ns = socket.socket()\n"
             "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
             f"s.bind(('0.0.0.0', {GUEST_PORT})); s.listen(4)\n"
             "while True:\n    c, _ = s.accept(); n = 0\n    while True:\n"
             "        b = c.recv(1 << 20)\n        if not b: break\n        n += len(b)\n"
             "    c.sendall(str(n).encode()); c.close()\nEOF\n"
             "(nohup python3 /tmp/sink.py >/dev/null 2>&1 &)")
        time.sleep(1)
        rows = []
        loop_out, g_out, g_in = [], [], []
        for _ in range(args.runs):
            loop_out.append(send_and_time(SINK_ADDR, SINK_PORT, nbytes))
            g_out.append(guest_send(g, nbytes))
            g_in.append(send_and_time("127.0.0.1", port, nbytes))
        ref = args.mib / statistics.median(loop_out)
        for name, xs in (("guest -> host (NAT)", g_out), ("host -> guest (published port)", g_in)):
            mbs = args.mib / statistics.median(xs)
            rows.append((name, mbs, ref, mbs / ref))
        print(f"{'path':32} {'MiB/s':>10} {'L1 loopback MiB/s':>18} {'ratio':>7}  "
              f"(median of {args.runs}, {args.mib} MiB each)")
        for name, mbs, r, ratio in rows:
            print(f"{name:32} {mbs:10.1f} {r:18.1f} {ratio:7.3f}")
    finally:
        env.cleanup()
        sink.close()


if __name__ == "__main__":
    main()
