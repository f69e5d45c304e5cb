"""The HTTP probe: one GET on the supervisor's own event loop, read up to its status line.

(:func:`connect` is also the TCP probe's connect.)

Kubernetes' ``httpGet`` probe, standard library only: a non-blocking socket
driven by ``loop.sock_connect`` / ``sock_sendall`` / ``sock_recv`` (no
streams, no task of its own, no thread), ``GET target HTTP/1.1`` with
``Connection: close``, and the answer judged by its status line alone:
200-399 is healthy, anything else, a refused connection or a malformed
answer is a failure that says why.  Redirects are not followed (a 3xx is
a success, as for the kubelet).

``https://`` runs TLS through :class:`ssl.SSLObject` over memory buffers on
the same socket, so it needs nothing of asyncio's own TLS support (which
``forkwell up`` leaves out unless an https probe is configured); as the
kubelet does, it does not verify the certificate.  A host name other than
an IP address is resolved with ``loop.getaddrinfo`` (asyncio's resolver
thread), so a slow DNS never stalls the loop.

The caller bounds the whole exchange (``asyncio.timeout``).
"""

from __future__ import annotations

import socket
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncio
    import ssl

    from ._probespec import ProbeSpec

MAX_STATUS_LINE = 8192  # bytes read at most before the status line must have ended
_USER_AGENT = "forkwell-probe"

_tls_context: ssl.SSLContext | None = None


async def http_status(loop: asyncio.AbstractEventLoop, spec: ProbeSpec) -> str | None:
    """None when a GET of ``spec`` answers 200-399, else why not (one line)."""
    assert spec.host is not None and spec.port is not None
    try:
        line = await _status_line(loop, spec)
    except ConnectionRefusedError:
        return f"{spec.url}: connection refused"
    except OSError as exc:
        return f"{spec.url}: {exc.strerror or exc}"
    except ValueError as exc:  # ssl.SSLError is an OSError; this is a bad answer
        return f"{spec.url}: {exc}"
    parts = line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        return f"{spec.url}: not an HTTP answer ({line[:40]!r})"
    status = int(parts[1])
    if 200 <= status < 400:
        return None
    return f"{spec.url} returned {status}"


async def _status_line(loop: asyncio.AbstractEventLoop, spec: ProbeSpec) -> bytes:
    assert spec.host is not None and spec.port is not None
    request = (
        f"GET {spec.target} HTTP/1.1\r\nHost: {spec.authority}\r\n"
        f"User-Agent: {_USER_AGENT}\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    ).encode()
    sock = await connect(loop, spec.host, spec.port)
    with sock:
        channel: _Plain | _Tls = _Tls(loop, sock, spec.host) if spec.tls else _Plain(loop, sock)
        await channel.handshake()
        await channel.send(request)
        data = b""
        while b"\r\n" not in data:
            if len(data) > MAX_STATUS_LINE:
                raise ValueError("the status line is too long")
            chunk = await channel.recv()
            if not chunk:
                raise ValueError("the connection closed before an answer")
            data += chunk
        return data.partition(b"\r\n")[0]


async def connect(loop: asyncio.AbstractEventLoop, host: str, port: int) -> socket.socket:
    """A connected non-blocking socket to ``host:port`` (each address tried in turn)."""
    addresses: list[tuple[Any, ...]]
    family = _numeric_family(host)  # an IP address needs no resolver
    if family is not None:
        addresses = [(family, (host, port) if family == socket.AF_INET else (host, port, 0, 0))]
    else:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        addresses = [(info[0], info[4]) for info in infos]
    error: OSError = OSError(f"cannot resolve {host}")
    for fam, address in addresses:
        sock = socket.socket(fam, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, address)
        except OSError as exc:
            sock.close()
            error = exc
            continue
        except BaseException:  # cancelled (the timeout): never leak the fd
            sock.close()
            raise
        return sock
    raise error


def _numeric_family(host: str) -> int | None:
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
        except OSError:
            continue
        return family
    return None


class _Plain:
    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
        self._loop = loop
        self._sock = sock

    async def handshake(self) -> None:
        return

    async def send(self, data: bytes) -> None:
        await self._loop.sock_sendall(self._sock, data)

    async def recv(self) -> bytes:
        return await self._loop.sock_recv(self._sock, 4096)


class _Tls(_Plain):
    """TLS over the plain socket through memory BIOs: no asyncio transport needed."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket, host: str) -> None:
        super().__init__(loop, sock)
        ssl = _import_ssl()
        self._ssl = ssl
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        hostname = None if _numeric_family(host) is not None else host  # SNI takes names only
        self._obj = _context().wrap_bio(self._in, self._out, server_hostname=hostname)

    async def _pump(self, step: Any) -> Any:
        """Run one SSLObject step, moving bytes between it and the socket until it is done."""
        while True:
            try:
                result = step()
            except self._ssl.SSLWantReadError:
                if self._in.eof:
                    raise ValueError("the connection closed during TLS") from None
                await self._flush()
                data = await self._loop.sock_recv(self._sock, 16384)
                if data:
                    self._in.write(data)
                else:
                    self._in.write_eof()
                continue
            await self._flush()
            return result

    async def _flush(self) -> None:
        pending = self._out.read()
        if pending:
            await self._loop.sock_sendall(self._sock, pending)

    async def handshake(self) -> None:
        await self._pump(self._obj.do_handshake)

    async def send(self, data: bytes) -> None:
        await self._pump(lambda: self._obj.write(data))

    async def recv(self) -> bytes:
        try:
            data: bytes = await self._pump(lambda: self._obj.read(4096))
        except self._ssl.SSLZeroReturnError:
            return b""
        return data


def _import_ssl() -> Any:
    """``ssl``, even where ``forkwell up`` blocked it at start-up (a reload added https)."""
    if "ssl" in sys.modules and sys.modules["ssl"] is None:
        del sys.modules["ssl"]
    import ssl

    return ssl


def _context() -> ssl.SSLContext:
    """One client context for every https probe: no certificate check, as the kubelet."""
    global _tls_context
    if _tls_context is None:
        ssl = _import_ssl()
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        _tls_context = ctx
    return _tls_context
