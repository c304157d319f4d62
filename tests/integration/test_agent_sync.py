"""The clone fix-up (src/agent/agent_sync.c: reseed_entropy + set_clock through the guest agent)
against stand-ins for a restored guest's vsock socket: the real agent on the host behind a
proxy that refuses or resets the first connections, as a guest does while its vsock driver
handles the transport reset of a restore. Linux guests cannot boot on this host."""
import os
import re
import subprocess
import tempfile
import time

import pytest

from agentclient import start_agent, stop_agent
from forkvm_vm import BUILD
from vsock_proxy import FakeAgent, VsockProxy

TOOL = os.path.join(BUILD, "tools", "agent_notify")
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="reseed_entropy and set_clock need root")


@pytest.fixture
def agent():
    d = tempfile.mkdtemp(prefix="forkvm-sync-")
    sock = os.path.join(d, "agent.sock")
    proc = start_agent(sock)
    yield d, sock
    assert stop_agent(proc) == 0
    subprocess.run(["rm", "-rf", d])


def fixup(vsock, timeout_ms=10000, port=52):
    t0 = time.monotonic()
    r = subprocess.run([TOOL, vsock, str(port), str(timeout_ms)], capture_output=True, text=True,
                       timeout=60)
    return r, time.monotonic() - t0


def attempts(r):
    return int(re.search(r"attempts (\d+)", r.stdout).group(1))


def test_first_try_reseeds_the_crng_and_sets_the_clock(agent):
    d, sock = agent
    proxy = VsockProxy(os.path.join(d, "c.vsock"), sock, record=True)
    try:
        r, _ = fixup(proxy.path)
        assert r.returncode == 0, r.stderr
        assert attempts(r) == 1 and " crng_reseeded 1 " in r.stdout, r.stdout
        assert proxy.ops == [["reseed_entropy", "set_clock"]]
    finally:
        proxy.close()


@pytest.mark.parametrize("kind", ["refuse_first", "reset_first"])
def test_transient_failures_are_retried_until_it_works(agent, kind):
    d, sock = agent
    proxy = VsockProxy(os.path.join(d, "c.vsock"), sock, **{kind: 3})
    try:
        r, took = fixup(proxy.path)
        assert r.returncode == 0, r.stderr
        assert attempts(r) == 4 and len(proxy.connects) == 4, r.stdout
        # Backoff 20 + 40 + 80 ms before attempts 2-4: well under a second, not the deadline.
        assert took < 5
        assert proxy.ops[-1] == ["reseed_entropy", "set_clock"]
    finally:
        proxy.close()


def test_refused_then_reset_mixed(agent):
    d, sock = agent
    proxy = VsockProxy(os.path.join(d, "c.vsock"), sock, refuse_first=2, reset_first=2)
    try:
        r, _ = fixup(proxy.path)
        assert r.returncode == 0, r.stderr
        assert attempts(r) == 5
    finally:
        proxy.close()


@pytest.mark.parametrize("lost,then", [
    # The reset hit after the guest reseeded: both steps again (reseeding twice is harmless).
    ("reseed_entropy", ["reseed_entropy", "set_clock"]),
    # It hit after the reseed was acknowledged and the clock set: only the clock again.
    ("set_clock", ["set_clock"]),
])
def test_a_lost_reply_repeats_only_what_was_not_acknowledged(agent, lost, then):
    d, sock = agent
    proxy = VsockProxy(os.path.join(d, "c.vsock"), sock, drop_reply_ops=[lost])
    try:
        r, _ = fixup(proxy.path)
        assert r.returncode == 0, r.stderr
        assert attempts(r) == 2
        first = ["reseed_entropy"] if lost == "reseed_entropy" else ["reseed_entropy", "set_clock"]
        assert proxy.ops == [first, then]
    finally:
        proxy.close()


