"""The agent's warm interpreters (eval, eval_close) and directory trees (put_tree, get_tree),
run on this host over a Unix socket (--unix --no-reboot), plus `forkvm eval` and `forkvm cp`
through a vsock-style stand-in (vsock_proxy.py). docs/AGENT.md describes the ops.

The agent finds python3 in PATH; the tests put this interpreter's directory first, or
$FORKVM_EVAL_PYTHON_DIR (a directory holding the python3 to test the driver with).
"""
import io
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tarfile
import tempfile
import threading
import time

import pytest

import agentclient
from agentclient import (
    AGENT_LOG_BAD,
    AgentClient,
    agent_binary,
    b64,
    encode_frame,
    output_bytes,
    start_agent,
)
from forkvm_vm import FORKVM
from vsock_proxy import VsockProxy

AGENT = agent_binary()
MIB = 1 << 20
PYTHON_DIR = os.environ.get("FORKVM_EVAL_PYTHON_DIR", os.path.dirname(sys.executable))
ENV = dict(os.environ, PATH=PYTHON_DIR + ":/usr/bin:/bin")

pytestmark = pytest.mark.skipif(not os.path.exists(AGENT), reason=f"{AGENT} not built")


@pytest.fixture(scope="module")
def sockdir():
    d = tempfile.mkdtemp(prefix="forkvm-eval-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def run_agent(path, log_path, extra_args=(), env=ENV):
    log = open(log_path, "wb")
    return start_agent(path, extra_args=extra_args, stderr=log, env=env), log


def finish_agent(proc, log, log_path):
    agentclient.finish_agent(proc, log, log_path, bad=AGENT_LOG_BAD + ("fatal",))


@pytest.fixture(scope="module")
def agent(sockdir):
    """One shared agent (with its own eval run directory); checks a clean exit at the end."""
    path = os.path.join(sockdir, "agent.sock")
    log_path = os.path.join(sockdir, "agent.log")
    proc, log = run_agent(path, log_path, ["--run-dir", os.path.join(sockdir, "run")])
    yield path
    finish_agent(proc, log, log_path)
    # The run directory's files are gone, and so are the interpreters (lifeline).
    assert not [n for n in os.listdir(os.path.join(sockdir, "run")) if n.startswith("py-")]


@pytest.fixture
def client(agent):
    with AgentClient.unix(agent) as c:
        yield c


def fresh_context(name):
    """A context name unique to this test run (contexts outlive connections)."""
    return f"{name}-{os.getpid()}-{time.monotonic_ns() % 1000000}"


def out(reply, stream="stdout"):
    return output_bytes(reply, stream).decode(errors="replace")


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError):
        return False


