"""A small HTTP/1.1 server in the supervisor's event loop, h11 doing the parsing; bounded.

h11 is sans-IO: it turns bytes into requests and responses into bytes, and
this module only moves the bytes (asyncio streams) and enforces the limits.
Why each one (all in :class:`Limits`):

* ``max_head``: a request line and headers larger than this get 431 (h11
  buffers at most this much of an unfinished head), ``max_body``: 413.
* ``request_timeout``: a whole request, from the moment the connection waits
  for it to its last byte, must arrive within this, or it gets 408 and is
  closed.  A slowloris client that trickles one byte at a time costs one
  connection for this long, never more.
* ``max_connections``: when all are taken, the connection that has waited
  longest for its request is closed to make room (idle keep-alive
  connections and slow clients go first); only when every one is busy or
  streaming is the newcomer refused with 503.  So 1,000 idle connections
  cannot lock a real client out, and cost at most ``max_connections`` small
  buffers.
* ``max_streams`` server-sent event streams at once, and a stream whose
  reader falls ``stream_buffer`` bytes behind is dropped: a client that
  never reads cannot grow the supervisor's memory.
* ``write_timeout``: a response not taken by the client within this is dropped.

Nothing here runs while no client is connected: the listening socket waits
in the loop's epoll like any other fd, and timers exist per connection only.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import stat
from collections.abc import Awaitable, Callable, Iterable
from http import HTTPStatus
from typing import NamedTuple
from urllib.parse import parse_qsl, unquote, urlsplit

import h11

from ..._exceptions import BindError
from .._control._server import claim_path
from ._address import HttpAddress

_READ = 4096


class Limits(NamedTuple):
    """What one client may cost (see the module docstring)."""

    max_head: int = 8192
    max_body: int = 16384
    request_timeout: float = 10.0
    write_timeout: float = 10.0
    max_connections: int = 128
    max_streams: int = 32
    stream_buffer: int = 1 << 20


class Request(NamedTuple):
    """A parsed request: ``path`` percent-decoded, header names in lower case."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    peer: str  # "127.0.0.1:51234", or "" on a Unix socket


class Response(NamedTuple):
    """A whole response."""

    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()


class StreamResponse(NamedTuple):
    """A response that stays open (server-sent events): ``start`` gets its :class:`Stream`."""

    start: Callable[[Stream], None]
    headers: tuple[tuple[str, str], ...] = ()


App = Callable[[Request], Awaitable[Response | StreamResponse]]


class Stream:
    """An open response the app writes to from its callbacks, until either side ends it."""

    def __init__(self, conn: h11.Connection, writer: asyncio.StreamWriter, limit: int) -> None:
        self._conn = conn
        self._writer = writer
        self._limit = limit
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._on_close: list[Callable[[], None]] = []

    def on_close(self, callback: Callable[[], None]) -> None:
        self._on_close.append(callback)

    def send(self, data: bytes) -> None:
        """Queue ``data``; a reader that lets ``limit`` bytes pile up is dropped."""
        transport = self._writer.transport
        if self.closed.done() or transport.is_closing():
            self.close()
            return
        if transport.get_write_buffer_size() > self._limit:
            self.close()
            return
        self._writer.write(self._conn.send(h11.Data(data=data)) or b"")

    def close(self) -> None:
        if self.closed.done():
            return
        self.closed.set_result(None)
        callbacks, self._on_close = self._on_close, []
        for callback in callbacks:
            callback()


class _TooLarge(Exception):
    pass


class _Conn:
    """One connection: its task, and what it is doing (``idle`` waits for a request)."""

    __slots__ = ("phase", "since", "task", "writer")

    def __init__(self, task: asyncio.Task[None], writer: asyncio.StreamWriter, now: float) -> None:
        self.task = task
        self.writer = writer
        self.phase = "idle"
        self.since = now


