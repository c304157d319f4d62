"""forkvmd overhead (docs/DAEMON.md): create -> ready and branch(10) through the API next to the
same work without the daemon (`forkvm run --detach`; the control socket's `branch`), measured
in the same run; 100 concurrent creations; the daemon's memory with 1,000 sandbox records.
Probe guest on this host's KVM."""
import argparse
import concurrent.futures
import os
import shutil
import sqlite3
import subprocess
import sys
import time

from benchlib import ROOT, report
from forkvm_vm import FORKVM, call

sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
from daemonlib import Daemon  # noqa: E402


def ms_since(t0):
    return (time.monotonic() - t0) * 1e3


def create_api(d, runs):
    times = []
    for _ in range(runs):
        t0 = time.monotonic()
        sb = d.req("POST", "/v1/sandboxes", body={"mem_mib": 64})
        call(sb["socket"], {"cmd": "ping"})
        times.append(ms_since(t0))
        d.req("DELETE", f"/v1/sandboxes/{sb['id']}")
    return times


def create_cli(run_dir, runs):
    times = []
    for i in range(runs):
        sock = os.path.join(run_dir, f"cli-{i}.sock")
        t0 = time.monotonic()
        subprocess.run([FORKVM, "run", "--detach", "--mem", "64M", "--socket", sock],
                       check=True, capture_output=True)
        call(sock, {"cmd": "ping"})
        times.append(ms_since(t0))
        call(sock, {"cmd": "stop"})
    return times


def branch_api(d, runs):
    src = d.req("POST", "/v1/sandboxes", body={"mem_mib": 64})
    times = []
    for _ in range(runs):
        t0 = time.monotonic()
        kids = d.req("POST", f"/v1/sandboxes/{src['id']}/branch",
                     body={"count": 10, "strategy": "cow"})["children"]
        times.append(ms_since(t0))
        for k in kids:
            d.req("DELETE", f"/v1/sandboxes/{k['id']}")
    d.req("DELETE", f"/v1/sandboxes/{src['id']}")
    return times


def branch_ctl(d, runs):
    src = d.req("POST", "/v1/sandboxes", body={"mem_mib": 64})
    run_dir = os.path.join(d.state, "run")
    times = []
    for i in range(runs):
        t0 = time.monotonic()
        r = call(src["socket"], {"cmd": "branch", "strategy": "cow", "count": 10,
                                 "prefix": f"ctl{i}", "run_dir": run_dir}, timeout=600)
        times.append(ms_since(t0))
        for c in r["children"]:
            call(c["socket"], {"cmd": "stop"})
    d.req("DELETE", f"/v1/sandboxes/{src['id']}")
    return times


def concurrent_creates(d, n):
    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=32) as ex:
        made = list(ex.map(lambda i: d.req("POST", "/v1/sandboxes", body={"mem_mib": 16}),
                           range(n)))
    total = ms_since(t0)
    with concurrent.futures.ThreadPoolExecutor(max_workers=32) as ex:
        list(ex.map(lambda m: d.req("DELETE", f"/v1/sandboxes/{m['id']}"), made))
    return total


def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def memory_with_records(n):
    """RSS of a daemon that adopted a state with n records (dead VMs) and listed them once."""
    d = Daemon().start()
    d.stop()
    db = sqlite3.connect(os.path.join(d.state, "state.db"))
    db.executemany(
        "INSERT INTO sandboxes VALUES (?, 'dead', 0, 0, ?, '', '', 'probe', 64, 1, ?, ?, 0, "
        "'benchmark record')",
        [(f"sb-{i:012x}", f"{d.state}/run/sb-{i:012x}.sock", '{"owner": "bench", "i": %d}' % i,
          time.time()) for i in range(n)])
    db.commit()
    db.close()
    d.start()
    try:
        empty = rss_kib(d.proc.pid)
        assert len(d.req("GET", "/v1/sandboxes")) == n
        return empty, rss_kib(d.proc.pid)
    finally:
        d.stop()  # the records are of no VM: nothing to end
        shutil.rmtree(d.state, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer runs (smoke)")
    a = ap.parse_args()
    runs = 5 if a.quick else 21
    d = Daemon().start()
    try:
        api = create_api(d, runs)
        cli = create_cli(os.path.join(d.state, "run"), runs)
        report("daemon_create", [("create -> ping, through the API", api),
                                 ("create -> ping, forkvm run --detach", cli)], "ms")
        bruns = 3 if a.quick else 9
        bapi = branch_api(d, bruns)
        bctl = branch_ctl(d, bruns)
        report("daemon_branch10", [("branch(10) cow, through the API", bapi),
                                   ("branch(10) cow, control socket", bctl)], "ms")
        report("daemon_concurrent", [("100 concurrent creates, total",
                                      concurrent_creates(d, 100))], "ms")
    finally:
        d.cleanup()
    empty, full = memory_with_records(1000)
    report("daemon_memory", [("daemon RSS, started on 1,000 records", empty / 1024),
                             ("daemon RSS, 1,000 records listed", full / 1024)], "MiB")


if __name__ == "__main__":
    main()
