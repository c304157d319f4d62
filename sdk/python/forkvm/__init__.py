"""forkvm's Python SDK: sandboxes through forkvmd's REST API (docs/DAEMON.md).

Standard library only. The daemon is reached on its Unix socket (default
$FORKVM_DAEMON_SOCKET, else /var/lib/forkvm/api.sock) or over TCP with a bearer token
($FORKVM_DAEMON_URL and $FORKVM_DAEMON_TOKEN, or Client(url=..., token=...)).

    from forkvm import Sandbox
    with Sandbox.create(guest="linux", mem_mib=512) as sb:
        sb.commands.run("python3 -c 'import numpy'")
        kids = sb.fork(count=10)          # each child starts from this very state
        print(kids[0].commands.run("echo hi").stdout)
"""
import http.client
import json
import os
import socket
import urllib.parse

__all__ = ["Client", "Sandbox", "Snapshot", "ExecResult", "EvalResult", "ForkvmError", "BadRequest",
           "Unauthorized", "NotFound", "Conflict", "TooLarge", "GuestError", "Unavailable"]

DEFAULT_SOCKET = "/var/lib/forkvm/api.sock"


class ForkvmError(Exception):
    """An error answer of the daemon: HTTP status, stable code, message."""

    def __init__(self, status, code, message):
        super().__init__(f"{code}: {message}" if code else message)
        self.status, self.code, self.message = status, code, message


class BadRequest(ForkvmError):
    """400: a field the daemon refused (unknown, wrong type, out of range) or bad JSON."""


class Unauthorized(ForkvmError):
    """401: no or a wrong bearer token (TCP)."""


class NotFound(ForkvmError):
    """404: no such sandbox, snapshot or route."""


class Conflict(ForkvmError):
    """409: the object's state does not allow it (not running, no agent, in use)."""


class TooLarge(ForkvmError):
    """413: a body or a file above the daemon's bounds."""


class GuestError(ForkvmError):
    """422: the guest agent refused (e.g. a command that does not exist), or a snapshot is
    damaged (code snapshot_invalid)."""


class Unavailable(ForkvmError):
    """5xx, or the daemon could not be reached."""


_BY_STATUS = {400: BadRequest, 401: Unauthorized, 404: NotFound, 405: NotFound,
              409: Conflict, 413: TooLarge, 422: GuestError}


def _error(status, code, message):
    cls = _BY_STATUS.get(status, Unavailable if status >= 500 else ForkvmError)
    return cls(status, code, message)


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        try:
            s.connect(self._path)
        except OSError:
            s.close()
            raise
        self.sock = s


