"""Runs every cmocka unit-test binary the build produced, one pytest case each."""
import glob
import os
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(ROOT, os.environ.get("FORKVM_BUILD", "build"))
BINARIES = sorted(p for p in glob.glob(os.path.join(BUILD, "tests", "test_*"))
                  if os.access(p, os.X_OK) and not p.endswith(".d"))


def test_unit_binaries_were_built():
    assert BINARIES, f"no unit-test binaries in {BUILD}/tests: run 'make tests' first"


@pytest.mark.parametrize("binary", BINARIES, ids=[os.path.basename(b) for b in BINARIES])
def test_cmocka(binary):
    r = subprocess.run([binary], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"{os.path.basename(binary)} failed:\n{r.stdout}\n{r.stderr}"
    assert "PASSED" in r.stdout + r.stderr, r.stdout + r.stderr
