"""Host networking of VMs (docs/NET.md), checked from the host: the namespace, TAP, veth and
nft rules a VMM makes; the published ports; the egress policy; the errors; and that nothing is
left once a VMM ends, by stop or by kill -9.

The guest cannot send packets here without a guest driver, so a "fake guest" stands in for it:
a network namespace of the test's own with the guest's address, joined to the VM's namespace
by a veth (the VM's namespace routes the guest address to it). Its traffic crosses the VM's
namespace exactly as the guest's would from the TAP: forwarded, filtered, source-NATed.
"""
import contextlib
import errno
import fcntl
import hashlib
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pytest

from forkvm_vm import BUILD, FORKVM, ROOT, call

STATE_DIR = "/run/forkvm-net"
GUEST = "10.254.0.2"
GATEWAY = "10.254.0.1"
DUMMY_ADDR = "198.51.100.7"  # a second host address (TEST-NET-2), added to lo
TOOL = os.path.join(BUILD, "tools", "net_child")

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="networking VMs needs root"),
    pytest.mark.skipif(not os.path.exists("/dev/kvm"), reason="needs /dev/kvm"),
    pytest.mark.skipif(not os.path.exists("/dev/net/tun"), reason="needs /dev/net/tun"),
    pytest.mark.skipif(not all(shutil.which(t) for t in ("ip", "nft", "nsenter")),
                       reason="needs ip (iproute2), nft (nftables) and nsenter (util-linux)"),
]

_names = itertools.count()


def sh(*args, check=True, timeout=30):
    r = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(args)}: exit {r.returncode}: {r.stderr.strip()}")
    return r


# --- looking at the host ---------------------------------------------------------------------

def ns_link(pid):
    """(link "net:[N]", /proc/PID/fd/FD) of the network namespace fd the VMM holds."""
    for fd in sorted(os.listdir(f"/proc/{pid}/fd"), key=int):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:
            continue
        if link.startswith("net:["):
            return link, f"/proc/{pid}/fd/{fd}"
    raise AssertionError(f"VMM {pid} holds no network namespace fd")


def in_ns(path, *cmd, check=True):
    return sh("nsenter", f"--net={path}", *cmd, check=check)


def ns_held(link):
    """Whether any process (fd or thread) or mount still holds the namespace link names."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            for t in os.listdir(f"/proc/{pid}/task"):
                if os.readlink(f"/proc/{pid}/task/{t}/ns/net") == link:
                    return f"thread {pid}/{t}"
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}") == link:
                    return f"fd {pid}/{fd}"
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    with open("/proc/self/mountinfo") as f:
        if link in f.read():
            return "a mount"
    return None


def host_links():
    return {l["ifname"]: l for l in json.loads(sh("ip", "-j", "addr").stdout)}


def host_tables():
    out = json.loads(sh("nft", "-j", "list", "tables", "ip").stdout)["nftables"]
    return {t["table"]["name"] for t in out if "table" in t}


def slot_free(slot):
    with open(f"{STATE_DIR}/slot-{slot}.lock", "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(f, fcntl.LOCK_UN)
        return True


def wait_for(what, cond, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def assert_all_gone(net, link, pid_alive=False):
    """Nothing of this VM's network left: namespace, veth, slot lock, host table."""
    wait_for(f"namespace {link} to go", lambda: ns_held(link) is None)
    wait_for(f"{net['host_interface']} to go",
             lambda: net["host_interface"] not in host_links())
    wait_for(f"slot {net['slot']} to be free", lambda: slot_free(net["slot"]))
    if net.get("host_table"):
        assert net["host_table"] not in host_tables()


# --- VMMs ------------------------------------------------------------------------------------

@pytest.fixture
def run_dir():
    d = tempfile.mkdtemp(prefix="forkvm-net-")
    procs = []
    yield d, procs
    for pid in procs:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    shutil.rmtree(d, ignore_errors=True)


def start(run_dir, name, *args, env=None):
    d, procs = run_dir
    mem = () if "--restore" in args else ("--mem", "64M")  # a restore has the snapshot's
    r = subprocess.run([FORKVM, "run", "--name", name, *mem, "--detach", *args],
                       capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, FORKVM_RUN_DIR=d, **(env or {})))
    if r.returncode != 0:
        return r, None, None
    pid, sock = r.stdout.split()
    procs.append(int(pid))
    return r, int(pid), sock


def started(run_dir, name, *args):
    r, pid, sock = start(run_dir, name, *args)
    assert pid, f"forkvm run {' '.join(args)}: {r.stderr}"
    return pid, sock, call(sock, {"cmd": "status"})["net"]


def gone(pid):
    """True once pid has exited (a zombie counts; reaped between two looks: ESRCH)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError):
        return True


def stop(sock, pid):
    """Stop the VMM, wait for it to exit, and check its log has no sanitizer report."""
    assert call(sock, {"cmd": "stop"})["ok"]
    wait_for(f"VMM {pid} to exit", lambda: gone(pid))
    log = open(sock + ".log", errors="replace").read()
    for bad in ("Sanitizer", "runtime error:", "SIGSYS"):
        assert bad not in log, log[-3000:]


# --- a fake guest ----------------------------------------------------------------------------

SERVER = r"""
import hashlib, socket, sys, threading
addr, port, body = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode()
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((addr, port)); s.listen(64)
print("ready", flush=True)
def serve(c):
    with c:
        first = b""
        while not first.endswith(b"\n"):
            b = c.recv(1)
            if not b:
                return
            first += b
        if first.startswith(b"SUM"):
            # Read to the client's end of file (its half-close), then answer and close.
            h, n = hashlib.sha256(), 0
            while True:
                b = c.recv(1 << 16)
                if not b:
                    break
                h.update(b); n += len(b)
            c.sendall(f"{n} {h.hexdigest()}\n".encode())
        else:
            c.sendall(body + b"\n")
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"""

CLIENT = r"""
import socket, sys
host, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(); s.settimeout(3)
try:
    s.connect((host, port)); s.sendall(b"GET\n"); print("ok", s.recv(200).decode().strip())
except ConnectionRefusedError:
    print("refused")
except socket.timeout:
    print("timeout")
except OSError as e:
    print("error", e.errno)
