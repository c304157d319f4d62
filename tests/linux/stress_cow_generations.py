"""Debugging aid (not a test): cow grandchildren over and over. A source with a raw data disk
is warmed and branched (cow) into two children; then, each round, the first child writes to
memory and its disk and is branched (cow) into two grandchildren, which read randomness, sync
and drop their caches and read the disk from the device -- what test_branch_children[cow] does
to its grandchildren, where a grandchild's guest now and then triple-faults in the nested rig.
A grandchild whose agent stops answering counts as dead; its VMM log and console tail are
printed with the child's huge-page repair status. Run in the rig:
    tests/nested/rig.sh --kernel 6.12 --run 'python3 tests/linux/stress_cow_generations.py 10'
Extra arguments after the round count go to the source's `forkvm run` (e.g. --no-hugepage)."""
import os
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from linuxlib import LinuxError, raw_base, read_marker, stress_env, write_marker  # noqa: E402


def repair_status(g):
    try:
        st = g.control({"cmd": "status"}, timeout=30)
        return st.get("thp_repair")
    except Exception as e:  # noqa: BLE001
        return f"status: {e}"


def watch(grand, t0, deaths, stop):
    """When each grandchild's VMM ends (a triple fault ends it), seconds after the branch."""
    while not stop.is_set():
        for g in grand:
            if g.name not in deaths and not os.path.exists(f"/proc/{g.pid}/status"):
                deaths[g.name] = time.monotonic() - t0
            elif g.name not in deaths:
                with open(f"/proc/{g.pid}/status") as f:
                    if "\nState:\tZ" in f.read():
                        deaths[g.name] = time.monotonic() - t0
        time.sleep(0.2)


def main(rounds, extra):
    dead = total = 0
    with stress_env("stress-cow-gen") as env:
        raw = raw_base(env)
        src = env.boot("src", backing="anon", extra=("--disk", raw, *extra))
        src.sh("mkdir -p /data && echo from-source > /data/before && sync")
        src.sh("python3 -c 'import decimal' || true")
        _, kids = env.branch(src, "cow", 2, prefix="c")
        child = kids[0]
        for r in range(rounds):
            child.sh(f"echo round{r} > /tmp/marker; head -c 8388608 /dev/urandom > /tmp/blob; "
                     f"echo r{r} > /data/x && sync")
            write_marker(child, 1600, f"round {r}")
            t0 = time.monotonic()
            _, grand = env.branch(child, "cow", 2, prefix=f"g{r}")
            took = time.monotonic() - t0
            deaths, stop = {}, threading.Event()
            w = threading.Thread(target=watch, args=(grand, t0, deaths, stop), daemon=True)
            w.start()
            # The later-forked first: does the second child die, or the one checked later?
            for g in reversed(grand):
                total += 1
                try:
                    g.urandom32()
                    g.sh("sync; echo 3 > /proc/sys/vm/drop_caches")
                    assert read_marker(g, 1600) == f"round {r}", g.name
                    assert g.sh("cat /tmp/marker").strip() == f"round{r}", g.name
                    assert g.sh("cat /data/x").strip() == f"r{r}", g.name
                    g.sh("md5sum /tmp/blob >/dev/null; sync; echo 3 > /proc/sys/vm/drop_caches")
                    ok = "ok"
                except (LinuxError, OSError, AssertionError) as e:
                    dead += 1
                    ok = f"DEAD: {str(e)[-2500:]}"
                print(f"round {r}: {g.name} {ok} at {time.monotonic() - t0:.1f} s (branch "
                      f"{took:.1f} s; child repair {repair_status(child)})", flush=True)
            time.sleep(15)  # do they die later, untouched?
            stop.set()
            w.join()
            print(f"round {r}: VMMs ended (s after the branch): {deaths or 'none'}", flush=True)
            for g in grand:
                g.kill()
    print(f"STRESS: {dead} dead of {total} grandchildren", flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10, sys.argv[2:])
