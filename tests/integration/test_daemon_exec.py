"""forkvmd's exec route, plain and streamed (docs/DAEMON.md, "Streaming exec"), against the
real guest agent. Linux guests cannot boot on this host, so the sandbox is a probe VM whose
record says "linux" and whose vsock socket is a stand-in (vsock_proxy.py) that relays to the
agent running here on a Unix socket (daemonlib.agent_backed_sandbox).
tests/linux/test_service.py streams from a real guest."""
import hashlib
import os
import threading
import time

import pytest

from agentclient import agent_binary, wait_gone
from daemonlib import agent_backed_sandbox, sdk

pytestmark = pytest.mark.skipif(not os.path.exists(agent_binary()), reason="agent not built")


@pytest.fixture
def sandbox():
    """(daemon, SDK sandbox) whose exec reaches a host agent."""
    with agent_backed_sandbox() as pair:
        yield pair


def test_plain_exec_through_the_daemon(sandbox):
    _, sb = sandbox
    r = sb.exec("echo out; echo err >&2; exit 4", stdin="ignored")
    assert (r.exit_code, r.stdout, r.stderr) == (4, b"out\n", b"err\n")
    # NUL bytes are valid UTF-8: the agent sends them as \u0000 in text, plain and streamed
    assert sb.exec("head -c 3000 /dev/zero").stdout == bytes(3000)
    events = list(sb.exec_stream("head -c 3000 /dev/zero; printf 'a\\000b' >&2"))
    assert b"".join(d for k, d in events if k == "stdout") == bytes(3000)
    assert b"".join(d for k, d in events if k == "stderr") == b"a\x00b"
    with pytest.raises(sdk.GuestError) as e:
        sb.exec(["/no/such/program"])
    assert "/no/such/program" in e.value.message


def test_streamed_output_arrives_while_the_command_runs(sandbox):
    _, sb = sandbox
    start = time.monotonic()
    seen = []
    for kind, data in sb.exec_stream("echo first; echo warn >&2; sleep 2; echo second; exit 3"):
        seen.append((time.monotonic() - start, kind, data))
    took = time.monotonic() - start
    kinds = [k for _, k, _ in seen]
    assert kinds[-1] == "exit" and kinds.count("exit") == 1
    result = seen[-1][2]
    assert result.exit_code == 3 and not result.timed_out
    out = b"".join(d for _, k, d in seen if k == "stdout")
    err = b"".join(d for _, k, d in seen if k == "stderr")
    assert (out, err) == (b"first\nsecond\n", b"warn\n")
    first_at = next(t for t, k, _ in seen if k == "stdout")
    assert first_at < 1.5 and took >= 1.9, (first_at, took)


def test_streamed_output_has_no_size_bound_and_callbacks_get_text(sandbox):
    _, sb = sandbox
    n = 3 << 20
    r = sb.exec_stream(f"head -c {n} /dev/zero | tr '\\0' q")
    got = 0
    for kind, data in r:
        if kind == "stdout":
            assert set(data) <= {ord("q")}
            got += len(data)
        elif kind == "exit":
            assert data.exit_code == 0
    assert got == n
    lines = []
    res = sb.exec(r"printf 'caf\303'; sleep 0.2; printf '\251\n'; printf 'e\n' >&2",
                  on_stdout=lines.append, on_stderr=lines.append)
    assert "".join(lines).count("caf\u00e9\n") == 1 and "e\n" in lines
    assert res.stdout == "caf\u00e9\n".encode() and res.stderr == b"e\n" and res.exit_code == 0


def test_streamed_errors_timeouts_and_bad_bodies(sandbox):
    d, sb = sandbox
    with pytest.raises(sdk.GuestError) as e:
        list(sb.exec_stream(["/no/such/program"]))
    assert "/no/such/program" in e.value.message
    events = list(sb.exec_stream("echo go; sleep 30", timeout_ms=300))
    assert events[0] == ("stdout", b"go\n")
    assert events[-1][0] == "exit" and events[-1][1].timed_out and events[-1][1].signal == 9
    with pytest.raises(sdk.BadRequest) as e:
        d.req("POST", f"/v1/sandboxes/{sb.id}/exec", body={"argv": ["true"], "stream": "yes"})
    assert "stream" in e.value.message
    with pytest.raises(sdk.NotFound):
        list(d.client().stream("POST", "/v1/sandboxes/sb-000000000000/exec",
                               body={"argv": ["true"], "stream": True}))


