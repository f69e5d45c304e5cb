"""PEP 3333 for one request: ``environ``, ``wsgi.input``, ``wsgi.file_wrapper``, ``start_response``.

The connection (:mod:`forkwell._servers._httpconn`) owns the socket; what is
here turns a parsed request into an ``environ`` and an application's answer
into bytes, through what it asks of the connection (:class:`Wire`): more of
the request body, and sending.

``environ``: header names become ``HTTP_*`` keys as in CGI; a name with an
``_`` is dropped (as gunicorn does): ``X_Forwarded_For`` would land on the
key of ``X-Forwarded-For`` and slip past a proxy that strips only the real
one.  ``PATH_INFO`` is percent-decoded, then decoded as latin-1 per the PEP;
``RAW_URI`` and ``REQUEST_URI`` keep the target as sent.

Response framing, decided when the head goes out (the first non-empty body
chunk, or the end of the iterable, per the PEP): the application's
``Content-Length`` if it gave one (never more bytes than it declares; fewer
close the connection); a length forkwell knows (a one-item list, an empty
body, a file); otherwise chunked for HTTP/1.1 and close-delimited for
HTTP/1.0.  ``HEAD``, 1xx, 204 and 304 responses carry no body.  Hop-by-hop
headers from the application are dropped (``Connection: close`` is obeyed),
as gunicorn does; a CR or LF in a header refuses the response (a 500), so an
application cannot be made to split it.
"""

from __future__ import annotations

import io
import os
import stat
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol
from urllib.parse import unquote_to_bytes

from ._http import HTTPError, Message, date_and_server

# Headers an application must not send (PEP 3333, "hop-by-hop").
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
# Request header name -> environ key suffix in one C call: "user-agent" -> "USER_AGENT".
_TO_KEY = bytes.maketrans(b"abcdefghijklmnopqrstuvwxyz-", b"ABCDEFGHIJKLMNOPQRSTUVWXYZ_")
_NO_PREFIX = {b"CONTENT_TYPE": "CONTENT_TYPE", b"CONTENT_LENGTH": "CONTENT_LENGTH"}
_SENDFILE_MIN = 16384  # below this, reading and sending costs no more than sendfile


class BadBody(HTTPError):
    """The request body cannot be read: answered with its status, the connection closed."""


class Wire(Protocol):
    """What a request needs of its connection."""

    def fill_body(self, msg: Message) -> bool:
        """Receive more of ``msg``'s body into ``msg.body``; False once it is complete."""
        ...

    def send(self, data: bytes, more: bool = False) -> None: ...

    def sendfile(self, fd: int, offset: int, count: int) -> int:
        """Send ``count`` bytes of the file ``fd`` from ``offset``; -> bytes sent."""
        ...

    def may_keep_alive(self) -> bool:
        """Whether the connection may carry another request after this one."""
        ...


# ---------------------------------------------------------------- environ


def base_environ(
    *, server: tuple[str, str] | None, peer: tuple[str, str] | None, script_name: str
) -> dict[str, Any]:
    """The keys every request on one connection shares.

    ``server`` is None on a Unix socket: each request's ``Host`` names it.
    """
    env: dict[str, Any] = {
        "SERVER_SOFTWARE": "forkwell",
        "SCRIPT_NAME": script_name,
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "wsgi.file_wrapper": FileWrapper,
        "wsgi.input_terminated": True,  # reads end at the end of the body, chunked or not
    }
    if server is not None:
        env["SERVER_NAME"], env["SERVER_PORT"] = server
    if peer is not None:
        env["REMOTE_ADDR"], env["REMOTE_PORT"] = peer
    return env


