"""Layers point one way (docs/ARCHITECTURE.md, "Layers"): tests/layers/check_layers.py on
this tree, and on copies of it with an include moved against the layers and with the known
list out of date."""
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHECK = os.path.join("tests", "layers", "check_layers.py")


def run_check(root):
    return subprocess.run([sys.executable, os.path.join(root, CHECK)], capture_output=True,
                          text=True, timeout=60)


def test_no_include_points_upward_beyond_the_known_ones():
    r = run_check(ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "all known" in r.stdout


@pytest.fixture
def tree(tmp_path):
    """src/ and the checker, copied."""
    shutil.copytree(os.path.join(ROOT, "src"), tmp_path / "src")
    shutil.copytree(os.path.join(ROOT, "tests", "layers"), tmp_path / "tests" / "layers")
    return tmp_path


def test_a_new_upward_include_fails(tree):
    p = tree / "src" / "util" / "clock.c"
    p.write_text('#include "snapshot/snapshot.h"\n' + p.read_text())
    r = run_check(str(tree))
    assert r.returncode == 1
    assert "src/util/clock.c -> snapshot/snapshot.h: includes from a higher layer" in r.stdout


def test_a_moved_known_include_must_leave_the_list(tree):
    """A known upward include that is gone (here: listed, never written) fails until its
    line is deleted, so the list only shrinks."""
    known = tree / "tests" / "layers" / "known_upward.txt"
    known.write_text(known.read_text() + "src/x86/acpi.c -> devices/acpi_pm.h\n")
    r = run_check(str(tree))
    assert r.returncode == 1
    assert "src/x86/acpi.c -> devices/acpi_pm.h: listed in" in r.stdout
    assert "no longer there" in r.stdout


def test_a_known_upward_include_passes(tree):
    p = tree / "src" / "x86" / "acpi.c"
    p.write_text('#include "devices/acpi_pm.h"\n' + p.read_text())
    assert run_check(str(tree)).returncode == 1
    known = tree / "tests" / "layers" / "known_upward.txt"
    known.write_text(known.read_text() + "src/x86/acpi.c -> devices/acpi_pm.h\n")
    r = run_check(str(tree))
    assert r.returncode == 0, r.stdout
    assert "1 upward includes, all known" in r.stdout


def test_a_folder_in_no_layer_fails(tree):
    (tree / "src" / "gpu").mkdir()
    (tree / "src" / "gpu" / "ring.c").write_text("int x;\n")
    r = run_check(str(tree))
    assert r.returncode == 1 and "gpu: a folder no layer names" in r.stdout


def test_net_includes_only_util(tree):
    """src/net/ (host networking) sits right above util: the VMM core is above it."""
    p = tree / "src" / "net" / "net.c"
    p.write_text('#include "core/vm.h"\n' + p.read_text())
    r = run_check(str(tree))
    assert r.returncode == 1
    assert "src/net/net.c -> core/vm.h: includes from a higher layer" in r.stdout