def test_a_client_that_leaves_ends_the_command(sandbox, tmp_path):
    d, sb = sandbox
    pidfile = tmp_path / "pid"
    gen = sb.exec_stream(f"echo $$ > {pidfile}; while :; do echo tick; sleep 0.05; done")
    assert next(gen)[0] == "stdout"
    pid = int(pidfile.read_text())
    gen.close()  # closes the HTTP connection
    if not wait_gone(pid):
        pytest.fail(f"command {pid} outlived the client of its streamed exec")
    # the daemon answers as before; other streams and plain requests are unaffected
    assert sb.exec("echo still").stdout == b"still\n"
    assert d.client().healthz()


def test_many_streams_at_once(sandbox):
    _, sb = sandbox
    results = {}

    def one(i):
        out = b""
        for kind, data in sb.exec_stream(f"for j in 1 2 3; do echo {i}-$j; sleep 0.1; done"):
            if kind == "stdout":
                out += data
            elif kind == "exit":
                results[i] = (out, data.exit_code)
    threads = [threading.Thread(target=one, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == {i: (f"{i}-1\n{i}-2\n{i}-3\n".encode(), 0) for i in range(12)}


def test_interactive_stdin_of_a_streamed_exec(sandbox):
    d, sb = sandbox
    with sb.exec_stream("while read l; do echo got:$l; done; echo bye", stdin="pre\n",
                        stdin_open=True) as p:
        assert p.exec_id.startswith("ex-")
        assert next(p) == ("stdout", b"got:pre\n")
        assert p.send_stdin("one\n") == {"exec_id": p.exec_id, "bytes": 4, "eof": False}
        assert next(p) == ("stdout", b"got:one\n")
        p.send_stdin(b"two\n", eof=True)
        rest = list(p)
    assert b"".join(x for k, x in rest if k == "stdout") == b"got:two\nbye\n"
    assert rest[-1][0] == "exit" and rest[-1][1].exit_code == 0
    # the exec is gone: its id answers 404; a closed input answers 409
    with pytest.raises(sdk.NotFound):
        p.send_stdin("late")
    # the close reaches cat; the command still runs (sleep), so more input is a conflict
    with sb.exec_stream("cat; echo eof-seen; exec sleep 30", stdin_open=True) as p:
        p.close_stdin()
        assert next(p) == ("stdout", b"eof-seen\n")
        with pytest.raises(sdk.Conflict) as e:
            p.send_stdin("more")
        assert e.value.code == "stdin_closed"
    with sb.exec_stream("sleep 5") as p:  # no stdin_open
        with pytest.raises(sdk.Conflict):
            p.send_stdin("x")
    with pytest.raises(sdk.BadRequest) as e:
        d.req("POST", f"/v1/sandboxes/{sb.id}/exec", body={"argv": ["cat"], "stdin_open": True})
    assert "stream" in e.value.message
    with pytest.raises(sdk.BadRequest):
        d.req("POST", "/v1/execs/ex-000000000000/stdin", raw=b"x", query={"eof": "maybe"})


def test_stdin_bytes_are_exact_and_large(sandbox):
    _, sb = sandbox
    data = bytes(range(256)) * 8192  # 2 MiB, every byte value
    with sb.exec_stream("sha256sum; wc -c", stdin_open=True) as p:
        for off in range(0, len(data), 700000):
            p.send_stdin(data[off:off + 700000])
        p.close_stdin()
        out = b"".join(x for k, x in p if k == "stdout")
    digest, count = out.split(b"\n")[0].split()[0].decode(), out.split(b"\n")[1].strip()
    assert digest == hashlib.sha256(data).hexdigest() and count == b"0"
