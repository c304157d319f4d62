"""The CLI and the daemon (docs/DAEMON.md, "The CLI and the daemon"), probe guest on this host's
KVM: a daemon sandbox's status, pause, resume, branch, snapshot and stop go through the daemon,
whose records (read back through the SDK) follow each one; `forkvm ls` lists the daemon's
sandboxes and the run directory's VMs; the daemon's errors are quoted; options the daemon has
no counterpart for are refused; a remote daemon over TCP with a token file; and with the daemon
stopped (or none at all) the direct path works as before. eval and cp, which need a guest agent,
run against a stand-in daemon that checks the requests the CLI sends."""
import json
import os
import socket
import subprocess
import tempfile
import time

import pytest

from daemonlib import Daemon, pid_alive, sdk
from forkvm_vm import FORKVM, call

pytestmark = pytest.mark.kvm


@pytest.fixture
def run_dir():
    with tempfile.TemporaryDirectory(prefix="fvc-", dir="/tmp") as d:
        yield d
        for name in os.listdir(d):  # a VM a failed test left behind
            if name.endswith(".sock"):
                try:
                    call(os.path.join(d, name), {"cmd": "stop"}, timeout=5)
                except OSError:
                    pass


@pytest.fixture
def daemon():
    d = Daemon().start()
    yield d
    d.cleanup()


def cli(*args, env=None, timeout=120):
    return subprocess.run([FORKVM, *args], capture_output=True, text=True, timeout=timeout,
                          env=env)


def env_for(sock, run_dir, **extra):
    e = dict(os.environ, FORKVM_DAEMON_SOCKET=sock, FORKVM_RUN_DIR=run_dir, **extra)
    for k in ("FORKVM_DAEMON_URL", "FORKVM_DAEMON_TOKEN", "FORKVM_DAEMON_TOKEN_FILE"):
        if k not in extra:
            e.pop(k, None)
    return e


def ok(r):
    assert r.returncode == 0, f"rc {r.returncode}: {r.stdout} {r.stderr}"
    return r.stdout


def local_vm(env, name):
    out = ok(cli("run", "--detach", "--name", name, "--mem", "32M", "--console", "/dev/null",
                 env=env))
    return int(out.split()[0])


def test_commands_on_a_daemon_sandbox_go_through_the_daemon(daemon, run_dir):
    env = env_for(daemon.sock, run_dir)
    c = daemon.client()
    sb = sdk.Sandbox.create(mem_mib=64, client=c)

    status = json.loads(ok(cli("status", sb.id, env=env)))
    assert status["id"] == sb.id and status["state"] == "running"

    ok(cli("pause", sb.id, env=env))
    assert sb.state == "paused"
    assert call(sb.info["socket"], {"cmd": "status"})["state"] == "paused"
    ok(cli("resume", sb.id, env=env))
    assert sb.state == "running"
    assert call(sb.info["socket"], {"cmd": "status"})["state"] == "running"

    # branch prints its children as the direct path does: {"ok", "children": [{name, ...}]}
    out = json.loads(ok(cli("branch", sb.id, "--count", "2", env=env)))
    assert out["ok"] is True and len(out["children"]) == 2
    kids = sorted(k["name"] for k in out["children"])
    assert sorted(s.id for s in sdk.Sandbox.list(parent=sb.id, client=c)) == kids
    for k in out["children"]:
        assert pid_alive(k["pid"]) and call(k["socket"], {"cmd": "ping", "nonce": 3})["ok"]

    snap = json.loads(ok(cli("snapshot", "create", sb.id, env=env)))
    assert snap["ok"] is True and snap["sandbox"] == sb.id
    rec = c.request("GET", f"/v1/snapshots/{snap['id']}")
    assert rec["dir"] == snap["dir"] and os.path.isdir(snap["dir"])

    # stop: the daemon ends the VMM and drops the record
    kid = out["children"][0]
    assert json.loads(ok(cli("stop", kid["name"], env=env))) == {"id": kid["name"],
                                                                "deleted": True}
    assert not pid_alive(kid["pid"])
    with pytest.raises(sdk.NotFound):
        c.request("GET", f"/v1/sandboxes/{kid['name']}")
    ok(cli("stop", sb.id, env=env))
    assert not pid_alive(sb.info["pid"])
    assert [s.id for s in sdk.Sandbox.list(client=c)] == [out["children"][1]["name"]]
    # every one of those went through the API (the audit log names the operations)
    ops = [json.loads(l)["op"] for l in open(os.path.join(daemon.state, "audit.log"))]
    for op in ("get", "pause", "resume", "branch", "snapshot", "delete"):
        assert op in ops, ops


