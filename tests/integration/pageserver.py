"""A `forkvm pageserver` process on its own socket, for the tests that need one."""
import signal
import subprocess
import time

from forkvm_vm import FORKVM, call


class PageServer:
    """A `forkvm pageserver` process on its own socket."""

    def __init__(self, path, fault_around=None):
        self.path = path
        self.log = path + ".log"
        args = [FORKVM, "pageserver", "--socket", path]
        if fault_around:
            args += ["--fault-around", str(fault_around)]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                self.status()
                return
            except OSError:
                assert self.proc.poll() is None, self.log_text()
                time.sleep(0.05)
        raise RuntimeError("page server did not come up: " + self.log_text())

    def status(self):
        return call(self.path, {"cmd": "status"}, timeout=30)

    def vm(self, name):
        for v in self.status()["vms"]:
            if v["name"] == name:
                return v
        raise KeyError(name)

    def log_text(self):
        with open(self.log, "rb") as f:
            return f.read().decode(errors="replace")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=30)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
