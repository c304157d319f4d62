"""forkvm exec against the real agent behind a vsock-style socket (Linux cannot boot here)."""
import os
import subprocess
import tempfile
import time

import pytest

from agentclient import start_agent, stop_agent
from forkvm_vm import forkvm_cmd
from vsock_proxy import VsockProxy


@pytest.fixture
def vm_vsock():
    d = tempfile.mkdtemp(prefix="forkvm-exec-")
    agent_sock = os.path.join(d, "agent.sock")
    agent = start_agent(agent_sock)
    # `forkvm exec VM` looks for VM's vsock socket at <control socket>.vsock.
    proxy = VsockProxy(os.path.join(d, "vm.sock.vsock"), agent_sock)
    yield os.path.join(d, "vm.sock")
    proxy.close()
    stop_agent(agent)


def test_exec_prints_output_and_returns_exit_code(vm_vsock):
    r = forkvm_cmd("exec", vm_vsock, "--", "sh", "-c", "echo hi; echo oops >&2; exit 3")
    assert (r.returncode, r.stdout, r.stderr) == (3, "hi\n", "oops\n")


def test_exec_env_cwd_stdin_and_binary_output(vm_vsock):
    r = subprocess.run([forkvm_path(), "exec", vm_vsock, "--env",
                        "A=b", "--cwd", "/tmp", "--stdin", "--", "sh", "-c",
                        'echo "$A $(pwd)"; cat; printf "\\377\\000"'],
                       input=b"from-stdin\n", capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"b /tmp\nfrom-stdin\n\xff\x00"


def test_exec_timeout_signal_and_errors(vm_vsock):
    r = forkvm_cmd("exec", vm_vsock, "--timeout", "300", "--", "sleep", "30")
    assert r.returncode == 124 and "timed out" in r.stderr
    r = forkvm_cmd("exec", vm_vsock, "--", "sh", "-c", "kill -TERM $$")
    assert r.returncode == 128 + 15
    r = forkvm_cmd("exec", vm_vsock, "--", "/no/such/binary")
    assert r.returncode == 1 and "No such file" in r.stderr
    assert forkvm_cmd("exec", vm_vsock).returncode == 2
    r = forkvm_cmd("exec", "/tmp/no-such-vm.sock", "--", "true")
    assert r.returncode == 1 and "connecting to" in r.stderr


def forkvm_path():
    from forkvm_vm import FORKVM
    return FORKVM


def test_exec_streams_output_as_it_is_produced(vm_vsock):
    """The first line reaches forkvm exec's stdout while the command still sleeps, and
    output beyond the agent's 1 MiB capture bound arrives whole."""
    p = subprocess.Popen([forkvm_path(), "exec", vm_vsock, "--", "sh", "-c",
                          "echo early; sleep 3; echo late"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    start = time.monotonic()
    first = p.stdout.readline()
    first_at = time.monotonic() - start
    rest, err = p.communicate(timeout=60)
    assert (first, rest, p.returncode) == (b"early\n", b"late\n", 0), err
    assert first_at < 2.5, first_at
    n = 3 << 20
    r = subprocess.run([forkvm_path(), "exec", vm_vsock, "--", "sh", "-c",
                        f"head -c {n} /dev/zero | tr '\\0' z; echo done >&2"],
                       capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"z" * n and r.stderr == b"done\n"
