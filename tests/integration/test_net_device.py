"""virtio-net on real KVM, driven by the probe guest's net_* commands against TAP devices of
this host (docs/NET.md, "Device"): frames both ways byte for byte, merged receive buffers,
offloads following the guest's features, no busy loop without receive buffers, snapshot and
restore onto another TAP with an announcement, a cow child that never shares its source's TAP,
and the errors a restore without a network gives."""
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time

import pytest

from forkvm_vm import Child, FORKVM, VM, call, forkvm_cmd, mix64, peek

pytestmark = pytest.mark.kvm

ETH_P = 0x88B5          # the probe's default ethertype
BUF = 32 << 20          # where net_recv puts received frames
BUF_LEN = 4 << 20
HDR = 12
F_CSUM, F_GUEST_CSUM, F_MAC, F_GUEST_TSO4, F_GUEST_TSO6 = 1 << 0, 1 << 1, 1 << 5, 1 << 7, 1 << 8
F_GUEST_ECN, F_HOST_TSO4, F_HOST_TSO6, F_HOST_ECN = 1 << 9, 1 << 11, 1 << 12, 1 << 13
F_MRG_RXBUF, F_STATUS, F_CTRL_VQ, F_GUEST_ANNOUNCE = 1 << 15, 1 << 16, 1 << 17, 1 << 21
F_VERSION_1 = 1 << 32
OFFERED = (F_CSUM | F_GUEST_CSUM | F_MAC | F_GUEST_TSO4 | F_GUEST_TSO6 | F_GUEST_ECN |
           F_HOST_TSO4 | F_HOST_TSO6 | F_HOST_ECN | F_MRG_RXBUF | F_STATUS | F_CTRL_VQ |
           F_GUEST_ANNOUNCE | F_VERSION_1)
S_LINK_UP, S_ANNOUNCE = 1, 2
ETH_P_ALL = 0x0003
PACKET_VNET_HDR = 15
SOL_PACKET = 263


def ip(*args, check=True):
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


class Env:
    """TAPs with unique names (removed at the end), VMMs and children (killed at the end)."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="forkvm-net-")
        self.run = os.path.join(self.dir, "run")
        os.makedirs(self.run)
        self.taps, self.vms, self.pids, self.socks = [], [], [], []

    def tap(self, mtu=None):
        name = f"fvn{os.getpid() % 100000}t{len(self.taps)}"
        ip("link", "del", name, check=False)
        ip("tuntap", "add", "dev", name, "mode", "tap")
        self.taps.append(name)
        # No IPv6 chatter (router solicitations, MLD) among the frames the tests count.
        with open(f"/proc/sys/net/ipv6/conf/{name}/disable_ipv6", "w") as f:
            f.write("1")
        if mtu:
            ip("link", "set", name, "mtu", str(mtu))
        ip("link", "set", name, "up")
        return name

    def sniff(self, tap, proto=ETH_P, vnet=False):
        """A packet socket on the host side of the TAP: what the guest sends arrives here,
        what is sent here goes to the guest."""
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(proto))
        if vnet:
            s.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
        s.bind((tap, 0))
        s.settimeout(5)
        self.socks.append(s)
        return s

    def vm(self, *extra, mem="64M"):
        vm = VM(mem=mem, extra=extra)
        self.vms.append(vm)
        return vm

    def sanitizer_reports(self):
        """Sanitizer findings in any VMM log of the test (an ASan/UBSan build)."""
        found = []
        logs = [vm.stderr_path for vm in self.vms]
        logs += [os.path.join(self.run, n) for n in os.listdir(self.run) if n.endswith(".log")]
        for path in logs:
            try:
                text = open(path, errors="replace").read()
            except FileNotFoundError:
                continue
            if "Sanitizer" in text or "runtime error:" in text:
                found.append(f"{path}:\n{text[-4000:]}")
        return found

    def close(self):
        for s in self.socks:
            s.close()
        for vm in self.vms:
            vm.kill()
        for pid in self.pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for name in self.taps:
            ip("link", "del", name, check=False)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def env():
    e = Env()
    yield e
    for vm in e.vms:  # a clean stop, so that a sanitizer build reports its leaks
        try:
            vm.stop()
        except (OSError, subprocess.TimeoutExpired):
            pass
    reports = e.sanitizer_reports()
    e.close()
    assert not reports, "\n".join(reports)


class Restored(VM):
    """`forkvm run --restore DIR` with our own arguments (no --mem/--vcpus)."""

    def __init__(self, env, snap, *extra):  # pylint: disable=super-init-not-called
        self.dir = tempfile.mkdtemp(prefix="r-", dir=env.dir)
        self.sock = os.path.join(self.dir, "vm.sock")
        self.console = os.path.join(self.dir, "console.log")
        self.stderr_path = os.path.join(self.dir, "vmm.stderr")
        r, w = os.pipe()
        args = [FORKVM, "run", "--restore", snap, "--socket", self.sock, "--console",
                self.console, "--ready-fd", str(w), *extra]
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(args, pass_fds=(w,), stderr=err, stdin=subprocess.DEVNULL)
        os.close(w)
        with os.fdopen(r, "rb") as rf:
            self.started = rf.read(1) == b"R"
        if not self.started:
            self.proc.wait(timeout=30)
        env.vms.append(self)


def frame(mac, i, seed, length, ethertype=ETH_P):
    """Frame i of a net_send: broadcast from the NIC's MAC, payload probe_net_word()."""
    payload = bytearray()
    k = 0
    while len(payload) < length - 14:
        payload += mix64((seed + (i << 32) + k) & (2**64 - 1)).to_bytes(8, "little")
        k += 1
    return b"\xff" * 6 + mac + ethertype.to_bytes(2, "big") + bytes(payload[:length - 14])