class Client:
    """One daemon. Each request opens its own connection, so a Client is safe across threads."""

    def __init__(self, socket_path=None, url=None, token=None, timeout=900, ca_file=None):
        self.url = url or os.environ.get("FORKVM_DAEMON_URL")
        self.token = token or os.environ.get("FORKVM_DAEMON_TOKEN")
        self.socket_path = socket_path or os.environ.get("FORKVM_DAEMON_SOCKET") or DEFAULT_SOCKET
        self.timeout = timeout
        self.ca_file = ca_file or os.environ.get("FORKVM_DAEMON_CA")  # https: whom to trust

    def _connection(self):
        if self.url:
            u = urllib.parse.urlsplit(self.url)
            if u.scheme == "https":
                import ssl
                ctx = ssl.create_default_context(cafile=self.ca_file)
                return http.client.HTTPSConnection(u.hostname, u.port or 443, timeout=self.timeout,
                                                   context=ctx)
            return http.client.HTTPConnection(u.hostname, u.port or 80, timeout=self.timeout)
        return _UnixHTTPConnection(self.socket_path, self.timeout)

    def request(self, method, path, body=None, raw=None, query=None):
        """The decoded JSON answer (or bytes for non-JSON answers); raises ForkvmError."""
        conn, resp = self._open(method, path, body, raw, query)
        try:
            payload = resp.read()
        except OSError as e:
            raise Unavailable(None, "unreachable",
                              f"forkvm daemon at {self.url or self.socket_path}: {e}") from e
        finally:
            conn.close()
        if resp.getheader("Content-Type", "").startswith("application/json"):
            return json.loads(payload)
        return payload

    def stream(self, method, path, body=None):
        """An NDJSON answer (a streamed exec), one decoded line at a time as it arrives."""
        conn, resp = self._open(method, path, body, None, None)
        try:
            while True:
                line = resp.readline()
                if not line:
                    return
                if line.strip():
                    yield json.loads(line)
        except OSError as e:
            raise Unavailable(None, "unreachable",
                              f"forkvm daemon at {self.url or self.socket_path}: {e}") from e
        finally:
            conn.close()

    def _open(self, method, path, body, raw, query):
        """Send a request; (connection, response) once its status is not an error."""
        if query:
            path += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
        headers = {}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        elif raw is not None:
            data = bytes(raw)
            headers["Content-Type"] = "application/octet-stream"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        conn = self._connection()
        try:
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            payload = resp.read() if resp.status >= 400 else None
        except OSError as e:
            conn.close()
            where = self.url or self.socket_path
            raise Unavailable(None, "unreachable", f"forkvm daemon at {where}: {e}") from e
        if resp.status >= 400:
            conn.close()
            try:
                err = json.loads(payload)["error"]
                code, message = err.get("code"), err.get("message", "")
            except (ValueError, KeyError, TypeError):
                code, message = None, payload.decode(errors="replace")[:500]
            raise _error(resp.status, code, message)
        return conn, resp

    def healthz(self):
        return self.request("GET", "/v1/healthz")

    def metrics(self):
        return self.request("GET", "/v1/metrics").decode()

    def images(self):
        """The built guest images: [{kind: "kernel"|"rootfs", dir, manifest}]."""
        return self.request("GET", "/v1/images")

    def build_image(self, kind="rootfs", packages=None):
        """Build (or rebuild) an image; packages: extra Debian packages for the rootfs."""
        body = {"kind": kind}
        if packages:
            body["packages"] = list(packages)
        return self.request("POST", "/v1/images", body=body)

    def delete_image(self, kind, force=False):
        return self.request("DELETE", f"/v1/images/{kind}",
                            query={"force": "true" if force else None})


def _decode_stream(reply, name):
    value = reply.get(name) or ""
    if reply.get(f"{name}_encoding") == "base64":
        import base64
        return base64.b64decode(value)
    return value.encode()


class ExecResult:
    """What a command did: exit_code (None when killed by a signal), stdout/stderr bytes."""

    def __init__(self, reply):
        self.exit_code = reply.get("exit_code")
        self.signal = reply.get("signal")
        self.timed_out = bool(reply.get("timed_out"))
        self.duration_ms = reply.get("duration_ms")
        self.stdout = _decode_stream(reply, "stdout")
        self.stderr = _decode_stream(reply, "stderr")

    @property
    def text(self):
        return self.stdout.decode(errors="replace")

    def __repr__(self):
        return f"ExecResult(exit_code={self.exit_code}, stdout={self.stdout[:80]!r})"


class EvalResult:
    """One eval in a warm interpreter: result (repr of the last expression or None), error
    (None or {name, value, traceback}), stdout/stderr bytes."""

    def __init__(self, reply):
        self.result = reply.get("result")
        self.error = reply.get("error")
        self.timed_out = bool(reply.get("timed_out"))
        self.stdout = _decode_stream(reply, "stdout")
        self.stderr = _decode_stream(reply, "stderr")

    def __repr__(self):
        return f"EvalResult(result={self.result!r}, error={self.error!r})"


class ExecStream:
    """A running streamed exec (Sandbox.exec_stream): iterate it for its output; exec_id names
    it for send_stdin / close_stdin."""

    def __init__(self, client, lines):
        self._client = client
        self._lines = lines
        first = next(lines, None)
        if not first or first.get("type") != "start":
            lines.close()
            raise Unavailable(None, "stream_cut", f"a streamed exec began with {first!r}")
        self.exec_id = first["exec_id"]

    def send_stdin(self, data, eof=False):
        """Input for the command (bytes or str); eof=True closes its stdin afterwards."""
        return self._client.request("POST", f"/v1/execs/{self.exec_id}/stdin",
                                    raw=data if isinstance(data, bytes) else data.encode(),
                                    query={"eof": "true" if eof else None})

    def close_stdin(self):
        return self.send_stdin(b"", eof=True)

    def __iter__(self):
        return self

    def __next__(self):
        import base64
        for line in self._lines:
            kind = line.get("type")
            if kind in ("stdout", "stderr"):
                data = line.get("data") or ""
                return kind, (base64.b64decode(data) if line.get("encoding") == "base64"
                              else data.encode())
            if kind == "exit":
                self._lines.close()
                return "exit", ExecResult(line)
            if kind == "error":
                self._lines.close()
                err = line.get("error") or {}
                raise _error(422 if err.get("code") == "guest_error" else 502, err.get("code"),
                             err.get("message", ""))
        raise StopIteration

    def close(self):
        """End the stream (and the command, if it still runs)."""
        self._lines.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _Commands:
    def __init__(self, sb):
        self._sb = sb

    def run(self, cmd, **kw):
        """E2B's spelling: a shell command line (or an argv list)."""
        return self._sb.exec(cmd, **kw)


