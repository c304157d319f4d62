"""Host side of forkvm's vsock socket: `CONNECT <port>\\n` → `OK <hostport>\\n` → byte stream."""
import socket


def vsock_connect(path, port, timeout=10):
    """Returns (socket, host_port); host_port is None when the guest refused (closed, no OK)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(path)
    s.sendall(b"CONNECT %d\n" % port)
    line = b""
    while not line.endswith(b"\n"):
        c = s.recv(1)  # byte by byte: stream data may follow the line
        if not c:
            return s, None
        line += c
    assert line.startswith(b"OK "), line
    return s, int(line[3:])


def recv_exact(s, n):
    buf = bytearray()
    while len(buf) < n:
        c = s.recv(min(1 << 20, n - len(buf)))
        if not c:
            raise ConnectionError(f"closed after {len(buf)} of {n} bytes")
        buf.extend(c)
    return bytes(buf)
