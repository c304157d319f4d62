"""Debugging aid (not a test): do restored clones that sit idle die? Each round restores two
clones of one snapshot (file backend, with the agent fix-up), keeps clone 0 busy with execs
for WAIT seconds while clone 1 is left alone, then asks both for their uuid. A clone whose
VMM ended (its log says how: a triple fault) counts as dead, by whether it was idle or busy.
Run in the rig:
    tests/nested/rig.sh --kernel 6.12 --run 'python3 tests/linux/stress_idle_clones.py 8 30'"""
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from linuxlib import LinuxError, pid_alive, stress_env  # noqa: E402


def main(rounds, wait):
    dead = {"busy": 0, "idle": 0}
    with stress_env("stress-idle") as env:
        src = env.boot("src", backing="anon")
        src.sh("date -s @$(( $(date +%s) - 120 )) >/dev/null")  # as the branch tests do
        snap = env.snapshot(src)
        for r in range(rounds):
            kids = env.restore(snap, count=2, backend="file", name=f"r{r}")
            t0 = time.monotonic()
            while time.monotonic() - t0 < wait and pid_alive(kids[0].pid):
                try:
                    kids[0].sh("cat /proc/uptime >/dev/null")
                except (LinuxError, OSError):
                    break
            for k, role in zip(kids, ("busy", "idle")):
                try:
                    k.uuid()
                    state = "ok"
                except (LinuxError, OSError) as e:
                    dead[role] += 1
                    state = f"DEAD: {str(e)[-1500:]}"
                print(f"round {r}: {k.name} ({role}) {state}", flush=True)
            for k in kids:
                k.kill()
    print(f"STRESS: dead busy {dead['busy']}, dead idle {dead['idle']} of {rounds} each",
          flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 8, float(sys.argv[2]) if len(sys.argv) > 2
         else 30)