"""


class FakeGuest:
    """A namespace with the guest's address, behind the VM's namespace like its TAP."""

    def __init__(self, vm_ns):
        self.name = f"fkvt{os.getpid()}-{next(_names)}"
        self.procs = []
        sh("ip", "netns", "add", self.name)
        in_ns(vm_ns, "ip", "link", "add", "tst0", "type", "veth", "peer", "name", "tst1",
              "netns", self.name)
        in_ns(vm_ns, "ip", "link", "set", "tst0", "up")
        in_ns(vm_ns, "ip", "route", "add", f"{GUEST}/32", "dev", "tst0")
        for cmd in (("ip", "link", "set", "lo", "up"),
                    ("ip", "addr", "add", f"{GUEST}/24", "dev", "tst1"),
                    ("ip", "link", "set", "tst1", "up"),
                    ("ip", "route", "add", "default", "via", GATEWAY)):
            self.run(*cmd)

    def run(self, *cmd, check=True, timeout=30):
        return sh("ip", "netns", "exec", self.name, *cmd, check=check, timeout=timeout)

    def serve(self, port, body):
        p = subprocess.Popen(["ip", "netns", "exec", self.name, sys.executable, "-c", SERVER,
                              GUEST, str(port), body], stdout=subprocess.PIPE, text=True)
        self.procs.append(p)
        assert p.stdout.readline().strip() == "ready"

    def connect(self, host, port):
        return self.run(sys.executable, "-c", CLIENT, host, str(port)).stdout.strip()

    def close(self):
        for p in self.procs:
            p.kill()
            p.wait()
        sh("ip", "netns", "del", self.name, check=False)


@pytest.fixture
def fake_guests():
    made = []

    def make(vm_ns):
        g = FakeGuest(vm_ns)
        made.append(g)
        return g
    yield make
    for g in made:
        g.close()


@pytest.fixture(scope="module")
def host_server():
    """A TCP server on every host address: answers with the peer's address and closes. And a
    second host address, on lo (kernels without the dummy driver), for allow/deny lists to
    tell apart."""
    sh("ip", "addr", "del", f"{DUMMY_ADDR}/32", "dev", "lo", check=False)
    sh("ip", "addr", "add", f"{DUMMY_ADDR}/32", "dev", "lo")
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", 0))
    srv.listen(16)
    peers = []

    def loop():
        while True:
            try:
                c, peer = srv.accept()
            except OSError:
                return
            with c:
                peers.append(peer[0])
                # read the request first: closing with it unread would send a reset, which
                # can overtake the answer
                c.settimeout(5)
                try:
                    c.recv(100)
                except OSError:
                    pass
                c.sendall(f"from {peer[0]}\n".encode())
    threading.Thread(target=loop, daemon=True).start()
    yield srv.getsockname()[1], peers
    srv.close()
    sh("ip", "addr", "del", f"{DUMMY_ADDR}/32", "dev", "lo", check=False)


def fetch(port, data=None, host="127.0.0.1"):
    """GET (a line back) or, with data, SUM: send it, half-close, read the digest."""
    with socket.create_connection((host, port), timeout=20) as s:
        if data is None:
            s.sendall(b"GET\n")
        else:
            s.sendall(b"SUM\n")
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        out = b""
        while True:
            b = s.recv(1 << 16)
            if not b:
                return out.decode().strip()
            out += b


# --- tests -----------------------------------------------------------------------------------

def test_namespace_tap_veth_and_rules(run_dir):
    pid, sock, net = started(run_dir, "a", "--net", "nat", "--publish", "0:8080",
                             "--deny", "192.0.2.0/24", "--net-mtu", "1400")
    assert net["mode"] == "nat" and net["guest"] == f"{GUEST}/24" and net["gateway"] == GATEWAY
    assert net["mtu"] == 1400 and net["tap"] == "tap0"
    slot = net["slot"]
    base = (10 << 24) | (253 << 16)
    ip = lambda v: socket.inet_ntoa(v.to_bytes(4, "big"))
    assert net["host_address"] == ip(base + 4 * slot + 1)
    assert net["ns_address"] == ip(base + 4 * slot + 2)
    assert net["host_interface"] == f"forkvm{slot}"
    assert net["host_table"] == f"forkvm_{pid}_{slot}"
    [pub] = net["published"]
    assert pub["host_ip"] == "127.0.0.1" and pub["guest_port"] == 8080 and pub["host_port"] > 0

    # The VMM stays in the host namespace; only its relay thread lives in the VM's.
    link, path = ns_link(pid)
    host_ns = os.readlink("/proc/self/ns/net")
    threads = {t: (open(f"/proc/{pid}/task/{t}/comm").read().strip(),
                   os.readlink(f"/proc/{pid}/task/{t}/ns/net"))
               for t in os.listdir(f"/proc/{pid}/task")}
    inside = [comm for comm, ns in threads.values() if ns == link]
    assert inside == ["forkvm-net"], threads
    assert all(ns in (host_ns, link) for _, ns in threads.values())
    assert os.readlink(f"/proc/{pid}/ns/net") == host_ns

    # Inside: lo, the TAP with the gateway address and MTU, the veth end, the route.
    links = {l["ifname"]: l for l in json.loads(in_ns(path, "ip", "-j", "addr").stdout)}
    assert set(links) == {"lo", "tap0", "veth0"}, links.keys()
    addrs = lambda l: {(a["local"], a["prefixlen"]) for a in l["addr_info"] if a["family"] == "inet"}
    assert addrs(links["tap0"]) == {(GATEWAY, 24)} and links["tap0"]["mtu"] == 1400
    assert addrs(links["veth0"]) == {(net["ns_address"], 30)}
    assert "UP" in links["lo"]["flags"] and "UP" in links["veth0"]["flags"]
    routes = json.loads(in_ns(path, "ip", "-j", "route").stdout)
    assert {"dst": "default", "gateway": net["host_address"], "dev": "veth0"}.items() <= \
        next(r for r in routes if r["dst"] == "default").items()
    assert in_ns(path, "cat", "/proc/sys/net/ipv4/ip_forward").stdout.strip() == "1"
    # The host end.
    h = host_links()[net["host_interface"]]
    assert addrs(h) == {(net["host_address"], 30)} and "UP" in h["flags"]

    # The rules inside the namespace, and the host table.
    rules = json.loads(in_ns(path, "nft", "-j", "list", "ruleset").stdout)["nftables"]
    chains = {c["chain"]["name"]: c["chain"] for c in rules if "chain" in c}
    assert {n: (c["family"], c["table"], c["hook"], c["policy"]) for n, c in chains.items()} == {
        "input": ("inet", "forkvm", "input", "drop"),
        "forward": ("inet", "forkvm", "forward", "drop"),
        "postrouting": ("inet", "forkvm", "postrouting", "accept")}
    text = json.dumps(rules)
    assert '"snat"' in text and net["ns_address"] in text
    sets = {s["set"]["name"]: s["set"] for s in rules if "set" in s}
    assert sets["deny"]["elem"] == [{"prefix": {"addr": "192.0.2.0", "len": 24}}]
    host_rules = sh("nft", "-j", "list", "table", "ip", net["host_table"]).stdout
    assert '"masquerade"' in host_rules and net["ns_address"] in host_rules
    assert sh("cat", "/proc/sys/net/ipv4/ip_forward").stdout.strip() == "1"
    assert not slot_free(slot)

    stop(sock, pid)
    assert_all_gone(net, link)


def test_isolated_has_no_route_and_no_host_table(run_dir):
    pid, sock, net = started(run_dir, "iso", "--net", "isolated")
    link, path = ns_link(pid)
    assert net["mode"] == "isolated" and net["host_table"] is None and net["published"] == []
    routes = json.loads(in_ns(path, "ip", "-j", "route").stdout)
    assert not [r for r in routes if r["dst"] == "default"]
    assert not [t for t in host_tables() if t.startswith(f"forkvm_{pid}_")]
    # No relay: the namespace thread ended once it had built the namespace.
    assert all(os.readlink(f"/proc/{pid}/task/{t}/ns/net") != link
               for t in os.listdir(f"/proc/{pid}/task"))
    stop(sock, pid)
    assert_all_gone(net, link)


def test_publish_relays_to_each_vm_on_the_same_guest_port(run_dir, fake_guests):
    vms = []
    for name in ("p1", "p2"):
        pid, sock, net = started(run_dir, name, "--publish", "0:8080")
        assert net["mode"] == "isolated"  # --publish alone
        link, path = ns_link(pid)
        fake_guests(path).serve(8080, f"guest of {name}")
        vms.append((name, pid, sock, net, link))
    ports = [v[3]["published"][0]["host_port"] for v in vms]
    assert len(set(ports)) == 2
    for (name, *_), port in zip(vms, ports):
        assert fetch(port) == f"guest of {name}"
    # Many bytes both ways through the relay's bounded buffers, with the client's half-close
    # passed on (the guest answers only after its end of file).
    data = os.urandom(8 << 20)
    assert fetch(ports[0], data) == f"{len(data)} {hashlib.sha256(data).hexdigest()}"
    # Several clients at once.
    out = {}
    ts = [threading.Thread(target=lambda i=i: out.__setitem__(i, fetch(ports[i % 2])))
          for i in range(16)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert all(out[i] == f"guest of p{i % 2 + 1}" for i in range(16))
    conns = call(vms[0][2], {"cmd": "status"})["net"]["connections"]
    assert conns["total"] >= 10 and conns["active"] == 0 and conns["failed"] == 0
    for name, pid, sock, net, link in vms:
        stop(sock, pid)
        assert_all_gone(net, link)


def test_connection_bound_holds_clients_in_the_backlog(run_dir, fake_guests):
    """At 256 relayed connections the next client waits (not refused) until one closes."""
    pid, sock, net = started(run_dir, "bound", "--publish", "0:8080")
    link, path = ns_link(pid)
    fake_guests(path).serve(8080, "bound")
    port = net["published"][0]["host_port"]
    held = []
    try:
        for _ in range(256):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(b"SUM\n")  # the guest reads until our end of file: the connection stays
            held.append(s)
        wait_for("256 relayed connections", lambda: call(sock, {"cmd": "status"})["net"]
                 ["connections"]["active"] == 256)
        extra = socket.create_connection(("127.0.0.1", port), timeout=10)  # in the backlog
        extra.sendall(b"GET\n")
        extra.settimeout(1)
        with pytest.raises(socket.timeout):
            extra.recv(100)
        assert call(sock, {"cmd": "status"})["net"]["connections"]["active"] == 256
        held.pop().shutdown(socket.SHUT_WR)  # one ends: its digest comes back, then EOF
        extra.settimeout(10)
        assert extra.recv(100) == b"bound\n"
        extra.close()
    finally:
        for s in held:
            s.close()
    stop(sock, pid)
    assert_all_gone(net, link)


def test_publish_to_a_guest_port_nobody_serves_closes_the_client(run_dir):
    pid, sock, net = started(run_dir, "noserv", "--publish", "127.0.0.1:0:9")
    port = net["published"][0]["host_port"]
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        s.settimeout(20)
        try:
            assert s.recv(10) == b""
        except ConnectionResetError:
            pass
    conns = wait_for("the failed connect to count",
                     lambda: call(sock, {"cmd": "status"})["net"]["connections"]["failed"] == 1)
    assert conns
    stop(sock, pid)


@pytest.mark.parametrize("args,expect", [
    (("--net", "nat"), ("ok", "ok")),
    (("--net", "isolated"), ("refused", "refused")),
    (("--net", "nat", "--allow", "198.51.100.0/24"), ("refused", "ok")),
    (("--net", "nat", "--deny", DUMMY_ADDR), ("ok", "refused")),
    (("--net", "nat", "--allow", "10.253.0.0/16", "--allow", DUMMY_ADDR,
      "--deny", "10.253.0.0/16"), ("refused", "ok")),
], ids=["nat", "isolated", "allow", "deny", "deny-wins"])
def test_egress_policy(run_dir, fake_guests, host_server, args, expect):
    port, peers = host_server
    pid, sock, net = started(run_dir, "eg", *args)
    link, path = ns_link(pid)
    g = fake_guests(path)
    got = []
    for dest in (net["host_address"], DUMMY_ADDR):
        r = g.connect(dest, port)
        for _ in range(2):  # a connection closed before the answer (seen under load): again
            if r != "ok":
                break
            r = g.connect(dest, port)
        got.append("ok" if r.startswith("ok") else
                   "refused" if r in ("refused", "error 113", "error 101") else r)
        if r.startswith("ok"):
            # The host sees the VM's own address: the guest's is the same in every VM.
            assert r == f"ok from {net['ns_address']}", r
    assert tuple(got) == expect, (args, got)
    stop(sock, pid)
    assert_all_gone(net, link)


def test_port_in_use_is_a_clear_error_and_leaves_nothing(run_dir):
    busy = socket.socket()
    busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    before_links = {n for n in host_links() if n.startswith("forkvm")}
    before_tables = host_tables()
    r, pid, _ = start(run_dir, "busy", "--net", "nat", "--publish", f"{port}:80")
    busy.close()
    assert pid is None
    assert f"host port 127.0.0.1:{port} is already in use" in r.stderr, r.stderr
    # nothing new (a dead VM's leftovers may have been reaped meanwhile)
    assert {n for n in host_links() if n.startswith("forkvm")} <= before_links
    assert host_tables() <= before_tables


@pytest.mark.parametrize("args,message", [
    (("--net", "wifi"), "--net 'wifi': need none, isolated or nat"),
    (("--publish", "80"), "--publish '80': need [IP:]HOSTPORT:GUESTPORT"),
    (("--publish", "8080:0"), "guest port '0' is not 1-65535"),
    (("--publish", "1.2.3:8080:80"), "'1.2.3' is not an IPv4 address"),
    (("--publish", "8080:80", "--publish", "8080:81"), "host port 8080 is published twice"),
    (("--allow", "10.0.0.0/8"), "--allow and --deny filter egress, which needs --net nat"),
    (("--net", "isolated", "--deny", "10.0.0.0/8"), "needs --net nat (the mode is isolated)"),
    (("--net", "nat", "--allow", "10.1.2.3/8"), "host bits set after the /8 prefix (did you "
     "mean 10.0.0.0/8?)"),
    (("--net", "nat", "--deny", "300.1.1.1"), "--deny '300.1.1.1': need an IPv4 address"),
    (("--net", "nat", "--net-addr", "10.253.7.2/24"), "overlaps the host-side pool"),
    (("--net", "nat", "--net-addr", "192.168.5.2/24,192.168.6.1"), "the gateway must be another "
     "address of the guest's subnet"),
    (("--net", "nat", "--net-mtu", "20"), "--net-mtu '20': need 68 to 65535"),
])
def test_option_errors(run_dir, args, message):
    r, pid, _ = start(run_dir, "bad", *args)
    assert pid is None and r.returncode != 0
    assert message in r.stderr, r.stderr


def test_other_guest_address(run_dir, fake_guests):
    pid, sock, net = started(run_dir, "addr", "--net", "nat", "--net-addr", "192.168.77.9/24")
    assert net["guest"] == "192.168.77.9/24" and net["gateway"] == "192.168.77.1"
    link, path = ns_link(pid)
    tap = {l["ifname"]: l for l in json.loads(in_ns(path, "ip", "-j", "addr").stdout)}["tap0"]
    assert [(a["local"], a["prefixlen"]) for a in tap["addr_info"]
            if a["family"] == "inet"] == [("192.168.77.1", 24)]
    stop(sock, pid)
    assert_all_gone(net, link)


def test_no_tun_and_not_root_are_clear_errors(run_dir, tmp_path):
    d, _ = run_dir
    # /dev/net hidden by an empty tmpfs in a mount namespace of this command only.
    r = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs none /dev/net && exec "
                        f"{FORKVM} run --name notun --mem 64M --detach --net nat"],
                       capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, FORKVM_RUN_DIR=d))
    assert r.returncode != 0 and "no /dev/net/tun" in r.stderr, r.stderr
    # Not root: the tool (no /dev/kvm needed) as nobody.
    build_tool()
    r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", TOOL,
                        "--net", "nat"], capture_output=True, text=True, timeout=60,
                       stdin=subprocess.DEVNULL)
    assert r.returncode != 0 and "networking a VM needs root" in r.stderr, r.stderr


def test_pool_exhausted_is_a_clear_error():
    build_tool()
    held = []
    os.makedirs(STATE_DIR, mode=0o700, exist_ok=True)
    try:
        for slot in range(16384):
            f = open(f"{STATE_DIR}/slot-{slot}.lock", "a")
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pass  # a running VMM's
            held.append(f)
        r = subprocess.run([TOOL, "--net", "isolated"], capture_output=True, text=True,
                           timeout=60, stdin=subprocess.DEVNULL)
    finally:
        for f in held:
            f.close()
    assert r.returncode != 0
    assert "address pool 10.253.0.0/16 is exhausted: all 16384 slots" in r.stderr, r.stderr


def test_kill9_leaves_nothing_once_the_next_vm_starts(run_dir, fake_guests):
    pid, sock, net = started(run_dir, "k", "--net", "nat", "--publish", "0:8080")
    link, path = ns_link(pid)
    # A relayed connection still open when the VMM dies: its socket in the namespace must
    # not keep the namespace (and so the veth) alive.
    fake_guests(path).serve(8080, "k")
    held = socket.create_connection(("127.0.0.1", net["published"][0]["host_port"]), timeout=10)
    held.sendall(b"SUM\n" + b"x" * 1000)
    wait_for("the relayed connection", lambda: call(sock, {"cmd": "status"})["net"]
             ["connections"]["active"] == 1)
    os.kill(pid, signal.SIGKILL)
    wait_for("the VMM to die", lambda: not os.path.exists(f"/proc/{pid}")
             or open(f"/proc/{pid}/stat").read().split(")")[1].split()[0] == "Z")
    # The kernel takes the namespace (so the veth) and the slot lock; the host table stays
    # until a reaper runs: the next VM's start.
    wait_for(f"namespace {link} to go", lambda: ns_held(link) is None)
    wait_for("the veth to go", lambda: net["host_interface"] not in host_links())
    assert slot_free(net["slot"])
    held.close()
    assert net["host_table"] in host_tables()
    pid2, sock2, net2 = started(run_dir, "k2", "--net", "isolated")
    link2, _ = ns_link(pid2)
    assert net["host_table"] not in host_tables()
    log = open(sock2 + ".log").read()
    assert f"removed the host table ip {net['host_table']} of a VMM that died (pid {pid})" in log
    stop(sock2, pid2)
    assert_all_gone(net2, link2)


def test_leftover_veth_of_a_free_slot_is_removed(run_dir):
    # The slot the next VM takes: the first whose lock is free.
    slot = next(s for s in range(16384) if slot_free(s))
    name = f"forkvm{slot}"
    sh("ip", "link", "add", name, "type", "veth", "peer", "name", f"fkvtpeer{slot}")
    try:
        pid, sock, net = started(run_dir, "lo", "--net", "isolated")
        assert net["slot"] == slot and net["host_interface"] == name
        assert f"removed {name}, left over by a VMM that died" in open(sock + ".log").read()
        stop(sock, pid)
    finally:
        sh("ip", "link", "del", name, check=False)


_tool_built = []


def build_tool():
    """tests/tools/net_child, made (or brought up to date) once per session."""
    if _tool_built:
        return
    san = ["SAN=1"] if os.path.basename(BUILD) == "build-san" else []
    sh("make", "-s", "-C", ROOT, *san, f"BUILD={os.path.basename(BUILD)}",
       os.path.join(os.path.basename(BUILD), "tools", "net_child"), timeout=600)
    _tool_built.append(True)


def test_cow_child_gets_its_own_network_under_the_control_filter(fake_guests):
    """What a forked VMM copy does (net_create_child): a new namespace, slot and host port, the
    same guest address; the parent's network untouched; each serves guest port 8080 on its own
    host port; a child killed with -9 leaves nothing once reaped; the parent ends clean."""
    build_tool()
    p = subprocess.Popen([TOOL, "--net", "nat", "--publish", "0:8080"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = {}
        for _ in range(2):
            line = p.stdout.readline()
            assert line, p.stderr.read()
            who, pid, st = line.split(" ", 2)
            lines[who] = (int(pid), json.loads(st))
        (ppid, parent), (cpid, child) = lines["parent"], lines["child"]
        assert parent["guest"] == child["guest"] == f"{GUEST}/24"
        assert parent["slot"] != child["slot"]
        assert parent["host_table"] == f"forkvm_{ppid}_{parent['slot']}"
        assert child["host_table"] == f"forkvm_{cpid}_{child['slot']}"
        pport, cport = (x["published"][0]["host_port"] for x in (parent, child))
        assert pport != cport
        plink, ppath = ns_link(ppid)
        clink, cpath = ns_link(cpid)
        assert plink != clink
        # The child holds nothing of the parent's: no fd of its namespace, TAP or slot.
        child_fds = {os.readlink(f"/proc/{cpid}/fd/{fd}") for fd in os.listdir(f"/proc/{cpid}/fd")}
        assert plink not in child_fds
        assert f"{STATE_DIR}/slot-{parent['slot']}.lock" not in child_fds
        fake_guests(ppath).serve(8080, "parent")
        fake_guests(cpath).serve(8080, "child")
        assert fetch(pport) == "parent" and fetch(cport) == "child"
        # kill -9 the child: the parent serves on; the child's leftovers are reaped.
        os.kill(cpid, signal.SIGKILL)
        wait_for("the child's namespace to go", lambda: ns_held(clink) is None)
        wait_for("the child's veth to go", lambda: child["host_interface"] not in host_links())
        assert fetch(pport) == "parent"
        assert child["host_table"] in host_tables()
        r = subprocess.run([TOOL, "--net", "isolated"], input="", capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 0, r.stderr
        assert child["host_table"] not in host_tables()
        assert parent["host_table"] in host_tables()
        p.stdin.close()
        assert p.wait(timeout=30) == 1  # its child died by SIGKILL: reported
        assert "killed by signal 9" in p.stderr.read()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert_all_gone(parent, plink)
    assert slot_free(child["slot"])


def branch(run_dir, sock, strategy, count, *extra):
    """`forkvm branch SOCK --strategy S --count N EXTRA`: its children (their VMMs are the
    run_dir fixture's to kill)."""
    d, procs = run_dir
    r = subprocess.run([FORKVM, "branch", sock, "--strategy", strategy, "--count", str(count),
                        *extra], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, FORKVM_RUN_DIR=d))
    assert r.returncode == 0, r.stderr
    kids = json.loads(r.stdout)["children"]
    procs.extend(k["pid"] for k in kids)
    return kids


