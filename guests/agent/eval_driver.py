"""forkvm-agent eval driver: one warm Python interpreter serving the agent's eval op.

The agent embeds this file (mk/extra-agent.mk turns it into a C array) and starts it as
`python3 -c <this file> LISTEN_FD LIFELINE_FD` with SIGINT ignored, in a session of its own:

  LISTEN_FD    a listening Unix stream socket; the agent connects to it for every eval
  LIFELINE_FD  read end of a pipe whose write ends only agent processes hold: when it
               reports EOF the agent is gone and the interpreter kills its process group

Protocol (docs/AGENT.md, "eval"), on each accepted connection: frames of a 4-byte big-endian
length and a payload. The driver sends a hello {"pid", "python"}; then for every request
{"code", "max_output"} it answers with three frames: meta JSON {"result", "result_truncated",
"error"}, the raw stdout bytes, the raw stderr bytes.

The protocol fds are private (moved above PROTO_FD_MIN, close-on-exec). Fds 0/1/2 belong to
the evaluated code and are reset before every eval: 0 is /dev/null (reads see EOF), 1 and 2
are pipes that a thread drains into buffers bounded by max_output, so print(), os.write(1),
and subprocesses all land in the captured output without ever touching the protocol.
"""
import ast
import builtins
import fcntl
import json
import linecache
import os
import select
import signal
import socket
import struct
import sys
import threading
import time
import traceback
import warnings

PROTO_FD_MIN = 200          # protocol fds live up here, away from fds the code may close
MAX_REQUEST = 64 << 20      # the agent sends at most its own 16 MiB frame
MAX_RESULT = 1 << 20        # repr of the last expression, in UTF-8 bytes
MAX_ERROR_TEXT = 256 << 10  # exception value and traceback, each
HANGUP_GRACE_S = 2.0        # agent gone mid-eval: SIGINT, then SIGKILL this much later
DRIVER_PID = os.getpid()
DRIVER_GLOBALS = globals()

# Our drain thread is why fork() warns on 3.12+; forking evaluated code is supported.
warnings.filterwarnings("ignore", message=r".*multi-threaded.*fork", category=DeprecationWarning)


def high_fd(fd):
    """Move fd to a close-on-exec descriptor >= PROTO_FD_MIN; returns the new number."""
    new = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, PROTO_FD_MIN)
    os.close(fd)
    return new


def bounded_text(text, limit):
    """(text cut to at most limit UTF-8 bytes, whether it was cut); lone surrogates escaped."""
    data = text.encode("utf-8", "backslashreplace")
    if len(data) <= limit:
        return data.decode("utf-8"), False
    return data[:limit].decode("utf-8", "ignore"), True


# ---------------------------------------------------------------- output capture

class Capture:
    """fd 1 or 2 of the evaluated code: a pipe drained into a buffer of at most limit bytes."""

    def __init__(self, target):
        r, w = os.pipe()
        self.read_fd, self.write_fd = high_fd(r), high_fd(w)
        os.set_blocking(self.read_fd, False)
        self.target = target
        self.buf = bytearray()
        self.limit = 0
        self.truncated = False

    def attach(self):
        os.dup2(self.write_fd, self.target)  # inheritable: subprocesses write here too

    def drain(self):
        """Move whatever the pipe holds into the buffer; beyond limit only note truncation."""
        while True:
            try:
                data = os.read(self.read_fd, 1 << 16)
            except BlockingIOError:
                return
            if not data:
                return
            room = self.limit - len(self.buf)
            if len(data) > room:
                self.truncated = True
                data = data[:max(room, 0)]
            self.buf += data


