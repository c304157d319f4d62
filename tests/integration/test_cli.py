"""CLI behaviour: usage errors exit 2, help on every command, host checks, detach."""
import os
import subprocess
import tempfile

import pytest

from forkvm_vm import FORKVM

COMMANDS = ["run", "probe", "pause", "resume", "status", "stop", "ctl"]


def forkvm(*args, **kw):
    return subprocess.run([FORKVM, *args], capture_output=True, text=True, timeout=60, **kw)


@pytest.mark.parametrize("cmd", COMMANDS)
def test_help_on_every_command(cmd):
    r = forkvm(cmd, "--help")
    assert r.returncode == 0 and "usage:" in r.stdout


@pytest.mark.parametrize("args", [
    [], ["bogus"], ["run", "--mem", "12Q"], ["run", "--mem", "1M"], ["run", "--vcpus", "0"],
    ["run", "--vcpus", "17"], ["run", "--backing", "tape"], ["run", "extra"],
    ["run", "--cpu-features", "-warp"], ["run", "--ready-fd", "999"], ["probe"],
    ["probe", "jump", "vm"], ["probe", "fill", "vm"], ["probe", "fill", "vm", "--gpa", "4M"],
    ["probe", "ping", "vm", "--vcpu", "x"], ["pause"], ["pause", "a", "b"], ["ctl", "vm", "{"],
])
def test_wrong_arguments_exit_2_with_usage(args):
    r = forkvm(*args)
    assert r.returncode == 2, r
    assert "usage" in r.stderr


def test_missing_kvm_is_a_clear_error():
    r = forkvm("run", "--kvm-device", "/nonexistent/kvm", "--socket", "/tmp/forkvm-nokvm.sock")
    assert r.returncode == 1
    assert "no /nonexistent/kvm:" in r.stderr


def test_unreachable_vm_is_a_clear_error():
    r = forkvm("status", "/tmp/does-not-exist.sock")
    assert r.returncode == 1 and "cannot reach VM" in r.stderr


@pytest.mark.kvm
def test_detach_and_named_vm():
    with tempfile.TemporaryDirectory() as d:
        env = dict(os.environ, FORKVM_RUN_DIR=d)
        r = forkvm("run", "--detach", "--name", "t1", "--mem", "32M", "--console", "/dev/null",
                   env=env)
        assert r.returncode == 0, r.stderr
        pid, sock = r.stdout.split()
        assert sock == os.path.join(d, "t1.sock")
        assert forkvm("probe", "ping", "t1", env=env).returncode == 0
        assert '"state": "running"' in forkvm("status", "t1", env=env).stdout
        assert forkvm("stop", "t1", env=env).returncode == 0
        gone = not os.path.exists(f"/proc/{pid}")
        assert gone or open(f"/proc/{pid}/stat").read().split()[2] == "Z"
        assert "probe guest up" in open(sock + ".log").read()