def test_cow_branch_children_each_get_their_own_network(run_dir, fake_guests):
    """`forkvm branch --strategy cow` of a VM with a network: every child gets a namespace,
    TAP, slot and host port of its own (net_child_tap), the same guest address; each serves
    guest port 8080 on its own host port; nothing is left once all have stopped."""
    pid, sock, net = started(run_dir, "src", "--net", "nat", "--publish", "0:8080")
    kids = branch(run_dir, sock, "cow", 2)
    nets = [net] + [call(k["socket"], {"cmd": "status"})["net"] for k in kids]
    links = [ns_link(p)[0] for p in [pid] + [k["pid"] for k in kids]]
    assert len({n["slot"] for n in nets}) == 3 and len(set(links)) == 3
    # one gateway MAC everywhere: a clone's neighbour cache stays right (NET.md)
    macs = {json.loads(in_ns(ns_link(p)[1], "ip", "-j", "link", "show", "tap0").stdout)[0]
            ["address"] for p in [pid] + [k["pid"] for k in kids]}
    assert macs == {"02:66:76:6d:00:01"}, macs
    assert len({n["published"][0]["host_port"] for n in nets}) == 3
    assert {n["guest"] for n in nets} == {f"{GUEST}/24"}
    for k, n in zip(kids, nets[1:]):
        assert n["host_table"] == f"forkvm_{k['pid']}_{n['slot']}"
        fake_guests(ns_link(k["pid"])[1]).serve(8080, k["name"])
    fake_guests(ns_link(pid)[1]).serve(8080, "src")
    for name, n in zip(["src"] + [k["name"] for k in kids], nets):
        assert fetch(n["published"][0]["host_port"]) == name
    for k, n, link in zip(kids, nets[1:], links[1:]):
        stop(k["socket"], k["pid"])
        assert_all_gone(n, link)  # the child's own network, its host table included
    assert fetch(net["published"][0]["host_port"]) == "src"
    stop(sock, pid)
    assert_all_gone(net, links[0])


