"""forkvmd (docs/DAEMON.md) on this host's KVM with the probe guest: every route's happy path
and its bad inputs, auth on TCP, 100 concurrent creations, a stalled client, kill -9 of the
daemon mid-branch and the reconciler, TTLs, snapshots and their users, and the Python SDK's
scenario. The guest-agent routes (exec, files) against Linux guests: tests/linux/test_service.py."""
import concurrent.futures
import json
import os
import signal
import socket
import subprocess
import time

import pytest

from daemonlib import Daemon, pid_alive, sdk
from forkvm_vm import FORKVM, call


@pytest.fixture
def daemon():
    d = Daemon().start()
    yield d
    d.cleanup()


def raw_http(sock_path, data, timeout=10):
    """Send bytes on the API socket and return everything the daemon answers."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(sock_path)
    try:
        s.sendall(data)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the daemon answered (413) and closed before the whole body was sent
    out = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
    except (socket.timeout, ConnectionResetError):
        pass
    s.close()
    return out


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sandbox_lifecycle_and_audit(daemon):
    assert daemon.req("GET", "/v1/healthz") == {"ok": True}
    sb = daemon.req("POST", "/v1/sandboxes", body={"mem_mib": 64, "vcpus": 2,
                                                    "metadata": {"team": "a"}})
    assert sb["state"] == "running" and sb["guest"] == "probe" and sb["vcpus"] == 2
    assert sb["metadata"] == {"team": "a"} and pid_alive(sb["pid"])
    # the VM is real: its control socket answers a probe round trip
    assert call(sb["socket"], {"cmd": "ping", "nonce": 7})["ok"]
    assert daemon.req("GET", f"/v1/sandboxes/{sb['id']}")["id"] == sb["id"]
    assert [s["id"] for s in daemon.req("GET", "/v1/sandboxes")] == [sb["id"]]
    assert daemon.req("POST", f"/v1/sandboxes/{sb['id']}/pause")["state"] == "paused"
    assert call(sb["socket"], {"cmd": "status"})["state"] == "paused"
    assert daemon.req("GET", "/v1/sandboxes", query={"state": "paused"})[0]["id"] == sb["id"]
    assert daemon.req("GET", "/v1/sandboxes", query={"state": "running"}) == []
    assert len(daemon.req("GET", "/v1/sandboxes", query={"metadata.team": "a"})) == 1
    assert daemon.req("GET", "/v1/sandboxes", query={"metadata.team": "b"}) == []
    assert daemon.req("POST", f"/v1/sandboxes/{sb['id']}/resume")["state"] == "running"
    assert daemon.req("DELETE", f"/v1/sandboxes/{sb['id']}") == {"id": sb["id"], "deleted": True}
    assert not pid_alive(sb["pid"]) and not os.path.exists(sb["socket"])
    with pytest.raises(sdk.NotFound):
        daemon.req("GET", f"/v1/sandboxes/{sb['id']}")
    lines = [json.loads(l) for l in open(os.path.join(daemon.state, "audit.log"))]
    ops = [(l["op"], l.get("target"), l["result"]) for l in lines]
    assert ("create", None, 201) in ops and ("delete", sb["id"], 200) in ops
    assert ("get", sb["id"], 404) in ops and all(l["caller"] == "unix" for l in lines)
    metrics = daemon.client().metrics()
    assert 'forkvm_api_requests_total{op="create"} 1' in metrics
    assert 'forkvm_api_request_seconds_count{op="delete"} 1' in metrics
    assert 'forkvm_sandboxes{state="running"} 0' in metrics


@pytest.mark.parametrize("body, code", [
    ({"bogus": 1}, "unknown_field"),
    ({"mem_mib": "64"}, "bad_request"),
    ({"mem_mib": 1}, "bad_request"),
    ({"vcpus": 99}, "bad_request"),
    ({"guest": "windows"}, "bad_request"),
    ({"metadata": [1]}, "bad_request"),
    ({"metadata": {"k": "v" * 5000}}, "bad_request"),
    ({"paused": "yes"}, "bad_request"),
    ([1, 2], "bad_request"),
])
def test_bad_create_bodies_are_400(daemon, body, code):
    with pytest.raises(sdk.BadRequest) as e:
        daemon.req("POST", "/v1/sandboxes", body=body)
    assert e.value.code == code, e.value
    assert daemon.req("GET", "/v1/sandboxes") == []


def test_bad_requests_get_json_errors_and_the_daemon_lives(daemon):
    out = raw_http(daemon.sock, b"POST /v1/sandboxes HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                                b"Connection: close\r\n\r\n{bad]")
    assert b" 400 " in out.split(b"\r\n")[0] and b'"bad_json"' in out, out
    big = b"x" * (2 << 20)
    out = raw_http(daemon.sock, b"POST /v1/sandboxes HTTP/1.1\r\nHost: x\r\nContent-Length: "
                   + str(len(big)).encode() + b"\r\nConnection: close\r\n\r\n" + big)
    assert b" 413 " in out.split(b"\r\n")[0] and b'"too_large"' in out, out[:300]
    # chunked: no length up front, the bound holds all the same
    chunk = b"%x\r\n" % (1 << 20) + b"y" * (1 << 20) + b"\r\n"
    out = raw_http(daemon.sock, b"POST /v1/sandboxes HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: "
                   b"chunked\r\nConnection: close\r\n\r\n" + chunk * 2 + b"0\r\n\r\n")
    assert b" 413 " in out.split(b"\r\n")[0], out[:300]
    for method, path, status, code in [("GET", "/v1/nothing", 404, "route_not_found"),
                                       ("PUT", "/v1/sandboxes", 405, "method_not_allowed"),
                                       ("GET", "/v1/sandboxes/NOT..VALID", 404, "route_not_found"),
                                       ("GET", "/v1/sandboxes/sb-000000000000", 404, "not_found"),
                                       ("POST", "/v1/sandboxes/sb-000000000000/pause", 404,
                                        "not_found"),
                                       ("DELETE", "/v1/snapshots/sn-000000000000", 404,
                                        "not_found")]:
        with pytest.raises(sdk.ForkvmError) as e:
            daemon.req(method, path)
        assert (e.value.status, e.value.code) == (status, code), (method, path, e.value)
    sb = daemon.req("POST", "/v1/sandboxes", body={"mem_mib": 32})
    with pytest.raises(sdk.Conflict) as e:
        daemon.req("POST", f"/v1/sandboxes/{sb['id']}/exec", body={"argv": ["true"]})
    assert e.value.code == "no_agent"
    with pytest.raises(sdk.BadRequest):
        daemon.req("POST", f"/v1/sandboxes/{sb['id']}/exec", body={"argv": []})
    with pytest.raises(sdk.BadRequest):
        daemon.req("POST", f"/v1/sandboxes/{sb['id']}/eval", body={"code": 1})
    with pytest.raises(sdk.BadRequest):
        daemon.req("POST", f"/v1/sandboxes/{sb['id']}/branch", body={"count": 0})
    with pytest.raises(sdk.BadRequest) as e:
        daemon.req("GET", f"/v1/sandboxes/{sb['id']}/files", query={"path": "relative"})
    assert daemon.req("GET", "/v1/healthz") == {"ok": True}


def test_tcp_needs_the_bearer_token(tmp_path):
    token = "s3cret-token-0123456789"
    tf = tmp_path / "token"
    tf.write_text(token + "\n")
    tf.chmod(0o644)
    port = free_port()
    d = Daemon(extra=["--listen", f"127.0.0.1:{port}", "--token-file", str(tf)])
    try:
        d.start(expect_ok=False)
        assert d.proc.wait(timeout=30) == 1
        assert "readable by others" in open(d.log).read()
        tf.chmod(0o600)
        d.start()
        url = f"http://127.0.0.1:{port}"
        with pytest.raises(sdk.Unauthorized):
            sdk.Client(url=url).healthz()
        with pytest.raises(sdk.Unauthorized):
            sdk.Client(url=url, token="wrong-token-0123456789").healthz()
        assert sdk.Client(url=url, token=token).healthz() == {"ok": True}
        # the Unix socket needs no token: its 0600 mode in a 0700 directory is the gate
        assert d.req("GET", "/v1/healthz") == {"ok": True}
        assert os.stat(d.sock).st_mode & 0o777 == 0o600
        callers = {json.loads(l)["caller"] for l in open(os.path.join(d.state, "audit.log"))}
        assert callers == {"tcp:127.0.0.1", "unix"}, callers
    finally:
        d.cleanup()


def test_https_with_a_certificate(tmp_path):
    token = "tls-token-0123456789abcdef"
    (tmp_path / "token").write_text(token)
    (tmp_path / "token").chmod(0o600)
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj",
                    "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    key.chmod(0o644)
    port = free_port()
    d = Daemon(extra=["--listen", f"127.0.0.1:{port}", "--token-file", str(tmp_path / "token"),
                      "--tls-cert", str(cert), "--tls-key", str(key)])
    try:
        d.start(expect_ok=False)
        assert d.proc.wait(timeout=30) == 1
        assert "readable by others" in open(d.log).read()
        key.chmod(0o600)
        d.start()
        url = f"https://127.0.0.1:{port}"
        assert sdk.Client(url=url, token=token, ca_file=str(cert)).healthz() == {"ok": True}
        with pytest.raises(sdk.Unauthorized):
            sdk.Client(url=url, token="x" * 20, ca_file=str(cert)).healthz()
        # no trust in the certificate: the client refuses the connection
        with pytest.raises(sdk.Unavailable):
            sdk.Client(url=url, token=token).healthz()
        # plain HTTP on the TLS port gets nothing useful
        with pytest.raises(sdk.Unavailable):
            sdk.Client(url=f"http://127.0.0.1:{port}", token=token, timeout=5).healthz()
    finally:
        d.cleanup()


def test_a_second_daemon_on_one_state_directory_refuses(daemon):
    other = Daemon(state=daemon.state)
    other.log = os.path.join(daemon.state, "second.log")
    other.start(expect_ok=False)
    assert other.proc.wait(timeout=30) == 1
    assert "already uses the state directory" in open(other.log).read()
    assert daemon.req("GET", "/v1/healthz") == {"ok": True}


def test_a_stalled_client_does_not_delay_others(daemon):
    stalled = []
    for _ in range(5):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(daemon.sock)
        s.sendall(b"POST /v1/sandboxes HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"me")
        stalled.append(s)
    t0 = time.monotonic()
    for _ in range(20):
        assert daemon.req("GET", "/v1/healthz") == {"ok": True}
    assert time.monotonic() - t0 < 5
    for s in stalled:
        s.close()


def test_a_hundred_concurrent_creations(daemon):
    n = 100
    with concurrent.futures.ThreadPoolExecutor(max_workers=32) as ex:
        made = list(ex.map(lambda i: daemon.req("POST", "/v1/sandboxes",
                                                body={"mem_mib": 16,
                                                      "metadata": {"i": i}}), range(n)))
    assert len({m["id"] for m in made}) == n
    listed = daemon.req("GET", "/v1/sandboxes")
    assert sorted(s["metadata"]["i"] for s in listed) == list(range(n))
    assert [s["metadata"] for s in daemon.req("GET", "/v1/sandboxes",
                                              query={"metadata.i": "42"})] == [{"i": 42}]
    assert daemon.req("GET", "/v1/sandboxes", query={"metadata.i": "100"}) == []
    for m in made:
        assert pid_alive(m["pid"])
    with concurrent.futures.ThreadPoolExecutor(max_workers=32) as ex:
        list(ex.map(lambda m: daemon.req("DELETE", f"/v1/sandboxes/{m['id']}"), made))
    assert daemon.req("GET", "/v1/sandboxes") == []
    assert not any(pid_alive(m["pid"]) for m in made)


def test_a_restart_during_a_branch_pause_keeps_the_source_running(daemon):
    """The source a dead daemon's branch holds paused is recorded as what it is once the
    branch is done (running), not as the branch's own pause."""
    src = daemon.req("POST", "/v1/sandboxes", body={"mem_mib": 1024})
    # 768 MiB to write: the branch's snapshot keeps the source paused for a while.
    assert call(src["socket"], {"cmd": "fill", "gpa": 4 << 20, "len": 768 << 20, "seed": 5},
                timeout=300)["ok"]
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as ex:
        f = ex.submit(lambda: daemon.req("POST", f"/v1/sandboxes/{src['id']}/branch",
                                         body={"count": 1, "strategy": "full"}))
        deadline = time.monotonic() + 60
        while call(src["socket"], {"cmd": "status"})["state"] != "paused":
            assert time.monotonic() < deadline, "the branch never paused the source"
            time.sleep(0.002)
        daemon.kill9()
        try:
            f.result(timeout=60)
        except (sdk.ForkvmError, OSError):
            pass
    daemon.start()  # ready once the adopted VMs are done with the dead daemon's branch
    assert daemon.req("GET", f"/v1/sandboxes/{src['id']}")["state"] == "running"
    assert call(src["socket"], {"cmd": "status"})["state"] == "running"