def test_ls_lists_daemon_sandboxes_and_local_vms(daemon, run_dir):
    env = env_for(daemon.sock, run_dir)
    sb = sdk.Sandbox.create(mem_mib=64, client=daemon.client())
    kid = sb.branch(count=1)[0]
    pid = local_vm(env, "box")
    try:
        rows = json.loads(ok(cli("ls", "--json", env=env)))
        by = {r["name"]: r for r in rows}
        assert set(by) == {sb.id, kid.id, "box"}, rows
        assert by[sb.id]["via"] == "daemon" and by[sb.id]["state"] == "running"
        assert by[sb.id]["guest"] == "probe" and by[kid.id]["parent"] == sb.id
        assert by["box"]["via"] == "local" and by["box"]["state"] == "running"
        assert by["box"]["pid"] == pid and by["box"]["socket"] == os.path.join(run_dir, "box.sock")
        text = ok(cli("ls", env=env)).splitlines()
        assert text[0].split() == ["NAME", "VIA", "STATE", "GUEST", "PARENT", "AGE"]
        cols = {l.split()[0]: l.split() for l in text[1:]}
        assert cols[sb.id][1:5] == ["daemon", "running", "probe", "-"]
        assert cols[kid.id][4] == sb.id
        assert cols["box"][1:3] == ["local", "running"]
        # a socket nothing answers on is listed as such
        s = socket.socket(socket.AF_UNIX)
        s.bind(os.path.join(run_dir, "stale.sock"))
        s.close()
        rows = json.loads(ok(cli("ls", "--json", env=env)))
        assert {r["name"]: r["state"] for r in rows}["stale"] == "unreachable"
    finally:
        ok(cli("stop", "box", env=env))


def test_daemon_errors_are_quoted(daemon, run_dir):
    env = env_for(daemon.sock, run_dir)
    for args in (["status", "sb-000000000000"], ["stop", "sb-000000000000"],
                 ["branch", "sb-000000000000"], ["snapshot", "create", "sb-000000000000"]):
        r = cli(*args, env=env)
        assert r.returncode == 1, r
        assert "404 not_found: no sandbox sb-000000000000" in r.stderr, r.stderr
        assert daemon.sock in r.stderr
    sb = sdk.Sandbox.create(mem_mib=64, client=daemon.client())
    # the probe guest has no agent: the daemon's 409 is the message
    r = cli("eval", sb.id, "1 + 1", env=env)
    assert r.returncode == 1 and "409 no_agent" in r.stderr and "has no agent" in r.stderr
    with tempfile.NamedTemporaryFile() as f:
        r = cli("cp", f.name, f"{sb.id}:/root/x", env=env)
    assert r.returncode == 1 and "409 no_agent" in r.stderr, r.stderr
    # a count above the daemon's bound: its 400, quoted
    r = cli("branch", sb.id, "--count", "101", env=env)
    assert r.returncode == 1 and "400 bad_request" in r.stderr, r.stderr
    sb.pause()
    ok(cli("stop", sb.id, env=env))
    r = cli("resume", sb.id, env=env)
    assert r.returncode == 1 and "404 not_found" in r.stderr


def test_options_the_daemon_lacks_are_refused(daemon, run_dir):
    env = env_for(daemon.sock, run_dir)
    c = daemon.client()
    sb = sdk.Sandbox.create(mem_mib=64, client=c)
    for args, option in (
        (["branch", sb.id, "--dir", "/tmp/x", "--strategy", "full"], "--dir"),
        (["branch", sb.id, "--name", "kid"], "--name"),
        (["branch", sb.id, "--paused"], "--paused"),
        (["branch", sb.id, "--timeout", "5000"], "--timeout"),
        (["snapshot", "create", sb.id, "/tmp/x"], "DIR"),
        (["snapshot", "create", sb.id, "/tmp/x", "--force"], "--force"),
        (["eval", sb.id, "--close"], "--close"),
        (["eval", sb.id, "--port", "99", "1"], "--port"),
        (["cp", "--vsock", "/tmp/v", "/etc/hostname", f"{sb.id}:/root/h"], "--vsock"),
        (["cp", "/etc", f"{sb.id}:/root/etc"], "copying a directory"),
    ):
        r = cli(*args, env=env)
        assert r.returncode == 2, (args, r)
        assert f"{option} is not available for daemon sandboxes" in r.stderr, (args, r.stderr)
    # nothing happened behind the refusals
    assert [s.id for s in sdk.Sandbox.list(client=c)] == [sb.id]
    assert c.request("GET", "/v1/snapshots") == []
    assert not os.path.exists("/tmp/x/meta.json")


