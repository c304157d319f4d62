"""Guest agent over a Unix socket (--unix --no-reboot): every request, bad input, concurrency.

The agent binary is $FORKVM_BUILD/forkvm-agent (default build/); `make tests` builds it.
"""
import json
import os
import shutil
import socket
import stat
import struct
import subprocess
import tempfile
import threading
import time

import pytest

from agentclient import (
    AgentClient,
    agent_binary,
    b64,
    encode_frame,
    finish_agent,
    gone_or_zombie,
    output_bytes,
    start_agent,
    stop_agent,
)

AGENT = agent_binary()
MIB = 1 << 20

pytestmark = pytest.mark.skipif(not os.path.exists(AGENT), reason=f"{AGENT} not built")


@pytest.fixture(scope="module")
def sockdir():
    # A private dir under /tmp (not pytest's tmp_path: its parents are 0700, and one test
    # runs an agent as an unprivileged user that must reach its socket).
    d = tempfile.mkdtemp(prefix="forkvm-agent-")
    os.chmod(d, 0o777)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def agent(sockdir):
    """One shared agent; yields its socket path and checks it exits cleanly at the end."""
    path = os.path.join(sockdir, "agent.sock")
    log_path = os.path.join(sockdir, "agent.log")
    log = open(log_path, "wb")
    proc = start_agent(path, stderr=log)
    yield path
    # Connection processes report abnormal ends (crashes, sanitizer findings) in the log.
    finish_agent(proc, log, log_path)


@pytest.fixture
def client(agent):
    with AgentClient.unix(agent) as c:
        yield c