def test_restore_with_a_network(run_dir):
    """`run --restore` takes --net like a boot: the snapshot's NIC (its MAC) on the new TAP."""
    d, _ = run_dir
    pid, sock, net = started(run_dir, "snapsrc", "--net", "nat")
    mac = call(sock, {"cmd": "status"})["nic"]["mac"]
    snap = os.path.join(d, "snap")
    assert call(sock, {"cmd": "snapshot", "dir": snap})["ok"]
    stop(sock, pid)
    pid2, sock2, net2 = started(run_dir, "restored", "--restore", snap, "--net", "isolated",
                                "--publish", "0:80")
    st = call(sock2, {"cmd": "status"})
    assert st["nic"]["mac"] == mac and st["nic"]["tap"] == "tap0" and st["nic"]["attached"]
    assert net2["mode"] == "isolated" and net2["published"][0]["host_port"] > 0
    link2, _ = ns_link(pid2)
    stop(sock2, pid2)
    assert_all_gone(net2, link2)



@pytest.mark.parametrize("strategy", ["full", "diff"])
def test_restored_branch_children_get_networks_of_the_same_plan(run_dir, strategy):
    """Full and diff children (restored processes) of a networked source: each its own
    namespace, slot and host port (the source's options, publishes on port 0), the same guest
    address and policy; nothing is left when they stop."""
    d, procs = run_dir
    pid, sock, net = started(run_dir, f"b{strategy}", "--net", "nat", "--allow", "192.0.2.0/24",
                             "--publish", "0:8080")
    r = subprocess.run([FORKVM, "branch", sock, "--strategy", strategy, "--count", "2",
                        "--dir", os.path.join(d, f"{strategy}.snap")],
                       capture_output=True, text=True, timeout=180,
                       env=dict(os.environ, FORKVM_RUN_DIR=d))
    assert r.returncode == 0, r.stderr
    kids = json.loads(r.stdout)["children"]
    procs.extend(k["pid"] for k in kids)
    nets = [net] + [call(k["socket"], {"cmd": "status"})["net"] for k in kids]
    assert len({n["slot"] for n in nets}) == 3
    assert len({n["published"][0]["host_port"] for n in nets}) == 3
    for n in nets[1:]:
        assert (n["mode"], n["guest"], n["allow"]) == ("nat", f"{GUEST}/24", ["192.0.2.0/24"])
        assert n["published"][0]["guest_port"] == 8080
    links = [ns_link(k["pid"])[0] for k in kids]
    for k, n, link in zip(kids, nets[1:], links):
        stop(k["socket"], k["pid"])
        assert_all_gone(n, link)
    stop(sock, pid)