class Watcher(threading.Thread):
    """Drains the captures; kills the interpreter when the agent is gone, or when the agent's
    connection hangs up mid-eval and the code does not stop on SIGINT."""

    def __init__(self, captures, lifeline):
        super().__init__(name="forkvm-eval-watcher", daemon=True)
        self.captures = captures
        self.lifeline = lifeline
        self.lock = threading.Lock()
        self.watch_fd = -1      # the agent connection of the eval now running, else -1
        self.watch_seq = 0

    def run(self):
        poller = select.poll()
        for c in self.captures:
            poller.register(c.read_fd, select.POLLIN)
        poller.register(self.lifeline, select.POLLIN)
        watched, seq, hung_up_at = -1, 0, None
        while True:
            ready = dict(poller.poll(100))
            with self.lock:
                for c in self.captures:
                    c.drain()
            if self.lifeline in ready:
                die()  # nobody can reach this interpreter any more
            fd, cur = self.watch_fd, self.watch_seq
            if (fd, cur) != (watched, seq):
                if watched >= 0:
                    poller.unregister(watched)
                if fd >= 0:
                    poller.register(fd, 0)  # POLLHUP/POLLERR are always reported
                watched, seq, hung_up_at = fd, cur, None
                continue
            if watched < 0 or not ready.get(watched, 0) & (select.POLLHUP | select.POLLERR):
                continue
            if hung_up_at is None:
                hung_up_at = time.monotonic()
                os.kill(DRIVER_PID, signal.SIGINT)
            elif time.monotonic() - hung_up_at > HANGUP_GRACE_S:
                die()

    def watch(self, fd):
        self.watch_seq += 1
        self.watch_fd = fd


# ---------------------------------------------------------------- running code

class Interrupt:
    """SIGINT raises KeyboardInterrupt only while evaluated code runs, and only once per
    eval, so the agent's timeout can never break the driver's own protocol work."""
    armed = False

    @classmethod
    def handler(cls, signum, frame):
        if cls.armed:
            cls.armed = False
            raise KeyboardInterrupt


def run_cell(code, filename, namespace):
    """Run code like a notebook cell: repr of a final expression statement, else None."""
    linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
    try:
        tree = ast.parse(code, filename, "exec")
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last = ast.Expression(tree.body.pop().value)
        body = compile(tree, filename, "exec", dont_inherit=True)
        tail = None if last is None else compile(last, filename, "eval", dont_inherit=True)
    except (SyntaxError, ValueError) as exc:
        # Only the source position matters, not the compiler frames (ast.py) it came from.
        raise exc.with_traceback(None) from None
    exec(body, namespace)
    if tail is None:
        return None
    value = eval(tail, namespace)
    return None if value is None else repr(value)


def strip_driver_frames(exc, seen=None):
    """Drop this file's frames from exc's traceback (and its chained exceptions')."""
    seen = set() if seen is None else seen
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        kept, tb = [], exc.__traceback__
        while tb is not None:
            if tb.tb_frame.f_globals is not DRIVER_GLOBALS:
                kept.append(tb)
            tb = tb.tb_next
        for a, b in zip(kept, kept[1:]):
            a.tb_next = b
        if kept:
            kept[-1].tb_next = None
        exc.__traceback__ = kept[0] if kept else None
        strip_driver_frames(exc.__cause__, seen)
        exc = exc.__context__


def describe(exc):
    """{"name", "value", "traceback"} of an exception, each string bounded."""
    try:
        strip_driver_frames(exc)
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    except BaseException:  # a hostile __str__ or a broken traceback: still report something
        tb = f"{type(exc).__name__} (traceback unavailable)\n"
    try:
        value = str(exc)
    except BaseException:
        value = f"<unprintable {type(exc).__name__}>"
    return {
        "name": type(exc).__name__,
        "value": bounded_text(value, MAX_ERROR_TEXT)[0],
        "traceback": bounded_text(tb, MAX_ERROR_TEXT)[0],
    }