def mac_bytes(text):
    return bytes.fromhex(text.replace(":", ""))


def nic(vm):
    return vm.ok({"cmd": "status"})["nic"]


def recv_once(vm, post=64, max_frames=0):
    """One net_recv: the (vnet header, frame) pairs it copied out."""
    r = vm.ok({"cmd": "net_recv", "buf": BUF, "len": BUF_LEN, "post": post, "max": max_frames})
    raw = peek(vm, BUF, r["bytes"]) if r["bytes"] else b""
    out, off = [], 0
    for _ in range(r["frames"]):
        length, nbufs = struct.unpack_from("<II", raw, off)
        hdr = raw[off + 8:off + 8 + HDR]
        out.append((hdr, raw[off + 8 + HDR:off + 8 + HDR + length], nbufs))
        off += 8 + ((HDR + length + 7) & ~7)
    return out


def recv_frames(vm, want, timeout=10, ethertype=ETH_P):
    """Poll net_recv until `want` frames of ethertype arrived (others are dropped)."""
    got, deadline = [], time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        batch = [f for f in recv_once(vm) if f[1][12:14] == ethertype.to_bytes(2, "big")]
        got += batch
        if not batch:
            time.sleep(0.02)
    return got


def sniff_frames(s, want, timeout=5):
    got, deadline = [], time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        try:
            got.append(s.recv(1 << 17))
        except socket.timeout:
            break
    return got


def host_frame(dst, n, length):
    src = bytes([0x02, 0xaa, 0, 0, 0, n & 0xff])
    body = bytes((n * 7 + j) & 0xff for j in range(length - 14))
    return dst + src + ETH_P.to_bytes(2, "big") + body


def thread_cpu_ticks(pid, tid):
    fields = open(f"/proc/{pid}/task/{tid}/stat").read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def test_frames_both_ways_byte_exact(env):
    tap = env.tap(mtu=9000)
    vm = env.vm("--tap", tap, "--mac", "02:12:34:56:78:9a")
    n = nic(vm)
    assert n["mac"] == "02:12:34:56:78:9a" and n["tap"] == tap and n["attached"] and n["link_up"]
    up = vm.ok({"cmd": "net_up"})
    assert up["features"] == OFFERED and up["mac"] == n["mac"]
    assert nic(vm)["driver_features"] == OFFERED
    mac = mac_bytes(up["mac"])
    s = env.sniff(tap)
    # Guest -> TAP: small, MTU-sized and jumbo frames (a 9000-byte frame is a 4-descriptor chain).
    for length, count, seed in ((60, 5, 1), (1514, 20, 2), (9014, 3, 3)):
        r = vm.ok({"cmd": "net_send", "count": count, "len": length, "seed": seed})
        assert r["frames"] == count and r["bytes"] == count * length
        got = sniff_frames(s, count)
        assert got == [frame(mac, i, seed, length) for i in range(count)], length
    # TAP -> guest: small and MTU-sized frames, many in a row, in order, with clean headers.
    sent = [host_frame(mac, i, 60 if i % 2 else 1514) for i in range(100)]
    for f in sent:
        s.send(f)
    got = recv_frames(vm, len(sent))
    assert [g[1] for g in got] == sent
    assert all(g[0] == bytes(10) + (g[2]).to_bytes(2, "little") for g in got)
    st = nic(vm)["stats"]
    assert st["tx_frames"] == 28 and st["rx_frames"] == 100 and st["malformed"] == 0
    assert st["tx_bytes"] == 5 * 60 + 20 * 1514 + 3 * 9014
    # The guest's counters agree.
    stats = vm.ok({"cmd": "net_stats"})
    assert stats["status"] == S_LINK_UP and stats["rx_frames"] == 100 and stats["tx_frames"] == 28
    assert vm.stop() == 0


