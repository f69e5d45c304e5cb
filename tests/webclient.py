"""Shared by the web endpoint's tests (no tests here): a real ``forkwell up`` and HTTP clients.

The clients are the standard library's ``http.client`` (another parser than
the server's h11), over TCP or a Unix socket, and a reader of server-sent
events on top of it.
"""

from __future__ import annotations

import errno
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import textwrap
from pathlib import Path
from typing import Any, NamedTuple

from helpers import PY, wait_until

TOKEN = "t0ken-for-tests-0123456789abcdef"
SLEEPER = '["sleep", "1000"]'
_BANNER = re.compile(r"http: serving (\S+?): ")


class Reply(NamedTuple):
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode()


class UnixHTTPConnection(http.client.HTTPConnection):
    """``http.client`` over a Unix socket (Host: localhost)."""

    def __init__(self, path: str, timeout: float = 10.0) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.unix_path)
        self.sock = sock


def token_file(directory: Path, token: str = TOKEN, mode: int = 0o600) -> Path:
    path = directory / "http.token"
    path.write_text(token + "\n")
    path.chmod(mode)
    return path


class Up:
    """``forkwell up --quiet`` for a config with ``http``; the URL is read from its banner."""

    def __init__(
        self,
        tmp_path: Path,
        programs: str,
        *,
        http: str = "unix",
        supervisor: str = "",
        args: tuple[str, ...] = (),
    ) -> None:
        self.dir = tmp_path
        self.log = tmp_path / ".forkwell" / "logs" / "forkwell.log"
        self.socket_path = tmp_path / "web.sock"
        address = f"unix:{self.socket_path}" if http == "unix" else http
        self.config = tmp_path / "forkwell.toml"
        self.config.write_text(
            f'[supervisor]\nshutdown_timeout = 10\nhttp = "{address}"\n{supervisor}\n\n'
            + textwrap.dedent(programs)
        )
        self.args = args
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""

    def __enter__(self) -> Up:
        self.proc = subprocess.Popen(
            [PY, "-m", "forkwell", "up", "-c", str(self.config), "--quiet", *self.args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            wait_until(self._started, 30, "forkwell up to serve http and finish autostart")
        except BaseException:
            self.__exit__()
            raise
        return self

    def _started(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            out, err = self.proc.communicate()
            raise AssertionError(f"forkwell up exited {self.proc.returncode}: {err}{out}")
        text = self.log_text()
        found = _BANNER.search(text)
        if found and "autostart done" in text:
            self.url = found.group(1)
            return True
        return False

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        if self.proc is not None:
            self.proc.communicate(timeout=30)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1].rstrip("/"))

    def log_text(self) -> str:
        try:
            return self.log.read_text()
        except FileNotFoundError:
            return ""

    def connection(self, timeout: float = 10.0) -> http.client.HTTPConnection:
        if self.url.startswith("unix:"):
            return UnixHTTPConnection(self.url[5:], timeout)
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(
        self,
        method: str,
        path: str,
        headers: dict[str, str] | None = None,
        body: bytes | str | None = None,
    ) -> Reply:
        conn = self.connection()
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            data = resp.read()
            return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)
        finally:
            conn.close()

    def get(self, path: str, **headers: str) -> Reply:
        return self.request("GET", path, {k.replace("_", "-"): v for k, v in headers.items()})

    def ps(self) -> dict[str, Any]:
        out = subprocess.run(
            [PY, "-m", "forkwell", "ps", "-c", str(self.config), "--json"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert out.returncode in (0, 3), out.stderr
        return json.loads(out.stdout)  # type: ignore[no-any-return]


class Events:
    """A server-sent event stream, read event by event."""

    def __init__(self, up: Up, path: str, headers: dict[str, str] | None = None) -> None:
        self.conn = up.connection(timeout=15.0)
        self.conn.request("GET", path, headers=headers or {})
        self.resp = self.conn.getresponse()
        assert self.resp.status == 200, (self.resp.status, self.resp.read())
        assert self.resp.getheader("content-type", "").startswith("text/event-stream")

    def next(self) -> tuple[str, Any, str | None]:
        """The next event: (name, data decoded from JSON, id or None); comments are skipped."""
        name, data, ident = "message", "", None
        while True:
            line = self.resp.readline().decode()
            if not line:
                raise EOFError("the event stream ended")
            line = line.rstrip("\n")
            if not line:
                if data:
                    return name, json.loads(data), ident
                continue
            field, _, value = line.partition(": ")
            if field == "event":
                name = value
            elif field == "data":
                data += value
            elif field == "id":
                ident = value

    def until(self, pred: Any, limit: int = 200) -> tuple[str, Any, str | None]:
        for _ in range(limit):
            event = self.next()
            if pred(*event):
                return event
        raise AssertionError(f"no matching event in {limit}")

    def close(self) -> None:
        self.conn.close()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def fifo_program(fifo: Path, pids: Path) -> str:
    """A TOML command: record the pid, block reading ``fifo``, exit 1 when a line arrives.

    The test makes it crash exactly when it writes to the FIFO: no timing involved.
    """
    script = f'echo $$ >> {pids}; read line < {fifo}; echo "crashing: $line" >&2; exit 1'
    return json.dumps(["sh", "-c", script])


def make_fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def poke(fifo: Path, text: str = "now", timeout: float = 10.0) -> None:
    """Write a line to ``fifo`` once the program under test has it open for reading.

    A non-blocking open fails with ENXIO while no reader has the FIFO open, so
    the wait has a deadline and a failure says so, rather than hanging the test.
    """
    fds: list[int] = []

    def opened() -> bool:
        try:
            fds.append(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError as exc:
            if exc.errno != errno.ENXIO:
                raise
            return False
        return True

    wait_until(opened, timeout, f"a reader of {fifo}")
    try:
        os.write(fds[0], text.encode() + b"\n")
    finally:
        os.close(fds[0])


def fleet(tmp_path: Path) -> tuple[str, Path, Path]:
    """db, web (after db, 2 instances) and crashy (crashes when its FIFO is written)."""
    fifo, pids = make_fifo(tmp_path / "crash.fifo"), tmp_path / "crashy.pids"
    programs = f"""
    [programs.db]
    command = {SLEEPER}

    [programs.web]
    command = {SLEEPER}
    numprocs = 2
    depends_on = ["db"]

    [programs.crashy]
    command = {fifo_program(fifo, pids)}
    min_uptime = 0
    """
    return programs, fifo, pids


def actions_up(tmp_path: Path, http: str = "127.0.0.1:0") -> tuple[Up, Path, Path]:
    programs, fifo, pids = fleet(tmp_path)
    tok = token_file(tmp_path)
    up = Up(tmp_path, programs, http=http,
            supervisor=f'http_actions = true\nhttp_token_file = "{tok}"')  # fmt: skip
    return up, fifo, pids


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