class Session:
    """The interpreter's state: one namespace, the std fds, and the captures."""

    def __init__(self, lifeline):
        self.namespace = {"__name__": "__main__", "__builtins__": builtins, "__doc__": None}
        self.count = 0
        self.devnull = high_fd(os.open(os.devnull, os.O_RDWR))
        self.out, self.err = Capture(1), Capture(2)
        self.watcher = Watcher((self.out, self.err), lifeline)

    def reset_std(self, limit):
        """Fresh fds 0/1/2 and sys.std* for the next eval (the last one may have closed or
        replaced them); discard output that arrived between evals."""
        os.dup2(self.devnull, 0)
        self.out.attach()
        self.err.attach()
        with self.watcher.lock:
            for c in (self.out, self.err):
                c.drain()
                c.buf, c.limit, c.truncated = bytearray(), limit, False
        sys.stdin = open(0, "r", encoding="utf-8", errors="replace", closefd=False)
        sys.stdout = open(1, "w", buffering=1, encoding="utf-8", errors="backslashreplace",
                          closefd=False)
        sys.stderr = open(2, "w", buffering=1, encoding="utf-8", errors="backslashreplace",
                          closefd=False)
        signal.signal(signal.SIGINT, Interrupt.handler)

    def collect(self, streams):
        """Flush the code's streams and take everything written to fds 1/2 so far."""
        for s in streams:
            try:
                s.flush()
            except BaseException:
                pass
        with self.watcher.lock:
            self.out.drain()
            self.err.drain()
            return bytes(self.out.buf), bytes(self.err.buf)

    def guarded_run(self, code, filename):
        """(result, error) of one cell; SIGINT is armed only while the cell runs."""
        try:
            Interrupt.armed = True
            return run_cell(code, filename, self.namespace), None
        except BaseException as exc:  # SystemExit and KeyboardInterrupt are results too
            Interrupt.armed = False
            if os.getpid() != DRIVER_PID:
                leave_forked_child(exc)
            return None, describe(exc)
        finally:
            Interrupt.armed = False

    def execute(self, code, max_output, conn_fd):
        """Run one request; returns (meta, stdout bytes, stderr bytes)."""
        self.count += 1
        self.reset_std(max_output)
        ours = (sys.stdout, sys.stderr)
        self.watcher.watch(conn_fd)
        try:
            result, error = self.guarded_run(code, f"<eval-{self.count}>")
        except KeyboardInterrupt as exc:  # SIGINT raced the end of the cell
            result, error = None, describe(exc)
        self.watcher.watch(-1)
        if os.getpid() != DRIVER_PID:
            leave_forked_child(None)
        out, err = self.collect((sys.stdout, sys.stderr) + ours)
        meta = {"result": None, "result_truncated": False, "error": error,
                "stdout_truncated": self.out.truncated, "stderr_truncated": self.err.truncated}
        if result is not None:
            meta["result"], meta["result_truncated"] = bounded_text(result, MAX_RESULT)
        return meta, out, err


def leave_forked_child(exc):
    """A process forked by the code came back here: it must never answer the agent."""
    for s in (sys.stdout, sys.stderr):
        try:
            s.flush()
        except BaseException:
            pass
    if isinstance(exc, SystemExit):
        os._exit(exc.code if isinstance(exc.code, int) else 1)
    os._exit(0 if exc is None else 1)


def die():
    """SIGKILL this interpreter and whatever the code started in its process group."""
    if os.getpgrp() == DRIVER_PID:
        os.killpg(DRIVER_PID, signal.SIGKILL)
    os.kill(DRIVER_PID, signal.SIGKILL)


# ---------------------------------------------------------------- protocol

def recv_exact(sock, n):
    """n bytes, or None when the agent closed the connection first."""
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def recv_frame(sock):
    head = recv_exact(sock, 4)
    if head is None:
        return None
    (length,) = struct.unpack(">I", head)
    if length > MAX_REQUEST:
        return None
    return recv_exact(sock, length)


def send_frames(sock, *payloads):
    sock.sendall(b"".join(struct.pack(">I", len(p)) + p for p in payloads))


def encode(obj):
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def serve_connection(session, sock):
    send_frames(sock, encode({"pid": DRIVER_PID, "python": sys.version.split()[0]}))
    while True:
        payload = recv_frame(sock)
        if payload is None:
            return
        req = json.loads(payload)
        meta, out, err = session.execute(req["code"], int(req["max_output"]), sock.fileno())
        send_frames(sock, encode(meta), out, err)


def main(log_fd):
    listen_fd, lifeline = high_fd(int(sys.argv[1])), high_fd(int(sys.argv[2]))
    os.environ.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    sys.argv = [""]
    listener = socket.socket(fileno=listen_fd)
    session = Session(lifeline)
    session.watcher.start()
    signal.signal(signal.SIGINT, Interrupt.handler)
    while True:
        conn, _ = listener.accept()
        conn = socket.socket(fileno=high_fd(conn.detach()))
        try:
            serve_connection(session, conn)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            # The agent hung up or sent nonsense: drop this connection, keep the state.
            os.write(log_fd, f"forkvm eval driver: connection dropped: {exc!r}\n".encode())
        finally:
            conn.close()


# fd 2 is the agent's stderr (the guest console) until the first eval takes it over.
LOG_FD = high_fd(os.dup(2))
try:
    main(LOG_FD)
except BaseException:
    os.write(LOG_FD, ("forkvm eval driver: fatal:\n" + traceback.format_exc()).encode())
    die()
