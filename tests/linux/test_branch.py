"""BRANCH of a Linux guest with every strategy: what the source had before the branch (memory,
root disk, a warm Python interpreter, docs/AGENT.md "eval") is in every child, what a child
writes is in no sibling and not in the source, each child has its own randomness and the host's
clock, exec works at once; grandchildren, diff layers, and a live branch while the source keeps
writing. One source per strategy carries all of it: in the nested rig a Linux boot and a branch
are most of a test's minute."""
import os

import pytest

from forkvm_vm import file_sha256
from linuxlib import (PY, base_hex, evaluate, guest_time, on_rootfs, raw_base, read_marker,
                      rootfs_image, sector_hex, wait_for, write_marker)

STRATEGIES = ["full", "diff", "live", "cow"]
COUNT = 2


def source(env, strategy, name="src", extra=()):
    return env.boot(name, backing="memfd" if strategy == "live" else "anon", extra=extra)


def check_family(src, kids, marker):
    uuids, rands = {src.uuid()}, {src.urandom32()}
    for k in kids:
        code, out, _ = k.run(["cat", "/tmp/marker"], bound=10)
        assert out.decode().strip() == marker, f"{k.name}: marker {out!r}"
        uuids.add(k.uuid())
        rands.add(k.urandom32())
        t0, g, t1 = guest_time(k)
        assert t0 - 1.5 <= g <= t1 + 1, f"{k.name}: clock off by {g - t0:+.2f} s"
    assert len(uuids) == len(kids) + 1, f"children share a uuid: {uuids}"
    assert len(rands) == len(kids) + 1, "children read the same /dev/urandom bytes"
    # Isolation: a child's write, the source's later write (fresh names each call: what a
    # child wrote in an earlier call is its own children's inheritance).
    token = os.urandom(4).hex()
    mine, theirs = f"/tmp/only-child-{token}", f"/tmp/only-source-{token}"
    kids[0].sh(f"echo child0 > {mine}")
    src.sh(f"echo later > {theirs}")
    for k in kids[1:]:
        assert k.sh(f"cat {mine} 2>/dev/null || echo none").strip() == "none", k.name
    for k in kids:
        assert k.sh(f"cat {theirs} 2>/dev/null || echo none").strip() == "none", k.name
    assert src.sh(f"cat {mine} 2>/dev/null || echo none").strip() == "none"


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_branch_children(env, strategy):
    """One source per strategy, warmed the way users warm one: a file in memory (tmpfs), a file
    on its root disk, a Python interpreter holding state, and a raw data disk. Every child has
    them as they were at the branch (the interpreter the same process, not restarted; the raw
    disk read from the device), its own uuid, randomness and the host's clock; what a child then
    writes to memory, disks or interpreter is in no sibling and not in the source, and the
    source's later writes are in no child; neither base image is ever written. Then a child is
    branched again: its children see it, not the source (live branches need a memfd source; a
    live child runs on a file restore, so its own children come from the other strategies)."""
    base = rootfs_image()
    before = file_sha256(base)
    raw = raw_base(env)
    raw_digest = file_sha256(raw)
    src = source(env, strategy, extra=("--disk", raw))
    on_rootfs(src)
    write_marker(src, 800, "before the branch")
    marker = os.urandom(16).hex()
    src.sh(f"echo {marker} > /tmp/marker; mkdir -p /data && echo from-source > /data/before && sync")
    src.sh("date -s @$(( $(date +%s) - 120 )) >/dev/null")  # children must get the host's clock
    r = evaluate(src, "import decimal; n = 7")
    assert r["started"] is True
    pid = evaluate(src, "import os; os.getpid()")["result"]

    reply, kids = env.branch(src, strategy, COUNT)
    assert len(kids) == COUNT
    print(f"{strategy}: paused {reply.get('paused_us')} us, total {reply.get('total_ns')} ns")
    write_marker(src, 800, "source after")
    check_family(src, kids, marker)
    # The raw disk at the branch instant, read from the device, not the page cache.
    assert [read_marker(k, 800) for k in kids] == ["before the branch"] * COUNT
    write_marker(kids[0], 1600, "child 0 only")
    assert read_marker(kids[0], 1600) == "child 0 only"
    for g in [*kids[1:], src]:
        assert sector_hex(g, 1600) == base_hex(raw, 1600), g.name
    assert read_marker(src, 800) == "source after"
    for k in kids:
        assert k.sh(PY).strip() == "4", k.name
        assert k.sh("cat /data/before").strip() == "from-source", k.name
        r = evaluate(k, "n")
        assert r["result"] == "7", f"{k.name}: {r}"
        # The same interpreter, not a new one: the state came with the VM's memory.
        assert r["started"] is False and r["state_lost"] is False, f"{k.name}: {r}"
        assert evaluate(k, "os.getpid()")["result"] == pid
        assert evaluate(k, "str(decimal.Decimal(n) / 2)")["result"] == "'3.5'"

    # Disk: a child's write and the source's later write stay where they were made.
    kids[0].sh("echo child0 > /data/x && sync")
    src.sh("echo later > /data/later && sync")
    assert kids[1].sh("cat /data/x 2>/dev/null || echo none").strip() == "none"
    assert src.sh("cat /data/x 2>/dev/null || echo none").strip() == "none"
    for k in kids:
        assert k.sh("cat /data/later 2>/dev/null || echo none").strip() == "none", k.name
    assert kids[0].sh("cat /data/x").strip() == "child0"
    # Interpreter: the same.
    assert evaluate(kids[0], "n = 8; n")["result"] == "8"
    for k in kids[1:]:
        assert evaluate(k, "n")["result"] == "7", f"{k.name} sees its sibling's change"
    assert evaluate(src, "n")["result"] == "7", "the source sees a child's change"
    # Contexts are per interpreter: a new one in a child is fresh, and only there.
    r = evaluate(kids[1], "'n' in dir()", context="other")
    assert r["started"] is True and r["result"] == "False"
    assert src.sh("cat /tmp/marker").strip() == marker  # the source runs on

    if strategy != "live":
        # Grandchildren: the child's memory, disk and interpreter, not the source's.
        kids[0].sh("echo gen1 > /tmp/marker")
        _, grand = env.branch(kids[0], strategy, 2, prefix="g")
        check_family(kids[0], grand, "gen1")
        for g in grand:
            assert g.sh("cat /data/x").strip() == "child0", g.name
            assert read_marker(g, 1600) == "child 0 only", g.name
            assert evaluate(g, "n")["result"] == "8", g.name
        assert src.sh("cat /tmp/marker").strip() == marker
    assert file_sha256(base) == before
    assert file_sha256(raw) == raw_digest


