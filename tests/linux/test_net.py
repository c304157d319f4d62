"""Networking of Linux guests (docs/NET.md) in the nested rig: the virtio-net NIC driven by
Linux's virtio_net, the guest configured by its agent from forkvm.net=, egress through NAT and
its allow list, isolation, published ports, cow children each serving the same guest port on
their own host port with their own identity, a restore with the network up, a branch while a
TCP connection is open, and nothing left behind. Traffic stays inside the rig: the "outside"
servers listen on addresses of L1's loopback."""
import http.server
import json
import socketserver
import subprocess
import threading
import time
import urllib.request

import pytest

from linuxlib import forkvm, wait_for

OUTSIDE = ["192.0.2.1", "192.0.2.2"]  # TEST-NET-1, on L1's lo
HTTP_PORT = 8931
ECHO_PORT = 8932
GUEST_PORT = 8080


class _Page(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"outside {self.server.server_address[0]} saw {self.client_address[0]}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


class _Echo(socketserver.BaseRequestHandler):
    def handle(self):
        while True:
            data = self.request.recv(4096)
            if not data:
                return
            self.request.sendall(data)


class _Threaded(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True


@pytest.fixture(scope="module")
def outside():
    """HTTP servers on 192.0.2.1 and .2, an echo server on .1 (L1's loopback)."""
    for a in OUTSIDE:
        subprocess.run(["ip", "addr", "add", f"{a}/32", "dev", "lo"], check=False)
    servers = [_Threaded((a, HTTP_PORT), _Page) for a in OUTSIDE]
    servers.append(_Threaded((OUTSIDE[0], ECHO_PORT), _Echo))
    for s in servers:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    yield
    for s in servers:
        s.shutdown()
        s.server_close()


def fetch_in_guest(g, url):
    """(ok, text) of an HTTP GET from inside the guest, bounded to 10 s."""
    code, out, err = g.run(["python3", "-c",
                            "import sys, urllib.request as u\n"
                            f"try: print(u.urlopen({url!r}, timeout=10).read().decode())\n"
                            "except Exception as e: print('ERR', type(e).__name__, e); sys.exit(1)"],
                           check=False, timeout_ms=30000)
    return code == 0, out.decode().strip()


def net_of(g):
    return g.ok({"cmd": "status"})["net"]


def published_port(g, guest_port=GUEST_PORT):
    return next(p["host_port"] for p in net_of(g)["published"] if p["guest_port"] == guest_port)


def get(port, path="/id", bound=60):
    """GET http://127.0.0.1:port/path from L1, retrying while the guest's server starts."""
    deadline = time.monotonic() + bound
    while True:
        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10).read()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def serve(g, ident):
    """A threaded HTTP server on the guest's GUEST_PORT serving /srv/id (= ident)."""
    g.sh(f"mkdir -p /srv && echo {ident} > /srv/id && cd /srv && "
         f"(nohup python3 -m http.server {GUEST_PORT} >/dev/null 2>&1 &)")


def test_nat_allow_list_and_the_guest_address(env, outside):
    g = env.boot("nat", extra=["--net", "nat", "--allow", f"{OUTSIDE[0]}/32"])
    # the agent configured eth0 from forkvm.net= at boot (its address is a local route)
    assert "10.254.0.2" in g.sh("cat /proc/net/fib_trie"), g.tail()
    gw = g.run(["python3", "-c", "import socket, struct\n"
                "for l in open('/proc/net/route').readlines()[1:]:\n"
                "    f = l.split()\n"
                "    if f[1] == '00000000': print(f[0], socket.inet_ntoa(struct.pack('<L', "
                "int(f[2], 16))))"])[1].decode().split()
    assert gw == ["eth0", "10.254.0.1"], gw
    ok, text = fetch_in_guest(g, f"http://{OUTSIDE[0]}:{HTTP_PORT}/")
    st = net_of(g)
    # the host saw the VM's own slot address, not the guest's
    assert ok and text == f"outside {OUTSIDE[0]} saw {st['ns_address']}", (text, st)
    ok, text = fetch_in_guest(g, f"http://{OUTSIDE[1]}:{HTTP_PORT}/")
    assert not ok, f"the allow list let {OUTSIDE[1]} through: {text}"


def test_isolated_publish_cow_children_and_cleanup(env, outside):
    """Jailed, as the daemon runs every VMM: the network of the source and of each cow child
    comes from the broker the source forked before its jail (docs/NET.md, "Networks of jailed
    VMMs"), which also relays their published ports. Each VM of the jailed family has a cgroup
    of its own inside the family's, whose memory.max (--family-budget 1 times --mem-limit,
    docs/SECURITY.md, "A jailed family") bounds the source and its three children together:
    2G is sized for all four."""
    src = env.boot("iso", extra=["--name", "iso", "--jail", "--jail-uid-base", "320000000",
                                 "--mem-limit", "2G",
                                 "--net", "isolated", "--publish", f"0:{GUEST_PORT}"])
    st = open(f"/proc/{src.pid}/status").read()
    assert "\nCapEff:\t0000000000000000\n" in st and "\nUid:\t0\t" not in st, st
    broker = net_of(src)["broker_pid"]
    ok, text = fetch_in_guest(src, f"http://{OUTSIDE[0]}:{HTTP_PORT}/")
    assert not ok, f"an isolated guest reached the outside: {text}"
    serve(src, "source")
    src_port = published_port(src)
    assert get(src_port) == b"source\n"
    reply, kids = env.branch(src, "cow", 3, prefix="web")
    ports = set()
    for i, k in enumerate(kids):
        k.sh(f"echo child{i} > /srv/id")
        port = published_port(k)
        ports.add(port)
        assert get(port) == f"child{i}\n".encode(), k.name
    assert len(ports) == 3 and src_port not in ports
    assert {net_of(k)["broker_pid"] for k in kids} == {broker}
    assert get(src_port) == b"source\n"  # the source keeps serving
    # nothing left: the children's and the source's veths go with them (kill -9 included)
    veths = [net_of(k)["host_interface"] for k in kids] + [net_of(src)["host_interface"]]
    kids[0].kill()
    for k in kids[1:]:
        k.ok({"cmd": "stop"})
    src.ok({"cmd": "stop"})
    links = lambda: subprocess.run(["ip", "-o", "link"], capture_output=True,  # noqa: E731
                                   text=True).stdout
    assert wait_for(lambda: not any(f" {v}@" in links() or f" {v}:" in links() for v in veths),
                    60), links()


def test_restore_with_the_network_up_and_a_branch_during_a_connection(env, outside):
    src = env.boot("conn", extra=["--net", "nat", "--publish", f"0:{GUEST_PORT}"])
    serve(src, "conn")
    with src.agent() as a:
        r = a.eval("import socket\n"
                   f"s = socket.create_connection(({OUTSIDE[0]!r}, {ECHO_PORT}), timeout=10)\n"
                   "s.sendall(b'one'); s.recv(16)")
        assert r["result"] == "b'one'", r
    reply, kids = env.branch(src, "cow", 1, prefix="mid")
    child = kids[0]
    with child.agent() as a:
        r = a.eval("s.settimeout(15)\ntry:\n    s.sendall(b'two'); got = s.recv(16)\n"
                   "except OSError as e:\n    got = type(e).__name__\ngot")
    # the child's copy of the connection fails (its packets leave from another address, the
    # outside answers with a reset) rather than hanging or stealing the source's
    assert r["result"] in ("'ConnectionResetError'", "b''", "'TimeoutError'"), r
    with src.agent() as a:
        assert a.eval("s.sendall(b'three'); s.recv(16)")["result"] == "b'three'"
    # new connections work in the child, to the outside and from the host
    ok, text = fetch_in_guest(child, f"http://{OUTSIDE[0]}:{HTTP_PORT}/")
    assert ok and text.startswith(f"outside {OUTSIDE[0]} saw 10.253."), text
    assert get(published_port(child)) == b"conn\n"
    # a snapshot with the NIC, restored with a network of its own
    snap = env.snapshot(src)
    restored = env.boot_restore(snap, "back", ["--net", "isolated", "--publish",
                                               f"0:{GUEST_PORT}"])
    assert get(published_port(restored)) == b"conn\n"
    ok, _ = fetch_in_guest(restored, f"http://{OUTSIDE[0]}:{HTTP_PORT}/")
    assert not ok  # isolated now
    st = json.dumps(net_of(restored))
    assert '"mode": "isolated"' in st
    forkvm("status", restored.sock, env=env.environ)
