"""Debugging aid (not a test): restore a 2-vCPU Linux guest into three clones over and over,
and when a clone's agent does not answer, print where each of its VMM threads is (kernel wait channel,
state) and the tails of its logs. Run in the rig:
    tests/nested/rig.sh --run 'python3 tests/linux/stress_clones.py 8'"""
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from linuxlib import Env, LinuxError  # noqa: E402


def threads(pid):
    out = []
    for t in sorted(os.listdir(f"/proc/{pid}/task"), key=int):
        base = f"/proc/{pid}/task/{t}"
        try:
            comm = open(f"{base}/comm").read().strip()
            wchan = open(f"{base}/wchan").read().strip()
            st = open(f"{base}/stat").read().rsplit(")", 1)[1].split()
            stack = open(f"{base}/stack").read().strip().replace("\n", " | ") \
                if os.path.exists(f"{base}/stack") else ""
            out.append(f"  tid {t} {comm} state {st[0]} wchan {wchan} utime {st[11]} "
                       f"stime {st[12]} {stack[:300]}")
        except OSError as e:
            out.append(f"  tid {t}: {e}")
    return "\n".join(out)


def probe(kid, bound):
    try:
        kid.agent(bound).close()
        return None
    except (LinuxError, OSError) as e:
        return str(e)


def main(rounds):
    bad = 0
    for r in range(rounds):
        env = Env(f"stress{r}")
        try:
            src = env.boot("src", backing="anon")
            src.sh("sleep 3")
            snap = env.snapshot(src)
            t0 = time.monotonic()
            res, kids = env.restore(snap, count=3, backend="memfd", name=f"m{r}",
                                    extra=("--no-agent-sync",), check=False)
            print(f"round {r}: restore rc {res.returncode} in {time.monotonic() - t0:.1f} s "
                  f"{res.stderr[-1500:] if res.returncode else ''}", flush=True)
            if res.returncode == 0:
                for k in kids:
                    err = probe(k, 90)
                    if err:
                        bad += 1
                        print(f"round {r}: {k.name} agent: {err[-3000:]}\n{threads(k.pid)}",
                              flush=True)
        except Exception as e:  # noqa: BLE001
            bad += 1
            print(f"round {r}: {type(e).__name__}: {str(e)[-3000:]}", flush=True)
        finally:
            env.cleanup()
    print(f"STRESS: {bad} bad of {rounds} rounds", flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 8)