def request_environ(msg: Message, base: dict[str, Any], script_name: str) -> dict[str, Any]:
    """``environ`` for ``msg``: a copy of the connection's ``base`` plus the request's keys."""
    env = base.copy()
    target = msg.target
    path, _, query = target.partition(b"?")
    if not path.startswith(b"/"):
        path = _origin_path(path)
    if b"%" in path:
        path = unquote_to_bytes(path)
    path_info = path.decode("latin-1")
    if script_name and (path_info == script_name or path_info.startswith(script_name + "/")):
        path_info = path_info[len(script_name) :]
    env["REQUEST_METHOD"] = msg.method
    env["PATH_INFO"] = path_info
    env["QUERY_STRING"] = query.decode("latin-1")
    env["RAW_URI"] = env["REQUEST_URI"] = target.decode("latin-1")
    env["SERVER_PROTOCOL"] = "HTTP/1.0" if msg.version == "1.0" else "HTTP/1.1"
    for name, value in msg.headers:
        if b"_" in name:
            continue  # see the module docstring
        raw = name.translate(_TO_KEY)
        key = _NO_PREFIX.get(raw) or "HTTP_" + raw.decode("latin-1")
        text = value.decode("latin-1")
        if key in env:  # a repeated field: one value, as CGI has it
            text = env[key] + ("; " if key == "HTTP_COOKIE" else ",") + text
        env[key] = text
    if "SERVER_NAME" not in env:
        _server_from_host(env)
    return env


def _origin_path(path: bytes) -> bytes:
    """The path of an absolute-form target (``http://host/p`` -> ``/p``).

    ``OPTIONS *`` keeps ``*``, as wsgiref and gunicorn give it: read as ``""``
    it would be the app's root, and the root's handler would answer for the server.
    """
    if path == b"*":
        return path
    scheme, sep, rest = path.partition(b"://")
    if sep and scheme.lower() in (b"http", b"https"):
        slash = rest.find(b"/")
        return rest[slash:] if slash >= 0 else b"/"
    return b"/" + path


def _server_from_host(env: dict[str, Any]) -> None:
    host = env.get("HTTP_HOST", "")
    name, sep, port = host.rpartition(":")
    if not sep or not port.isdigit() or name.endswith(":"):  # no port, or a bare IPv6
        name, port = host, "80"
    env["SERVER_NAME"] = name or "localhost"
    env["SERVER_PORT"] = port


# ---------------------------------------------------------------- wsgi.input


class Input:
    """``wsgi.input``: the body of one request and never a byte past it.

    Bytes are received only as the application asks for them, so a large
    upload is never held whole unless the application reads it whole.  At
    the end of the body, reads return ``b""``.
    """

    __slots__ = ("_msg", "_wire")

    def __init__(self, wire: Wire, msg: Message) -> None:
        self._wire = wire
        self._msg = msg

    def _take(self, size: int) -> bytes:
        body = self._msg.body
        if size >= len(body):
            data = bytes(body)
            body.clear()
            return data
        data = bytes(memoryview(body)[:size])
        del body[:size]
        return data

    def read(self, size: int | None = -1) -> bytes:
        body = self._msg.body
        if size is None or size < 0:
            while self._wire.fill_body(self._msg):
                pass
            return self._take(len(body))
        while len(body) < size and self._wire.fill_body(self._msg):
            pass
        return self._take(size)

    def readline(self, size: int | None = -1) -> bytes:
        body = self._msg.body
        limit = -1 if size is None else size
        start = 0
        while True:
            end = body.find(b"\n", start) + 1
            if end:
                break
            if 0 <= limit <= len(body):
                end = limit
                break
            start = len(body)
            if not self._wire.fill_body(self._msg):
                end = len(body)
                break
        return self._take(end if limit < 0 else min(end, limit))

    def readlines(self, hint: int = -1) -> list[bytes]:
        lines: list[bytes] = []
        total = 0
        while line := self.readline():
            lines.append(line)
            total += len(line)
            if 0 < hint <= total:
                break
        return lines

    def __iter__(self) -> Iterator[bytes]:
        while line := self.readline():
            yield line


# ---------------------------------------------------------------- wsgi.file_wrapper


