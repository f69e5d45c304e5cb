"""Handlers the server tests serve through ``forkwell serve``, and client helpers (no tests).

The test processes import this module by name (``test_server_apps:echo``):
the tests directory is put on ``PYTHONPATH`` of the server they start.
"""

from __future__ import annotations

import os
import random
import re
import selectors
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
from pathlib import Path

_served = 0


def _read_line(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.strip()


def echo(sock: socket.socket, address: object) -> None:
    """Reply ``PID PAYLOAD`` to one line.

    ``hang`` never replies, ``wait`` replies and waits for a 2nd line, ``crash``
    kills the process, ``fds`` lists its descriptors, ``rand`` draws a number.
    """
    global _served
    _served += 1
    line = _read_line(sock)
    if line == b"hang":
        # Stuck for good, as a deadlocked handler would be: nobody writes to
        # this pipe and we hold its write end.  Signals do not end the read.
        r, _w = os.pipe()
        os.read(r, 1)
    if line == b"crash":
        os._exit(1)  # a worker dying mid-request (a segfault, an os._exit in a library)
    if line == b"wait":
        sock.sendall(f"{os.getpid()} waiting\n".encode())
        line = _read_line(sock)
    if line == b"fds":
        fds = []
        for name in os.listdir("/proc/self/fd"):
            try:
                fds.append(f"{name}={os.readlink(f'/proc/self/fd/{name}')}")
            except OSError:
                continue  # listdir's own fd, closed by now
        line = " ".join(fds).encode()
    if line == b"rand":
        line = f"{_served} {random.getrandbits(64)}".encode()
    sock.sendall(f"{os.getpid()} ".encode() + line + b"\n")


class EchoHandler(socketserver.StreamRequestHandler):
    """The same protocol as a socketserver handler class, used unchanged."""

    def handle(self) -> None:
        line = self.rfile.readline().strip()
        self.wfile.write(f"{os.getpid()} ".encode() + line + b"\n")


# ---------------------------------------------------------------- test helpers

TESTS_DIR = Path(__file__).resolve().parent


def sock_address(addr: str) -> tuple[int, object]:
    """``"127.0.0.1:80"`` / ``"[::1]:80"`` / ``"unix:/p"`` -> (family, sockaddr)."""
    if addr.startswith("unix:"):
        return socket.AF_UNIX, addr[5:]
    host, _, port = addr.rpartition(":")
    if host.startswith("["):
        return socket.AF_INET6, (host[1:-1], int(port))
    return socket.AF_INET, (host, int(port))


def connect(addr: str, timeout: float = 10.0) -> socket.socket:
    family, sockaddr = sock_address(addr)
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(sockaddr)
    except BaseException:
        sock.close()
        raise
    return sock


def read_all(sock: socket.socket) -> bytes:
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


def closed_by_peer(sock: socket.socket) -> bool:
    """True once the server closed or reset the connection without a reply."""
    try:
        return read_all(sock) == b""
    except ConnectionResetError:
        return True  # killed before it accepted: the kernel resets queued connections


def ask(addr: str, line: bytes, timeout: float = 10.0) -> tuple[int, bytes]:
    """One request: send ``line``, read the reply to EOF; -> (server pid, rest)."""
    with connect(addr, timeout) as sock:
        sock.sendall(line + b"\n")
        reply = read_all(sock)
    pid, _, rest = reply.strip().partition(b" ")
    return int(pid), rest


def burst(addr: str, payloads: list[bytes], concurrency: int, timeout: float = 30.0) -> list[bytes]:
    """Send every payload on its own connection, ``concurrency`` at a time; replies in order."""
    family, sockaddr = sock_address(addr)
    sel = selectors.DefaultSelector()
    replies: list[bytes | None] = [None] * len(payloads)
    bufs: dict[int, bytearray] = {}
    todo = list(range(len(payloads) - 1, -1, -1))
    deadline = time.monotonic() + timeout
    in_flight = 0
    try:
        while todo or in_flight:
            while todo and in_flight < concurrency:
                i = todo.pop()
                sock = socket.socket(family, socket.SOCK_STREAM)
                sock.setblocking(False)
                sock.connect_ex(sockaddr)  # type: ignore[arg-type]
                sel.register(sock, selectors.EVENT_WRITE, i)
                bufs[i] = bytearray()
                in_flight += 1
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"burst timed out with {in_flight} connections in flight")
            for key, _ in sel.select(remaining):
                sock, i = key.fileobj, key.data
                assert isinstance(sock, socket.socket)
                if key.events == selectors.EVENT_WRITE:
                    err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        raise AssertionError(f"connection {i} failed: {os.strerror(err)}")
                    sock.sendall(payloads[i] + b"\n")
                    sel.modify(sock, selectors.EVENT_READ, i)
                    continue
                chunk = sock.recv(65536)
                if chunk:
                    bufs[i] += chunk
                    continue
                sel.unregister(sock)
                sock.close()
                replies[i] = bytes(bufs.pop(i))
                in_flight -= 1
    finally:
        for key in list(sel.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        sel.close()
    return [r or b"" for r in replies]


def children(pid: int) -> list[int]:
    """Live (non-zombie) children of ``pid``."""
    return [c for c, state in child_states(pid).items() if state != "Z"]


def child_states(pid: int) -> dict[int, str]:
    """Every child of ``pid`` -> its state letter (``Z``: zombie)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return {}
    out = {}
    for c in text.split():
        try:
            data = Path(f"/proc/{c}/stat").read_bytes()
        except OSError:
            continue
        out[int(c)] = data[data.rfind(b")") + 2 :].split()[0].decode()
    return out


class Served:
    """A ``forkwell serve`` process; a thread collects its stderr lines."""

    def __init__(self, *args: str, cwd: Path | None = None, env: dict[str, str] | None = None):
        full_env = dict(os.environ)
        full_env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(TESTS_DIR), full_env.get("PYTHONPATH", "")) if p
        )
        full_env["PYTHONDONTWRITEBYTECODE"] = "1"
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "forkwell", "serve", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env=full_env,
            start_new_session=True,  # so cleanup can kill the whole group
        )
        self._follow()
        self.address = ""

    def _follow(self) -> None:
        """Collect the started server's stderr lines in a thread."""
        self.pid = self.proc.pid
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._done = False
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            with self._cond:
                self.lines.append(raw.decode(errors="replace").rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._done = True
            self._cond.notify_all()

    def wait_line(self, pattern: str, timeout: float = 20.0, start: int = 0) -> re.Match[str]:
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines[start:]:
                    m = rx.search(line)
                    if m:
                        return m
                remaining = deadline - time.monotonic()
                if self._done or remaining <= 0:
                    raise AssertionError(
                        f"no line matching {pattern!r} within {timeout}s; stderr:\n"
                        + "\n".join(self.lines)
                    )
                self._cond.wait(remaining)

    def started(self, timeout: float = 30.0) -> Served:
        m = self.wait_line(r"listening on (\S+?)[,\s]", timeout)
        self.address = m.group(1)
        return self

    def count(self, pattern: str) -> int:
        rx = re.compile(pattern)
        with self._cond:
            return sum(1 for line in self.lines if rx.search(line))

    def text(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def wait(self, timeout: float = 15.0) -> int:
        """Wait for a server that is already stopping on its own (no second signal:
        one arriving while it exits would kill it with that signal)."""
        rc = self.proc.wait(timeout)
        self._thread.join(timeout)
        return rc

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            os.kill(self.pid, sig)
        rc = self.proc.wait(timeout)
        self._thread.join(timeout)
        return rc

    def __enter__(self) -> Served:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            os.killpg(self.pid, signal.SIGKILL)
            self.proc.wait(10)
        # Whatever the group still holds (per-connection children of a killed server).
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self._thread.join(10)
        assert self.proc.stderr is not None
        self.proc.stderr.close()
