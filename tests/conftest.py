"""Shared pytest setup: where the binaries are, and markers."""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
import forkvm_vm  # noqa: E402,F401  (the harness's environment: FORKVM_JAIL, forkvm_vm.py)


def pytest_configure(config):
    config.addinivalue_line("markers", "kvm: needs /dev/kvm")
    config.addinivalue_line("markers", "slow: takes more than a few seconds")
