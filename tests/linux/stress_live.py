"""Debugging aid (not a test): live branches of a 2-vCPU Linux guest whose source keeps writing
(as test_branch.py::test_live_branch_while_the_source_writes), over and over. When a child
fails (a triple fault has been seen in CI), the same frozen image is restored three more times:
if those fail too the image is wrong (a write the live copy missed); if they run, the failure
belongs to that child's start. Run in the rig:
    tests/nested/rig.sh --run 'python3 tests/linux/stress_live.py 6'"""
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from linuxlib import Env, LinuxError  # noqa: E402

WRITER = ("echo m > /tmp/marker; nice -n 19 sh -c 'i=0; while :; do i=$((i+1)); "
          "echo $i > /tmp/ctr.new; mv /tmp/ctr.new /tmp/ctr; done' >/dev/null 2>&1 &")


def tails(env):
    out = []
    for name in sorted(os.listdir(env.run_dir)):
        if name.endswith(".log"):
            lines = open(os.path.join(env.run_dir, name), errors="replace").read().splitlines()
            out.append(f"--- {name}\n" + "\n".join(lines[-8:]))
    return "\n".join(out)


def main(rounds):
    bad = 0
    for r in range(rounds):
        env = Env(f"live{r}")
        try:
            src = env.boot("src", backing="memfd")
            src.sh(WRITER)
            t0 = time.monotonic()
            try:
                reply, kids = env.branch(src, "live", 3, prefix=f"l{r}")
                for k in kids:
                    k.sh("cat /tmp/marker")
                print(f"round {r}: live branch ok in {time.monotonic() - t0:.1f} s "
                      f"(wp faults {reply.get('wp_faults')}, complete {reply.get('complete_ms')} ms)",
                      flush=True)
                continue
            except LinuxError as e:
                bad += 1
                print(f"round {r}: live branch FAILED: {str(e)[-2500:]}\n{tails(env)}", flush=True)
            snap = env.path(f"l{r}.snap")
            if not os.path.isdir(snap):
                print(f"round {r}: no frozen image at {snap}", flush=True)
                continue
            res, again = env.restore(snap, count=3, backend="file", name=f"again{r}", check=False)
            print(f"round {r}: the same image restored 3 more times: rc {res.returncode} "
                  f"{res.stderr[-1500:] if res.returncode else ''}", flush=True)
            for k in again:
                try:
                    print(f"round {r}: {k.name}: marker {k.sh('cat /tmp/marker', bound=60).strip()}",
                          flush=True)
                except LinuxError as e:
                    print(f"round {r}: {k.name}: FAILED {str(e)[-1500:]}", flush=True)
        except Exception as e:  # noqa: BLE001
            bad += 1
            print(f"round {r}: {type(e).__name__}: {str(e)[-2500:]}", flush=True)
        finally:
            env.cleanup()
    print(f"stress_live: {bad} of {rounds} rounds had a failure", flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 6))