def test_a_local_vm_named_like_an_id_stays_local(daemon, run_dir):
    """An sb- name the daemon does not know, with a VM of that name in the run directory."""
    env = env_for(daemon.sock, run_dir)
    pid = local_vm(env, "sb-0123456789ab")
    status = json.loads(ok(cli("status", "sb-0123456789ab", env=env)))
    assert status["ok"] is True and status["pid"] == pid
    ok(cli("stop", "sb-0123456789ab", env=env))
    assert not pid_alive(pid)


def test_without_a_daemon_the_direct_path_works(run_dir):
    d = Daemon().start()
    try:
        sb = sdk.Sandbox.create(mem_mib=64, client=d.client())
        d.stop()
        env = env_for(d.sock, run_dir)
        # the daemon's sandbox keeps running; with no daemon its id is just a name
        r = cli("status", sb.id, env=env)
        assert r.returncode == 1 and "cannot reach VM" in r.stderr, r.stderr
        assert json.loads(ok(cli("status", sb.info["socket"], env=env)))["state"] == "running"
        for env in (env_for(d.sock, run_dir), env_for("/nonexistent/api.sock", run_dir)):
            pid = local_vm(env, "box")
            assert json.loads(ok(cli("status", "box", env=env)))["pid"] == pid
            ok(cli("pause", "box", env=env))
            assert json.loads(ok(cli("status", "box", env=env)))["state"] == "paused"
            ok(cli("resume", "box", env=env))
            rows = json.loads(ok(cli("ls", "--json", env=env)))
            assert [(r["name"], r["via"], r["state"]) for r in rows] == [("box", "local",
                                                                          "running")]
            out = json.loads(ok(cli("branch", "box", "--count", "1", env=env)))
            assert out["children"][0]["name"] == "box-b-0"
            ok(cli("stop", "box-b-0", env=env))
            ok(cli("stop", "box", env=env))
            assert not pid_alive(pid)
        # --no-daemon never asks one, even a running one
        d.start()
        env = env_for(d.sock, run_dir)
        r = cli("--no-daemon", "status", sb.id, env=env)
        assert r.returncode == 1 and "cannot reach VM" in r.stderr
        assert json.loads(ok(cli("status", sb.id, env=env)))["id"] == sb.id
    finally:
        d.cleanup()


def test_no_daemon_socket_costs_nothing(run_dir):
    """No socket file: the CLI neither loads libcurl nor connects anywhere for the daemon."""
    env = env_for("/nonexistent/api.sock", run_dir)
    for args in (["ls"], ["status", "sb-0123456789ab"]):
        r = subprocess.run(["strace", "-f", "-e", "trace=openat,connect", FORKVM, *args],
                           capture_output=True, text=True, env=env, timeout=60)
        assert "libcurl" not in r.stderr and "api.sock" not in r.stderr, r.stderr
    assert "cannot reach VM" in r.stderr


def test_a_remote_daemon_with_a_token_file(tmp_path, run_dir):
    token = "cli-token-0123456789abcdef"
    tf = tmp_path / "token"
    tf.write_text(token + "\n")
    tf.chmod(0o600)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    d = Daemon(extra=["--listen", f"127.0.0.1:{port}", "--token-file", str(tf)]).start()
    try:
        sb = sdk.Sandbox.create(mem_mib=64, client=d.client())
        env = env_for("/nonexistent/api.sock", run_dir, FORKVM_DAEMON_TOKEN_FILE=str(tf))
        url = f"http://127.0.0.1:{port}"
        ok(cli("--daemon", url, "pause", sb.id, env=env))
        assert sb.state == "paused"
        env_url = env_for("/nonexistent/api.sock", run_dir, FORKVM_DAEMON_URL=url,
                          FORKVM_DAEMON_TOKEN=token)
        ok(cli("resume", sb.id, env=env_url))
        assert sb.state == "running"
        rows = json.loads(ok(cli(f"--daemon={url}", "ls", "--json", env=env)))
        assert [r["name"] for r in rows] == [sb.id]
        callers = {json.loads(l)["caller"] for l in open(os.path.join(d.state, "audit.log"))
                   if json.loads(l)["op"] in ("pause", "resume")}
        assert callers == {"tcp:127.0.0.1"}
        # a wrong token: the daemon does not answer healthz, so the id is just a name
        bad = tmp_path / "bad"
        bad.write_text("wrong-token-0123456789")
        r = cli("--daemon", url, "status", sb.id,
                env=env_for("/nonexistent/api.sock", run_dir, FORKVM_DAEMON_TOKEN_FILE=str(bad)))
        assert r.returncode == 1 and "401 unauthorized" in r.stderr, r.stderr
    finally:
        d.cleanup()


