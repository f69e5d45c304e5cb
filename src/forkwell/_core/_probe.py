"""One blocking probe of something that should be up: what ``forkwell probe`` runs.

``parse_target`` reads the same text a program's ``ready`` takes:

=======================  ======================================================
``http://HOST:PORT/P``   a GET is answered 200-399 (Kubernetes' ``httpGet``:
``https://...``          a redirect counts as up; the certificate is not
                         verified, as the kubelet does not)
``tcp:HOST:PORT``        the port accepts a connection
``cmd:COMMAND``          ``/bin/sh -c COMMAND`` exits 0
=======================  ======================================================

:func:`check` probes once and says why it failed (None: up); :func:`wait`
probes until it is up or a deadline passes.  Kubernetes runs exec probes
every few seconds in every pod, so the imports stay lean: the C ``_socket``
module and a status line read by hand (``http.client`` pulls in ``email``
and ``ssl``: ~40 ms), ``ssl`` only for ``https://``, ``subprocess`` only for
``cmd:``.  ``bench/bench_probe.py`` measures the start-up.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

from ._readiness import connect, parse_ready, tcp_check

FORMS = "an http:// or https:// URL, tcp:HOST:PORT or cmd:COMMAND"
POLL = 0.1  # seconds between two tries of wait(), as the supervisor's readiness probes
_MAX_STATUS_LINE = 8192
_TRY = 5.0  # seconds one try of wait() may take at most


class Target(NamedTuple):
    """A parsed probe; only the fields of its ``kind`` are set."""

    kind: Literal["http", "tcp", "cmd"]
    text: str  # as written (stripped): what messages name
    host: str = ""
    port: int = 0
    path: str = ""  # http: the request target, "/health?full=1"
    tls: bool = False  # https://
    command: str = ""  # cmd

    @property
    def authority(self) -> str:
        """``HOST:PORT`` as the ``Host`` header carries it."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_target(text: str) -> Target:
    """Parse a probe; ``ValueError`` with a one-line reason if it is not one."""
    stripped = text.strip()
    if stripped.partition(":")[0].lower() in ("http", "https"):
        return parse_url(stripped)
    try:
        spec = parse_ready(stripped)
    except ValueError as exc:
        detail = str(exc).partition(": ")[2]
        if detail.startswith("expected exec"):  # not a form at all
            detail = f"expected {FORMS}"
        raise ValueError(f"invalid probe {text!r}: {detail}") from None
    if spec.kind == "tcp":
        assert spec.host is not None and spec.port is not None
        return Target("tcp", stripped, host=spec.host, port=spec.port)
    if spec.kind == "cmd":
        assert spec.command is not None
        return Target("cmd", stripped, command=spec.command)
    raise ValueError(f"invalid probe {text!r}: {spec.kind!r} cannot be probed; expected {FORMS}")


def parse_url(url: str) -> Target:
    """An ``http://`` or ``https://`` URL as a probe target; ``ValueError`` if malformed."""
    try:
        host, port, path, tls = split_url(url)
    except ValueError as exc:
        raise ValueError(f"invalid probe {url!r}: {exc}") from None
    return Target("http", url, host=host, port=port, path=path, tls=tls)


def split_url(url: str) -> tuple[str, int, str, bool]:
    """``(host, port, request target, tls)`` of a probe URL; ``ValueError`` saying what is wrong.

    The one reader of probe URLs: ``forkwell probe`` and the supervisor's
    ``ready``/``liveness`` settings accept and refuse the same ones.
    """
    from urllib.parse import urlsplit  # here: tcp: and cmd: probes need none of it

    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"invalid URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("expected a URL like http://127.0.0.1:8000/health")
    if parts.username is not None or parts.password is not None:
        raise ValueError("a probe URL takes no user or password")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if any(c in path for c in " \r\n\0"):
        raise ValueError("the URL's path must not contain spaces or line breaks")
    tls = scheme == "https"
    return parts.hostname, port or (443 if tls else 80), path, tls


