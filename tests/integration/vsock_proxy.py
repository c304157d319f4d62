"""A host-side stand-in for a VM's vsock socket: accepts `CONNECT <port>` and relays the byte
stream to a guest agent listening on a Unix socket (Linux guests cannot boot on this host)."""
import os
import socket
import threading


class VsockProxy:
    def __init__(self, path, agent_sock, port=52):
        self.path, self.agent_sock, self.port = path, agent_sock, port
        self.connects = []
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
        self.connects.append(line)
        if line != f"CONNECT {self.port}\n".encode():
            conn.close()
            return
        up = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        up.connect(self.agent_sock)
        conn.sendall(b"OK 1024\n")
        for a, b in ((conn, up), (up, conn)):
            threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

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