def test_usage(run_dir):
    env = env_for("/nonexistent/api.sock", run_dir)
    r = cli("ls", "--help", env=env)
    assert r.returncode == 0 and "forkvm ls [--json]" in r.stdout
    assert cli("ls", "extra", env=env).returncode == 2
    assert cli("--daemon", env=env).returncode == 2
    r = cli("--help", env=env)
    assert r.returncode == 0 and "--daemon SOCKET|URL" in r.stdout and "ls" in r.stdout
    t0 = time.monotonic()
    assert cli("--daemon", "/nonexistent/api.sock", "ls", env=env).returncode == 0
    assert time.monotonic() - t0 < 5


class FakeDaemon:
    """A stand-in for forkvmd on a Unix socket for the agent routes, which the probe guest
    cannot serve (a Linux guest's are in tests/linux/test_service.py): it knows one Linux
    sandbox, records each request, and answers eval and files as the daemon does."""

    ID = "sb-0000000000aa"

    def __init__(self, path):
        import base64
        import http.server
        import socketserver
        import threading
        import urllib.parse

        self.requests, self.files = [], {}
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def reply(self, status, body, ctype="application/json"):
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def handle_any(self):
                u = urllib.parse.urlsplit(self.path)
                q = dict(urllib.parse.parse_qsl(u.query))
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                fake.requests.append((self.command, u.path, q, body))
                sb = f"/v1/sandboxes/{fake.ID}"
                if u.path == "/v1/healthz":
                    return self.reply(200, {"ok": True})
                if u.path == sb and self.command == "GET":
                    return self.reply(200, {"id": fake.ID, "state": "running", "guest": "linux",
                                            "socket": "/nonexistent/x.sock"})
                if u.path == sb + "/eval":
                    code = json.loads(body)["code"]
                    if code == "1/0":
                        return self.reply(200, {"stdout": "", "stderr": "", "error": {
                            "name": "ZeroDivisionError", "value": "division by zero",
                            "traceback": "Traceback (most recent call last):\n"}})
                    if code == "sleep":
                        return self.reply(200, {"stdout": "", "stderr": "", "timed_out": True,
                                                "error": {"name": "KeyboardInterrupt",
                                                          "value": ""}})
                    return self.reply(200, {"result": "42", "error": None,
                                            "stdout": base64.b64encode(b"out\n").decode(),
                                            "stderr": base64.b64encode(b"err\n").decode()})
                if u.path == sb + "/files" and self.command == "PUT":
                    fake.files[q["path"]] = body
                    return self.reply(200, {"bytes": len(body)})
                if u.path == sb + "/files" and q.get("path") in fake.files:
                    return self.reply(200, fake.files[q["path"]], "application/octet-stream")
                return self.reply(404, {"error": {"code": "not_found",
                                                  "message": f"no {u.path} {q}"}})

            do_GET = do_PUT = do_POST = do_DELETE = handle_any

        class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
            daemon_threads = True

            def get_request(self):
                conn, _ = super().get_request()
                return conn, ("unix", 0)

        self.server = Server(path, Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake(tmp_path):
    f = FakeDaemon(str(tmp_path / "api.sock"))
    f.sock = str(tmp_path / "api.sock")
    yield f
    f.close()


def test_eval_and_cp_through_the_daemon(fake, run_dir, tmp_path):
    env = env_for(fake.sock, run_dir)
    r = cli("eval", fake.ID, "--context", "c1", "--lang", "python", "--timeout", "5000",
            "print('out'); 42", env=env)
    assert r.returncode == 0 and r.stdout == "out\n42\n" and r.stderr == "err\n", r
    body = json.loads(fake.requests[-1][3])
    assert body == {"code": "print('out'); 42", "context": "c1", "lang": "python",
                    "timeout_ms": 5000, "output_encoding": "base64"}
    r = subprocess.run([FORKVM, "eval", fake.ID, "-"], input="x = 1\n", capture_output=True,
                       text=True, env=env, timeout=60)
    assert r.returncode == 0 and json.loads(fake.requests[-1][3])["code"] == "x = 1\n"
    r = cli("eval", fake.ID, "1/0", env=env)
    assert r.returncode == 1 and "ZeroDivisionError: division by zero" in r.stderr
    assert cli("eval", fake.ID, "sleep", env=env).returncode == 124

    data = bytes(range(256)) * 100
    (tmp_path / "in.bin").write_bytes(data)
    ok(cli("cp", str(tmp_path / "in.bin"), f"{fake.ID}:/root/a b/in.bin", env=env))
    assert fake.files["/root/a b/in.bin"] == data
    ok(cli("cp", str(tmp_path / "in.bin"), f"{fake.ID}:/srv/", env=env))
    assert fake.files["/srv/in.bin"] == data
    ok(cli("cp", f"{fake.ID}:/root/a b/in.bin", str(tmp_path / "out.bin"), env=env))
    assert (tmp_path / "out.bin").read_bytes() == data
    (tmp_path / "d").mkdir()
    ok(cli("cp", f"{fake.ID}:/srv/in.bin", str(tmp_path / "d"), env=env))
    assert (tmp_path / "d" / "in.bin").read_bytes() == data
    r = cli("cp", f"{fake.ID}:/nope", str(tmp_path / "x"), env=env)
    assert r.returncode == 1 and "404 not_found" in r.stderr and not (tmp_path / "x").exists()
    big = tmp_path / "big"
    with open(big, "wb") as f:
        f.truncate((8 << 20) + 1)
    r = cli("cp", str(big), f"{fake.ID}:/root/big", env=env)
    assert r.returncode == 1 and "larger than the daemon takes" in r.stderr
    # every request was a sandbox lookup, an operation or healthz; none reached the VM
    assert {p for _, p, _, _ in fake.requests} <= {
        "/v1/healthz", f"/v1/sandboxes/{fake.ID}", f"/v1/sandboxes/{fake.ID}/eval",
        f"/v1/sandboxes/{fake.ID}/files"}


def test_exec_eval_and_cp_with_the_real_agent(run_dir, tmp_path):
    """exec, eval and cp through the real daemon to the real agent (a sandbox whose vsock
    socket relays to an agent on this host, daemonlib.agent_backed_sandbox); the agent's files
    are this host's, so under tmp_path."""
    import daemonlib
    with daemonlib.agent_backed_sandbox() as (d, sb):
        env = env_for(d.sock, run_dir)
        r = subprocess.run([FORKVM, "exec", sb.id, "--env", "A=b", "--cwd", str(tmp_path), "--",
                            "sh", "-c", 'echo "$A $(pwd)"; echo oops >&2; printf "\\377"; exit 3'],
                           capture_output=True, env=env, timeout=120)
        assert (r.returncode, r.stderr) == (3, b"oops\n"), r.stderr
        assert r.stdout == f"b {tmp_path}\n".encode() + b"\xff", r.stdout
        p = subprocess.run([FORKVM, "exec", sb.id, "--stdin", "--", "sh", "-c",
                            f"cat; head -c {3 << 20} /dev/zero"], input=b"in\x00put",
                           capture_output=True, env=env, timeout=120)
        assert p.returncode == 0 and p.stdout == b"in\x00put" + bytes(3 << 20), p.stderr
        r = cli("exec", sb.id, "--timeout", "300", "--", "sleep", "30", env=env)
        assert r.returncode == 124 and "timed out" in r.stderr, r.stderr
        r = cli("exec", sb.id, "--", "/no/such/program", env=env)
        assert r.returncode == 1 and "guest_error" in r.stderr and "/no/such/program" in \
            r.stderr, r.stderr
        r = cli("exec", sb.id, "--port", "53", "--", "true", env=env)
        assert r.returncode == 2 and "--port is not available for daemon sandboxes" in \
            r.stderr, r.stderr
        assert ok(cli("eval", sb.id, "x = 41", env=env)) == ""
        assert ok(cli("eval", sb.id, "print('hi'); x + 1", env=env)) == "hi\n42\n"
        r = cli("eval", sb.id, "1/0", env=env)
        assert r.returncode == 1 and "ZeroDivisionError" in r.stderr
        data = os.urandom(100000)
        (tmp_path / "in.bin").write_bytes(data)
        ok(cli("cp", str(tmp_path / "in.bin"), f"{sb.id}:{tmp_path}/guest.bin", env=env))
        assert (tmp_path / "guest.bin").read_bytes() == data
        ok(cli("cp", f"{sb.id}:{tmp_path}/guest.bin", str(tmp_path / "back.bin"), env=env))
        assert (tmp_path / "back.bin").read_bytes() == data
        r = cli("cp", f"{sb.id}:{tmp_path}/missing", str(tmp_path / "x"), env=env)
        assert r.returncode == 1 and "422 guest_error" in r.stderr, r.stderr