def test_kill9_of_the_daemon_mid_branch_loses_nothing(daemon):
    src = daemon.req("POST", "/v1/sandboxes", body={"mem_mib": 64})
    kids = daemon.req("POST", f"/v1/sandboxes/{src['id']}/branch",
                      body={"count": 3, "strategy": "cow"})["children"]
    answered = [src, *kids]
    # a branch in flight when the daemon dies
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as ex:
        f = ex.submit(lambda: daemon.req("POST", f"/v1/sandboxes/{src['id']}/branch",
                                         body={"count": 4, "strategy": "full"}))
        time.sleep(0.05)
        daemon.kill9()
        try:
            f.result(timeout=60)
        except sdk.ForkvmError:
            pass
    daemon.start()
    listed = daemon.req("GET", "/v1/sandboxes")
    ids = [s["id"] for s in listed]
    assert len(ids) == len(set(ids))
    for s in answered:
        assert ids.count(s["id"]) == 1
        assert daemon.req("GET", f"/v1/sandboxes/{s['id']}")["state"] == "running"
        assert call(s["socket"], {"cmd": "ping", "nonce": 1})["ok"]
    assert "adopted" in open(daemon.log).read()
    # children the dead daemon never recorded were stopped at restart: no VM runs unmanaged
    run = os.path.join(daemon.state, "run")
    deadline = time.monotonic() + 20
    while True:
        stray = [n for n in os.listdir(run) if n.endswith(".sock") and ".template" not in n
                 and n[:-5] not in ids]
        if not stray or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert not stray, f"VMs nobody manages: {stray}"


