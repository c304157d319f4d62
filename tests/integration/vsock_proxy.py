"""A host-side stand-in for a VM's vsock socket: accepts `CONNECT <port>` and relays the byte
stream to a guest agent listening on a Unix socket (Linux guests cannot boot on this host).

It can also misbehave the way a restored guest does while its vsock driver handles the
transport reset and its agent settles (docs/VSOCK.md), connection by connection:

- `refuse_first=K`: the first K connections are closed without an answer line, as the VMM
  does when the guest refuses the port ("no agent listening"); `refuse_always=True`: all;
- `reset_first=K`: the next K get `OK`, then lose their first request and are closed before
  any reply ("connection closed before the reply");
- `drop_reply_ops=[op, ...]`: the first request with each of these ops reaches the agent (so
  it takes effect), but its reply is dropped and the connection closed: a reset that hit
  after the guest applied the request.

With any of these set, or `record=True`, the relay is frame by frame, and `ops` lists the ops
each connection carried to the agent (one list per connection that reached it)."""
import json
import os
import socket
import struct
import threading


def _recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def _recv_frame(sock):
    head = _recv_exact(sock, 4)
    if head is None:
        return None
    body = _recv_exact(sock, struct.unpack(">I", head)[0])
    return None if body is None else head + body


class VsockProxy:
    def __init__(self, path, agent_sock, port=52, refuse_first=0, refuse_always=False,
                 reset_first=0, drop_reply_ops=(), record=False):
        self.path, self.agent_sock, self.port = path, agent_sock, port
        self.refuse_first, self.refuse_always = refuse_first, refuse_always
        self.reset_first = reset_first
        self.drop_reply_ops = list(drop_reply_ops)
        self.framed = bool(record or refuse_first or refuse_always or reset_first or drop_reply_ops)
        self.connects = []
        self.ops = []
        self.lock = threading.Lock()
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(path)
        self.srv.listen(8)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.srv.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn):
        line = b""
        while not line.endswith(b"\n") and len(line) < 64:
            b = conn.recv(1)
            if not b:
                break
            line += b
        with self.lock:
            self.connects.append(line)
            n = len(self.connects) - 1
        if line != f"CONNECT {self.port}\n".encode() or self.refuse_always or n < self.refuse_first:
            conn.close()
            return
        up = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            up.connect(self.agent_sock)
            conn.sendall(b"OK 1024\n")
        except OSError:  # the client gave up meanwhile (its deadline)
            up.close()
            conn.close()
            return
        if self.framed:
            self._relay_frames(conn, up, reset=n < self.refuse_first + self.reset_first)
            return
        for a, b in ((conn, up), (up, conn)):
            threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _relay_frames(self, conn, up, reset):
        ops = []
        try:
            while True:
                req = _recv_frame(conn)
                if req is None or reset:
                    break
                op = json.loads(req[4:]).get("op")
                with self.lock:
                    if not ops:
                        self.ops.append(ops)
                    ops.append(op)
                    drop = op in self.drop_reply_ops
                    if drop:
                        self.drop_reply_ops.remove(op)
                up.sendall(req)
                reply = _recv_frame(up)
                if reply is None or drop:
                    break
                conn.sendall(reply)
        except OSError:
            pass
        up.close()
        conn.close()

    @staticmethod
    def _pump(src, dst):
        try:
            while True:
                data = src.recv(1 << 16)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (dst, src):
            try:
                s.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def close(self):
        self.srv.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


class FakeAgent:
    """A stand-in agent on a Unix socket: answers each op from `replies` (op -> reply dict,
    `ok: true` added unless given), anything else with ok:false."""

    def __init__(self, path, replies):
        self.path, self.replies = path, replies
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(path)
        self.srv.listen(8)
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.srv.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn):
        try:
            while True:
                req = _recv_frame(conn)
                if req is None:
                    break
                op = json.loads(req[4:]).get("op")
                reply = dict({"ok": True}, **self.replies[op]) if op in self.replies else \
                    {"ok": False, "error": f"unknown op {op}"}
                body = json.dumps(reply).encode()
                conn.sendall(struct.pack(">I", len(body)) + body)
        except OSError:
            pass
        conn.close()

    def close(self):
        self.srv.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