class FileWrapper:
    """``wsgi.file_wrapper``: returned by the application, its file is sent with ``sendfile``.

    Iterable in blocks as the PEP requires (middleware may iterate it, and
    a file without a usable ``fileno()`` is sent that way), and ``close()``
    closes the file.
    """

    __slots__ = ("blksize", "filelike")

    def __init__(self, filelike: Any, blksize: int = 8192) -> None:
        self.filelike = filelike
        self.blksize = blksize

    def __iter__(self) -> Iterator[bytes]:
        while data := self.filelike.read(self.blksize):
            yield data

    def close(self) -> None:
        close = getattr(self.filelike, "close", None)
        if close is not None:
            close()

    def regular_file(self) -> tuple[int, int, int] | None:
        """``(fd, offset, bytes left)`` when the file can go out by ``sendfile``, else None."""
        try:
            fd = self.filelike.fileno()
            st = os.fstat(fd)
            offset = self.filelike.tell()
        except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        return fd, offset, max(0, st.st_size - offset)


# ---------------------------------------------------------------- the response


def _header_lines(headers: object) -> tuple[list[str], int | None, bool]:
    """The application's headers -> (lines to send, its Content-Length, it said close)."""
    if type(headers) is not list:
        raise TypeError(f"response headers must be a list, not {type(headers).__name__}")
    lines: list[str] = []
    length: int | None = None
    close = False
    for item in headers:
        if type(item) is not tuple or len(item) != 2:
            raise TypeError(f"a response header must be a (name, value) tuple, not {item!r}")
        name, value = item
        if type(name) is not str or type(value) is not str:
            raise TypeError(f"response header {item!r}: name and value must be str")
        lname = name.lower()
        if lname in _HOP_BY_HOP:
            close = close or (lname == "connection" and "close" in value.lower())
            continue
        if lname == "content-length":
            if not value.strip().isdigit():
                raise ValueError(f"bad Content-Length {value!r}")
            length = int(value)
        if ":" in name or "\r" in value or "\n" in value or "\r" in name or "\n" in name:
            raise ValueError(f"response header {item!r} contains CR, LF or a colon in its name")
        lines.append(f"{name}: {value}\r\n")
    return lines, length, close


def _status_code(status: object) -> int:
    if type(status) is not str:
        raise TypeError(f"status must be a str, not {type(status).__name__}")
    code = status[:3]
    if len(status) < 4 or status[3] != " " or not code.isdigit() or "\n" in status:
        raise ValueError(f"bad status {status!r} (expected e.g. '200 OK')")
    return int(code)


