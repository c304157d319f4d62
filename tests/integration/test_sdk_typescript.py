"""The TypeScript SDK (sdk/typescript): its types checked with tsc against code a user writes
(test/types.ts), then its `node --test` suite against a real forkvmd with the probe guest.
npm installs the pinned dev dependencies (typescript, @types/node) once from the lock file."""
import os
import subprocess

from forkvm_vm import BUILD, ROOT

SDK = os.path.join(ROOT, "sdk", "typescript")


def run(args, **kw):
    r = subprocess.run(args, cwd=SDK, capture_output=True, text=True, timeout=600, **kw)
    assert r.returncode == 0, f"{' '.join(args)} -> {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def test_types_check_and_the_sdk_suite_passes():
    if not os.path.exists(os.path.join(SDK, "node_modules", ".bin", "tsc")):
        run(["npm", "ci", "--no-audit", "--no-fund"])
    run([os.path.join(SDK, "node_modules", ".bin", "tsc"), "-p", "tsconfig.json"])
    r = run(["node", "--test", "test/"],
            env=dict(os.environ, FORKVM_BUILD=os.path.relpath(BUILD, ROOT)))
    assert "# pass 1" in r.stdout and "# fail 0" in r.stdout, r.stdout[-2000:]