def test_forkvm_restore_count_passes_the_network_on(run_dir):
    """`forkvm restore --count 2 --net isolated --publish 0:80`: both children networked, on
    ports of their own; a snapshot with a NIC restored without a network is refused clearly."""
    d, procs = run_dir
    pid, sock, _ = started(run_dir, "rsrc", "--net", "isolated")
    snap = os.path.join(d, "rsnap")
    assert call(sock, {"cmd": "snapshot", "dir": snap})["ok"]
    stop(sock, pid)
    env = dict(os.environ, FORKVM_RUN_DIR=d)
    r = subprocess.run([FORKVM, "restore", snap, "--count", "2", "--name", "rk", "--net",
                        "isolated", "--publish", "0:80"], capture_output=True, text=True,
                       timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    kids = [line.split() for line in r.stdout.splitlines()]
    procs.extend(int(p) for _, p, _ in kids)
    nets = [call(s, {"cmd": "status"})["net"] for _, _, s in kids]
    assert {n["mode"] for n in nets} == {"isolated"}
    assert len({n["published"][0]["host_port"] for n in nets}) == 2
    for (_, p, s), n in zip(kids, nets):
        link = ns_link(int(p))[0]
        stop(s, int(p))
        assert_all_gone(n, link)
    r = subprocess.run([FORKVM, "restore", snap, "--name", "rn"], capture_output=True,
                       text=True, timeout=120, env=env)
    assert r.returncode != 0 and "no network for it" in r.stderr, r.stderr


# --- jailed VMMs: networks made by the family's broker (NET.md, "Networks of jailed VMMs") --

JAIL = ("--jail", "--jail-uid-base", "300000000")
BROKER_CAPS = (1 << 21) | (1 << 12) | (1 << 10)  # CAP_SYS_ADMIN, CAP_NET_ADMIN, NET_BIND_SERVICE


def proc_status(pid):
    with open(f"/proc/{pid}/status") as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


def broker_ns(broker, net):
    """(link, path) of the namespace the broker holds for the network net: the one whose
    veth0 has net's namespace address."""
    for fd in sorted(os.listdir(f"/proc/{broker}/fd"), key=int):
        path = f"/proc/{broker}/fd/{fd}"
        try:
            link = os.readlink(path)
        except FileNotFoundError:
            continue
        if link.startswith("net:[") and f"inet {net['ns_address']}/30" in \
                in_ns(path, "ip", "-o", "addr", "show", "veth0", check=False).stdout:
            return link, path
    raise AssertionError(f"the broker {broker} holds no namespace with {net['ns_address']}")


def test_a_jailed_vmm_and_its_cow_children_get_networks_from_the_broker(
        run_dir, fake_guests, host_server):
    """A jailed VMM cannot make a network: the broker it forked before its jail did, with
    only the capabilities networking needs. The VMM (no capability, its own empty namespace)
    holds the TAP; the broker holds the namespace and relays the published port; NAT egress
    works. Its cow children (as jailed as it) get networks of their own from the same
    broker; a child killed with -9 loses its network at once, host table included (no reaper
    needed); when the last VM of the family ends, the broker goes and nothing is left."""
    hport, _ = host_server
    pid, sock, net = started(run_dir, "j", *JAIL, "--net", "nat", "--publish", "0:8080")
    st = proc_status(pid)
    assert int(st["CapEff"], 16) == 0 and st["Uid"].split()[0] != "0", st
    assert not any(os.readlink(f"/proc/{pid}/fd/{fd}").startswith("net:[")
                   for fd in os.listdir(f"/proc/{pid}/fd")), "the jailed VMM holds a namespace"
    broker = net["broker_pid"]
    bst = proc_status(broker)
    assert bst["Name"] == "forkvm-netd" and bst["NoNewPrivs"] == "1", bst
    assert int(bst["CapEff"], 16) == BROKER_CAPS and int(bst["CapBnd"], 16) == BROKER_CAPS, bst
    link, path = broker_ns(broker, net)
    assert os.readlink(f"/proc/{pid}/ns/net") != link  # the VMM is not in its VM's namespace
    assert net["host_interface"] in host_links() and net["host_table"] in host_tables()
    g = fake_guests(path)
    g.serve(8080, "j")
    assert fetch(net["published"][0]["host_port"]) == "j"
    assert g.connect(net["host_address"], hport) == f"ok from {net['ns_address']}"
    assert call(sock, {"cmd": "status"})["net"]["connections"]["total"] == 1  # fresh counters

    kids = branch(run_dir, sock, "cow", 2)
    nets = [call(k["socket"], {"cmd": "status"})["net"] for k in kids]
    assert {n["broker_pid"] for n in nets} == {broker}
    assert len({n["slot"] for n in [net, *nets]}) == 3
    assert len({n["published"][0]["host_port"] for n in [net, *nets]}) == 3
    for k, n in zip(kids, nets):
        assert proc_status(k["pid"])["Uid"] == st["Uid"]  # as jailed as their source
        fake_guests(broker_ns(broker, n)[1]).serve(8080, k["name"])
        assert fetch(n["published"][0]["host_port"]) == k["name"]
    klink = broker_ns(broker, nets[0])[0]
    os.kill(kids[0]["pid"], signal.SIGKILL)
    assert_all_gone(nets[0], klink)  # at once: the broker saw its lifeline close
    assert f"network of {kids[0]['name']} (slot {nets[0]['slot']}) removed" in \
        open(sock + ".log").read()
    assert fetch(net["published"][0]["host_port"]) == "j"
    stop(kids[1]["socket"], kids[1]["pid"])
    stop(sock, pid)
    wait_for("the broker to exit", lambda: gone(broker), timeout=20)
    for n in [net, nets[1]]:
        assert_all_gone(n, "net:[none]")
    assert "no VM of this family is left: exiting" in open(sock + ".log").read()


def test_full_children_of_a_jailed_source_get_networks_from_its_broker(run_dir):
    """Full branch children are exec'd inside the source's jail: they get the broker as
    --net-broker-fd, and networks of the source's plan on new host ports from it."""
    pid, sock, net = started(run_dir, "jf", *JAIL, "--net", "isolated", "--publish", "0:8080")
    kids = branch(run_dir, sock, "full", 2, "--dir", os.path.join(run_dir[0], "jf.jail", "full"))
    nets = [call(k["socket"], {"cmd": "status"})["net"] for k in kids]
    assert {n["broker_pid"] for n in nets} == {net["broker_pid"]}
    assert {n["mode"] for n in nets} == {"isolated"} and all(n["host_table"] is None for n in nets)
    assert len({n["slot"] for n in [net, *nets]}) == 3
    assert len({n["published"][0]["host_port"] for n in [net, *nets]}) == 3
    for k in kids:
        stop(k["socket"], k["pid"])
    stop(sock, pid)
    wait_for("the broker to exit", lambda: gone(net["broker_pid"]), timeout=20)
    for n in [net, *nets]:
        assert_all_gone(n, "net:[none]")


def pidfd_getfd(pid, fd):
    """A copy of process pid's descriptor fd (pidfd_getfd, Linux 5.6; root)."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = os.pidfd_open(pid)
    try:
        got = libc.syscall(438, pidfd, fd, 0)  # SYS_pidfd_getfd
        if got < 0:
            raise OSError(ctypes.get_errno(), "pidfd_getfd")
        return got
    finally:
        os.close(pidfd)


def family_socket(pid):
    """A copy of the jailed VMM pid's socket to its family's broker: its first seqpacket
    socket (made before its lifeline)."""
    for fd in sorted(os.listdir(f"/proc/{pid}/fd"), key=int):
        if not os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"):
            continue
        s = socket.socket(fileno=pidfd_getfd(pid, int(fd)))
        if s.type == socket.SOCK_SEQPACKET:
            return s
        s.close()
    raise AssertionError(f"VMM {pid} holds no family socket")


def broker_request(name):
    """A well-formed request naming VM name (struct broker_req, net_broker.c)."""
    return (0x666e6264).to_bytes(4, "little") + name.encode().ljust(64, b"\0")


def test_the_broker_is_confined(run_dir):
    """The broker is uid 0 with CAP_SYS_ADMIN, so it is confined further: every thread under
    its seccomp filter (the relays under theirs too), and a private read-only root holding
    only /dev/net/tun, /proc (writable only under /proc/sys/net) and the slot directory. A
    syscall outside its list kills it with SIGSYS (the test hook: a request naming
    seccomp-probe, honoured only with FORKVM_TEST_SECCOMP_PROBE=1); its VMM runs on."""
    r, pid, sock = start(run_dir, "jc", *JAIL, "--net", "nat", "--publish", "0:8080",
                         env={"FORKVM_TEST_SECCOMP_PROBE": "1"})
    assert pid, r.stderr
    net = call(sock, {"cmd": "status"})["net"]
    broker = net["broker_pid"]
    threads = {t: proc_status(f"{broker}/task/{t}") for t in os.listdir(f"/proc/{broker}/task")}
    assert len(threads) >= 2, threads  # the broker and the relay of its published port
    for st in threads.values():
        assert st["Seccomp"] == "2", st
        assert st["Seccomp_filters"] == ("1" if st["Name"] == "forkvm-netd" else "2"), st
    assert proc_status(broker)["Name"] == "forkvm-netd"
    # In a cgroup of its own, root's, out of its family's (whose uid could move it anywhere
    # in there, then kill or freeze it).
    cg = next(line for line in open(f"/proc/{broker}/cgroup") if line.startswith("0::"))
    assert cg.strip().endswith(f"/forkvm/netd-{pid}"), cg
    root = f"/proc/{broker}/root"
    assert sorted(os.listdir(root)) == ["dev", "proc", "run"]
    assert os.listdir(f"{root}/dev") == ["net"] and os.listdir(f"{root}/dev/net") == ["tun"]
    assert os.listdir(f"{root}/run") == ["forkvm-net"]
    assert os.listdir(f"{root}/proc") == ["sys"] and os.listdir(f"{root}/proc/sys") == ["net"]
    assert "ip_forward" in os.listdir(f"{root}/proc/sys/net/ipv4")
    mounts = {line.split()[4]: line.split()[5].split(",")[0]
              for line in open(f"/proc/{broker}/mountinfo")}
    assert mounts == {"/": "ro", "/proc/sys/net": "rw", "/proc/sys/net/core": "ro",
                      "/run/forkvm-net": "rw", "/dev/net/tun": "rw"}, mounts
    with pytest.raises(OSError) as e:
        open(f"{root}/core_pattern", "w").write("|/bin/false")
    assert e.value.errno == errno.EROFS
    assert f"slot-{net['slot']}.lock" in os.listdir(f"{root}/run/forkvm-net")  # the host's
    # Its sysctls went to the VM's namespace through the bound /proc/sys/net/ipv4.
    vm_ns = broker_ns(broker, net)[1]
    assert in_ns(vm_ns, "cat", "/proc/sys/net/ipv4/tcp_fin_timeout").stdout.strip() == "5"
    assert open("/proc/sys/net/ipv4/tcp_fin_timeout").read().strip() != "5"

    fam = family_socket(pid)
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    fam.sendmsg([broker_request("seccomp-probe")],
                [(socket.SOL_SOCKET, socket.SCM_RIGHTS, b.fileno().to_bytes(4, "little"))])
    b.close()
    wait_for("the broker to die", lambda: gone(broker), timeout=20)
    # Its VMM, its parent, reaps it and says why.
    wait_for("the VMM to report its broker's end", lambda: f"network broker forkvm-netd (pid "
             f"{broker}) ended: killed by SIGSYS (seccomp violation)" in open(sock + ".log").read())
    a.close()
    fam.close()
    assert call(sock, {"cmd": "status"})["state"] == "running"
    assert call(sock, {"cmd": "stop"})["ok"]
    wait_for(f"VMM {pid} to exit", lambda: gone(pid))


def test_no_vm_of_a_family_can_shut_its_socket_down(run_dir):
    """The family socket is one socket shared by every VM of the family: a shutdown() by one
    would end the broker's service to all, a setsockopt() could shrink its buffers. The
    control and device threads may do either to any socket but that one: a device thread
    trying (the test hook; the source, then a cow child) dies with SIGSYS, and the family's
    last VM still gets networks from the broker."""
    env = {"FORKVM_TEST_SECCOMP_PROBE": "1"}
    r, pid, sock = start(run_dir, "js", *JAIL, "--net", "isolated", "--publish", "0:8080",
                         env=env)
    assert pid, r.stderr
    probe, kid = branch(run_dir, sock, "cow", 2)
    for vm, what, line in ((sock, "shutdown_family", "shuts down"),
                           (probe["socket"], "setsockopt_family", "sets options of")):
        with pytest.raises((ConnectionError, OSError)):
            call(vm, {"cmd": "seccomp_probe", "role": "device", "call": what}, timeout=10)
        wait_for("the VMM to die", lambda: gone(pid if vm == sock else probe["pid"]))
        assert f"a device thread {line} the family socket" in open(vm + ".log").read()
    # The family socket still serves: the last child branches, its child gets a network.
    (grandchild,) = branch(run_dir, kid["socket"], "cow", 1, "--name", "jsg")
    net = call(grandchild["socket"], {"cmd": "status"})["net"]
    assert net["broker_pid"] and net["published"][0]["host_port"]
    for k in (grandchild, kid):
        stop(k["socket"], k["pid"])
    # A VMM without a family socket says so.
    r, pid, sock = start(run_dir, "jn", "--net", "isolated", env=env)
    assert pid, r.stderr
    reply = call(sock, {"cmd": "seccomp_probe", "role": "device", "call": "shutdown_family"})
    assert not reply["ok"] and "no family socket" in reply["error"], reply
    stop(sock, pid)


def test_a_broker_serves_a_family_of_many_networks(run_dir):
    """Every relay thread of the broker makes its first allocations under the broker's filter;
    past 8 threads glibc sizes its malloc arenas with sched_getaffinity. A family of 12
    networks with published ports: every port answers (relayed by the broker, nothing in
    the guest: connection refused is an answer, a dead broker is not)."""
    pid, sock, net = started(run_dir, "jm", *JAIL, "--net", "isolated", "--publish", "0:8080")
    kids = branch(run_dir, sock, "cow", 11)
    nets = [net] + [call(k["socket"], {"cmd": "status"})["net"] for k in kids]
    assert len({n["slot"] for n in nets}) == 12 and not gone(net["broker_pid"])
    threads = os.listdir(f"/proc/{net['broker_pid']}/task")
    assert len(threads) >= 13, threads  # the broker and a relay per network
    for n in nets:
        with socket.create_connection(("127.0.0.1", n["published"][0]["host_port"]), 5):
            pass
    for k in kids:
        stop(k["socket"], k["pid"])
    stop(sock, pid)
    wait_for("the broker to exit", lambda: gone(net["broker_pid"]), timeout=20)


def test_children_of_a_family_whose_broker_died_fail_clearly(run_dir):
    """With the broker gone (killed here; a seccomp violation ends it the same way), a
    child of the family cannot get a network: cow and full children alike fail, naming the
    step and why, instead of starting unreachable; the source runs on."""
    d, _ = run_dir
    pid, sock, net = started(run_dir, "jd", *JAIL, "--net", "isolated", "--publish", "0:8080")
    os.kill(net["broker_pid"], signal.SIGKILL)
    wait_for("the broker to die", lambda: gone(net["broker_pid"]))
    wait_for("the VMM to report it", lambda: f"network broker forkvm-netd (pid "
             f"{net['broker_pid']}) ended: killed by signal 9" in open(sock + ".log").read())
    for strategy, extra in (("cow", ()), ("full", ("--dir", os.path.join(d, "jd.jail", "f")))):
        r = subprocess.run([FORKVM, "branch", sock, "--strategy", strategy, "--count", "1",
                            "--name", f"jd{strategy}", *extra], capture_output=True, text=True,
                           timeout=120, env=dict(os.environ, FORKVM_RUN_DIR=d))
        assert r.returncode != 0, r.stdout
        assert f"network of {'cow child ' if strategy == 'cow' else ''}jd{strategy}-0: " \
            "asking the network broker: Broken pipe (the family's broker is gone" in r.stderr, \
            r.stderr
        assert f"jd{strategy}-0.sock" not in os.listdir(os.path.join(d, "jd.jail"))
    assert call(sock, {"cmd": "status"})["state"] == "running"
    stop(sock, pid)


def test_the_broker_survives_hostile_requests(run_dir):
    """What a compromised jailed VMM can send on its family's socket: an empty message, no
    answer socket, two descriptors, the wrong size or magic, an answer socket that is a pipe
    or an unconnected listener -- each dropped (logged, descriptors closed), the broker
    serving on. A well-formed request gets a network of the family's plan only, on a free
    host port, with a lifeline the broker made itself; the network goes when the lifeline
    closes."""
    pid, sock, net = started(run_dir, "jh", *JAIL, "--net", "isolated", "--publish", "0:8080")
    broker = net["broker_pid"]
    fam = family_socket(pid)
    good = broker_request("intruder")
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    r, w = os.pipe()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(os.path.join(run_dir[0], "lst"))
    listener.listen(1)

    def send(msg, fds):
        anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                b"".join(f.to_bytes(4, "little") for f in fds))] if fds else []
        fam.sendmsg([msg], anc)
    hostile = [(b"", []), (good, []), (good, [b.fileno(), b.fileno()]), (good[:20], [b.fileno()]),
               (b"\0" * 4 + good[4:], [b.fileno()]), (good, [r]), (good, [listener.fileno()])]
    for msg, fds in hostile:
        send(msg, fds)
    os.close(r)
    os.close(w)
    listener.close()
    wait_for("the broker to log the malformed requests", lambda: open(sock + ".log").read()
             .count("a malformed request") == len(hostile))
    assert not gone(broker)
    # A well-formed one: a network of the plan (isolated, guest port 8080 on a new host port).
    send(good, [b.fileno()])
    b.close()
    msg, anc, _, _ = a.recvmsg(16384, socket.CMSG_SPACE(8))
    status = int.from_bytes(msg[:4], "little", signed=True)
    got = json.loads(msg[4:].rstrip(b"\0"))
    assert status == 0 and anc and len(anc[0][2]) == 8, msg
    tap, lifeline = (int.from_bytes(anc[0][2][i:i + 4], "little") for i in (0, 4))
    assert a.recv(16) == b""  # the broker closed the answer socket
    a.close()
    os.close(tap)
    assert got["mode"] == "isolated" and got["slot"] != net["slot"]
    assert got["published"][0]["guest_port"] == 8080
    assert got["published"][0]["host_port"] != net["published"][0]["host_port"]
    assert got["host_interface"] in host_links()
    os.close(lifeline)  # the network goes with it
    wait_for("the intruder's network to go", lambda: got["host_interface"] not in host_links()
             and slot_free(got["slot"]))
    fam.close()
    stop(sock, pid)
    wait_for("the broker to exit", lambda: gone(broker), timeout=20)


@pytest.mark.parametrize("args,env,message", [
    (["--net-broker-fd", "2"], {}, "need a descriptor number of 3 or more"),
    (["--net-broker-fd", "x1"], {}, "need a descriptor number of 3 or more"),
    (["--net", "isolated"], {"FORKVM_JAILED": "1"}, "needs its family's network broker"),
])
def test_broker_option_errors(run_dir, args, env, message):
    r, pid, _ = start(run_dir, "be", *args, env=env)
    assert pid is None and message in r.stderr, r.stderr


def test_a_broker_fd_that_is_not_one_is_refused(run_dir):
    d, _ = run_dir
    r = subprocess.run([FORKVM, "run", "--name", "bf", "--mem", "64M", "--net", "isolated",
                        "--net-broker-fd", "5", "--log", os.path.join(d, "bf.log")],
                       capture_output=True, text=True, timeout=60, pass_fds=(),
                       env=dict(os.environ, FORKVM_RUN_DIR=d),
                       preexec_fn=lambda: os.dup2(os.open("/dev/null", os.O_RDONLY), 5))
    assert r.returncode != 0
    assert "--net-broker-fd 5: not a network broker's socket" in open(os.path.join(d, "bf.log")).read()
