"""The TypeScript SDK (sdk/typescript): its `node --test` suite against a real forkvmd with the
probe guest, and its declarations checked with tsc against code a user writes (test/types.ts).
npm installs the pinned dev dependencies (typescript, @types/node) once from the lock file."""
import os
import re
import subprocess

import pytest

from daemonlib import daemon_environ
from forkvm_vm import BUILD, ROOT

SDK = os.path.join(ROOT, "sdk", "typescript")
TSC = os.path.join(SDK, "node_modules", ".bin", "tsc")
# npm's words for a registry it cannot reach (no network on this machine)
OFFLINE = re.compile(r"ENOTFOUND|EAI_AGAIN|ETIMEDOUT|ECONNREFUSED|ENETUNREACH|ECONNRESET")


def run(args, **kw):
    return subprocess.run(args, cwd=SDK, capture_output=True, text=True, timeout=600, **kw)


def test_sdk_suite_against_a_real_daemon():
    # The suite starts its own forkvmd: jailed, as daemonlib starts one.
    r = run(["node", "--test", "test/"],
            env=dict(daemon_environ(), FORKVM_BUILD=os.path.relpath(BUILD, ROOT)))
    assert r.returncode == 0, f"{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    assert "# pass 1" in r.stdout and "# skipped 1" in r.stdout, r.stdout[-2000:]
    assert "# fail 0" in r.stdout, r.stdout[-2000:]


def test_streamed_exec_through_the_sdk():
    """test/stream.test.js against a sandbox whose agent answers (daemonlib)."""
    from daemonlib import agent_backed_sandbox
    with agent_backed_sandbox() as (d, sb):
        r = run(["node", "--test", "test/stream.test.js"],
                env=dict(os.environ, FORKVM_TEST_SOCKET=d.sock, FORKVM_TEST_SANDBOX=sb.id))
    assert r.returncode == 0, f"{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    assert "# pass 1" in r.stdout and "# fail 0" in r.stdout, r.stdout[-2000:]


def test_declarations_typecheck_user_code():
    if not os.path.exists(TSC):
        r = run(["npm", "ci", "--no-audit", "--no-fund"])
        if r.returncode != 0 and OFFLINE.search(r.stdout + r.stderr):
            pytest.skip(f"the npm registry is unreachable: {r.stderr.strip()[-300:]}")
        assert r.returncode == 0, f"npm ci -> {r.returncode}\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
    r = run([TSC, "-p", "tsconfig.json"])
    assert r.returncode == 0, f"tsc found type errors:\n{r.stdout[-3000:]}\n{r.stderr[-1000:]}"