def wait_until(cond, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


# ---------------------------------------------------------------- warm state and results


def test_warm_state_survives_between_evals_and_connections(agent, client):
    ctx = fresh_context("warm")
    r = client.eval("x = 41", context=ctx)
    assert r["started"] is True and r["state_lost"] is False and r["error"] is None
    assert r["result"] is None and r["stdout"] == "" and r["python"]
    r = client.eval("print(x + 1)", context=ctx)
    assert r["started"] is False
    assert out(r) == "42\n" and r["result"] is None and r["error"] is None
    with AgentClient.unix(agent) as other:  # state lives in the interpreter, not the connection
        assert other.eval("x", context=ctx)["result"] == "41"
    client.eval_close(ctx)


def test_final_expression_is_the_result(client):
    ctx = fresh_context("expr")
    assert client.eval("1 + 1", context=ctx)["result"] == "2"
    assert client.eval("'a' * 3", context=ctx)["result"] == "'aaa'"
    assert client.eval("None", context=ctx)["result"] is None
    r = client.eval("import decimal\nd = decimal.Decimal('1.5')\nprint('p')\nd * 2", context=ctx)
    assert r["result"] == "Decimal('3.0')" and out(r) == "p\n"
    assert client.eval("y = 3", context=ctx)["result"] is None  # an assignment is no value
    assert client.eval("if True:\n    7", context=ctx)["result"] is None  # not a final Expr
    big = client.eval("'x' * (3 << 20)", context=ctx)
    assert big["result_truncated"] is True and len(big["result"]) == 1 << 20
    client.eval_close(ctx)


def test_contexts_are_independent(client):
    a, b = fresh_context("a"), fresh_context("b")
    client.eval("v = 'A'", context=a)
    client.eval("v = 'B'", context=b)
    assert client.eval("v", context=a)["result"] == "'A'"
    assert client.eval("v", context=b)["result"] == "'B'"
    pa = client.eval("import os; os.getpid()", context=a)["result"]
    pb = client.eval("import os; os.getpid()", context=b)["result"]
    assert pa != pb  # separate interpreters
    client.eval("del v", context=a)
    assert client.eval("v", context=b)["result"] == "'B'"
    for c in (a, b):
        client.eval_close(c)


# ---------------------------------------------------------------- errors


def test_exception_reports_traceback_and_keeps_output(client):
    ctx = fresh_context("exc")
    r = client.eval("def f():\n    return 1 / 0\nprint('before')\nf()", context=ctx)
    assert out(r) == "before\n"
    err = r["error"]
    assert err["name"] == "ZeroDivisionError" and err["value"] == "division by zero"
    tb = err["traceback"]
    assert tb.startswith("Traceback (most recent call last):")
    assert "line 4, in <module>" in tb and "in f" in tb and "return 1 / 0" in tb
    # Only the code's frames: none of the driver's.
    assert "run_cell" not in tb and "eval_driver" not in tb and '"<string>"' not in tb
    # Chained exceptions keep their cause.
    r = client.eval("try:\n    {}['k']\nexcept KeyError as e:\n    raise ValueError('v') from e",
                    context=ctx)
    assert r["error"]["name"] == "ValueError"
    assert "KeyError" in r["error"]["traceback"] and "direct cause" in r["error"]["traceback"]
    assert client.eval("2 + 2", context=ctx)["result"] == "4"
    client.eval_close(ctx)


def test_syntax_error(client):
    ctx = fresh_context("syntax")
    r = client.eval("x = 1\ndef f(:\n    pass", context=ctx)
    err = r["error"]
    assert err["name"] == "SyntaxError"
    assert "line 2" in err["traceback"] and "def f(:" in err["traceback"]
    assert "Traceback" not in err["traceback"]  # no compiler frames
    # Nothing of the cell ran.
    assert client.eval("'x' in dir()", context=ctx)["result"] == "False"
    client.eval_close(ctx)


def test_sys_exit_is_an_error_and_the_interpreter_stays(client):
    ctx = fresh_context("exit")
    client.eval("keep = 1", context=ctx)
    for code, value in (("import sys; sys.exit(3)", "3"), ("raise SystemExit('bye')", "bye"),
                        ("exit()", "None")):
        r = client.eval(code, context=ctx)
        assert r["error"]["name"] == "SystemExit", r
        assert r["error"]["value"] == value
        assert r["state_lost"] is False
    r = client.eval("keep", context=ctx)
    assert r["result"] == "1" and r["started"] is False
    client.eval_close(ctx)


def test_interpreter_exit_is_reported_and_the_next_eval_starts_afresh(client):
    ctx = fresh_context("osexit")
    client.eval("keep = 1", context=ctx)
    r = client.eval("import os; os._exit(5)", context=ctx)
    assert r["error"]["name"] == "InterpreterExited" and r["state_lost"] is True
    assert "status 5" in r["error"]["value"]
    r = client.eval("'keep' in dir()", context=ctx)
    assert r["started"] is True and r["result"] == "False"
    client.eval_close(ctx)


def test_bad_lang_and_bad_fields(client):
    for fields, msg in (({"lang": "ruby"}, "unsupported lang 'ruby'"),
                        ({"lang": "python", "context": "../x"}, "field 'context' must be"),
                        ({"lang": "python", "timeout_ms": "5"}, "'timeout_ms' must be")):
        r = client.request("eval", code="1", **fields)
        assert r["ok"] is False and msg in r["error"], r
    r = client.request("eval", lang="python")
    assert r["ok"] is False and "missing field 'code'" in r["error"]


# ---------------------------------------------------------------- timeouts


def test_timeout_interrupts_and_the_context_survives(client):
    ctx = fresh_context("timeout")
    client.eval("y = 1", context=ctx)
    t0 = time.monotonic()
    r = client.eval("print('started')\nwhile True: pass", context=ctx, timeout_ms=300)
    took = time.monotonic() - t0
    assert r["timed_out"] is True and r["state_lost"] is False
    assert r["error"]["name"] == "TimeoutError" and "300 ms" in r["error"]["value"]
    assert "KeyboardInterrupt" in r["error"]["traceback"]
    assert out(r) == "started\n"  # output up to the interrupt is kept
    assert 0.25 < took < 3, took
    r = client.eval("y + 1", context=ctx)
    assert r["result"] == "2" and r["started"] is False and r["timed_out"] is False
    client.eval_close(ctx)


def test_code_ignoring_sigint_is_killed_and_the_state_loss_reported(client):
    ctx = fresh_context("sigkill")
    client.eval("z = 1", context=ctx)
    pid = int(client.eval("import os; os.getpid()", context=ctx)["result"])
    child = int(client.eval("import subprocess\np = subprocess.Popen(['sleep', '600'])\np.pid",
                            context=ctx)["result"])
    t0 = time.monotonic()
    r = client.eval("import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
                    "while True: pass", context=ctx, timeout_ms=300)
    took = time.monotonic() - t0
    assert r["timed_out"] is True and r["state_lost"] is True
    assert r["error"]["name"] == "TimeoutError"
    assert "killed" in r["error"]["value"] and "lost its state" in r["error"]["value"]
    assert 2.0 < took < 6, took
    # The interpreter and what it started (its process group) are gone.
    assert wait_until(lambda: not alive(pid) and not alive(child), 5)
    r = client.eval("'z' in dir()", context=ctx)
    assert r["started"] is True and r["result"] == "False"
    client.eval_close(ctx)


def test_client_hangup_interrupts_the_eval(agent):
    ctx = fresh_context("hangup")
    with AgentClient.unix(agent) as c:
        c.eval("w = 5", context=ctx)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(agent)
    s.sendall(encode_frame({"op": "eval", "code": "while True: pass", "context": ctx}))
    time.sleep(0.3)
    s.close()

    def usable():
        with AgentClient.unix(agent) as c:
            r = c.request("eval", code="w", context=ctx)
            return r if r["ok"] else None
    assert wait_until(usable, 10)
    r = usable()
    assert r["result"] == "5" and r["started"] is False
    with AgentClient.unix(agent) as c:
        c.eval_close(ctx)


# ---------------------------------------------------------------- what the code may do


def test_ten_mib_of_output_is_truncated_with_a_flag(client):
    ctx = fresh_context("big")
    r = client.eval("print('x' * (10 << 20))\nimport sys\nprint('e' * 100, file=sys.stderr)",
                    context=ctx)
    assert r["stdout_truncated"] is True and len(output_bytes(r, "stdout")) == MIB
    assert r["stderr_truncated"] is False and out(r, "stderr") == "e" * 100 + "\n"
    r = client.eval("print('y' * 1000)", context=ctx, max_output=10)
    assert output_bytes(r, "stdout") == b"y" * 10 and r["stdout_truncated"] is True
    r = client.eval("print('ok')", context=ctx)  # the next eval starts clean
    assert out(r) == "ok\n" and r["stdout_truncated"] is False
    client.eval_close(ctx)


def test_fd_writes_and_subprocesses_do_not_corrupt_the_protocol(client):
    ctx = fresh_context("fds")
    code = ("import os, subprocess, sys\n"
            "os.write(1, b'raw1\\n')\n"
            "subprocess.run(['sh', '-c', 'echo sub-out; echo sub-err >&2'])\n"
            "os.write(2, b'raw2\\n')\n"
            "print('py', flush=True)\n"
            "os.system('echo system')\n"
            "'done'")
    r = client.eval(code, context=ctx)
    assert r["error"] is None and r["result"] == "'done'"
    assert out(r).split() == ["raw1", "sub-out", "py", "system"]
    assert out(r, "stderr").split() == ["sub-err", "raw2"]
    r = client.eval("import os; os.write(1, b'\\xff\\xfe')", context=ctx)
    assert r["stdout_encoding"] == "base64" and output_bytes(r, "stdout") == b"\xff\xfe"
    # A background writer between evals does not leak into the next reply's protocol.
    client.eval("import subprocess; subprocess.Popen(['sh', '-c', 'sleep 0.2; echo late'])",
                context=ctx)
    time.sleep(0.5)
    assert client.eval("1", context=ctx)["result"] == "1"
    client.eval_close(ctx)


BREACH = """
import os, socket, struct
for fd in range(200, 1024):
    try:
        s = socket.socket(fileno=os.dup(fd))
    except OSError:
        continue
    try:
        if s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 0:
            os.write(fd, {payload!r})
            break
    finally:
        s.close()
"""


def test_code_writing_to_the_protocol_socket_cannot_make_the_agent_buffer_much(client):
    """Frames from the interpreter are bounded before they are buffered or parsed (the
    driver's own never come near): an 11 MiB header or a 100-value result frame written by
    the code to its private socket ends the context with an error, not agent memory."""
    big_header = struct.pack(">I", 11 << 20)
    many = json.dumps({"result": None, "x": [0] * 100}).encode()
    for payload, want in ((big_header, "Message too long"),
                          (struct.pack(">I", len(many)) + many, "more than 64 JSON values")):
        ctx = fresh_context("breach")
        client.eval("x = 1", context=ctx)
        r = client.request("eval", code=BREACH.format(payload=payload), context=ctx)
        assert r["ok"] is False and want in r["error"], r
        r = client.eval("'x' in dir()", context=ctx)
        assert r["started"] is True and r["result"] == "False", r  # a fresh interpreter
        client.eval_close(ctx)


def test_closing_std_fds_does_not_break_the_protocol(client):
    ctx = fresh_context("close")
    client.eval("import os\nfor fd in (0, 1, 2):\n    os.close(fd)", context=ctx)
    r = client.eval("import sys; sys.stdout.close(); 'still'", context=ctx)
    assert r["result"] == "'still'"
    r = client.eval("print('back'); import os; os.write(2, b'err\\n')", context=ctx)
    assert out(r) == "back\n" and out(r, "stderr") == "err\n"
    client.eval_close(ctx)


def test_stdin_reads_eof(client):
    ctx = fresh_context("stdin")
    r = client.eval("import sys; repr(sys.stdin.read())", context=ctx)
    assert r["result"] == "\"''\""
    r = client.eval("input()", context=ctx)
    assert r["error"]["name"] == "EOFError"
    client.eval_close(ctx)


def test_fork_in_code_is_fine(client):
    ctx = fresh_context("fork")
    code = ("import os\n"
            "pid = os.fork()\n"
            "if pid == 0:\n"
            "    print('child')\n"
            "else:\n"
            "    os.waitpid(pid, 0)\n"
            "'parent' if pid else 'child-result'")
    r = client.eval(code, context=ctx)
    assert r["result"] == "'parent'" and out(r) == "child\n" and r["error"] is None
    r = client.eval("import multiprocessing as mp\n"
                    "ctx = mp.get_context('fork')\n"
                    "with ctx.Pool(2) as p:\n"
                    "    res = p.map(abs, [-1, -2, -3])\n"
                    "res", context=ctx)
    assert r["result"] == "[1, 2, 3]", r
    assert client.eval("7", context=ctx)["result"] == "7"
    client.eval_close(ctx)


def test_concurrent_evals_on_one_context_are_refused(agent, client):
    ctx = fresh_context("busy")
    client.eval("import time", context=ctx)
    results = {}

    def slow():
        with AgentClient.unix(agent) as c:
            results["slow"] = c.eval("time.sleep(1.5); 'slept'", context=ctx)
    t = threading.Thread(target=slow)
    t.start()
    time.sleep(0.5)
    r = client.request("eval", code="1", context=ctx)
    assert r["ok"] is False and f"context '{ctx}' is busy" in r["error"]
    other = fresh_context("free")
    assert client.eval("2", context=other)["result"] == "2"  # other contexts are not blocked
    t.join(10)
    assert results["slow"]["result"] == "'slept'"
    assert client.eval("3", context=ctx)["result"] == "3"
    for c in (ctx, other):
        client.eval_close(c)


# ---------------------------------------------------------------- lifecycle


def test_eval_close(client):
    ctx = fresh_context("close-op")
    pid = int(client.eval("import os; keep = 1; os.getpid()", context=ctx)["result"])
    assert client.eval_close(ctx)["closed"] is True
    assert wait_until(lambda: not alive(pid), 5)
    assert client.eval_close(ctx)["closed"] is False
    r = client.eval("'keep' in dir()", context=ctx)
    assert r["started"] is True and r["state_lost"] is False and r["result"] == "False"
    client.eval_close(ctx)


def test_context_count_is_bounded(client):
    names = [fresh_context(f"n{i}") for i in range(40)]
    started = []
    err = None
    for n in names:
        r = client.request("eval", code="1", context=n)
        if not r["ok"]:
            err = r["error"]
            break
        started.append(n)
    assert err and "too many eval contexts" in err, err
    assert len(started) <= 16
    for n in started:
        client.eval_close(n)
    assert client.eval("1", context=names[-1])["result"] == "1"  # room again
    client.eval_close(names[-1])


def test_missing_python_is_a_clear_error(sockdir):
    path = os.path.join(sockdir, "nopy.sock")
    log_path = os.path.join(sockdir, "nopy.log")
    proc, log = run_agent(path, log_path, env=dict(ENV, PATH="/nonexistent"))
    try:
        with AgentClient.unix(path) as c:
            r = c.request("eval", code="1")
            assert r["ok"] is False
            assert "python3 is not installed in the guest" in r["error"], r
    finally:
        finish_agent(proc, log, log_path)


def test_interpreters_end_with_the_agent(sockdir):
    path = os.path.join(sockdir, "life.sock")
    log_path = os.path.join(sockdir, "life.log")
    proc, log = run_agent(path, log_path)
    with AgentClient.unix(path) as c:
        idle = int(c.eval("import os; os.getpid()", context="idle")["result"])
        busy = int(c.eval("import os; os.getpid()", context="busy")["result"])
    # One interpreter stays busy with an eval whose client is still connected.
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    s.sendall(encode_frame({"op": "eval", "code": "import time\nwhile True: time.sleep(1)",
                            "context": "busy"}))
    time.sleep(0.3)
    run_dir = f"/tmp/forkvm-agent.{proc.pid}"  # the default, made on the first eval
    assert os.path.exists(os.path.join(run_dir, "py-idle.sock"))
    finish_agent(proc, log, log_path)
    s.close()
    assert wait_until(lambda: not alive(idle) and not alive(busy), 10)
    assert not os.path.exists(run_dir)


# ---------------------------------------------------------------- trees


def make_tree(root):
    os.makedirs(os.path.join(root, "sub", "deeper"))
    os.makedirs(os.path.join(root, "empty"))
    with open(os.path.join(root, "a.txt"), "w") as f:
        f.write("alpha\n")
    with open(os.path.join(root, "sub", "bin"), "wb") as f:
        f.write(bytes(range(256)) * 300)
    with open(os.path.join(root, "sub", "deeper", "x.sh"), "w") as f:
        f.write("#!/bin/sh\necho x\n")
    os.chmod(os.path.join(root, "sub", "deeper", "x.sh"), 0o750)
    os.symlink("../a.txt", os.path.join(root, "sub", "link"))
    long_dir = os.path.join(root, "d" * 90, "e" * 90)
    os.makedirs(long_dir)
    with open(os.path.join(long_dir, "f" * 120), "w") as f:
        f.write("long names\n")


def snapshot(root):
    """{relative path: (kind, mode, content)} of a tree, for comparisons."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, root)
            st = os.lstat(p)
            if os.path.islink(p):
                out[rel] = ("link", None, os.readlink(p))
            elif os.path.isdir(p):
                out[rel] = ("dir", None, None)
            else:
                out[rel] = ("file", st.st_mode & 0o777, open(p, "rb").read())
    return out


def tar_of(root, fmt=tarfile.PAX_FORMAT):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as t:
        for name in sorted(os.listdir(root)):
            t.add(os.path.join(root, name), arcname=name)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT])
def test_put_and_get_a_tree_round_trip(client, sockdir, fmt):
    src = tempfile.mkdtemp(dir=sockdir)
    make_tree(src)
    if fmt == tarfile.USTAR_FORMAT:  # ustar cannot hold the 300-byte name
        shutil.rmtree(os.path.join(src, "d" * 90))
    dst = os.path.join(sockdir, f"put-{fmt}", "made", "here")
    r = client.put_tree(dst, tar_of(src, fmt))
    assert r["entries"] == len(snapshot(src))
    assert snapshot(dst) == snapshot(src)
    data, r = client.get_tree(dst)
    assert r["type"] == "directory" and r["bytes"] == len(data) and r["skipped"] == 0
    back = tempfile.mkdtemp(dir=sockdir)
    with tarfile.open(fileobj=io.BytesIO(data)) as t:
        t.extractall(back)
    assert snapshot(back) == snapshot(src)
    # One file comes back as a one-member archive named by its basename.
    data, r = client.get_tree(os.path.join(dst, "a.txt"))
    assert r["type"] == "file"
    with tarfile.open(fileobj=io.BytesIO(data)) as t:
        assert t.getnames() == ["a.txt"]
        assert t.extractfile("a.txt").read() == b"alpha\n"


def hostile_tar(*members):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, kind, payload in members:
            info = tarfile.TarInfo(name)
            if kind == "link":
                info.type, info.linkname = tarfile.SYMTYPE, payload
                t.addfile(info)
            elif kind == "hard":
                info.type, info.linkname = tarfile.LNKTYPE, payload
                t.addfile(info)
            else:
                info.size = len(payload)
                t.addfile(info, io.BytesIO(payload))
    return buf.getvalue()


@pytest.mark.parametrize("members,msg", [
    ([("../escape", "file", b"x")], "'..' component"),
    ([("ok/../../escape", "file", b"x")], "'..' component"),
    ([("/tmp/escape-abs", "file", b"x")], "absolute path"),
    ([("up", "link", ".."), ("up/escape", "file", b"x")], "not followed"),
    ([("h", "hard", "/etc/passwd")], "hard links are not supported"),
])
def test_put_tree_refuses_archives_that_leave_the_target(client, sockdir, members, msg):
    target = tempfile.mkdtemp(dir=sockdir)
    r = client.request("put_tree", path=target, data=b64(hostile_tar(*members)))
    assert r["ok"] is False and msg in r["error"], r
    assert not os.path.exists(os.path.join(os.path.dirname(target), "escape"))
    assert not os.path.exists("/tmp/escape-abs")


def test_tree_limits(client, sockdir):
    # More entries than allowed.
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as t:
        for i in range(16385):
            t.addfile(tarfile.TarInfo(f"f{i}"), io.BytesIO(b""))
    target = tempfile.mkdtemp(dir=sockdir)
    r = client.request("put_tree", path=target, data=b64(buf.getvalue()))
    assert r["ok"] is False and "more than 16384 entries" in r["error"], r["error"]
    assert os.listdir(target) == []  # checked before anything was written
    # More bytes than one archive may hold, both ways.
    big = tempfile.mkdtemp(dir=sockdir)
    with open(os.path.join(big, "blob"), "wb") as f:
        f.write(os.urandom(12 * MIB))
    r = client.request("get_tree", path=big)
    assert r["ok"] is False and "exceeds the limit" in r["error"], r["error"]
    r = client.request("get_tree", path=big, max_bytes=1000)
    assert r["ok"] is False and "exceeds the limit of 1000" in r["error"]
    r = client.request("get_tree", path=os.path.join(big, "missing"))
    assert r["ok"] is False and "No such file" in r["error"]


# ---------------------------------------------------------------- the CLI


@pytest.fixture
def proxy(agent, sockdir):
    p = VsockProxy(os.path.join(sockdir, f"cli-{time.monotonic_ns()}.vsock"), agent)
    yield p
    p.close()


def forkvm(*args, stdin=None):
    return subprocess.run([FORKVM, *args], capture_output=True, text=True, timeout=60,
                          input=stdin)


@pytest.mark.skipif(not os.path.exists(FORKVM), reason="forkvm not built")
def test_cli_eval(proxy):
    ctx = fresh_context("cli")
    base = ["eval", "vm", "--vsock", proxy.path, "--context", ctx]
    r = forkvm(*base, "x = 41")
    assert r.returncode == 0 and r.stdout == "" and r.stderr == "", r
    r = forkvm(*base, "print(x + 1)")
    assert (r.returncode, r.stdout) == (0, "42\n"), r
    r = forkvm(*base, "-", stdin="import sys\nprint('out'); print('err', file=sys.stderr)\nx\n")
    assert (r.returncode, r.stdout, r.stderr) == (0, "out\n41\n", "err\n"), r
    r = forkvm(*base, "--", "-x")
    assert r.returncode == 0 and r.stdout == "-41\n", r
    r = forkvm(*base, "1/0")
    assert r.returncode == 1 and "Traceback" in r.stderr and "ZeroDivisionError" in r.stderr
    r = forkvm(*base, "--timeout", "200", "while True: pass")
    assert r.returncode == 124 and "TimeoutError" in r.stderr, r
    r = forkvm(*base, "--lang", "ruby", "1")
    assert r.returncode == 1 and "unsupported lang 'ruby'" in r.stderr
    r = forkvm(*base, "--close")
    assert r.returncode == 0 and "closed" in r.stdout
    r = forkvm("eval", "vm", "--vsock", proxy.path)
    assert r.returncode == 2 and "usage" in r.stderr


@pytest.mark.skipif(not os.path.exists(FORKVM), reason="forkvm not built")
def test_cli_cp_files_and_directories(proxy, sockdir):
    src = tempfile.mkdtemp(dir=sockdir)
    make_tree(src)
    guest = os.path.join(sockdir, "guest-side", "tree")
    r = forkvm("cp", "--vsock", proxy.path, src, f"vm:{guest}")
    assert r.returncode == 0, r
    assert snapshot(guest) == snapshot(src)
    back = os.path.join(sockdir, "host-side", "tree")
    r = forkvm("cp", "--vsock", proxy.path, f"vm:{guest}", back)
    assert r.returncode == 0, r
    assert snapshot(back) == snapshot(src)
    # Files: to a name, into a directory (trailing '/' or existing), and back.
    one = os.path.join(src, "a.txt")
    assert forkvm("cp", "--vsock", proxy.path, one, f"vm:{guest}/copy.txt").returncode == 0
    assert open(os.path.join(guest, "copy.txt")).read() == "alpha\n"
    assert forkvm("cp", "--vsock", proxy.path, one, f"vm:{guest}/newdir/").returncode == 0
    assert open(os.path.join(guest, "newdir", "a.txt")).read() == "alpha\n"
    assert forkvm("cp", "--vsock", proxy.path, one, f"vm:{guest}/sub").returncode == 0
    assert open(os.path.join(guest, "sub", "a.txt")).read() == "alpha\n"
    local = os.path.join(sockdir, "fetched.sh")
    r = forkvm("cp", "--vsock", proxy.path, f"vm:{guest}/sub/deeper/x.sh", local)
    assert r.returncode == 0, r
    assert open(local).read() == "#!/bin/sh\necho x\n" and os.stat(local).st_mode & 0o777 == 0o750
    r = forkvm("cp", "--vsock", proxy.path, f"vm:{guest}/sub/deeper/x.sh", sockdir)
    assert r.returncode == 0 and os.path.exists(os.path.join(sockdir, "x.sh")), r
    r = forkvm("cp", "--vsock", proxy.path, f"vm:{guest}/nope", local)
    assert r.returncode == 1 and "No such file" in r.stderr
    r = forkvm("cp", "--vsock", proxy.path, "a", "b")
    assert r.returncode == 2 and "usage" in r.stderr