def test_diff_layers(env):
    src = source(env, "diff")
    d = env.path("layers")
    states = []
    for i in range(3):
        src.sh(f"echo state{i} > /tmp/marker; head -c 1048576 /dev/urandom > /tmp/blob{i}")
        states.append(src.sh("md5sum /tmp/blob*"))
        reply = src.control({"cmd": "branch", "strategy": "diff", "count": 1, "prefix": f"l{i}",
                             "run_dir": env.run_dir, "dir": d}, timeout=600)
        assert reply.get("ok"), reply
        from linuxlib import Guest
        kid = Guest(env, reply["children"][0]["name"], reply["children"][0]["socket"],
                    reply["children"][0]["pid"])
        env.guests.append(kid)
        assert kid.sh("cat /tmp/marker").strip() == f"state{i}"
        assert kid.sh("md5sum /tmp/blob*") == states[i]
        kid.kill()
    layers = sorted(n for n in os.listdir(d) if n.startswith("layer"))
    assert len(layers) >= 2, os.listdir(d)


def test_live_branch_while_the_source_writes(env):
    src = source(env, "live")
    # The writer never sleeps: at nice 19, so the agent's commands in the source and in every
    # child still get the guest's CPUs (four such guests share L1's two in the rig, and the
    # rootfs's dynamically linked coreutils start slower than busybox).
    src.sh("echo m > /tmp/marker; nice -n 19 sh -c 'i=0; while :; do i=$((i+1)); "
           "echo $i > /tmp/ctr.new; mv /tmp/ctr.new /tmp/ctr; done' >/dev/null 2>&1 &")
    reply, kids = env.branch(src, "live", COUNT)
    before = int(src.sh("cat /tmp/ctr"))
    for g in [*kids, src]:
        a = int(g.sh("cat /tmp/ctr"))
        assert wait_for(lambda: int(g.sh("cat /tmp/ctr")) > a, 60), \
            f"{g.name}: the writer does not run on ({a})"
    assert int(src.sh("cat /tmp/ctr")) > before
    print(f"live: {reply}")