def test_never_listening_fails_at_the_deadline_naming_attempts_and_last_error(agent):
    d, sock = agent
    proxy = VsockProxy(os.path.join(d, "c.vsock"), sock, refuse_always=True)
    try:
        r, took = fixup(proxy.path, timeout_ms=1500)
        assert r.returncode == 1
        err = r.stderr
        m = re.search(r"gave up at the deadline after (\d+) attempts in (\d+) ms", err)
        assert m, err
        # 20, 40, 80, 160, 320, 500 ms apart: about 7 tries in 1.5 s.
        assert 5 <= int(m.group(1)) <= 10 and int(m.group(1)) == len(proxy.connects), err
        assert 1400 <= int(m.group(2)) <= 2500, err
        assert "reseed_entropy + set_clock" in err and proxy.path in err
        assert "last error: " in err and "no agent listening on vsock port 52" in err
        assert 1.4 <= took < 5
    finally:
        proxy.close()


def test_reset_forever_names_the_lost_reply(agent):
    d, sock = agent
    proxy = VsockProxy(os.path.join(d, "c.vsock"), sock, reset_first=1000)
    try:
        r, took = fixup(proxy.path, timeout_ms=800)
        assert r.returncode == 1
        assert "gave up at the deadline" in r.stderr, r.stderr
        assert "reseed_entropy: connection closed before the reply" in r.stderr, r.stderr
        assert took < 4
    finally:
        proxy.close()


def test_permanent_failures_are_not_retried(agent):
    d, sock = agent
    r, took = fixup(os.path.join(d, "nobody.vsock"))
    assert r.returncode == 1 and took < 3
    assert "after 1 attempt " in r.stderr and "not retried" in r.stderr, r.stderr
    assert "connecting to" in r.stderr and "No such file" in r.stderr
    # The agent itself says no: no amount of retrying changes that.
    fake = FakeAgent(os.path.join(d, "fake.sock"),
                     {"reseed_entropy": {"ok": False, "error": "ioctl RNDADDENTROPY: nope"}})
    proxy = VsockProxy(os.path.join(d, "f.vsock"), fake.path)
    try:
        r, took = fixup(proxy.path)
        assert r.returncode == 1 and took < 3
        assert "after 1 attempt " in r.stderr and len(proxy.connects) == 1, r.stderr
        assert "agent refused reseed_entropy: ioctl RNDADDENTROPY: nope" in r.stderr
    finally:
        proxy.close()
        fake.close()


def test_a_kernel_that_did_not_reseed_its_crng_fails_the_fixup(agent):
    d, _ = agent
    fake = FakeAgent(os.path.join(d, "fake.sock"), {
        "reseed_entropy": {"bytes": 64, "entropy_bits": 512, "crng_reseeded": False,
                           "crng_reseed_error": "ioctl RNDRESEEDCRNG on /dev/urandom: "
                                                "Inappropriate ioctl for device"},
        "set_clock": {"previous_time_ns": 0}})
    proxy = VsockProxy(os.path.join(d, "f.vsock"), fake.path)
    try:
        r, _ = fixup(proxy.path)
        assert r.returncode == 1 and "after 1 attempt " in r.stderr, r.stderr
        assert "did not reseed its CRNG" in r.stderr and "RNDRESEEDCRNG" in r.stderr
    finally:
        proxy.close()
        fake.close()


def test_an_older_agent_without_the_crng_field_is_accepted_with_a_warning(agent):
    d, _ = agent
    fake = FakeAgent(os.path.join(d, "fake.sock"), {
        "reseed_entropy": {"bytes": 64, "entropy_bits": 512},
        "set_clock": {"previous_time_ns": time.time_ns() - 300 * 10**9}})
    proxy = VsockProxy(os.path.join(d, "f.vsock"), fake.path)
    try:
        r, _ = fixup(proxy.path)
        assert r.returncode == 0, r.stderr
        assert " crng_reseeded 0 " in r.stdout and "rebuild the guest image" in r.stderr
        # The fake guest's clock was 5 minutes behind: the step is reported.
        step = int(re.search(r"clock_step_ns (-?\d+)", r.stdout).group(1))
        assert 299 * 10**9 < step < 310 * 10**9
    finally:
        proxy.close()
        fake.close()