def wait_until(cond, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


# ---------------------------------------------------------------- ping and exec


def test_ping(client):
    reply = client.ping()
    assert reply["ok"] is True
    assert reply["version"]
    assert isinstance(reply["uptime_ms"], int) and reply["uptime_ms"] >= 0


def test_exec_stdout_stderr_exit_code(client):
    r = client.exec(["sh", "-c", "echo hi; echo err >&2; exit 3"])
    assert r["exit_code"] == 3 and r["signal"] is None
    assert r["stdout"] == "hi\n" and r["stdout_encoding"] == "utf-8"
    assert r["stderr"] == "err\n" and r["stderr_encoding"] == "utf-8"
    assert r["timed_out"] is False
    assert r["stdout_truncated"] is False and r["stderr_truncated"] is False
    assert isinstance(r["duration_ms"], int) and r["duration_ms"] < 5000


def test_exec_env_cwd_stdin(client, sockdir):
    r = client.exec(["sh", "-c", 'printf "%s|%s|" "$FOO" "$BAR"; pwd; cat'],
                    env={"FOO": "foo value", "BAR": "a=b"}, cwd=sockdir, stdin="from stdin\n")
    assert r["exit_code"] == 0
    assert r["stdout"] == f"foo value|a=b|{os.path.realpath(sockdir)}\nfrom stdin\n"
    # The "K=V" array form, on top of the agent's environment (PATH still set).
    r = client.exec(["sh", "-c", 'echo "$X $Y"; test -n "$PATH"'], env=["X=1", "Y=2=3"])
    assert (r["exit_code"], r["stdout"]) == (0, "1 2=3\n")
    # clear_env starts from nothing but what the request gives.
    r = client.exec(["/usr/bin/env"], env={"ONLY": "me"}, clear_env=True)
    assert r["stdout"] == "ONLY=me\n"


def test_exec_gets_only_std_fds(client):
    r = client.exec(["ls", "/proc/self/fd"])
    # 0-2 plus the fd ls itself opened on the directory.
    assert len(r["stdout"].split()) <= 4, r["stdout"]


def test_exec_binary_stdin_and_output(client):
    data = bytes(range(256)) * 100
    r = client.exec(["cat"], stdin=b64(data), stdin_base64=True)
    assert r["stdout_encoding"] == "base64"
    assert output_bytes(r, "stdout") == data
    # Non-UTF-8 output is base64 even when small; valid UTF-8 stays a string.
    r = client.exec(["printf", "\\377\\376ok"])
    assert r["stdout_encoding"] == "base64" and output_bytes(r, "stdout") == b"\xff\xfeok"
    r = client.exec(["printf", "caf\\303\\251"])
    assert r["stdout_encoding"] == "utf-8" and r["stdout"] == "caf\u00e9"
    r = client.exec(["echo", "hi"], output_encoding="base64")
    assert r["stdout_encoding"] == "base64" and r["stdout"] == b64(b"hi\n")
    assert r["stderr_encoding"] == "base64" and r["stderr"] == ""


def test_exec_large_stdin(client):
    data = os.urandom(3 * MIB)  # far more than a pipe holds: needs the non-blocking pump
    r = client.exec(["sh", "-c", "wc -c; exec cat >/dev/null"], stdin=b64(data), stdin_base64=True)
    assert r["exit_code"] == 0 and r["stdout"].strip() == str(len(data))
    # A command that never reads its stdin is not an error.
    r = client.exec(["true"], stdin=b64(data), stdin_base64=True)
    assert r["exit_code"] == 0


def test_exec_signal_and_failures(client):
    r = client.exec(["sh", "-c", "kill -TERM $$"])
    assert r["exit_code"] is None and r["signal"] == 15 and r["timed_out"] is False
    r = client.request("exec", argv=["/nonexistent/binary"])
    assert r["ok"] is False and "/nonexistent/binary" in r["error"]
    assert "No such file" in r["error"]
    r = client.request("exec", argv=["true"], cwd="/nonexistent-dir")
    assert r["ok"] is False and "chdir /nonexistent-dir" in r["error"]
    client.ping()  # the connection is still usable


def test_exec_timeout_kills_process_group(client):
    start = time.monotonic()
    r = client.exec(["sh", "-c", "sleep 30 & echo $!; sleep 30"], timeout_ms=500)
    elapsed = time.monotonic() - start
    assert r["timed_out"] is True
    assert r["signal"] == 9 and r["exit_code"] is None
    assert 0.4 < elapsed < 5, elapsed
    assert 400 <= r["duration_ms"] < 5000
    # The background sleep was in the same process group and died too.
    bg = int(r["stdout"].split()[0])
    assert wait_until(lambda: gone_or_zombie(bg)), f"background pid {bg} survived"


def test_exec_output_truncation(client):
    r = client.exec(["sh", "-c", "head -c 3000000 /dev/zero | tr '\\0' a; echo done >&2"])
    assert r["exit_code"] == 0
    assert r["stdout_truncated"] is True and len(r["stdout"]) == MIB
    assert set(r["stdout"]) == {"a"}
    assert r["stderr_truncated"] is False and r["stderr"] == "done\n"
    r = client.exec(["sh", "-c", "head -c 5000 /dev/zero | tr '\\0' b >&2"], max_output=1000)
    assert r["stderr_truncated"] is True and r["stderr"] == "b" * 1000
    # Exactly at the bound is not truncation; above the agent's bound is clamped.
    r = client.exec(["printf", "12345"], max_output=5)
    assert r["stdout"] == "12345" and r["stdout_truncated"] is False
    r = client.exec(["printf", "x"], max_output=1 << 40)
    assert r["stdout"] == "x"


def test_client_hangup_kills_running_command(agent, sockdir):
    pidfile = os.path.join(sockdir, "hangup.pid")
    c = AgentClient.unix(agent)
    c.send({"op": "exec", "argv": ["sh", "-c", f"echo $$ > {pidfile}; exec sleep 30"]})
    assert wait_until(lambda: os.path.exists(pidfile) and open(pidfile).read().strip())
    pid = int(open(pidfile).read())
    c.close()
    assert wait_until(lambda: gone_or_zombie(pid)), "command outlived its client"


# ---------------------------------------------------------------- files


def test_write_read_file_roundtrip(client, sockdir):
    path = os.path.join(sockdir, "blob.bin")
    data = bytes(range(256)) * 1000 + b"\x00\xff"
    r = client.write_file(path, data, mode=0o640)
    assert r["bytes"] == len(data)
    assert open(path, "rb").read() == data
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
    got, r = client.read_file(path)
    assert got == data and r["truncated"] is False and r["bytes"] == len(data)
    # Overwrite atomically: no temp files left behind.
    client.write_file(path, b"short", mode=0o600)
    assert open(path, "rb").read() == b"short"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert not [n for n in os.listdir(sockdir) if "forkvm-" in n]
    # Non-atomic write, and an empty file.
    client.write_file(path, b"", atomic=False)
    assert open(path, "rb").read() == b""


def test_read_file_bounds_and_errors(client, sockdir):
    path = os.path.join(sockdir, "ten.txt")
    with open(path, "wb") as f:
        f.write(b"0123456789")
    got, r = client.read_file(path, max_bytes=4)
    assert got == b"0123" and r["truncated"] is True
    got, r = client.read_file(path, max_bytes=10)
    assert got == b"0123456789" and r["truncated"] is False
    # /proc files report size 0 but have content.
    got, _ = client.read_file("/proc/self/status")
    assert b"Name:" in got
    r = client.request("read_file", path=os.path.join(sockdir, "missing"))
    assert r["ok"] is False and "missing" in r["error"] and "No such file" in r["error"]
    r = client.request("read_file", path=sockdir)
    assert r["ok"] is False and "Is a directory" in r["error"]
    r = client.request("write_file", path=os.path.join(sockdir, "no/such/dir/f"), content="")
    assert r["ok"] is False and "no/such/dir" in r["error"]
    r = client.request("write_file", path=os.path.join(sockdir, "f"), content="not base64!")
    assert r["ok"] is False and "base64" in r["error"]


# ---------------------------------------------------------------- bad input


BAD_REQUESTS = [
    (b"{not json", "malformed JSON"),
    (b"", "malformed JSON"),
    (b"\xff\xfe", "malformed JSON"),
    (b"[1,2,3]", "must be a JSON object"),
    (b'{"id":1}', "missing field 'op'"),
    (b'{"op":42}', "'op' must be a string"),
    (b'{"op":"teleport"}', "unknown op 'teleport'"),
    (b'{"op":"exec"}', "missing field 'argv'"),
    (b'{"op":"exec","argv":"ls"}', "argv"),
    (b'{"op":"exec","argv":[]}', "argv"),
    (b'{"op":"exec","argv":["ls",1]}', "argv[1]"),
    (b'{"op":"exec","argv":["ls"],"timeout_ms":"5"}', "timeout_ms"),
    (b'{"op":"exec","argv":["ls"],"env":7}', "env"),
    (b'{"op":"read_file"}', "missing field 'path'"),
    (b'{"op":"write_file","path":"/tmp/x","content":5}', "content"),
    (b'{"op":"set_clock","time_ns":"soon"}', "time_ns"),
    (b'{"op":"shutdown","mode":"explode"}', "mode"),
]


def test_bad_requests_get_error_replies(client):
    for payload, want in BAD_REQUESTS:
        client.send_raw(encode_frame(payload))
        r = client.recv()
        assert r["ok"] is False, payload
        assert want in r["error"], (payload, r["error"])
    # Still the same healthy connection.
    assert client.ping()["ok"]


def test_error_reply_carries_id(client):
    r = client.request("teleport")
    assert r["ok"] is False and "unknown op" in r["error"]
    client.send({"op": "exec", "argv": [], "id": {"any": ["json", 1]}})
    assert client.recv()["id"] == {"any": ["json", 1]}


def test_pipelined_requests(client):
    client.send_raw(encode_frame({"op": "ping", "id": "a"}) +
                    encode_frame({"op": "exec", "argv": ["echo", "b"], "id": "b"}) +
                    encode_frame(b"garbage") + encode_frame({"op": "ping", "id": "d"}))
    replies = [client.recv() for _ in range(4)]
    assert [r.get("id") for r in replies] == ["a", "b", None, "d"]
    assert replies[1]["stdout"] == "b\n" and replies[2]["ok"] is False


def test_oversized_frame_closes_connection(agent):
    with AgentClient.unix(agent) as c:
        c.send_raw(struct.pack(">I", (16 << 20) + 1) + b"{")
        r = c.recv()
        assert r["ok"] is False and "exceeds the limit" in r["error"]
        assert c.recv() is None  # the stream cannot resync: closed
    with AgentClient.unix(agent) as c:
        assert c.ping()["ok"]


def test_cut_off_frame(agent):
    with AgentClient.unix(agent) as c:
        c.send_raw(struct.pack(">I", 100) + b'{"op":"pi')
        c.sock.shutdown(socket.SHUT_WR)
        r = c.recv()
        assert r["ok"] is False and "cut off" in r["error"]
        assert c.recv() is None
    # Cut inside the header, then an abrupt close without reading anything.
    with AgentClient.unix(agent) as c:
        c.send_raw(b"\x00\x00")
    with AgentClient.unix(agent) as c:
        assert c.ping()["ok"]


def test_concurrent_connections(agent):
    # A stalled client holding half a frame must not block anyone.
    stalled = AgentClient.unix(agent)
    stalled.send_raw(struct.pack(">I", 50) + b"{")
    n = 8
    results = [None] * n

    def worker(i):
        with AgentClient.unix(agent) as c:
            results[i] = c.exec(["sh", "-c", f"sleep 0.5; echo {i}"])["stdout"]

    start = time.monotonic()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    elapsed = time.monotonic() - start
    assert results == [f"{i}\n" for i in range(n)]
    assert elapsed < n * 0.5 * 0.6, f"connections were serialized: {elapsed:.2f}s"
    stalled.close()
    with AgentClient.unix(agent) as c:
        assert c.ping()["ok"]


def test_connection_limit(sockdir):
    path = os.path.join(sockdir, "limit.sock")
    proc = start_agent(path, extra_args=["--max-conns", "1"])

    def take_slot():
        """A connection that got a ping answer, or None if the agent refused it."""
        c = AgentClient.unix(path)
        try:
            c.send({"op": "ping", "id": 1})
            r = c.recv()
            if r and r.get("ok"):
                return c
        except OSError:
            pass  # refused and closed before our ping went out
        c.close()
        return None

    def retry_take_slot():
        # The previous holder's process may still be winding down: retry briefly.
        for _ in range(250):
            c = take_slot()
            if c:
                return c
            time.sleep(0.02)
        raise AssertionError("no connection slot ever became free")

    try:
        holder = retry_take_slot()
        with AgentClient.unix(path) as second:
            r = second.recv()
            assert r["ok"] is False and "too many connections" in r["error"]
            assert second.recv() is None
        holder.close()
        retry_take_slot().close()
    finally:
        assert stop_agent(proc) == 0


# ---------------------------------------------------------------- memory bound


def agent_children(pid):
    """Pids of the agent's connection processes (and whatever else it forked)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except FileNotFoundError:
        return []


def status_kib(pid, *keys):
    """{key: KiB} from /proc/PID/status (missing keys when the process is gone)."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in keys:
                    out[k] = int(v.split()[0])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return out


def frame_cost(n):
    """The agent's reservation for a frame of n payload bytes (guests/agent/mem.c)."""
    if n <= 4096:
        return 0
    return 3 * n + min(n // 2 + 1, 65536) * 160 + (64 << 10)


def new_connection(agent_proc, path):
    """(client, pid of its connection process) once the agent answered a ping on it."""
    before = set(agent_children(agent_proc.pid))
    c = AgentClient.unix(path, timeout=120)
    assert c.ping()["ok"]
    pids = [p for p in agent_children(agent_proc.pid) if p not in before]
    assert len(pids) == 1, pids
    return c, pids[0]


def b64_frame(head, size):
    """head + a base64 string + '"}', padded with JSON whitespace to exactly size bytes."""
    n = (size - len(head) - 2) // 4 * 4
    return head + b"QUFB" * (n // 4) + b'"' + b" " * (size - len(head) - n - 2) + b"}"


def crafted_frames(sockdir):
    """Worst cases at the 16 MiB frame limit, each one JSON object the agent accepts."""
    limit = 16 * MIB

    def pad(head, tail):
        return head + b"x" * (limit - len(head) - len(tail)) + tail

    many = 65000  # just under the value limit; strings sized to fill the frame
    size = (limit - 200) // many - 3
    return {
        # One 16 MiB base64 string, decoded to 12 MiB and written out.
        "base64": b64_frame(b'{"op":"write_file","path":"' +
                            os.path.join(sockdir, "mem-b64").encode() + b'","content":"', limit),
        # Deeply nested arrays (jansson's depth limit) plus a string to fill the frame.
        "nested": pad(b'{"op":"ping","n":' + b"[" * 2000 + b"]" * 2000 + b',"pad":"', b'"}'),
        # As many values as allowed, each a string: every one a jansson node and a copy.
        "values": pad(b'{"op":"ping","x":[' + b",".join([b'"' + b"v" * size + b'"'] * many) +
                      b'],"pad":"', b'"}'),
        # Empty arrays: the costliest node per byte of text.
        "arrays": pad(b'{"op":"ping","a":[' + b",".join([b"[]"] * 32000) + b'],"pad":"', b'"}'),
        # exec stdin as a plain string: the frame, jansson's copy and the stdin buffer.
        "stdin": pad(b'{"op":"exec","argv":["true"],"stdin":"', b'"}'),
    }


def sanitized_agent():
    """True for the SAN=1 build: ASan's shadow memory and quarantine make RSS meaningless,
    and the agent sets no RLIMIT_AS under it."""
    if not os.path.exists(AGENT):
        return False
    with open(AGENT, "rb") as f:
        return b"__asan_init" in f.read()


@pytest.mark.skipif(sanitized_agent(), reason="ASan build: RSS and RLIMIT_AS do not apply")
def test_memory_bound_holds_under_crafted_frames_on_many_connections(sockdir):
    """docs/AGENT.md "Memory": with --mem-budget B, the connection processes together never
    hold more than B plus a small fixed allowance each, whatever several clients send at
    once; each one stays under its RLIMIT_AS (B + 64 MiB); every request still succeeds
    (they take turns), and the agent serves normally afterwards."""
    budget = 64 * MIB
    allowance = 2 * MIB  # per connection process: binary, stack, buffers, small frames
    path = os.path.join(sockdir, "mem.sock")
    log_path = os.path.join(sockdir, "mem.log")
    frames = crafted_frames(sockdir)
    assert all(len(f) == 16 * MIB for f in frames.values()), {k: len(f) for k, f in frames.items()}
    with open(log_path, "wb") as log:
        proc = start_agent(path, extra_args=["--mem-budget", str(budget >> 20)], stderr=log)
    conns = {}
    try:
        for name in frames:
            conns[name] = new_connection(proc, path)
        pids = [pid for _, pid in conns.values()]
        for pid in pids:
            limits = open(f"/proc/{pid}/limits").read()
            line = [ln for ln in limits.splitlines() if ln.startswith("Max address space")][0]
            assert line.split()[3] == str(budget + 64 * MIB), line
        replies, peak = {}, [0]
        done = threading.Event()

        def sample():
            while not done.is_set():
                total = sum(status_kib(p, "VmRSS").get("VmRSS", 0) for p in pids)
                peak[0] = max(peak[0], total << 10)
                time.sleep(0.002)

        def send(name):
            c, _ = conns[name]
            c.send_raw(encode_frame(frames[name]))
            replies[name] = c.recv()

        sampler = threading.Thread(target=sample)
        sampler.start()
        senders = [threading.Thread(target=send, args=(n,)) for n in frames]
        for t in senders:
            t.start()
        for t in senders:
            t.join(300)
        done.set()
        sampler.join()
        for name, r in replies.items():
            assert r and r["ok"] is True, (name, r)
        assert sorted(replies) == sorted(frames)
        hwm = {name: status_kib(pid, "VmHWM", "VmPeak") for name, (_, pid) in conns.items()}
        for name, h in hwm.items():
            assert h["VmHWM"] << 10 <= frame_cost(16 * MIB) + allowance, (name, hwm)
            assert h["VmPeak"] << 10 <= budget + 64 * MIB, (name, hwm)
        # Unbudgeted, five 16 MiB frames at once would have held ~5 x 48 MiB.
        assert peak[0] <= budget + len(pids) * allowance, (peak[0] >> 20, hwm)
        # Big requests do not leave their memory behind once answered.
        for _, pid in conns.values():
            assert wait_until(lambda: status_kib(pid, "VmRSS")["VmRSS"] << 10 <= allowance), \
                status_kib(pid, "VmRSS")
        # The same connections and a fresh one serve normally.
        for c, _ in conns.values():
            assert c.ping()["ok"]
        with AgentClient.unix(path) as c:
            assert c.exec(["echo", "fine"])["stdout"] == "fine\n"
            # Commands get the agent's own limit, not the connection process's.
            limits = c.exec(["cat", "/proc/self/limits"])["stdout"]
            line = [ln for ln in limits.splitlines() if ln.startswith("Max address space")][0]
            assert line.split()[3] == "unlimited", line
    finally:
        for c, _ in conns.values():
            c.close()
        assert stop_agent(proc) == 0
    text = open(log_path, errors="replace").read()
    assert "connection process" not in text, text


def test_memory_budget_refuses_with_a_clear_error_and_keeps_the_connection(sockdir):
    path = os.path.join(sockdir, "budget.sock")
    proc = start_agent(path, extra_args=["--mem-budget", "16", "--mem-wait", "300"],
                       stderr=subprocess.DEVNULL)
    try:
        with AgentClient.unix(path, timeout=60) as c:
            # Larger than the whole budget: refused at once, the payload read and dropped.
            big = pad_frame({"op": "ping", "pad": ""}, 16 * MIB)
            c.send_raw(encode_frame(big))
            r = c.recv()
            assert r["ok"] is False and "refused" in r["error"], r
            assert "more than the agent's whole budget of 16.0 MiB" in r["error"], r
            assert c.ping()["ok"]  # in sync: the same connection goes on
            # An op whose output needs more than the budget.
            r = c.request("read_file", path="/proc/self/status", max_bytes=8 * MIB)
            assert r["ok"] is False and "whole budget" in r["error"], r
            got, _ = c.read_file("/proc/self/status", max_bytes=MIB)
            assert b"Name:" in got
        # A stalled client holds the budget with half a frame; another one waits, then gets
        # "busy" and stays usable; small requests never wait.
        one = pad_frame({"op": "ping", "pad": ""}, MIB)
        holder = AgentClient.unix(path, timeout=60)
        assert holder.ping()["ok"]  # its connection process is up and reading
        holder.send_raw(encode_frame(one)[:100])
        time.sleep(0.5)  # for it to read the header and reserve
        with AgentClient.unix(path, timeout=60) as c:
            c.send_raw(encode_frame(one))
            r = c.recv()
            assert r["ok"] is False and "budget busy" in r["error"], r
            assert c.ping()["ok"]
            holder.send_raw(encode_frame(one)[100:])
            assert holder.recv()["ok"] is True
            holder.close()
            c.send_raw(encode_frame(one))
            assert c.recv()["ok"] is True
    finally:
        assert stop_agent(proc) == 0


def pad_frame(obj, size):
    """obj's JSON with its "pad" field grown so the payload is exactly size bytes."""
    base = json.dumps(obj).encode()
    obj = dict(obj, pad="x" * (size - len(base)))
    payload = json.dumps(obj).encode()
    assert len(payload) == size
    return payload


# ---------------------------------------------------------------- clock, entropy, shutdown


@pytest.mark.skipif(os.geteuid() != 0, reason="set_clock needs root")
def test_set_clock(client):
    # Set the clock to (about) now: the call is real, the host clock barely moves.
    now = time.time_ns()
    r = client.call("set_clock", time_ns=now)
    assert abs(r["previous_time_ns"] - now) < 5 * 10**9
    assert abs(time.time_ns() - now) < 5 * 10**9
    for bad in ({}, {"time_ns": -1}, {"time_ns": 1.5}, {"time_ns": "now"}):
        r = client.request("set_clock", **bad)
        assert r["ok"] is False and "time_ns" in r["error"]


@pytest.mark.skipif(os.geteuid() != 0, reason="reseed_entropy needs root")
def test_reseed_entropy(client):
    r = client.call("reseed_entropy", data=b64(os.urandom(64)))
    assert r["bytes"] == 64 and r["entropy_bits"] == 512
    # As root, RNDRESEEDCRNG works: the CRNG took a new key now, not at its next reseed.
    assert r["crng_reseeded"] is True and "crng_reseed_error" not in r, r
    r = client.call("reseed_entropy", data=b64(b"\x01" * 8), entropy_bits=0)
    assert r["entropy_bits"] == 0 and r["crng_reseeded"] is True
    for bad, want in (({"data": "###"}, "base64"), ({"data": ""}, "empty"),
                      ({"data": b64(b"\x00" * 5000)}, "limit"),
                      ({"data": b64(b"ab"), "entropy_bits": 17}, "entropy_bits"), ({}, "data")):
        r = client.request("reseed_entropy", **bad)
        assert r["ok"] is False and want in r["error"], (bad, r)


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"),
                    reason="needs root and setpriv to drop privileges")
def test_privileged_ops_fail_cleanly_without_root(sockdir):
    path = os.path.join(sockdir, "nobody.sock")
    prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"]
    proc = start_agent(path, prefix=prefix, stderr=subprocess.DEVNULL)
    try:
        with AgentClient.unix(path) as c:
            r = c.request("set_clock", time_ns=time.time_ns())
            assert r["ok"] is False
            assert "clock_settime" in r["error"] and "Operation not permitted" in r["error"]
            r = c.request("reseed_entropy", data=b64(b"x" * 16))
            assert r["ok"] is False
            assert "RNDADDENTROPY" in r["error"] and "Operation not permitted" in r["error"]
            assert c.ping()["ok"]
    finally:
        assert stop_agent(proc) == 0


def test_shutdown_no_reboot_stops_agent(sockdir):
    path = os.path.join(sockdir, "shutdown.sock")
    proc = start_agent(path)
    try:
        # A second, idle client must not keep the agent alive.
        idle = AgentClient.unix(path)
        with AgentClient.unix(path) as c:
            r = c.call("shutdown", mode="reboot")
            assert r["simulated"] is True and r["mode"] == "reboot"
        assert proc.wait(10) == 0
        assert not os.path.exists(path)
        idle.close()
    finally:
        stop_agent(proc)


def test_command_line():
    assert subprocess.run([AGENT, "--help"], capture_output=True).returncode == 0
    assert subprocess.run([AGENT, "--version"], capture_output=True).stdout.startswith(
        b"forkvm-agent ")
    for bad in (["--vsock-port", "x"], ["--vsock-port", "0"], ["--unix", "/x", "--vsock-port", "5"],
                ["--max-conns", "0"], ["--mem-budget", "8"], ["--mem-budget", "x"],
                ["--mem-wait", "-1"], ["--bogus"], ["extra"]):
        r = subprocess.run([AGENT] + bad, capture_output=True)
        assert r.returncode == 2, bad
        assert b"usage" in r.stderr


@pytest.mark.skipif(not os.path.exists("/dev/vsock"), reason="no AF_VSOCK here")
def test_vsock_listener_starts():
    # Nothing here can connect to a guest-side vsock port; check that the default
    # transport binds and the agent runs until stopped.
    proc = subprocess.Popen([AGENT, "--vsock-port", "45252", "--no-reboot"],
                            stderr=subprocess.PIPE)
    try:
        time.sleep(0.3)
        assert proc.poll() is None, proc.stderr.read()
    finally:
        assert stop_agent(proc) == 0
    assert b"listening on vsock port 45252" in proc.stderr.read()


def test_agent_survived_everything(client):
    """Runs last in this module: the shared agent still answers after all the abuse."""
    assert client.ping()["ok"]