def test_large_frames_merged_receive_buffers(env):
    tap = env.tap(mtu=65000)
    vm = env.vm("--tap", tap)
    mac = mac_bytes(vm.ok({"cmd": "net_up"})["mac"])
    s = env.sniff(tap)
    # A 64 KiB frame from the guest: a 17-descriptor chain.
    vm.ok({"cmd": "net_send", "count": 2, "len": 65000, "seed": 9})
    assert sniff_frames(s, 2) == [frame(mac, i, 9, 65000) for i in range(2)]
    # 60 KB frames into 2 KiB buffers: each spread over 30 buffers (num_buffers), whole.
    sent = [host_frame(mac, i, 60000 - i) for i in range(3)]
    for f in sent:
        s.send(f)
    got = recv_frames(vm, 3)
    assert [g[1] for g in got] == sent
    assert [g[2] for g in got] == [-(-(HDR + len(f)) // 2048) for f in sent]
    # Without MRG_RXBUF a frame must fit one buffer: 2 KiB buffers drop it, 68 KiB take it.
    vm.ok({"cmd": "net_up", "features": OFFERED & ~F_MRG_RXBUF, "rx_size": 2048})
    dropped = nic(vm)["stats"]["rx_dropped"]
    s.send(sent[0])
    small = host_frame(mac, 200, 100)
    s.send(small)
    got = recv_frames(vm, 1)
    assert [g[1] for g in got] == [small] and got[0][2] == 1
    assert nic(vm)["stats"]["rx_dropped"] == dropped + 1
    vm.ok({"cmd": "net_up", "features": OFFERED & ~F_MRG_RXBUF, "rx_size": 0x11000})
    s.send(sent[1])
    got = recv_frames(vm, 1)
    assert [g[1] for g in got] == [sent[1]] and got[0][2] == 1


def tcp4_gso_packet(dst_mac, payload_len, mss):
    """A TCP/IPv4 super-packet with a virtio_net_hdr asking for TSO and checksum offload."""
    src_ip, dst_ip = bytes([10, 9, 0, 1]), bytes([10, 9, 0, 2])
    tcp = struct.pack("!HHIIBBHHH", 40000, 5001, 1, 0, 5 << 4, 0x18, 65535, 0, 0)
    iph = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + 20 + payload_len, 1, 0x4000, 64, 6, 0,
                      src_ip, dst_ip)
    csum = 0
    for i in range(0, 20, 2):
        csum += (iph[i] << 8) | iph[i + 1]
    csum = (csum & 0xffff) + (csum >> 16)
    csum = (csum & 0xffff) + (csum >> 16)
    iph = iph[:10] + struct.pack("!H", ~csum & 0xffff) + iph[12:]
    # The TCP checksum field holds the pseudo-header sum, as for CHECKSUM_PARTIAL.
    pseudo = sum(struct.unpack("!HHHH", src_ip + dst_ip)) + 6 + 20 + payload_len
    pseudo = (pseudo & 0xffff) + (pseudo >> 16)
    pseudo = (pseudo & 0xffff) + (pseudo >> 16)
    tcp = tcp[:16] + struct.pack("!H", pseudo & 0xffff) + tcp[18:]
    eth = dst_mac + bytes([0x02, 0xaa, 0, 0, 0, 9]) + b"\x08\x00"
    vnet = struct.pack("<BBHHHH", 1, 1, 14 + 20 + 20, mss, 14 + 20, 16)  # NEEDS_CSUM, TCPV4
    return vnet + eth + iph + tcp + bytes(i & 0xff for i in range(payload_len))


def test_tap_offloads_follow_the_guest(env):
    tap = env.tap()
    vm = env.vm("--tap", tap)
    mac = mac_bytes(vm.ok({"cmd": "net_up"})["mac"])
    s = env.sniff(tap, proto=0x0800, vnet=True)
    # GUEST_TSO4 accepted: the super-packet reaches the guest whole, as TSO with a partial
    # checksum, in merged buffers.
    s.send(tcp4_gso_packet(mac, 20000, 1000))
    got = recv_frames(vm, 1, ethertype=0x0800)
    assert len(got) == 1, got
    hdr, data, nbufs = got[0]
    flags, gso_type, _, gso_size = struct.unpack_from("<BBHH", hdr)
    assert flags & 1 and gso_type == 1 and gso_size == 1000 and len(data) == 14 + 40 + 20000
    assert nbufs > 1
    # Only checksums accepted: the host segments before the TAP, the guest gets MSS frames.
    vm.ok({"cmd": "net_up", "features": OFFERED & ~(F_GUEST_TSO4 | F_GUEST_TSO6 | F_GUEST_ECN)})
    time.sleep(0.1)  # the device thread sets the TAP's offloads right after DRIVER_OK
    s.send(tcp4_gso_packet(mac, 5000, 1000))
    got = recv_frames(vm, 5, ethertype=0x0800)
    assert len(got) == 5 and all(struct.unpack_from("<B", g[0], 1)[0] == 0 for g in got)
    assert sum(len(g[1]) - 54 for g in got) == 5000
    # No offloads at all: fully checksummed frames, header flags zero.
    vm.ok({"cmd": "net_up", "features": F_MAC | F_STATUS | F_MRG_RXBUF})
    time.sleep(0.1)
    s.send(tcp4_gso_packet(mac, 3000, 1000))
    got = recv_frames(vm, 3, ethertype=0x0800)
    assert len(got) == 3 and all(g[0][:2] == b"\0\0" for g in got)
    assert nic(vm)["stats"]["malformed"] == 0


def test_no_receive_buffers_no_busy_loop(env):
    tap = env.tap()
    vm = env.vm("--tap", tap)
    mac = mac_bytes(vm.ok({"cmd": "net_up", "rx_buffers": 0})["mac"])
    n = nic(vm)
    s = env.sniff(tap)
    sent = [host_frame(mac, i, 200) for i in range(50)]
    for f in sent:
        s.send(f)
    time.sleep(0.3)
    before = thread_cpu_ticks(vm.proc.pid, n["tid"])
    time.sleep(1.5)
    spent = thread_cpu_ticks(vm.proc.pid, n["tid"]) - before
    assert spent <= 3, f"the device thread used {spent} ticks in 1.5 s without receive buffers"
    assert nic(vm)["stats"]["rx_frames"] == 0
    # Buffers posted (with the notify): the waiting frames come in, none lost, in order.
    got = recv_frames(vm, len(sent))
    assert [g[1] for g in got] == sent
    assert nic(vm)["stats"]["rx_dropped"] == 0


def snapshot(vm, path):
    return vm.ok({"cmd": "snapshot", "dir": path}, timeout=300)


def test_snapshot_restore_onto_a_new_tap(env):
    tap_a, tap_b = env.tap(), env.tap()
    src = env.vm("--tap", tap_a)
    up = src.ok({"cmd": "net_up"})
    mac = mac_bytes(up["mac"])
    sa = env.sniff(tap_a)
    # Frames delivered into guest buffers before the snapshot are guest RAM: they survive.
    early = [host_frame(mac, i, 300) for i in range(3)]
    for f in early:
        sa.send(f)
    deadline = time.monotonic() + 5
    while nic(src)["stats"]["rx_frames"] < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    snap = os.path.join(env.dir, "snap")
    snapshot(src, snap)
    r = forkvm_cmd("snapshot", "verify", snap, "--sections")
    assert r.returncode == 0 and '"net"' in r.stdout, r.stdout + r.stderr
    src_nic = nic(src)
    assert src.stop() == 0
    # A restore without a network: a clear error naming the step, no VM.
    bad = Restored(env, snap)
    assert not bad.started and bad.proc.returncode != 0
    err = bad.stderr()
    assert "restoring its NIC" in err and src_nic["mac"] in err and "--tap" in err, err
    # With another TAP: same slot and MAC, link up, and an announcement for the new wire.
    child = Restored(env, snap, "--tap", tap_b)
    assert child.started, child.stderr()
    n = nic(child)
    assert (n["slot"], n["mac"], n["tap"], n["link_up"]) == (src_nic["slot"], src_nic["mac"], tap_b, True)
    assert n["announce"] and n["driver_features"] == OFFERED
    assert child.ok({"cmd": "net_stats"})["status"] == S_LINK_UP | S_ANNOUNCE
    got = recv_frames(child, 3)
    assert [g[1] for g in got] == early  # the queues picked up where they were
    stats = child.ok({"cmd": "net_stats"})
    assert stats["announces"] == 1 and stats["status"] == S_LINK_UP
    assert not nic(child)["announce"] and nic(child)["stats"]["announces"] == 1
    # Traffic both ways on the new TAP.
    sb = env.sniff(tap_b)
    child.ok({"cmd": "net_send", "count": 4, "len": 500, "seed": 5})
    assert sniff_frames(sb, 4) == [frame(mac, i, 5, 500) for i in range(4)]
    late = [host_frame(mac, 50 + i, 700) for i in range(4)]
    for f in late:
        sb.send(f)
    assert [g[1] for g in recv_frames(child, 4)] == late
    # A snapshot without a NIC restored with --tap: a warning, the TAP unused, the VM runs.
    plain = env.vm()
    snapshot(plain, os.path.join(env.dir, "plain"))
    plain.stop()
    other = Restored(env, os.path.join(env.dir, "plain"), "--tap", tap_a)
    assert other.started, other.stderr()
    assert "no NIC" in other.stderr() and "nic" not in other.ok({"cmd": "status"})
    other.ok({"cmd": "ping"})
    assert child.stop() == 0 and other.stop() == 0


def test_cow_child_never_shares_the_source_tap(env):
    tap = env.tap()
    src = env.vm("--tap", tap)
    mac = mac_bytes(src.ok({"cmd": "net_up"})["mac"])
    s = env.sniff(tap)
    reply = src.call({"cmd": "branch", "strategy": "cow", "count": 1, "prefix": "nc",
                      "run_dir": env.run, "paused": False}, timeout=300)
    assert reply["ok"], reply
    kid = Child(reply["children"][0]["socket"], reply["children"][0]["pid"])
    env.pids.append(kid.pid)
    env.pids.append(call(reply["template"], {"cmd": "status"})["pid"])
    n = nic(kid)
    assert n["mac"] == nic(src)["mac"] and not n["attached"] and not n["link_up"] and n["tap"] is None
    # The child's own TAP fds: none is a TUN/TAP.
    for fd in os.listdir(f"/proc/{kid.pid}/fd"):
        try:
            assert os.readlink(f"/proc/{kid.pid}/fd/{fd}") != "/dev/net/tun"
        except FileNotFoundError:
            pass
    with open(f"{kid.sock}.log") as f:
        assert "no TAP of its own" in f.read()
    # The guest sees the link down; what it sends goes nowhere (dropped), not onto the TAP.
    deadline = time.monotonic() + 5
    while kid.ok({"cmd": "net_stats"})["status"] & S_LINK_UP and time.monotonic() < deadline:
        time.sleep(0.02)
    assert kid.ok({"cmd": "net_stats"})["status"] == 0
    kid.ok({"cmd": "net_send", "count": 5, "len": 200, "seed": 77})
    assert nic(kid)["stats"]["tx_dropped"] == 5
    assert sniff_frames(s, 1, timeout=0.5) == []
    # The source keeps its TAP, both ways.
    src.ok({"cmd": "net_send", "count": 2, "len": 200, "seed": 78})
    assert sniff_frames(s, 2) == [frame(mac, i, 78, 200) for i in range(2)]
    f = host_frame(mac, 1, 300)
    s.send(f)
    assert [g[1] for g in recv_frames(src, 1)] == [f]
    assert recv_once(kid) == []
    assert kid.stop() == 0 and src.stop() == 0


def test_bad_options_and_commands(env):
    tap = env.tap()
    for args, needle in ((("--mac", "03:00:00:00:00:01", "--tap", tap), "--mac"),
                         (("--mac", "02:00:00:00:00:0g", "--tap", tap), "--mac"),
                         (("--mac", "02:00:00:00:00:01"), "needs a NIC"),
                         (("--tap", "x" * 16), "--tap")):
        r = forkvm_cmd("run", *args, timeout=30)
        assert r.returncode != 0 and needle in r.stderr, (args, r.stderr)
    vm = env.vm()
    for req in ({"cmd": "net_up"}, {"cmd": "net_send", "len": 100},
                {"cmd": "net_recv", "buf": BUF, "len": 4096}, {"cmd": "net_stats"}):
        r = vm.call(req)
        assert not r["ok"] and "no NIC" in r["error"], r
    vm.ok({"cmd": "ping"})
    vm2 = env.vm("--tap", tap)
    r = vm2.call({"cmd": "net_send", "len": 100})
    assert not r["ok"] and "net_up first" in r["error"], r  # not set up: the guest refuses
    r = vm2.call({"cmd": "net_up", "mmio": 0xd0001000})
    assert not r["ok"] and "no NIC at" in r["error"], r
    vm2.ok({"cmd": "ping"})