def test_the_reconciler_marks_vms_that_died_while_the_daemon_was_down(daemon):
    a = daemon.req("POST", "/v1/sandboxes", body={"mem_mib": 32})
    b = daemon.req("POST", "/v1/sandboxes", body={"mem_mib": 32, "paused": True})
    daemon.kill9()
    os.kill(a["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 10
    while pid_alive(a["pid"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    daemon.start()
    got_a = daemon.req("GET", f"/v1/sandboxes/{a['id']}")
    assert got_a["state"] == "dead" and "gone" in got_a["end_reason"], got_a
    assert not os.path.exists(a["socket"])
    assert daemon.req("GET", f"/v1/sandboxes/{b['id']}")["state"] == "paused"
    with pytest.raises(sdk.Conflict):
        daemon.req("POST", f"/v1/sandboxes/{a['id']}/pause")
    # a dead record is deleted like any other
    daemon.req("DELETE", f"/v1/sandboxes/{a['id']}")


def test_ttl_ends_a_sandbox(daemon):
    sb = daemon.req("POST", "/v1/sandboxes", body={"mem_mib": 32, "ttl_s": 1})
    assert sb["expires_at"] > sb["created_at"]
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            daemon.req("GET", f"/v1/sandboxes/{sb['id']}")
        except sdk.NotFound:
            break
        time.sleep(0.2)
    else:
        pytest.fail("the sandbox outlived its TTL by 14 s")
    assert not pid_alive(sb["pid"])
    assert any(json.loads(l)["op"] == "ttl" for l in open(os.path.join(daemon.state,
                                                                       "audit.log")))


def test_snapshots_restore_and_refuse_deletion_while_used(daemon):
    src = daemon.req("POST", "/v1/sandboxes", body={"mem_mib": 64})
    call(src["socket"], {"cmd": "fill", "gpa": 4 << 20, "len": 1 << 20, "seed": 5})
    want = call(src["socket"], {"cmd": "checksum", "gpa": 4 << 20, "len": 1 << 20})["checksum"]
    snap = daemon.req("POST", f"/v1/sandboxes/{src['id']}/snapshot")
    assert os.path.isdir(snap["dir"]) and snap["sandbox"] == src["id"]
    assert daemon.req("GET", "/v1/snapshots")[0]["id"] == snap["id"]
    r = daemon.req("POST", "/v1/sandboxes", body={"snapshot": snap["id"]})
    assert r["snapshot"] == snap["id"] and r["mem_mib"] == 64 and r["vcpus"] == 1
    got = call(r["socket"], {"cmd": "checksum", "gpa": 4 << 20, "len": 1 << 20})["checksum"]
    assert got == want
    v = daemon.req("POST", f"/v1/snapshots/{snap['id']}/verify")
    assert v["ok"] and v["id"] == snap["id"], v
    with pytest.raises(sdk.Conflict) as e:
        daemon.req("DELETE", f"/v1/snapshots/{snap['id']}")
    assert e.value.code == "in_use"
    with pytest.raises(sdk.BadRequest):
        daemon.req("POST", "/v1/sandboxes", body={"snapshot": snap["id"], "guest": "probe"})
    daemon.req("DELETE", f"/v1/sandboxes/{r['id']}")
    # a damaged snapshot: verify names it and says why
    vmstate = os.path.join(snap["dir"], "vmstate")
    with open(vmstate, "r+b") as f:
        f.seek(100)
        b = f.read(1)
        f.seek(100)
        f.write(bytes([b[0] ^ 0xFF]))
    with pytest.raises(sdk.GuestError) as e:
        daemon.req("POST", f"/v1/snapshots/{snap['id']}/verify")
    assert e.value.code == "snapshot_invalid" and snap["id"] in e.value.message, e.value
    daemon.req("DELETE", f"/v1/snapshots/{snap['id']}")
    assert not os.path.exists(snap["dir"])
    with pytest.raises(sdk.NotFound):
        daemon.req("GET", f"/v1/snapshots/{snap['id']}")


def test_python_sdk_scenario(daemon):
    client = daemon.client()
    with sdk.Sandbox.create(mem_mib=64, metadata={"user": "u1"}, limits={"pids_max": 256},
                            client=client) as sb:
        assert sb.state == "running" and sb.info["jailed"] and "limits" in sb.info
        assert b"--pids-max" in open(f"/proc/{sb.info['pid']}/cmdline", "rb").read()
        kids = sb.fork(count=3)
        assert len(kids) == 3 and all(k.info["parent"] == sb.id for k in kids)
        assert {k.id for k in sdk.Sandbox.list(parent=sb.id, client=client)} == {k.id for k in kids}
        assert [s.id for s in sdk.Sandbox.list(metadata={"user": "u1"}, client=client)] == [sb.id]
        sb.pause()
        assert sb.info["state"] == "paused"
        sb.resume()
        snap = sb.snapshot()
        assert snap.verify()["ok"]
        with sdk.Sandbox.create(snapshot=snap, client=client) as r:
            assert r.state == "running"
        snap.delete()
        with pytest.raises(sdk.Conflict):
            sb.commands.run("echo hi")  # the probe guest has no agent
        with pytest.raises(sdk.Conflict):
            sb.eval("1 + 1")
        for k in kids:
            k.kill()
    assert sdk.Sandbox.list(client=client) == []
    with pytest.raises(sdk.Unavailable):
        sdk.Client(socket_path="/nonexistent/api.sock").healthz()


def test_doctor_reports_the_daemon(daemon):
    def check():
        r = subprocess.run([FORKVM, "doctor", "--json"], capture_output=True, text=True,
                           env=dict(os.environ, FORKVM_DAEMON_SOCKET=daemon.sock), timeout=120)
        return next(c for c in json.loads(r.stdout) if c["name"] == "daemon")
    c = check()
    assert c["status"] == "ok" and daemon.sock in c["found"], c
    daemon.kill9()  # leaves its socket behind
    c = check()
    assert c["status"] == "warn" and "not running" in c["found"] and "forkvm daemon" in c["fix"], c
    daemon.start()  # replaces the stale socket
    assert check()["status"] == "ok"


def test_every_branch_strategy_and_its_images(daemon):
    # cow forks anonymous RAM, live write-protects memfd RAM: two sources
    src = daemon.req("POST", "/v1/sandboxes", body={"mem_mib": 64})
    msrc = daemon.req("POST", "/v1/sandboxes", body={"mem_mib": 64, "backing": "memfd"})
    for v in (src, msrc):
        call(v["socket"], {"cmd": "fill", "gpa": 4 << 20, "len": 1 << 20, "seed": 9})
    want = call(src["socket"], {"cmd": "checksum", "gpa": 4 << 20, "len": 1 << 20})["checksum"]
    snaps = os.path.join(daemon.state, "snapshots")
    kids = {}
    for strategy, source in [("cow", src), ("full", src), ("diff", src), ("diff", src),
                             ("live", msrc)]:
        got = daemon.req("POST", f"/v1/sandboxes/{source['id']}/branch",
                         body={"count": 2, "strategy": strategy})["children"]
        assert len(got) == 2
        for k in got:
            assert call(k["socket"], {"cmd": "checksum", "gpa": 4 << 20,
                                      "len": 1 << 20})["checksum"] == want, (strategy, k)
        kids.setdefault(strategy, []).extend(got)
    # full and live children restore from a frozen image each; diff branches grow one chain.
    # A jailed source writes them in its jail, where its children run: run/SOURCE.jail.
    assert all(k["snapshot"] is None for k in kids["cow"])
    images = {k["snapshot"] for s in ("full", "diff", "live") for k in kids[s]}
    assert len(images) == 3 and os.listdir(snaps) == []
    where = {i: daemon.req("GET", f"/v1/snapshots/{i}")["dir"] for i in images}
    for i, d in where.items():
        owner = src if i != kids["live"][0]["snapshot"] else msrc
        assert d == os.path.join(daemon.state, "run", owner["id"] + ".jail", i)
        assert os.path.isdir(d)
    assert all(k["jailed"] for s in kids for k in kids[s])
    chain = kids["diff"][0]["snapshot"]
    assert chain.startswith("bd-") and "layer-1" in os.listdir(where[chain])
    with pytest.raises(sdk.Conflict) as e:  # another jail's image: not a start for others
        daemon.req("POST", "/v1/sandboxes", body={"snapshot": chain})
    assert e.value.code == "image_in_jail"
    with pytest.raises(sdk.BadRequest):
        daemon.req("POST", f"/v1/sandboxes/{src['id']}/branch", body={"strategy": "magic"})
    with pytest.raises(sdk.BadRequest):
        daemon.req("POST", "/v1/sandboxes", body={"backing": "tape"})
    with pytest.raises(sdk.Conflict) as e:  # the VMM's own reason, quoted
        daemon.req("POST", f"/v1/sandboxes/{src['id']}/branch", body={"strategy": "live"})
    assert "memfd" in e.value.message
    # an image goes with its last child; the diff chain waits for its source as well
    for k in kids["full"] + kids["live"] + kids["diff"]:
        daemon.req("DELETE", f"/v1/sandboxes/{k['id']}")
    assert [s["id"] for s in daemon.req("GET", "/v1/snapshots")] == [chain]
    assert [os.path.exists(d) for d in where.values()].count(True) == 1
    # the memfd source's jail goes with its last sandbox; the source's stays for its cow kids
    daemon.req("DELETE", f"/v1/sandboxes/{msrc['id']}")
    run = os.path.join(daemon.state, "run")
    assert not os.path.exists(os.path.join(run, msrc["id"] + ".jail"))
    daemon.req("DELETE", f"/v1/sandboxes/{src['id']}")
    assert daemon.req("GET", "/v1/snapshots") == [] and not os.path.exists(where[chain])
    assert os.path.isdir(os.path.join(run, src["id"] + ".jail"))
    for k in kids["cow"]:
        daemon.req("DELETE", f"/v1/sandboxes/{k['id']}")
    assert [n for n in os.listdir(run) if n.endswith(".jail")] == []


FAKE_IMAGE_BUILD = """#!/bin/sh
# forkvm with `image build` replaced by a stand-in that writes a manifest (a real build
# downloads Debian packages for minutes); everything else is the real binary.
if [ "$1" = image ] && [ "$2" = build ]; then
    case " $* " in *" no-such-package "*) echo "E: Unable to locate package no-such-package" >&2; exit 100 ;; esac
    kind=image; [ "$3" = --rootfs ] && kind=rootfs
    mkdir -p "$FORKVM_CACHE/$kind"
    printf '{"built_by": "stand-in", "args": "%s"}' "$*" > "$FORKVM_CACHE/$kind/manifest.json"
    exit 0
fi
exec {real} "$@"
"""


def test_images_list_build_and_delete(tmp_path):
    cache = tmp_path / "cache"
    fake = tmp_path / "forkvm"
    fake.write_text(FAKE_IMAGE_BUILD.replace("{real}", FORKVM))
    fake.chmod(0o755)
    d = Daemon(extra=["--forkvm", str(fake)], env={"FORKVM_CACHE": str(cache)}).start()
    try:
        assert d.req("GET", "/v1/images") == []
        img = d.client().build_image("rootfs", packages=["python3-numpy", "git"])
        assert img["kind"] == "rootfs" and img["dir"] == str(cache / "rootfs")
        assert img["manifest"]["args"] == "image build --rootfs --packages python3-numpy,git"
        d.req("POST", "/v1/images", body={"kind": "kernel"})
        assert [i["kind"] for i in d.client().images()] == ["kernel", "rootfs"]
        with pytest.raises(sdk.Unavailable) as e:  # the build's own words come back
            d.req("POST", "/v1/images", body={"packages": ["no-such-package"]})
        assert e.value.code == "image_build_failed" and "Unable to locate package" in e.value.message
        for body in ({"kind": "windows"}, {"kind": "kernel", "packages": ["git"]},
                     {"packages": ["Bad Name"]}, {"packages": "git"}, {"packages": ["-rf"]}):
            with pytest.raises(sdk.BadRequest):
                d.req("POST", "/v1/images", body=body)
        (cache / "image" / "manifest.json").write_text("{not json")
        with pytest.raises(sdk.Unavailable) as e:
            d.req("GET", "/v1/images")
        assert e.value.code == "image_damaged"
        assert d.client().delete_image("kernel") == {"kind": "kernel", "deleted": True}
        assert not (cache / "image").exists()
        with pytest.raises(sdk.NotFound):
            d.req("DELETE", "/v1/images/kernel")
        with pytest.raises(sdk.NotFound):
            d.req("DELETE", "/v1/images/floppy")
        # a probe sandbox does not hold the Linux images
        sb = d.req("POST", "/v1/sandboxes", body={"mem_mib": 32})
        assert d.req("DELETE", "/v1/images/rootfs")["deleted"]
        d.req("DELETE", f"/v1/sandboxes/{sb['id']}")
    finally:
        d.cleanup()


# ---- uffd restores through the daemon's page server, and its metrics (DAEMON.md) ----

def prom(text):
    """Prometheus text as {'name{labels}': value}; every family needs HELP and TYPE first."""
    out, described = {}, set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            described.add(line.split()[2])
        elif line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            family = key.split("{")[0]
            assert any(family == f or family.startswith(f + "_") for f in described), line
            out[key] = float(value)
    return out


def ps_sock(d):
    return os.path.join(d.state, "run", "pageserver.sock")


def ps_status(d):
    return call(ps_sock(d), {"cmd": "status"}, timeout=30)


def wait_gone(pid, seconds=30):
    deadline = time.monotonic() + seconds
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not pid_alive(pid)


@pytest.fixture
def uffd_daemon(daemon):
    """The daemon fixture, plus the page server it starts: by design it outlives the daemon,
    so it is stopped here (gracefully, after the VMs), and neither log may hold a sanitizer
    report (FORKVM_BUILD=build-san)."""
    pids = []
    yield daemon, pids
    try:
        pids.append(ps_status(daemon)["pid"])
    except OSError:
        pass
    if daemon.proc.poll() is None:
        for s in daemon.req("GET", "/v1/sandboxes"):
            daemon.req("DELETE", f"/v1/sandboxes/{s['id']}")
        daemon.stop()
    for pid in set(pids):
        try:
            os.kill(pid, signal.SIGCONT)
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        assert wait_gone(pid), f"page server {pid} did not stop"
    logs = [daemon.log, os.path.join(daemon.state, "run", "pageserver.log")]
    text = "".join(open(p, errors="replace").read() for p in logs if os.path.exists(p))
    daemon.cleanup()
    assert "Sanitizer" not in text, text


def snapshot_of_a_filled_vm(d, seed=5):
    """A 64 MiB probe sandbox with 1 MiB of a seeded pattern, its snapshot, the checksum."""
    src = d.req("POST", "/v1/sandboxes", body={"mem_mib": 64})
    call(src["socket"], {"cmd": "fill", "gpa": 4 << 20, "len": 1 << 20, "seed": seed})
    want = call(src["socket"], {"cmd": "checksum", "gpa": 4 << 20, "len": 1 << 20})["checksum"]
    return src, d.req("POST", f"/v1/sandboxes/{src['id']}/snapshot"), want


def checksum(sb):
    return call(sb["socket"], {"cmd": "checksum", "gpa": 4 << 20, "len": 1 << 20},
                timeout=120)["checksum"]


def test_uffd_restores_share_one_page_server_that_a_restarted_daemon_adopts(uffd_daemon):
    d, _ = uffd_daemon
    assert prom(d.client().metrics())["forkvm_pageserver_up"] == 0  # none yet: none started
    src, snap, want = snapshot_of_a_filled_vm(d)
    # two at once: the start is serialized, one server serves both
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as ex:
        a, b = ex.map(lambda _: d.req("POST", "/v1/sandboxes",
                                      body={"snapshot": snap["id"], "backing": "uffd"}), range(2))
    for sb in (a, b):
        assert sb["snapshot"] == snap["id"] and sb["mem_mib"] == 64, sb
        assert checksum(sb) == want
    call(a["socket"], {"cmd": "fill", "gpa": 4 << 20, "len": 1 << 20, "seed": 6})
    assert checksum(a) != want and checksum(b) == want, "the restores share memory"
    log = open(os.path.join(d.state, "run", "pageserver.log")).read()
    assert log.count("starting the page server") == 1, log
    st = ps_status(d)
    assert {a["pid"], b["pid"]} <= {v["pid"] for v in st["vms"] if v["state"] != "gone"}, st
    m = prom(d.client().metrics())
    assert m["forkvm_pageserver_up"] == 1
    live = sum(m[f'forkvm_pageserver_vms{{state="{s}"}}']
               for s in ("hot", "background", "idle", "loading"))
    assert live >= 2, m
    assert m["forkvm_pageserver_demand_faults_total"] + \
        m["forkvm_pageserver_pages_prefetched_total"] > 0, m
    assert m["forkvm_pageserver_bytes_copied_total"] >= 1 << 20, m
    for key in ("zero_faults", "eexist", "eagain"):
        assert f"forkvm_pageserver_{key}_total" in m
    # kill -9 of the daemon: the page server and the VMs it serves run on, and are adopted
    d.kill9()
    assert pid_alive(st["pid"])
    d.start()
    assert ps_status(d)["pid"] == st["pid"]
    assert f"page server pid {st['pid']} on {ps_sock(d)} adopted" in open(d.log).read()
    for sb in (a, b):
        assert d.req("GET", f"/v1/sandboxes/{sb['id']}")["state"] == "running"
    assert checksum(b) == want and checksum(a) != want
    c = d.req("POST", "/v1/sandboxes", body={"snapshot": snap["id"], "backing": "uffd"})
    assert checksum(c) == want
    assert ps_status(d)["pid"] == st["pid"], "the adopted server was replaced"
    assert open(os.path.join(d.state, "run", "pageserver.log")).read().count(
        "starting the page server") == 1
    m = prom(d.client().metrics())
    assert m["forkvm_pageserver_up"] == 1 and m['forkvm_pageserver_vms{state="idle"}'] + \
        m['forkvm_pageserver_vms{state="background"}'] + m['forkvm_pageserver_vms{state="hot"}'] >= 3
    # a VM that leaves keeps its counters in the totals
    before = m["forkvm_pageserver_bytes_copied_total"]
    d.req("DELETE", f"/v1/sandboxes/{a['id']}")
    assert prom(d.client().metrics())["forkvm_pageserver_bytes_copied_total"] >= before
    # nor does a clean stop of the daemon end it
    d.stop()
    assert pid_alive(st["pid"])
    d.start()
    assert checksum(c) == want and ps_status(d)["pid"] == st["pid"]


def test_uffd_needs_a_snapshot(uffd_daemon):
    d, _ = uffd_daemon
    with pytest.raises(sdk.BadRequest) as e:
        d.req("POST", "/v1/sandboxes", body={"backing": "uffd", "mem_mib": 64})
    assert e.value.code == "bad_request" and "needs field 'snapshot'" in e.value.message
    with pytest.raises(sdk.BadRequest) as e:
        d.req("POST", "/v1/sandboxes", body={"backing": "uffd", "guest": "probe"})
    assert "snapshot" in e.value.message
    with pytest.raises(sdk.NotFound):
        d.req("POST", "/v1/sandboxes", body={"backing": "uffd", "snapshot": "sn-000000000000"})
    assert d.req("GET", "/v1/sandboxes") == []
    assert not os.path.exists(ps_sock(d)), "a refused create started the page server"


def test_uffd_a_dead_page_server_is_restarted_by_the_next_create(uffd_daemon):
    d, pids = uffd_daemon
    _, snap, want = snapshot_of_a_filled_vm(d, seed=8)
    a = d.req("POST", "/v1/sandboxes", body={"snapshot": snap["id"], "backing": "uffd"})
    first = ps_status(d)["pid"]
    pids.append(first)
    os.kill(first, signal.SIGKILL)
    # its VMs stop (docs/UFFD.md: never run on memory nobody serves); the reaper marks them
    assert wait_gone(a["pid"]), "a VM ran on after its page server died"
    deadline = time.monotonic() + 20
    while d.req("GET", f"/v1/sandboxes/{a['id']}")["state"] != "dead":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert prom(d.client().metrics())["forkvm_pageserver_up"] == 0
    b = d.req("POST", "/v1/sandboxes", body={"snapshot": snap["id"], "backing": "uffd"})
    assert checksum(b) == want
    second = ps_status(d)["pid"]
    assert second != first
    # the daemon collected the server it had started (no zombie) and said how it ended
    deadline = time.monotonic() + 10
    while "killed by signal 9" not in open(d.log).read():
        assert time.monotonic() < deadline, open(d.log).read()
        time.sleep(0.2)
    assert not os.path.exists(f"/proc/{first}")


def test_uffd_a_stuck_page_server_never_blocks_metrics(uffd_daemon):
    d, pids = uffd_daemon
    _, snap, want = snapshot_of_a_filled_vm(d, seed=9)
    # one started by hand on the daemon's socket is adopted as it is
    with open(os.path.join(d.state, "run", "pageserver.log"), "ab") as log:
        ps = subprocess.Popen([FORKVM, "pageserver", "--socket", ps_sock(d)], stdout=log,
                              stderr=log, stdin=subprocess.DEVNULL)
    pids.append(ps.pid)
    deadline = time.monotonic() + 20
    while prom(d.client().metrics())["forkvm_pageserver_up"] != 1:
        assert time.monotonic() < deadline and ps.poll() is None
        time.sleep(0.05)
    a = d.req("POST", "/v1/sandboxes", body={"snapshot": snap["id"], "backing": "uffd"})
    assert checksum(a) == want
    assert any(v["pid"] == a["pid"] for v in ps_status(d)["vms"])
    os.kill(ps.pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        assert prom(d.client().metrics())["forkvm_pageserver_up"] == 0
        assert time.monotonic() - t0 < 5
        with pytest.raises(sdk.ForkvmError) as e:  # left alone: a's memory depends on it
            d.req("POST", "/v1/sandboxes", body={"snapshot": snap["id"], "backing": "uffd"})
        assert (e.value.status, e.value.code) == (502, "pageserver_unreachable"), e.value
        assert ps_sock(d) in e.value.message and "pageserver.log ends:" in e.value.message
        assert d.req("GET", "/v1/healthz") == {"ok": True}
    finally:
        os.kill(ps.pid, signal.SIGCONT)
    assert prom(d.client().metrics())["forkvm_pageserver_up"] == 1
    assert checksum(a) == want
    b = d.req("POST", "/v1/sandboxes", body={"snapshot": snap["id"], "backing": "uffd"})
    assert checksum(b) == want and ps_status(d)["pid"] == ps.pid


def test_uffd_a_page_server_that_cannot_start_is_quoted(uffd_daemon):
    d, _ = uffd_daemon
    _, snap, want = snapshot_of_a_filled_vm(d, seed=10)
    with open(ps_sock(d), "w") as f:  # not a socket: the server refuses to replace it
        f.write("x")
    with pytest.raises(sdk.ForkvmError) as e:
        d.req("POST", "/v1/sandboxes", body={"snapshot": snap["id"], "backing": "uffd"})
    assert (e.value.status, e.value.code) == (500, "pageserver_failed"), e.value
    assert "exited with status 1 before it answered" in e.value.message, e.value
    assert "exists and is not a socket" in e.value.message, e.value  # its log, quoted
    assert [s["snapshot"] for s in d.req("GET", "/v1/sandboxes")] == [None]
    os.unlink(ps_sock(d))
    sb = d.req("POST", "/v1/sandboxes", body={"snapshot": snap["id"], "backing": "uffd"})
    assert checksum(sb) == want


def test_sandboxes_with_a_network(daemon):
    """network {mode, allow, deny, publish}: the VMM's own namespace, shown in the answers;
    bad values are 400s that name them; nothing is left once the sandbox is deleted."""
    sb = daemon.req("POST", "/v1/sandboxes", body={
        "mem_mib": 32, "network": {"mode": "nat", "allow": ["192.0.2.0/24"],
                                   "deny": ["192.0.2.7/32"], "publish": ["0:8080"]}})
    net = sb["network"]
    assert net["mode"] == "nat" and net["guest"] == "10.254.0.2/24", net
    assert net["allow"] == ["192.0.2.0/24"] and net["deny"] == ["192.0.2.7/32"], net
    (port,) = net["published"]
    assert port["guest_port"] == 8080 and port["host_port"] > 0, port
    assert daemon.req("GET", f"/v1/sandboxes/{sb['id']}")["network"] == net
    veth = net["host_interface"]
    assert veth in subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    # Jailed like every VMM: its network was made by the broker it forked before its jail
    # (docs/NET.md, "Networks of jailed VMMs"), which also makes its children's.
    assert sb["jailed"] is True and jailed_uid(sb["pid"]) != 0
    broker = net["broker_pid"]
    assert proc_status(broker)["Name"] == "forkvm-netd", proc_status(broker)
    kids = daemon.req("POST", f"/v1/sandboxes/{sb['id']}/branch",
                      body={"count": 2, "strategy": "cow"})["children"]
    kids += daemon.req("POST", f"/v1/sandboxes/{sb['id']}/branch",
                       body={"count": 1, "strategy": "full"})["children"]  # exec'd in the jail
    nets = [daemon.req("GET", f"/v1/sandboxes/{k['id']}")["network"] for k in kids]
    assert all(k["jailed"] for k in kids) and {n["broker_pid"] for n in nets} == {broker}
    ports = {port["host_port"]} | {n["published"][0]["host_port"] for n in nets}
    slots = {net["slot"]} | {n["slot"] for n in nets}
    assert len(ports) == 4 and len(slots) == 4, nets
    for k in kids:
        daemon.req("DELETE", f"/v1/sandboxes/{k['id']}")
    plain = daemon.req("POST", "/v1/sandboxes", body={"mem_mib": 32})
    assert "network" not in plain and plain["jailed"] is True
    for network, words in [({"mode": "wide"}, "network.mode"),
                           ({"allow": ["10.0.0.0/33"]}, "network.allow[0]"),
                           ({"publish": ["x:80"]}, "network.publish[0]"),
                           ({"publish": "0:80"}, "network.publish must be an array"),
                           ({"mode": "isolated", "allow": ["10.0.0.0/8"]}, "network:"),
                           ({"speed": 1}, "speed"), ("nat", "must be an object")]:
        with pytest.raises(sdk.BadRequest) as e:
            daemon.req("POST", "/v1/sandboxes", body={"mem_mib": 32, "network": network})
        assert words in e.value.message, (network, e.value.message)
    daemon.req("DELETE", f"/v1/sandboxes/{sb['id']}")
    deadline = time.monotonic() + 20
    links = lambda: subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    while any(f"{n['host_interface']}@" in links() for n in [net, *nets]) or \
            os.path.exists(f"/proc/{broker}/status") and proc_status(broker)["State"][0] != "Z":
        assert time.monotonic() < deadline, "a network or the broker outlived its sandbox"
        time.sleep(0.2)


def proc_status(pid):
    with open(f"/proc/{pid}/status") as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


def jailed_uid(pid):
    """The VMM's single uid once it is confined (no capabilities, no_new_privs, seccomp)."""
    st = proc_status(pid)
    assert all(int(st[c], 16) == 0 for c in ("CapPrm", "CapEff", "CapBnd")), st
    assert st["NoNewPrivs"] == "1" and st["Seccomp"] == "2", st
    (uid,) = {int(x) for x in st["Uid"].split()}
    assert uid != 0 and os.readlink(f"/proc/{pid}/ns/mnt") != os.readlink("/proc/self/ns/mnt")
    return uid


def test_every_vmm_is_jailed_and_snapshots_are_adopted(daemon):
    """By default each sandbox's VMM is jailed (docs/SECURITY.md): its own uid, no
    capabilities, own namespaces; cow children share their source's jail. A snapshot is
    written in the jail and adopted into the store as root's; a restore gets a jail of its
    own; the jail directory goes with the last sandbox that lives in it."""
    run = os.path.join(daemon.state, "run")
    src = daemon.req("POST", "/v1/sandboxes", body={"mem_mib": 64})
    assert src["jailed"] is True
    uid = jailed_uid(src["pid"])
    jail = os.path.join(run, src["id"] + ".jail")
    assert os.stat(jail).st_uid == uid and os.path.realpath(src["socket"]).startswith(jail)
    # one VM's cgroup limits, the unit of the family's budget, and the family's cgroup (the
    # parent of the source's own): root's, out of the jail
    st = os.stat(jail + ".family")
    assert (st.st_uid, st.st_mode & 0o777) == (0, 0o600)
    unit = json.load(open(jail + ".family"))
    assert set(unit) == {"cgroup", "memory_max", "cpu_quota", "cpu_period", "pids_max"}
    with open(f"/proc/{src['pid']}/cgroup") as f:
        own = next(line for line in f if line.startswith("0::"))[3:].strip()
    assert unit["cgroup"].endswith(os.path.dirname(own)) and os.path.isdir(unit["cgroup"])
    call(src["socket"], {"cmd": "fill", "gpa": 4 << 20, "len": 1 << 20, "seed": 3})
    want = call(src["socket"], {"cmd": "checksum", "gpa": 4 << 20, "len": 1 << 20})["checksum"]
    (kid,) = daemon.req("POST", f"/v1/sandboxes/{src['id']}/branch",
                        body={"count": 1})["children"]
    assert kid["jailed"] and jailed_uid(kid["pid"]) == uid and kid["socket"].startswith(jail)
    snap = daemon.req("POST", f"/v1/sandboxes/{src['id']}/snapshot")
    assert snap["dir"] == os.path.join(daemon.state, "snapshots", snap["id"])
    st = os.lstat(snap["dir"])
    assert (st.st_uid, st.st_mode & 0o777) == (0, 0o700)
    for name in os.listdir(snap["dir"]):
        st = os.lstat(os.path.join(snap["dir"], name))
        assert (st.st_uid, st.st_mode & 0o7777) == (0, 0o600), name
    assert not [n for n in os.listdir(jail) if n.startswith("sn-")], os.listdir(jail)
    # a snapshot of the cow child: it writes in the jail it shares with its source
    ksnap = daemon.req("POST", f"/v1/sandboxes/{kid['id']}/snapshot")
    assert os.lstat(ksnap["dir"]).st_uid == 0
    r = daemon.req("POST", "/v1/sandboxes", body={"snapshot": snap["id"]})
    assert r["jailed"] and jailed_uid(r["pid"]) not in (0, uid)
    assert call(r["socket"], {"cmd": "checksum", "gpa": 4 << 20,
                              "len": 1 << 20})["checksum"] == want
    for sb in (src, kid):
        daemon.req("DELETE", f"/v1/sandboxes/{sb['id']}")
    assert not os.path.exists(jail) and not os.path.exists(jail + ".family")
    daemon.req("DELETE", f"/v1/sandboxes/{r['id']}")
    assert [n for n in os.listdir(run) if n.endswith(".jail")] == []


def test_no_jail_is_for_development_and_says_so():
    d = Daemon(extra=["--no-jail"]).start()
    try:
        sb = d.req("POST", "/v1/sandboxes", body={"mem_mib": 32})
        assert sb["jailed"] is False
        assert {int(x) for x in proc_status(sb["pid"])["Uid"].split()} == {0}
        log = open(d.log).read()
        assert "JAIL DISABLED" in log and "development only" in log
    finally:
        d.cleanup()


def templates_of(uid):
    """pids of cow templates (comm forkvm-template) running as uid."""
    out = []
    for p in os.listdir("/proc"):
        try:
            if (p.isdigit() and open(f"/proc/{p}/comm").read().strip() == "forkvm-template"
                    and os.stat(f"/proc/{p}").st_uid == uid):
                out.append(int(p))
        except OSError:
            pass
    return out


def test_a_cow_branch_leaves_no_template_behind(daemon):
    """The template would keep the source's RAM of the branch instant, copy by copy as the
    source writes on: the daemon stops it once the children run, and they go on."""
    src = daemon.req("POST", "/v1/sandboxes", body={"mem_mib": 64})
    uid = jailed_uid(src["pid"])
    kids = []
    for _ in range(2):
        kids += daemon.req("POST", f"/v1/sandboxes/{src['id']}/branch",
                           body={"count": 2})["children"]
        deadline = time.monotonic() + 10
        while templates_of(uid):
            assert time.monotonic() < deadline, "a template outlived its branch"
            time.sleep(0.05)
    for k in kids:
        assert call(k["socket"], {"cmd": "ping"})["ok"] and pid_alive(k["pid"])
    assert daemon.req("GET", f"/v1/sandboxes/{kids[0]['id']}")["state"] == "running"


def cmdline(pid):
    return open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")


def test_limits_are_checked_passed_to_the_vmm_and_kept_by_branch_children(daemon):
    """"limits" become the VMM's cgroup options (checked first: a bad value is a 400 naming
    it), and every child of a branch runs under the same (full ones are new `forkvm run`s;
    cow ones inherit). Whether the kernel enforces them needs cgroup v2 controllers this
    host binds to v1: tests/linux/test_cgroup.py checks the files in the nested rig."""
    for limits, words in [({"memory_mib": 127}, "must be at least the guest's RAM"),
                          ({"cpus": 0}, "limits.cpus must be a number"),
                          ({"cpus": "2"}, "limits.cpus must be a number"),
                          ({"cpu_weight": 20000}, "limits.cpu_weight"),
                          ({"pids_max": 4}, "limits.pids_max"),
                          ({"memory_mib": 1.5}, "limits.memory_mib must be an integer"),
                          ({"disk": 1}, "unknown field 'disk'"), ([], "must be an object")]:
        with pytest.raises(sdk.BadRequest) as e:
            daemon.req("POST", "/v1/sandboxes", body={"mem_mib": 64, "limits": limits})
        assert words in e.value.message, (limits, e.value.message)
    sb = daemon.req("POST", "/v1/sandboxes", body={
        "mem_mib": 64, "limits": {"memory_mib": 600, "cpus": 1.5, "cpu_weight": 200,
                                  "pids_max": 64}})
    want = [b"--mem-limit", b"600M", b"--cpu-max", b"150000/100000", b"--cpu-weight", b"200",
            b"--pids-max", b"64"]
    args = cmdline(sb["pid"])
    assert all(w in args for w in want), args
    assert set(sb["limits"]) == {"memory_mib", "cpus", "cpu_weight", "pids_max"}, sb
    full = daemon.req("POST", f"/v1/sandboxes/{sb['id']}/branch",
                      body={"count": 1, "strategy": "full"})["children"][0]
    args = cmdline(full["pid"])
    for opt, value in [(b"--mem-limit", str(600 << 20).encode()),
                       (b"--cpu-max", b"150000/100000"), (b"--cpu-weight", b"200"),
                       (b"--pids-max", b"64")]:
        assert args[args.index(opt) + 1] == value, (opt, args)
    assert daemon.req("GET", f"/v1/sandboxes/{full['id']}")["limits"] == \
        daemon.req("GET", f"/v1/sandboxes/{sb['id']}")["limits"]


def test_a_swapped_socket_reaches_no_other_vm(daemon):
    """A jailed VMM owns the directory of its sockets: swapped for a link to another VM's
    socket (as a hostile VMM could), the daemon's requests are refused, not delivered."""
    a = daemon.req("POST", "/v1/sandboxes", body={"mem_mib": 32})
    b = daemon.req("POST", "/v1/sandboxes", body={"mem_mib": 32})
    inner = os.path.realpath(a["socket"])
    assert inner.endswith(f"{a['id']}.jail/{a['id']}.sock")
    os.rename(inner, inner + ".real")
    os.symlink(os.path.realpath(b["socket"]), inner)
    with pytest.raises(sdk.ForkvmError) as e:
        daemon.req("POST", f"/v1/sandboxes/{a['id']}/pause")
    assert "not the expected pid" in e.value.message, e.value.message
    assert call(b["socket"], {"cmd": "status"})["state"] == "running"
    os.unlink(inner)
    os.rename(inner + ".real", inner)
    assert daemon.req("POST", f"/v1/sandboxes/{a['id']}/pause")["state"] == "paused"


def fake_vmm(path, reply):
    """A control server at path that answers every request with reply (a hostile VMM)."""
    import threading
    if os.path.lexists(path):
        os.unlink(path)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(8)

    def serve():
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            with c:
                buf = b""
                while b"\n" not in buf:
                    chunk = c.recv(65536)
                    if not chunk:
                        break
                    buf += chunk
                c.sendall(json.dumps(reply).encode() + b"\n")
    threading.Thread(target=serve, daemon=True).start()
    return srv


def test_a_branch_reply_is_checked_before_anything_is_recorded():
    """What a VMM's branch reply names is what the daemon later signals, stops and removes
    files for: a reply naming a file, another process or another VM as a child records
    nothing, and the template it names is only stopped where the daemon made it. (A fake VMM
    as root: the jailed path would refuse its answers before that, see above.)"""
    d = Daemon(extra=["--no-jail"]).start()
    try:
        victim = d.req("POST", "/v1/sandboxes", body={"mem_mib": 32})
        src = d.req("POST", "/v1/sandboxes", body={"mem_mib": 32})
        os.kill(src["pid"], signal.SIGSTOP)  # its socket is the fake's now; it keeps its pid
        sock = src["socket"]
        bait = os.path.join(d.state, "bait")
        open(bait, "w").write("keep")
        run = os.path.join(d.state, "run")
        for child, words in [({"name": "x-1", "socket": bait, "pid": victim["pid"]}, "not "),
                             ({"name": None, "socket": bait, "pid": 1}, "a child named"),
                             ({"name": "PFX-1", "socket": bait, "pid": 1}, "socket is"),
                             ({"name": "PFX-1", "socket": os.path.join(run, "PFX-1.sock"),
                               "pid": 1}, "no live process of the source's uid")]:
            srv = fake_vmm(sock, {"ok": True, "children": [child],
                                  "template": victim["socket"]})
            try:
                with pytest.raises(sdk.ForkvmError) as e:
                    d.req("POST", f"/v1/sandboxes/{src['id']}/branch", body={"count": 1})
                msg = e.value.message
                if child["name"] == "PFX-1":  # the prefix is the daemon's: not knowable here
                    assert "a child named PFX-1" in msg, msg
                else:
                    assert words in msg and e.value.code == "vm_misbehaved", msg
            finally:
                srv.close()
        assert open(bait).read() == "keep" and pid_alive(victim["pid"]) and pid_alive(1)
        assert call(victim["socket"], {"cmd": "status"})["state"] == "running"
        assert sorted(s["id"] for s in d.req("GET", "/v1/sandboxes")) == \
            sorted([victim["id"], src["id"]])
        os.kill(src["pid"], signal.SIGCONT)
    finally:
        d.cleanup()
