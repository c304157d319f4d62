"""Full end-to-end on a host with hardware virtualization: boot the image, reach the agent
over vsock, run commands, move a file, shut down. Skips (with the reason) where a stock
kernel cannot reach userspace, e.g. here: PVM emulates guest CPL0 (docs/LINUX.md)."""
import os
import time

import pytest

from agentclient import AgentClient, output_bytes
from forkvm_vm import VM
from linux_image import host_cannot_run_linux, image_paths
from vsock_client import vsock_connect

pytestmark = [pytest.mark.kvm, pytest.mark.slow]
AGENT_PORT = 52
USERSPACE_BOUND_S = float(os.environ.get("FORKVM_LINUX_USERSPACE_BOUND", "120"))


def wait_agent(vm, path, bound):
    """A connected AgentClient once the guest's agent accepts on its vsock port."""
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        if vm.proc.poll() is not None and "KVM internal error" in vm.stderr():
            pytest.skip("this host's KVM could not emulate the guest kernel's early boot "
                        f"(VMM: {vm.stderr().strip().splitlines()[-1]})")
        assert vm.proc.poll() is None, f"VMM exited {vm.proc.returncode}: {vm.stderr()}"
        if os.path.exists(path):
            s, hp = vsock_connect(path, AGENT_PORT)
            if hp is not None:
                return AgentClient(s, timeout=60)
            s.close()
        time.sleep(0.5)
    console = open(vm.console, "rb").read().decode(errors="replace")[-3000:]
    pytest.fail(f"the agent did not answer on vsock port {AGENT_PORT} within {bound:.0f} s; "
                f"console:\n{console}")


@pytest.fixture(scope="module")
def linux_vm():
    reason = host_cannot_run_linux()
    if reason:
        pytest.skip(reason)
    paths = image_paths()
    if isinstance(paths, str):
        pytest.skip(paths)
    vm = VM(mem="512M", vcpus=2, extra=("--linux",))
    t0 = time.monotonic()
    client = wait_agent(vm, vm.sock + ".vsock", USERSPACE_BOUND_S)
    print(f"start -> agent answering: {time.monotonic() - t0:.1f} s")
    yield vm, client
    client.close()
    vm.kill()


def test_uname(linux_vm):
    _, agent = linux_vm
    r = agent.exec(["uname", "-r"])
    assert r["exit_code"] == 0
    manifest = open(os.path.join(os.path.dirname(image_paths()[0]), "manifest.json")).read()
    kver = output_bytes(r, "stdout").decode().strip()
    assert kver and kver in manifest  # the image's own kernel version


def test_exit_code_and_stdout(linux_vm):
    _, agent = linux_vm
    r = agent.exec(["sh", "-c", "echo hi; exit 3"])
    assert output_bytes(r, "stdout") == b"hi\n"
    assert r["exit_code"] == 3


def test_file_round_trip(linux_vm):
    _, agent = linux_vm
    data = os.urandom(100_000)
    agent.write_file("/tmp/forkvm-e2e", data)
    got, _ = agent.read_file("/tmp/forkvm-e2e")
    assert got == data
    r = agent.exec(["sh", "-c", "wc -c < /tmp/forkvm-e2e"])
    assert output_bytes(r, "stdout").strip() == b"100000"


def test_shutdown_ends_vm(linux_vm):
    vm, agent = linux_vm
    agent.call("shutdown", mode="poweroff")
    # ACPI S5 through the FADT's sleep control register: a clean power-off, status 0.
    assert vm.proc.wait(timeout=60) == 0
    assert "guest powered off (ACPI S5)" in vm.stderr()
