"""Streamed exec (request field "stream"): output leaves as event frames while the command
runs (docs/AGENT.md). The agent runs on a Unix socket (--unix --no-reboot)."""
import os
import shutil
import tempfile
import time

import pytest

from agentclient import (AgentClient, agent_binary, b64, event_bytes, finish_agent, start_agent,
                         wait_gone)

AGENT = agent_binary()

pytestmark = pytest.mark.skipif(not os.path.exists(AGENT), reason=f"{AGENT} not built")


@pytest.fixture(scope="module")
def agent():
    d = tempfile.mkdtemp(prefix="forkvm-agent-stream-")
    path, log_path = os.path.join(d, "agent.sock"), os.path.join(d, "agent.log")
    log = open(log_path, "wb")
    proc = start_agent(path, stderr=log)
    yield path
    finish_agent(proc, log, log_path)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def client(agent):
    with AgentClient.unix(agent) as c:
        yield c


def test_output_arrives_while_the_command_runs(client):
    seen = []
    start = time.monotonic()
    events, reply = client.exec_stream(
        ["sh", "-c", "echo first; echo oops >&2; sleep 2; echo second; exit 7"],
        on_event=lambda ev: seen.append((time.monotonic() - start, ev)))
    took = time.monotonic() - start
    assert reply["ok"] and reply["exit_code"] == 7 and reply["signal"] is None, reply
    assert reply["streamed"] is True and "stdout" not in reply and "stderr" not in reply
    assert event_bytes(events, "stdout") == b"first\nsecond\n"
    assert event_bytes(events, "stderr") == b"oops\n"
    assert reply["stdout_bytes"] == 13 and reply["stderr_bytes"] == 5
    first_at = next(t for t, ev in seen if ev["event"] == "stdout")
    # "first" came out before the sleep ended, the reply after it
    assert first_at < 1.5 and took >= 1.9, (first_at, took)
    # the connection carries the next request as before
    assert client.ping()["ok"]


def test_output_beyond_the_capture_bound_is_streamed_whole(client):
    n = 3 * 1024 * 1024  # three times max_output's 1 MiB ceiling
    events, reply = client.exec_stream(
        ["sh", "-c", f"head -c {n} /dev/zero | tr '\\0' a"], max_output=1000)
    assert reply["ok"] and reply["exit_code"] == 0, reply
    out = event_bytes(events, "stdout")
    assert len(out) == n and out == b"a" * n
    assert reply["stdout_bytes"] == n and "stdout_truncated" not in reply


def test_a_character_cut_between_writes_stays_text(client):
    events, reply = client.exec_stream(
        ["sh", "-c", r"printf '\303'; sleep 0.3; printf '\251 caf\303'; sleep 0.3; printf '\251\n'"])
    assert reply["ok"], reply
    assert all(ev["data_encoding"] == "utf-8" for ev in events), events
    assert event_bytes(events, "stdout").decode() == "\u00e9 caf\u00e9\n"


def test_bytes_that_are_not_utf8_go_as_base64(client):
    events, reply = client.exec_stream(["sh", "-c", r"printf 'ok\n'; sleep 0.2; printf '\377\376'"])
    assert reply["ok"], reply
    assert event_bytes(events, "stdout") == b"ok\n\xff\xfe"
    assert any(ev["data_encoding"] == "base64" for ev in events)
    # a lone lead byte at the very end is sent, not held forever
    events, reply = client.exec_stream(["sh", "-c", r"printf 'x\342'"])
    assert event_bytes(events, "stdout") == b"x\xe2"


def test_forced_base64_and_stdin(client):
    data = bytes(range(256)) * 64
    events, reply = client.exec_stream(["cat"], stdin=__import__("base64").b64encode(data).decode(),
                                       stdin_base64=True, output_encoding="base64")
    assert reply["ok"] and reply["exit_code"] == 0, reply
    assert all(ev["data_encoding"] == "base64" for ev in events)
    assert event_bytes(events, "stdout") == data


def test_timeout_kills_a_streamed_command(client):
    events, reply = client.exec_stream(["sh", "-c", "echo started; sleep 30"], timeout_ms=400)
    assert reply["ok"] and reply["timed_out"] is True and reply["signal"] == 9, reply
    assert event_bytes(events, "stdout") == b"started\n"