class _Files:
    def __init__(self, sb):
        self._sb = sb

    def write(self, path, data):
        if isinstance(data, str):
            data = data.encode()
        return self._sb._client.request("PUT", f"/v1/sandboxes/{self._sb.id}/files",
                                        raw=data, query={"path": path})

    def read(self, path):
        return self._sb._client.request("GET", f"/v1/sandboxes/{self._sb.id}/files",
                                        query={"path": path})


class Snapshot:
    def __init__(self, info, client):
        self._client = client
        self.info = info
        self.id = info["id"]

    def verify(self):
        """Check the snapshot as a restore would; raises (code snapshot_invalid) when damaged."""
        return self._client.request("POST", f"/v1/snapshots/{self.id}/verify")

    def delete(self, force=False):
        self._client.request("DELETE", f"/v1/snapshots/{self.id}",
                             query={"force": "true" if force else None})

    def __repr__(self):
        return f"Snapshot({self.id})"


class Sandbox:
    """One VM. Sandbox.create(...) starts one; a `with` block kills it at the end."""

    def __init__(self, info, client):
        self._client = client
        self.info = info
        self.id = info["id"]
        self.commands = _Commands(self)
        self.files = _Files(self)

    @classmethod
    def create(cls, guest=None, mem_mib=None, vcpus=None, snapshot=None, metadata=None,
               ttl_s=None, paused=None, ready_timeout_ms=None, network=None, backing=None,
               limits=None, client=None):
        """Start a sandbox (boot guest, or restore snapshot); returns once it is ready (a Linux
        guest's agent answers). network: {"mode": "isolated"|"nat", "allow": [CIDR],
        "deny": [CIDR], "publish": ["[IP:]HOSTPORT:GUESTPORT"]}; sb.info["network"] then
        has the published host ports. limits: {"memory_mib", "cpus", "cpu_weight",
        "pids_max"}, the VM's cgroup (docs/DAEMON.md); sb.info["limits"] is what applies."""
        client = client or Client()
        body = {k: v for k, v in dict(guest=guest, mem_mib=mem_mib, vcpus=vcpus,
                                       metadata=metadata, ttl_s=ttl_s, paused=paused,
                                       ready_timeout_ms=ready_timeout_ms, network=network,
                                       backing=backing, limits=limits).items()
                if v is not None}
        if snapshot is not None:
            body["snapshot"] = snapshot.id if isinstance(snapshot, Snapshot) else snapshot
        return cls(client.request("POST", "/v1/sandboxes", body=body), client)

    @classmethod
    def connect(cls, sandbox_id, client=None):
        client = client or Client()
        return cls(client.request("GET", f"/v1/sandboxes/{sandbox_id}"), client)

    @classmethod
    def list(cls, state=None, parent=None, metadata=None, client=None):
        """Sandboxes, oldest first; metadata={"k": "v"} keeps those whose metadata has k == v."""
        client = client or Client()
        query = {"state": state, "parent": parent}
        for k, v in (metadata or {}).items():
            query[f"metadata.{k}"] = v if isinstance(v, str) else json.dumps(v, separators=(",", ":"))
        return [cls(i, client) for i in client.request("GET", "/v1/sandboxes", query=query)]

    @property
    def state(self):
        return self.refresh()["state"]

    def refresh(self):
        self.info = self._client.request("GET", f"/v1/sandboxes/{self.id}")
        return self.info

    def exec(self, cmd, timeout_ms=None, env=None, cwd=None, stdin=None, on_stdout=None,
             on_stderr=None):
        """Run argv (a list) or a shell command line (a str); returns an ExecResult.
        With on_stdout / on_stderr the output is streamed: each is called with text (str) as
        the command produces it, and the result still holds all of it as bytes."""
        if on_stdout or on_stderr:
            import codecs
            decoders = {"stdout": codecs.getincrementaldecoder("utf-8")(errors="replace"),
                        "stderr": codecs.getincrementaldecoder("utf-8")(errors="replace")}
            calls = {"stdout": on_stdout, "stderr": on_stderr}
            chunks = {"stdout": [], "stderr": []}
            for kind, data in self.exec_stream(cmd, timeout_ms, env, cwd, stdin):
                if kind == "exit":
                    for name, call in calls.items():  # a character the stream cut at its end
                        tail = decoders[name].decode(b"", final=True)
                        if call and tail:
                            call(tail)
                    data.stdout, data.stderr = b"".join(chunks["stdout"]), b"".join(chunks["stderr"])
                    return data
                chunks[kind].append(data)
                text = decoders[kind].decode(data)
                if calls[kind] and text:
                    calls[kind](text)
            raise Unavailable(None, "stream_cut", f"exec in {self.id}: the stream ended early")
        body = self._exec_body(cmd, timeout_ms, env, cwd, stdin)
        return ExecResult(self._client.request("POST", f"/v1/sandboxes/{self.id}/exec", body=body))

    def exec_stream(self, cmd, timeout_ms=None, env=None, cwd=None, stdin=None,
                    stdin_open=False):
        """Run a command and get its output as it is produced: an ExecStream, which yields
        ("stdout", bytes) and ("stderr", bytes) pairs, then ("exit", ExecResult) (its
        stdout/stderr empty). With stdin_open the command's input stays open for
        send_stdin() until close_stdin(). Closing the stream early ends the command."""
        body = self._exec_body(cmd, timeout_ms, env, cwd, stdin)
        body["stream"] = True
        if stdin_open:
            body["stdin_open"] = True
        return ExecStream(self._client, self._client.stream(
            "POST", f"/v1/sandboxes/{self.id}/exec", body=body))

    def _exec_body(self, cmd, timeout_ms, env, cwd, stdin):
        argv = ["sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        body = {"argv": argv}
        if timeout_ms is not None:
            body["timeout_ms"] = timeout_ms
        if env:
            body["env"] = dict(env)
        if cwd:
            body["cwd"] = cwd
        if stdin is not None:
            import base64
            body["stdin"] = base64.b64encode(stdin if isinstance(stdin, bytes)
                                             else stdin.encode()).decode()
            body["stdin_base64"] = True
        return body

    def eval(self, code, context=None, timeout_ms=None):
        """Run Python code in the guest's warm interpreter (its state stays for the next eval,
        and every child of a branch inherits it); returns an EvalResult."""
        body = {"code": code}
        if context is not None:
            body["context"] = context
        if timeout_ms is not None:
            body["timeout_ms"] = timeout_ms
        return EvalResult(self._client.request("POST", f"/v1/sandboxes/{self.id}/eval", body=body))

    def branch(self, count=1, strategy="cow", metadata=None, ttl_s=None):
        """count children, each a copy of this sandbox at this instant."""
        body = {"count": count, "strategy": strategy}
        if metadata is not None:
            body["metadata"] = metadata
        if ttl_s is not None:
            body["ttl_s"] = ttl_s
        r = self._client.request("POST", f"/v1/sandboxes/{self.id}/branch", body=body)
        return [Sandbox(c, self._client) for c in r["children"]]

    fork = branch

    def pause(self):
        self.info = self._client.request("POST", f"/v1/sandboxes/{self.id}/pause")

    def resume(self):
        self.info = self._client.request("POST", f"/v1/sandboxes/{self.id}/resume")

    def snapshot(self):
        return Snapshot(self._client.request("POST", f"/v1/sandboxes/{self.id}/snapshot"),
                        self._client)

    def kill(self):
        """End the VM; a sandbox already gone is not an error."""
        try:
            self._client.request("DELETE", f"/v1/sandboxes/{self.id}")
        except NotFound:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.kill()
        return False

    def __repr__(self):
        return f"Sandbox({self.id}, {self.info.get('state')})"
