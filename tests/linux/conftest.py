"""The Linux end-to-end suite: real Linux guests under forkvm, every restore backend and branch
strategy. Runs inside the nested rig (tests/nested/rig.sh) and directly on hosts whose KVM runs
guest kernels natively (`make test-linux`)."""
import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))
sys.path.insert(0, HERE)

from linux_image import host_cannot_run_linux, image_paths  # noqa: E402
from linuxlib import Env  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line("markers", "kvm: needs /dev/kvm")
    config.addinivalue_line("markers", "slow: takes more than a few seconds")


@pytest.fixture(scope="session", autouse=True)
def linux_host():
    reason = host_cannot_run_linux()
    if reason:
        pytest.skip(f"{reason}; run this suite in the nested rig: tests/nested/rig.sh")
    paths = image_paths()
    if isinstance(paths, str):
        pytest.fail(paths)
    return paths


@pytest.fixture
def env(request):
    e = Env(request.node.name)
    yield e
    e.cleanup()



_reporter = None
_outcomes = {}


@pytest.hookimpl(trylast=True)
def pytest_sessionstart(session):
    global _reporter
    _reporter = session.config.pluginmanager.getplugin("terminalreporter")


_failures = {}


def pytest_runtest_logreport(report):
    if report.when == "call" or (report.when == "setup" and not report.passed):
        _outcomes[report.nodeid] = "failed" if report.failed else report.outcome
    elif report.when == "teardown" and report.failed:
        _outcomes[report.nodeid] = "failed"
    if report.failed:
        _failures.setdefault(report.nodeid, []).append(report.longreprtext)


@pytest.hookimpl(trylast=True)
def pytest_runtest_logfinish(nodeid, location):
    """In the nested rig, one machine-readable line per test on the L1 console, after
    pytest's own: tests/run counts them and runs again, in a fresh L1, only the tests that
    did not pass (an L1 that crashes mid-run still leaves the outcomes before it)."""
    outcome = _outcomes.pop(nodeid, None)
    failures = _failures.pop(nodeid, [])
    if os.environ.get("FORKVM_NESTED") == "1" and _reporter is not None and outcome:
        # A failure's details at once, not only in pytest's end summary: an L1 that crashes
        # later in the run never prints that summary.
        for text in failures:
            lines = text.splitlines()
            _reporter.write_line(f"--- {nodeid} failed (last {min(len(lines), 80)} lines):")
            for line in lines[-80:]:
                _reporter.write_line(line)
        _reporter.write_line(f"FORKVM-OUTCOME {outcome} {nodeid}")