class Response:
    """``start_response``, ``write`` and the application's iterable, as bytes on the wire."""

    __slots__ = (
        "_app_close",
        "_wire",
        "chunked",
        "close",
        "code",
        "head_only",
        "head_sent",
        "http10",
        "length",
        "lines",
        "sent",
        "status",
    )

    def __init__(self, wire: Wire, *, head_only: bool, http10: bool) -> None:
        self._wire = wire
        self.head_only = head_only
        self.http10 = http10
        self.status: str | None = None
        self.code = 0
        self.lines: list[str] = []  # the head's header lines, as sent
        self._app_close = False
        self.length: int | None = None  # the body length the head announced
        self.chunked = False
        self.close = False  # the connection ends after this response
        self.head_sent = False
        self.sent = 0  # body bytes sent

    def start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Callable[[bytes], None]:
        if exc_info is not None:
            try:
                if self.head_sent:  # too late to change the answer: PEP 3333 says re-raise
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.status is not None:
            raise AssertionError("start_response() called a second time without exc_info")
        code = _status_code(status)
        self.lines, self.length, self._app_close = _header_lines(headers)
        self.status, self.code = status, code
        return self.write

    @property
    def no_body(self) -> bool:
        return self.head_only or self.code < 200 or self.code in (204, 304)

    def write(self, data: bytes) -> None:
        """PEP 3333's ``write()``, and each chunk of the iterable."""
        if type(data) is not bytes:
            if not isinstance(data, (bytes, bytearray, memoryview)):
                raise TypeError(f"the application sent {type(data).__name__}, not bytes")
            data = bytes(data)
        if not self.head_sent:
            self._send_head(data, None)
        elif data and not self.no_body:
            self._send_body(data)

    def _send_body(self, data: bytes) -> None:
        if self.length is not None:
            room = self.length - self.sent
            if len(data) > room:  # more than it declared: never put it on the wire
                data = data[:room]
                self.close = True
        self.sent += len(data)
        if self.chunked:
            self._wire.send(b"%x\r\n%b\r\n" % (len(data), data))
        elif data:
            self._wire.send(data)

    def send_iterable(self, result: Iterable[bytes]) -> None:
        """Send what the application returned (the caller closes it)."""
        if type(result) is FileWrapper and self._send_file(result):
            return
        if type(result) is list and len(result) == 1 and self.status is not None:
            self.write_whole(result[0])
            return
        for data in result:
            if data:
                self.write(data)
                if self.head_only:
                    break  # the head is out; a HEAD response has nothing more
        self.finish()

    def write_whole(self, data: bytes) -> None:
        """The whole body in one piece: one send with the head, its length known."""
        if type(data) is not bytes:
            raise TypeError(f"the application sent {type(data).__name__}, not bytes")
        if self.head_sent:
            self.write(data)
        else:
            self._send_head(data, len(data))
        self.finish()

    def finish(self) -> None:
        """After the last chunk: the head of an empty body, or the chunked terminator."""
        if not self.head_sent:
            self._send_head(b"", None if self.head_only else 0)
        elif self.chunked:
            self._wire.send(b"0\r\n\r\n")
        if self.length is not None and self.sent < self.length and not self.no_body:
            self.close = True  # the client still waits for bytes that will never come

    def _send_file(self, wrapper: FileWrapper) -> bool:
        """The file by ``sendfile``: True when sent, False to iterate it instead."""
        where = None if self.head_sent or self.status is None else wrapper.regular_file()
        if where is None:
            return False
        fd, offset, size = where
        count = size if self.length is None else min(size, self.length)
        if count < _SENDFILE_MIN or self.no_body:
            return False
        self._send_head(b"", count if self.length is None else None, more=True)
        self.sent = self._wire.sendfile(fd, offset, count)
        self.finish()
        return True

    def _framing(self, known_length: int | None) -> None:
        """Content-Length, chunked, or close-delimited; and whether the connection carries on."""
        if self.length is None and known_length is not None:
            if self.code >= 200 and self.code not in (204, 304):
                self.length = known_length
                self.lines.append(f"Content-Length: {known_length}\r\n")
        elif self.length is None and not self.no_body:
            if self.http10:
                self.close = True  # the end of the body is the end of the connection
            else:
                self.chunked = True
                self.lines.append("Transfer-Encoding: chunked\r\n")
        self.close = self.close or self._app_close or not self._wire.may_keep_alive()
        if self.close:
            self.lines.append("Connection: close\r\n")
        elif self.http10:
            self.lines.append("Connection: keep-alive\r\n")

    def _send_head(self, first: bytes, known_length: int | None, *, more: bool = False) -> None:
        if self.status is None:
            raise AssertionError("the application sent body bytes before calling start_response()")
        self._framing(known_length)
        head = b"".join(
            (
                b"HTTP/1.1 ",
                self.status.encode("latin-1"),
                b"\r\n",
                "".join(self.lines).encode("latin-1"),
                date_and_server(),
                b"\r\n",
            )
        )
        self.head_sent = True
        if self.no_body or not first:
            self._wire.send(head, more)
        elif self.chunked:
            self.sent = len(first)
            self._wire.send(head + b"%x\r\n%b\r\n" % (len(first), first))
        else:
            if self.length is not None and len(first) > self.length:
                first = first[: self.length]
                self.close = True
            self.sent = len(first)
            self._wire.send(head + first)