class HttpServer:
    """Serves ``app`` on ``address`` within ``limits``; counts what it refused."""

    def __init__(
        self,
        app: App,
        address: HttpAddress,
        limits: Limits | None = None,
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        self.app = app
        self.address = address
        self.limits = limits or Limits()
        self._on_error = on_error
        self._server: asyncio.AbstractServer | None = None
        self._conns: dict[asyncio.Task[None], _Conn] = {}
        self._inode: tuple[int, int] | None = None
        self._closing = False
        self.streams = 0
        self.port = address.port
        # Counters for /metrics.
        self.requests = 0
        self.refused = 0  # connections refused (503) or closed to make room
        self.rejected = 0  # requests answered 4xx by the protocol layer: too large, too slow

    @property
    def connections(self) -> int:
        return len(self._conns)

    @property
    def url(self) -> str:
        return self.address.url(self.port)

    async def start(self) -> None:
        """Listen; :class:`~forkwell.BindError` when the address cannot be had."""
        limit = self.limits.max_head * 2
        try:
            if self.address.path is not None:
                sock = self._unix_socket(os.fspath(self.address.path))
                self._server = await asyncio.start_unix_server(self._accept, sock=sock, limit=limit)
            else:
                self._server = await asyncio.start_server(
                    self._accept, self.address.host, self.address.port, limit=limit, backlog=128
                )
                self.port = self._server.sockets[0].getsockname()[1]
        except OSError as exc:
            # asyncio words its own strerror ("error while attempting to bind..."): the C one.
            why = os.strerror(exc.errno) if exc.errno else str(exc)
            message = f"http: cannot listen on {self.address}: {why}"
            raise BindError(exc.errno or 0, message) from None

    def _unix_socket(self, path: str) -> socket.socket:
        """Bound with mode 0660: the owner, and a reverse proxy given the group."""
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        claim_path(path, "http socket")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o117)  # no instant where others could connect
        try:
            sock.bind(path)
        except OSError:
            sock.close()
            raise
        finally:
            os.umask(old)
        st = os.stat(path)
        self._inode = (st.st_dev, st.st_ino)
        sock.listen(128)
        sock.setblocking(False)
        return sock

    async def close(self) -> None:
        """Stop listening, end every connection and stream, remove our Unix socket."""
        self._closing = True
        if self._server is not None:
            self._server.close()
        for conn in list(self._conns.values()):
            conn.writer.transport.abort()
            conn.task.cancel()
        if self._conns:
            await asyncio.wait(list(self._conns), timeout=1.0)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
        if self._inode is not None and self.address.path is not None:
            with contextlib.suppress(OSError):
                st = os.lstat(self.address.path)
                if stat.S_ISSOCK(st.st_mode) and (st.st_dev, st.st_ino) == self._inode:
                    os.unlink(self.address.path)

    # -- connections ---------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if self._closing:
            writer.transport.abort()
            return
        if len(self._conns) >= self.limits.max_connections and not self._evict():
            self.refused += 1
            self._refuse(writer)
            return
        loop = asyncio.get_running_loop()
        self._conns[task] = conn = _Conn(task, writer, loop.time())
        try:
            await self._serve(conn, reader, writer)
        except (asyncio.CancelledError, ConnectionError, TimeoutError, h11.LocalProtocolError):
            pass
        except Exception as exc:  # a bug costs this connection, never the supervisor
            self._error(f"http: internal error: {type(exc).__name__}: {exc}")
        finally:
            self._conns.pop(task, None)  # _evict() may have taken it out already
            if self._closing:
                writer.transport.abort()
            else:
                writer.close()

    def _evict(self) -> bool:
        """Close the connection that has waited longest for its request; False if none waits."""
        idle = [c for c in self._conns.values() if c.phase == "idle"]
        if not idle:
            return False
        oldest = min(idle, key=lambda c: c.since)
        self.refused += 1
        oldest.writer.transport.abort()
        oldest.task.cancel()
        del self._conns[oldest.task]
        return True

    def _refuse(self, writer: asyncio.StreamWriter) -> None:
        body = b"busy: too many connections\n"
        writer.write(
            b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\nretry-after: 1\r\n"
            b"content-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\n\r\n%s"
            % (len(body), body)
        )
        writer.close()

    def _error(self, text: str) -> None:
        if self._on_error is not None:
            self._on_error(text)

    async def _serve(
        self, conn: _Conn, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        h = h11.Connection(h11.SERVER, max_incomplete_event_size=self.limits.max_head)
        loop = asyncio.get_running_loop()
        while not self._closing:
            conn.phase, conn.since = "idle", loop.time()
            status, why, request = 0, "", None
            try:
                async with asyncio.timeout(self.limits.request_timeout):
                    request = await self._receive(h, reader, writer, _peer(writer))
            except TimeoutError:
                status, why = 408, f"no complete request within {self.limits.request_timeout:g}s"
            except h11.RemoteProtocolError as exc:
                status, why = exc.error_status_hint, str(exc)
            except _TooLarge:
                status, why = 413, f"request body larger than {self.limits.max_body} bytes"
            except ValueError as exc:  # a query string with too many fields
                status, why = 400, str(exc)
            if status:
                self.rejected += 1
                await self._respond(h, writer, Response(status, f"{why}\n".encode()), close=True)
                return
            if request is None:
                return
            conn.phase = "busy"
            self.requests += 1
            reply = await self._answer(request)
            if isinstance(reply, StreamResponse):
                conn.phase = "stream"
                await self._stream(h, reader, writer, reply)
                return
            await self._respond(h, writer, reply, head=request.method == "HEAD")
            if h.our_state is h11.MUST_CLOSE:
                return
            h.start_next_cycle()

    async def _answer(self, request: Request) -> Response | StreamResponse:
        try:
            return await self.app(request)
        except Exception as exc:  # a bug costs one 500, never the supervisor
            self._error(f"http: {request.method} {request.path}: {type(exc).__name__}: {exc}")
            return Response(500, b"internal error\n")

    async def _receive(
        self,
        h: h11.Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        peer: str,
    ) -> Request | None:
        """The next request, whole; None when the client closed the connection between two."""
        head: h11.Request | None = None
        body = bytearray()
        while True:
            event = h.next_event()
            if event is h11.NEED_DATA:
                if h.they_are_waiting_for_100_continue:
                    go_on = h11.InformationalResponse(status_code=100, headers=[])
                    writer.write(h.send(go_on) or b"")
                h.receive_data(await reader.read(_READ))
            elif isinstance(event, h11.Request):
                head = event
                length = _header(event.headers, b"content-length")
                if length is not None and int(length) > self.limits.max_body:
                    raise _TooLarge
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > self.limits.max_body:
                    raise _TooLarge
            elif isinstance(event, h11.EndOfMessage):
                assert head is not None
                return _request(head, bytes(body), peer)
            else:  # ConnectionClosed; PAUSED cannot be: we answer before reading on
                return None

    async def _respond(
        self,
        h: h11.Connection,
        writer: asyncio.StreamWriter,
        reply: Response,
        *,
        head: bool = False,
        close: bool = False,
    ) -> None:
        headers = [
            ("content-type", reply.content_type),
            ("content-length", str(len(reply.body))),
            *reply.headers,
        ]
        if close or self._closing:
            headers.append(("connection", "close"))
        try:
            data = h.send(_head(reply.status, headers)) or b""
            if reply.body and not head:
                data += h.send(h11.Data(data=reply.body)) or b""
            data += h.send(h11.EndOfMessage()) or b""
        except h11.LocalProtocolError:
            return  # the client broke the exchange beyond answering
        writer.write(data)
        await asyncio.wait_for(writer.drain(), self.limits.write_timeout)

    async def _stream(
        self,
        h: h11.Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        reply: StreamResponse,
    ) -> None:
        if self.streams >= self.limits.max_streams:
            busy = f"busy: {self.limits.max_streams} event streams are open already\n"
            await self._respond(h, writer, Response(503, busy.encode()), close=True)
            return
        headers = [
            ("content-type", "text/event-stream; charset=utf-8"),
            ("cache-control", "no-store"),
            ("x-accel-buffering", "no"),  # tell a proxy in front not to hold events back
            *reply.headers,
        ]
        writer.write(h.send(_head(200, headers)) or b"")
        stream = Stream(h, writer, self.limits.stream_buffer)
        self.streams += 1
        eof = asyncio.ensure_future(_until_eof(reader))
        try:
            reply.start(stream)
            await asyncio.wait({eof, stream.closed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.streams -= 1
            eof.cancel()
            stream.close()


def _head(status: int, headers: list[tuple[str, str]]) -> h11.Response:
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = ""
    return h11.Response(status_code=status, headers=headers, reason=reason)


async def _until_eof(reader: asyncio.StreamReader) -> None:
    """What a client sends on an event stream is read and dropped, until it hangs up."""
    while await reader.read(_READ):
        pass


def _header(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for key, value in headers:
        if key == name:
            return value
    return None


def _peer(writer: asyncio.StreamWriter) -> str:
    name = writer.get_extra_info("peername")
    if isinstance(name, tuple) and len(name) >= 2:
        return f"[{name[0]}]:{name[1]}" if ":" in str(name[0]) else f"{name[0]}:{name[1]}"
    return ""


def _request(head: h11.Request, body: bytes, peer: str) -> Request:
    parts = urlsplit(head.target.decode("ascii", "replace"))
    headers: dict[str, str] = {}
    for raw_name, raw_value in head.headers:
        name, value = raw_name.decode("ascii").lower(), raw_value.decode("latin-1")
        if name in headers:  # repeated: one value, as RFC 9110 joins them
            value = f"{headers[name]}{'; ' if name == 'cookie' else ', '}{value}"
        headers[name] = value
    query = dict(parse_qsl(parts.query, keep_blank_values=True, max_num_fields=32))
    return Request(head.method.decode("ascii"), unquote(parts.path), query, headers, body, peer)
