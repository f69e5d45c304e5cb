"""WSGI applications the WSGI tests serve, and the harness that serves them (no tests).

The server runs in a subprocess started by :class:`WSGIServed` through the
public ``forkwell.serve_wsgi`` on a listening socket the test made (passed
by descriptor, so its address is known before the server starts and no port
can be taken in between).  Its stderr (the error log) is collected line by
line.  This module is imported by name in the server (``wsgi_apps:plain``).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import time
import wsgiref.validate
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from test_server_apps import TESTS_DIR, Served, children

_served = 0

LAUNCH = """
import json, logging, socket, sys
logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                    format="%(name)s[%(process)d]: %(message)s")
import forkwell
opts = json.loads(sys.argv[2])
forkwell.serve_wsgi(sys.argv[1], socket.socket(fileno=int(sys.argv[3])), **opts)
"""


def _json(start_response: Any, data: object, status: str = "200 OK") -> list[bytes]:
    body = json.dumps(data).encode()
    start_response(
        status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    return [body]


def _read_body(environ: dict[str, Any]) -> bytes:
    # read(n) only: wsgiref's validator insists on exactly one argument.
    stream = environ["wsgi.input"]
    parts = []
    while chunk := stream.read(65536):
        parts.append(chunk)
    return b"".join(parts)


class _Forever:
    """An endless response whose close() leaves a mark: was the iterable closed?"""

    def __init__(self, mark: str) -> None:
        self.mark = mark

    def __iter__(self) -> Iterator[bytes]:
        while True:
            yield b"x" * 65536

    def close(self) -> None:
        Path(self.mark).write_text(f"closed by {os.getpid()}")


def _stream(count: int, gap: float) -> Iterator[bytes]:
    for i in range(count):
        if gap:
            time.sleep(gap)  # the application is slow: that is the scenario, not a sync
        yield f"part {i}\n".encode()


def _exc_after(start_response: Any) -> Iterator[bytes]:
    yield b"first part\n"
    try:
        raise RuntimeError("failed after the head")  # noqa: TRY301 (the scenario)
    except RuntimeError:
        start_response("500 Internal Server Error", [("Content-Type", "text/plain")],
                       sys.exc_info())  # re-raises: the head is out
    yield b"never sent"


def plain(environ: dict[str, Any], start_response: Any) -> Any:  # noqa: PLR0911, PLR0912 (routes)
    """A plain WSGI application, one route per behaviour the tests look at."""
    global _served
    _served += 1
    path = environ["PATH_INFO"]
    query = {k: v[0] for k, v in parse_qs(environ["QUERY_STRING"]).items()}
    text = [("Content-Type", "text/plain")]
    if path.startswith("/environ"):
        shown = {k: v for k, v in environ.items() if isinstance(v, (str, bool, tuple))}
        shown["input_class"] = type(environ["wsgi.input"]).__name__
        shown["pid"] = os.getpid()
        shown["served"] = _served
        return _json(start_response, shown)
    if path == "/echo":
        body = _read_body(environ)
        return _json(start_response, {"length": len(body), "sha256": hashlib.sha256(body).hexdigest(),
                                      "head": body[:64].decode("latin-1"), "pid": os.getpid()})
    if path == "/lines":
        stream = environ["wsgi.input"]
        lines = [stream.readline().decode()]
        lines += [line.decode() for line in stream]
        return _json(start_response, lines)
    if path == "/noread":
        return _json(start_response, {"pid": os.getpid()})
    if path == "/stream":
        start_response("200 OK", text)
        return _stream(int(query.get("n", 3)), float(query.get("gap", 0)))
    if path == "/forever":
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return _Forever(query["mark"])
    if path == "/file":
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(os.path.getsize(query["path"])))])
        return environ["wsgi.file_wrapper"](open(query["path"], "rb"), 8192)
    if path == "/boom":
        raise RuntimeError("boom: secret detail")
    if path == "/hang":
        r, _w = os.pipe()
        os.read(r, 1)  # stuck for good, as a deadlocked application would be
    if path == "/exc-before":
        start_response("200 OK", text)
        try:
            raise ValueError("changed my mind")  # noqa: TRY301 (the scenario)
        except ValueError:
            start_response("503 Service Unavailable", text, sys.exc_info())
        return [b"replaced\n"]
    if path == "/exc-after":
        start_response("200 OK", text)
        return _exc_after(start_response)
    if path == "/status":
        code = query["code"]
        start_response(f"{code} Whatever", [] if code in ("204", "304") else text)
        return []
    if path == "/write":
        write = start_response("200 OK", text)
        write(b"written, ")
        return [b"then returned\n"]
    if path == "/close":
        start_response("200 OK", [*text, ("Connection", "close"), ("Content-Length", "3")])
        return [b"bye"]
    start_response("200 OK", [*text, ("Content-Length", str(len(path) + 6))])
    return [f"hello {path}".encode("latin-1")]


validated = wsgiref.validate.validator(plain)


# ---------------------------------------------------------------- the harness


def _test_env(cwd: Path | None, env: dict[str, str] | None) -> dict[str, str]:
    """The server's environment: this folder (and ``cwd``) importable, no bytecode written."""
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(cwd or TESTS_DIR), str(TESTS_DIR), full_env.get("PYTHONPATH", "")) if p
    )
    full_env["PYTHONDONTWRITEBYTECODE"] = "1"
    full_env.update(env or {})
    return full_env


