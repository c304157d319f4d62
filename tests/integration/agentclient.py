"""Tiny client for the forkvm guest agent's frame protocol (see docs/AGENT.md).

Frames are a 4-byte big-endian length followed by that many bytes of UTF-8 JSON.
The same client works over a Unix socket (agent run on the host with --unix, for
tests) and over AF_VSOCK (the agent inside a guest).
"""
import base64
import json
import os
import socket
import struct
import subprocess
import time

MAX_FRAME = 16 << 20
DEFAULT_TIMEOUT = 30.0


class AgentError(Exception):
    """The agent replied {"ok": false, ...}; .reply holds the whole reply."""

    def __init__(self, reply):
        super().__init__(reply.get("error", "agent error"))
        self.reply = reply


def encode_frame(payload):
    """Frame bytes (or a JSON-able object) as the agent expects them."""
    if not isinstance(payload, (bytes, bytearray)):
        payload = json.dumps(payload).encode()
    return struct.pack(">I", len(payload)) + payload


def recv_exact(sock, n):
    """Read exactly n bytes; None on a clean EOF before the first byte."""
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            if not buf:
                return None
            raise ConnectionError(f"stream ended after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


class AgentClient:
    def __init__(self, sock, timeout=DEFAULT_TIMEOUT):
        self.sock = sock
        self.sock.settimeout(timeout)
        self._next_id = 1

    @classmethod
    def unix(cls, path, timeout=DEFAULT_TIMEOUT):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
        except OSError:
            sock.close()
            raise
        return cls(sock, timeout)

    @classmethod
    def vsock(cls, cid, port=52, timeout=DEFAULT_TIMEOUT):
        sock = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
        try:
            sock.connect((cid, port))
        except OSError:
            sock.close()
            raise
        return cls(sock, timeout)

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send_raw(self, data):
        self.sock.sendall(data)

    def send(self, obj):
        self.sock.sendall(encode_frame(obj))

    def recv(self):
        """The next reply as a dict, or None when the agent closed the connection."""
        hdr = recv_exact(self.sock, 4)
        if hdr is None:
            return None
        (length,) = struct.unpack(">I", hdr)
        if length > MAX_FRAME:
            raise ConnectionError(f"agent sent a {length}-byte frame")
        payload = recv_exact(self.sock, length)
        if payload is None:
            raise ConnectionError("agent closed the connection inside a frame")
        return json.loads(payload)

    def request(self, op, **fields):
        """Send one request and return its reply (ok or not), checking the echoed id."""
        req_id = self._next_id
        self._next_id += 1
        self.send(dict(fields, op=op, id=req_id))
        reply = self.recv()
        if reply is None:
            raise ConnectionError(f"agent closed the connection instead of answering {op}")
        if reply.get("id") != req_id:
            raise AssertionError(f"reply id {reply.get('id')!r} != request id {req_id}")
        return reply

    def call(self, op, **fields):
        """Like request, but raise AgentError unless the reply is ok."""
        reply = self.request(op, **fields)
        if not reply.get("ok"):
            raise AgentError(reply)
        return reply

    # Convenience wrappers used by the tests and by guest tests over vsock.
    def ping(self):
        return self.call("ping")

    def exec(self, argv, **fields):
        return self.call("exec", argv=list(argv), **fields)

    def exec_stream(self, argv, on_event=None, **fields):
        """A streamed exec: (events, reply). Each event {"event": "stdout"|"stderr", "data",
        "data_encoding", "id"} is also passed to on_event as it arrives; the reply is the last
        frame, ok or not."""
        req_id = self._next_id
        self._next_id += 1
        self.send(dict(fields, op="exec", argv=list(argv), stream=True, id=req_id))
        events = []
        while True:
            frame = self.recv()
            if frame is None:
                raise ConnectionError("agent closed the connection during a streamed exec")
            if frame.get("id") != req_id:
                raise AssertionError(f"frame id {frame.get('id')!r} != request id {req_id}")
            if "event" not in frame:
                return events, frame
            events.append(frame)
            if on_event:
                on_event(frame)

    def write_file(self, path, data, mode=0o644, atomic=True):
        return self.call("write_file", path=path, content=b64(data), mode=mode, atomic=atomic)

    def read_file(self, path, max_bytes=None):
        fields = {"path": path}
        if max_bytes is not None:
            fields["max_bytes"] = max_bytes
        reply = self.call("read_file", **fields)
        return base64.b64decode(reply["content"]), reply

    def eval(self, code, lang="python", context=None, timeout_ms=None, **fields):
        """Run code in the guest's warm interpreter (op "eval"). Raises AgentError when the
        agent refuses (busy context, bad lang, no python3); an exception in the code is not
        an AgentError but the reply's "error" ({"name", "value", "traceback"})."""
        if context is not None:
            fields["context"] = context
        if timeout_ms is not None:
            fields["timeout_ms"] = timeout_ms
        return self.call("eval", code=code, lang=lang, **fields)

    def eval_close(self, context="default"):
        return self.call("eval_close", context=context)

    def put_tree(self, path, tar):
        """Extract the ustar archive (bytes) into the guest directory path."""
        return self.call("put_tree", path=path, data=b64(tar))

    def get_tree(self, path, max_bytes=None):
        """(archive bytes, reply) of a guest directory or file; reply["type"] says which."""
        fields = {"path": path}
        if max_bytes is not None:
            fields["max_bytes"] = max_bytes
        reply = self.call("get_tree", **fields)
        return base64.b64decode(reply["data"]), reply


def b64(data):
    return base64.b64encode(data).decode()


def gone_or_zombie(pid):
    """True once pid has died (it may linger as a zombie of whoever adopted it)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError):  # reaped between open and read: ESRCH
        return True


def wait_gone(pid, timeout=10.0):
    """True once pid has died within timeout seconds."""
    deadline = time.monotonic() + timeout
    while not gone_or_zombie(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def event_bytes(events, stream):
    """The exact bytes of a streamed exec's events of one stream, in order."""
    out = b""
    for ev in events:
        if ev["event"] == stream:
            out += (base64.b64decode(ev["data"]) if ev["data_encoding"] == "base64"
                    else ev["data"].encode())
    return out


def output_bytes(reply, stream):
    """The exact bytes of an exec reply's "stdout"/"stderr", whatever its encoding."""
    if reply[f"{stream}_encoding"] == "base64":
        return base64.b64decode(reply[stream])
    return reply[stream].encode()


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def agent_binary(build_dir=None):
    """$FORKVM_BUILD/forkvm-agent (default build/), relative paths taken from the repo root."""
    build_dir = build_dir or os.environ.get("FORKVM_BUILD", "build")
    return os.path.join(ROOT, build_dir, "forkvm-agent")


def start_agent(sock_path, build_dir=None, extra_args=(), ready_timeout=10.0, **popen_kw):
    """Start the agent on a Unix socket in test mode (--no-reboot) and wait until it answers.

    popen_kw go to subprocess.Popen, except prefix: argv words to run the agent under
    (e.g. setpriv to drop privileges).
    """
    binary = agent_binary(build_dir)
    argv = list(popen_kw.pop("prefix", ())) + [binary, "--unix", sock_path, "--no-reboot"]
    proc = subprocess.Popen(argv + list(extra_args), **popen_kw)
    deadline = time.monotonic() + ready_timeout
    while True:
        try:
            with AgentClient.unix(sock_path, timeout=5) as c:
                c.ping()
            return proc
        except (OSError, ConnectionError):
            if proc.poll() is not None:
                raise RuntimeError(f"agent exited with {proc.returncode} before answering")
            if time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                raise RuntimeError("agent did not answer ping in time")
            time.sleep(0.02)


def stop_agent(proc, timeout=10.0):
    """SIGTERM the agent and wait; returns its exit status."""
    if proc.poll() is None:
        proc.terminate()
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


# Lines in an agent's log that mean a connection process ended abnormally (a crash, a
# sanitizer finding).
AGENT_LOG_BAD = ("Sanitizer", "runtime error", "connection process")


def finish_agent(proc, log, log_path, bad=AGENT_LOG_BAD):
    """Stop an agent started with stderr=log, close log, and check that it exited 0 and that
    its log (log_path) holds none of bad."""
    status = stop_agent(proc)
    log.close()
    with open(log_path, errors="replace") as f:
        text = f.read()
    assert status == 0, text
    for word in bad:
        assert word not in text, text
