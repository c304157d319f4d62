"""BRANCH of a Linux guest with every strategy: what the source wrote before the branch is in
every child, what a child writes is in no sibling and not in the source, each child has its own
randomness and the host's clock, exec works at once; grandchildren, diff layers, and a live
branch while the source keeps writing."""
import os

import pytest

from linuxlib import guest_time, wait_for

STRATEGIES = ["full", "diff", "live", "cow"]
COUNT = 3


def source(env, strategy, name="src"):
    return env.boot(name, backing="memfd" if strategy == "live" else "anon")


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
    # Isolation: a child's write, the source's later write.
    kids[0].sh("echo child0 > /tmp/only-child0")
    src.sh("echo later > /tmp/only-source")
    for k in kids[1:]:
        assert k.sh("cat /tmp/only-child0 2>/dev/null || echo none").strip() == "none"
    for k in kids:
        assert k.sh("cat /tmp/only-source 2>/dev/null || echo none").strip() == "none"
    assert src.sh("cat /tmp/only-child0 2>/dev/null || echo none").strip() == "none"


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_branch_children(env, strategy):
    src = source(env, strategy)
    marker = os.urandom(16).hex()
    src.sh(f"echo {marker} > /tmp/marker")
    src.sh("date -s @$(( $(date +%s) - 120 )) >/dev/null")  # children must get the host's clock
    reply, kids = env.branch(src, strategy, COUNT)
    assert len(kids) == COUNT
    print(f"{strategy}: paused {reply.get('paused_us')} us, total {reply.get('total_ns')} ns")
    check_family(src, kids, marker)
    assert src.sh("cat /tmp/marker").strip() == marker  # the source runs on


@pytest.mark.parametrize("strategy", ["full", "diff", "cow"])
def test_grandchildren(env, strategy):
    src = source(env, strategy)
    src.sh("echo gen0 > /tmp/marker")
    _, kids = env.branch(src, strategy, 1, prefix="c")
    kids[0].sh("echo gen1 > /tmp/marker")
    _, grand = env.branch(kids[0], strategy, COUNT, prefix="g")
    check_family(kids[0], grand, "gen1")
    assert src.sh("cat /tmp/marker").strip() == "gen0"


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