def check(target: Target, timeout: float) -> str | None:
    """Probe once, within ``timeout`` seconds: None if it is up, else one line saying why not."""
    if target.kind == "tcp":
        why = tcp_check(target.host, target.port, timeout)
        return None if why is None else f"{target.text}: {why}"
    if target.kind == "http":
        return http_check(target, timeout)
    return cmd_check(target, timeout)


def wait(probe: Callable[[float], str | None], timeout: float | None) -> str | None:
    """Call ``probe(seconds)`` every :data:`POLL` seconds until it is up (None) or ``timeout``.

    ``probe`` is one try given how long it may take (``lambda t: check(target,
    t)``); the last reason is returned when ``timeout`` passes first.  None
    waits for ever (an init container waiting for its dependency).  No try
    outlasts the deadline.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        left = _TRY if deadline is None else min(deadline - time.monotonic(), _TRY)
        why = probe(max(left, 0.0))
        if why is None:
            return None
        if deadline is not None and deadline - time.monotonic() <= POLL:
            return f"{why} (still, after {timeout:g}s)"
        time.sleep(POLL)  # a command-line waiter: nothing else to serve meanwhile


def http_check(target: Target, timeout: float) -> str | None:
    """A GET of ``target``: None if answered 200-399, else why not."""
    deadline = time.monotonic() + max(timeout, 0.0)
    sock, why = connect(target.host, target.port, deadline)
    if sock is None:
        return f"{target.text}: {why}"
    try:
        if target.tls:
            sock = _tls(sock, target.host)
        request = (
            f"GET {target.path} HTTP/1.1\r\nHost: {target.authority}\r\n"
            "User-Agent: forkwell-probe\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        )
        _settimeout(sock, deadline)
        sock.sendall(request.encode("ascii", "strict"))
        line = _status_line(sock, deadline)
    except TimeoutError:
        return f"{target.text}: no answer within {timeout:g}s"
    except (OSError, UnicodeError, ValueError) as exc:
        return f"{target.text}: {getattr(exc, 'strerror', None) or exc}"
    finally:
        sock.close()
    parts = line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        shown = line[:60].decode("ascii", "replace")
        return f"{target.text}: not an HTTP answer: {shown!r}"
    status = int(parts[1])
    if 200 <= status < 400:
        return None
    reason = parts[2].decode("latin-1").strip() if len(parts) > 2 else ""
    return f"{target.text}: HTTP {status} {reason}".rstrip()


def _tls(raw: Any, host: str) -> Any:
    import socket
    import ssl

    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # as the kubelet's httpGet: up is up
    sock = socket.socket(raw.family, raw.type, raw.proto, fileno=raw.detach())
    sock.settimeout(raw.gettimeout())
    return context.wrap_socket(sock, server_hostname=host)


def _settimeout(sock: Any, deadline: float) -> None:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    sock.settimeout(left)


def _status_line(sock: Any, deadline: float) -> bytes:
    """The answer's first line (without its line break)."""
    data = b""
    while b"\n" not in data and len(data) < _MAX_STATUS_LINE:
        _settimeout(sock, deadline)
        chunk = sock.recv(_MAX_STATUS_LINE)
        if not chunk:
            break
        data += chunk
    if not data:
        raise ValueError("closed the connection without answering")
    return data.partition(b"\n")[0].rstrip(b"\r")


def cmd_check(target: Target, timeout: float) -> str | None:
    """``/bin/sh -c COMMAND``: None if it exits 0 within ``timeout``; its whole tree goes after."""
    import signal

    from ._process import DEVNULL, spawn

    try:
        proc = spawn(["/bin/sh", "-c", target.command],
                     stdin=DEVNULL, stdout=DEVNULL, stderr=DEVNULL)  # fmt: skip
    except OSError as exc:
        return f"{target.text}: cannot run /bin/sh: {exc.strerror or exc}"
    with proc:
        rc = proc.wait(max(timeout, 0.0))
        proc.terminate_tree(signal.SIGKILL, 0.0)  # what it left, or itself when it timed out
    if rc == 0:
        return None
    if rc is None:
        return f"{target.text}: did not finish within {timeout:g}s"
    from ._status import describe_exit

    return f"{target.text}: {describe_exit(rc)}"
