"""Bounded libFuzzer runs over the parsers that take untrusted bytes."""
import os
import shutil
import subprocess

import pytest

from forkvm_vm import ROOT

FUZZ_SECONDS = os.environ.get("FORKVM_FUZZ_SECONDS", "15")


@pytest.mark.skipif(shutil.which("clang") is None, reason="clang (libFuzzer) not installed")
def test_fuzz_agent_frame_parser():
    r = subprocess.run([os.path.join(ROOT, "guests/agent/tests/fuzz.sh"), FUZZ_SECONDS],
                       capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