def test_a_start_failure_is_the_error_reply(client):
    events, reply = client.exec_stream(["/nonexistent/prog"])
    assert events == [] and reply["ok"] is False
    assert "/nonexistent/prog" in reply["error"]


def test_hanging_up_mid_stream_kills_the_command(agent, tmp_path):
    pidfile = tmp_path / "pid"
    c = AgentClient.unix(agent)
    c.send({"op": "exec", "stream": True, "id": 1,
            "argv": ["sh", "-c", f"echo $$ > {pidfile}; while :; do echo tick; sleep 0.05; done"]})
    first = c.recv()
    assert first["event"] == "stdout" and first["id"] == 1
    pid = int(pidfile.read_text())
    c.close()
    if not wait_gone(pid):
        pytest.fail(f"the streamed command {pid} outlived its client")


def test_interactive_stdin(client):
    """stdin_open: input frames reach the running command as they arrive; eof ends it."""
    c = client
    c.send({"op": "exec", "id": 9, "stream": True, "stdin_open": True, "stdin": "pre\n",
            "argv": ["sh", "-c", "while read l; do echo got:$l; done; echo bye"]})
    first = c.recv()
    assert (first["event"], first["data"]) == ("stdout", "got:pre\n"), first
    c.send({"op": "stdin", "data": b64(b"one\n")})
    assert c.recv()["data"] == "got:one\n"
    c.send({"op": "stdin", "data": b64(b"two\nthree\n"), "eof": True})
    out, reply = "", None
    while reply is None:
        f = c.recv()
        if "event" in f:
            out += f["data"]
        else:
            reply = f
    assert out == "got:two\ngot:three\nbye\n" and reply["ok"] and reply["exit_code"] == 0, reply
    # input after the command ended is dropped without a reply; the connection goes on
    c.send({"op": "stdin", "data": b64(b"late\n")})
    assert c.ping()["ok"]


def test_stdin_half_close_ends_input_and_bad_frames_end_the_exec(agent):
    with AgentClient.unix(agent) as c:
        c.send({"op": "exec", "id": 1, "stdin_open": True, "argv": ["wc", "-c"]})
        c.send({"op": "stdin", "data": b64(b"x" * 70000)})
        c.sock.shutdown(__import__("socket").SHUT_WR)
        r = c.recv()
        assert r["ok"] and r["stdout"].strip() == "70000", r
    with AgentClient.unix(agent) as c:
        c.send({"op": "exec", "id": 2, "stdin_open": True, "argv": ["cat"]})
        c.send({"op": "ping"})
        r = c.recv()
        assert r["ok"] is False and "only stdin frames" in r["error"], r
        assert c.ping()["ok"]


def test_a_command_that_stops_reading_does_not_stall_the_agent(client):
    """Input to a command that exited (EPIPE) is dropped; the exec still ends normally."""
    client.send({"op": "exec", "id": 3, "stdin_open": True, "argv": ["sh", "-c", "exit 5"]})
    for _ in range(20):
        client.send({"op": "stdin", "data": b64(b"y" * 100000)})
    frames = [client.recv()]
    assert frames[0]["ok"] and frames[0]["exit_code"] == 5, frames[0]
    assert client.ping()["ok"]


def test_net_config_refuses_bad_input_without_touching_the_host(client):
    """net_config's validation (the configuration itself runs in a guest: tests/linux/test_net.py);
    none of these reach an interface of this host."""
    for fields, want in [({}, "missing field 'address'"),
                         ({"address": "10.0.0.1"}, "must be A.B.C.D/PREFIX"),
                         ({"address": "10.0.0.300/24"}, "must be A.B.C.D/PREFIX"),
                         ({"address": "10.0.0.1/33"}, "must be A.B.C.D/PREFIX"),
                         ({"address": "10.0.0.1/24", "gateway": "x"}, "field 'gateway'"),
                         ({"address": "10.0.0.1/24", "mtu": 20}, "field 'mtu'"),
                         ({"address": "10.0.0.1/24", "interface": "fvnone9"},
                          "no network interface 'fvnone9'")]:
        r = client.request("net_config", **fields)
        assert r["ok"] is False and want in r["error"], (fields, r)
