"""Huge pages put back after a cow branch (mem/thp_repair.c): while the branch's template and
children share the source's RAM, the source's writes split its 2 MiB pages; once nobody else
maps a region, the source collapses it again, and never a region another process shares."""
import os
import signal
import shutil
import tempfile
import time

import pytest

from forkvm_vm import VM, WORK, Child, call

pytestmark = pytest.mark.kvm
MIB = 1 << 20
FILLED = 128 * MIB
DIRTY_PAGES, STRIDE = 2048, 16  # 32 pages written in each 2 MiB of the filled range


def thp_enabled():
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            return "[never]" not in f.read()
    except OSError:
        return False


def rollup(pid):
    """AnonHugePages and private bytes of a process (smaps_rollup, in bytes)."""
    out = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB":
                out[parts[0].rstrip(":")] = int(parts[1]) * 1024
    return out["AnonHugePages"], out["Private_Clean"] + out["Private_Dirty"]


def wait_for(what, pred, timeout):
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.fixture
def run_dir():
    d = tempfile.mkdtemp(prefix="forkvm-thp-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.mark.skipif(not thp_enabled(), reason="transparent huge pages are off on this host")
def test_split_huge_pages_come_back_once_no_branch_shares_them(run_dir):
    src = VM(mem="136M")
    kids, tpl_pid = [], None
    try:
        pid = src.ok({"cmd": "status"})["pid"]
        src.ok({"cmd": "fill", "gpa": WORK, "len": FILLED, "seed": 3}, timeout=300)
        huge0, _ = rollup(pid)
        assert huge0 >= FILLED - 8 * MIB, f"guest RAM is not on huge pages to begin with: {huge0}"
        assert src.ok({"cmd": "status"})["thp_repair"]["pending"] is False

        reply = call(src.sock, {"cmd": "branch", "strategy": "cow", "count": 1, "prefix": "h",
                                "run_dir": run_dir, "paused": True}, timeout=120)
        assert reply["ok"], reply
        kids = [Child(c["socket"], c["pid"]) for c in reply["children"]]
        tpl_pid = call(reply["template"], {"cmd": "status"})["pid"]
        assert src.ok({"cmd": "status"})["thp_repair"]["pending"] is True

        # Writes while the branch shares the RAM split every huge page they touch.
        src.ok({"cmd": "dirty", "pages": DIRTY_PAGES, "stride": STRIDE, "seed": 4})
        wait_for("the writes to split the huge pages",
                 lambda: rollup(pid)[0] <= huge0 - FILLED // 2, 30)
        src.ok({"cmd": "dirty", "pages": 0})
        done = src.ok({"cmd": "status"})["thp_repair"]["passes"]

        # Passes run (the first a second after the branch) and leave every shared region be:
        # the source's private memory stays what it wrote, not the whole RAM copied.
        st = wait_for("two repair passes beside the branch",
                      lambda: (s := src.ok({"cmd": "status"})["thp_repair"])["passes"] >= done + 2
                      and s, 30)
        assert st["pending"] is True and st["unavailable"] is None, st
        assert st["last"]["shared"] >= FILLED // (2 * MIB) - 2, st
        huge, private = rollup(pid)
        assert huge <= huge0 - FILLED // 2, (huge, huge0)
        assert private < DIRTY_PAGES * 4096 + 32 * MIB, f"shared regions were copied: {private}"

        # The branch ends (its child killed, its template stopped): the regions come back.
        os.kill(kids[0].pid, signal.SIGKILL)
        call(reply["template"], {"cmd": "stop"})
        wait_for("the template to exit", lambda: not os.path.exists(f"/proc/{tpl_pid}"), 30)
        st = wait_for("a pass that finds nothing shared",
                      lambda: (s := src.ok({"cmd": "status"})["thp_repair"])["pending"] is False
                      and s, 60)
        assert st["last"]["shared"] == 0 and st["last"]["huge"] >= FILLED // (2 * MIB), st
        huge, _ = rollup(pid)
        assert huge >= huge0 - 8 * MIB, f"huge pages not put back: {huge} of {huge0}"
        # The guest's memory is what it wrote: the collapse copied, never lost, a page.
        assert src.ok({"cmd": "ping"})["ok"]
        again = call(src.sock, {"cmd": "branch", "strategy": "cow", "count": 1, "prefix": "i",
                                "run_dir": run_dir, "paused": True, "record_hashes": True},
                     timeout=120)
        assert again["ok"], again
        kids += [Child(c["socket"], c["pid"]) for c in again["children"]]
        kid = kids[-1]
        assert kid.ok({"cmd": "memhash", "gpa": 0, "len": 136 * MIB})["checksum"] == \
            again["image_hashes"][0]
        span = {"cmd": "memhash", "gpa": WORK, "len": FILLED}
        assert kid.ok(span)["checksum"] == src.ok(span)["checksum"]
    finally:
        for pid in [k.pid for k in kids] + [tpl_pid]:
            try:
                if pid:
                    os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        src.stop()


def test_no_repair_without_huge_pages(run_dir):
    src = VM(mem="64M", extra=("--no-hugepage",))
    try:
        reply = call(src.sock, {"cmd": "branch", "strategy": "cow", "count": 1, "prefix": "n",
                                "run_dir": run_dir, "paused": True}, timeout=120)
        assert reply["ok"], reply
        for c in reply["children"]:
            os.kill(c["pid"], signal.SIGKILL)
        time.sleep(1.5)
        st = src.ok({"cmd": "status"})["thp_repair"]
        assert st["passes"] == 0 and st["pending"] is False and st["unavailable"] is None, st
    finally:
        src.stop()