class WSGIServed(Served):
    """``forkwell.serve_wsgi(app, <socket>, **opts)`` in a subprocess, stderr collected."""

    BOOTED = " booted"  # in the error log, once per worker that loaded the app

    def __init__(self, app: str, *, cwd: Path | None = None, env: dict[str, str] | None = None,
                 python_flags: tuple[str, ...] = (), **opts: Any) -> None:
        self.workers = opts.setdefault("workers", 1)
        self._start(lambda fd: [sys.executable, *python_flags, "-c", LAUNCH, app, json.dumps(opts),
                                str(fd)],
                    _test_env(cwd, env), cwd, stdout=opts.get("access_log") == "-")

    def _start(self, argv: Any, env: dict[str, str], cwd: Path | None, *, stdout: bool) -> None:
        """Run ``argv(fd)`` on a listening socket made here and passed as descriptor ``fd``."""
        listener = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.port = listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        try:
            self.proc = subprocess.Popen(
                argv(listener.fileno()), pass_fds=(listener.fileno(),), stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE if stdout else subprocess.DEVNULL,
                stderr=subprocess.PIPE, cwd=cwd, env=env, start_new_session=True,
            )
        finally:
            listener.close()
        self._follow()
        self.address = f"127.0.0.1:{self.port}"

    def wait_for(self, pred: Any, timeout: float = 20.0, what: str = "a log line") -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not pred(self.lines):
                remaining = deadline - time.monotonic()
                if self._done or remaining <= 0:
                    raise AssertionError(f"timed out waiting for {what}; stderr:\n" + self.text())
                self._cond.wait(remaining)

    def ready(self, workers: int | None = None, timeout: float = 20.0) -> WSGIServed:
        """Wait until ``workers`` (default: all) have booted since the start."""
        want = self.workers if workers is None else workers
        self.wait_for(lambda lines: sum(self.BOOTED in x for x in lines) >= want, timeout,
                      f"{want} booted workers")
        return self

    def worker_pids(self) -> list[int]:
        return children(self.pid)

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


class GunicornServed(WSGIServed):
    """The real gunicorn serving ``app`` the same way: its listener passed as ``fd://N``.

    ``worker`` is gunicorn's worker class (``sync``, ``gthread``); ``flags`` are more
    of its command-line options.  No control socket: nothing is left in ``$HOME``.
    """

    BOOTED = "Booting worker with pid"

    def __init__(self, app: str, *flags: str, worker: str = "sync", workers: int = 1) -> None:
        self.workers = workers
        self._start(lambda fd: [sys.executable, "-m", "gunicorn", "--bind", f"fd://{fd}",
                                "--workers", str(workers), "--worker-class", worker,
                                "--no-control-socket", *flags, app],
                    _test_env(None, None), None, stdout=False)


def raw_exchange(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    """Send ``data`` on a fresh connection and read until the server closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
        return out
