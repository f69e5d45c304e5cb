"""HTTP/1.1 requests off the wire, for the WSGI server: httptools (llhttp) behind one adapter.

Nothing here parses HTTP by hand.  llhttp, the parser of Node.js kept by its
security team and wrapped by ``httptools``, owns the syntax: the request
line, header names and values, ``Content-Length`` and chunked framing, and
the smuggling refusals (both ``Content-Length`` and ``Transfer-Encoding``,
a duplicate ``Content-Length``, a bad chunk size, obs-fold, bare LF).
h11 was the other candidate; ``bench/bench_http_parsers.py`` measures both
on the same requests: llhttp parses a browser-sized request in about 3 us,
h11 needs about 110 us, more than all the rest of a hello-world request costs.

What the adapter adds is policy:

* limits, with gunicorn's names: the request target (``limit_request_line``,
  414), the number and size of header fields (``limit_request_fields``,
  ``limit_request_field_size``, 431), and a cap on all bytes fed while a head
  is incomplete, so that what llhttp buffers (it joins a field's pieces)
  cannot grow without bound;
* refusals llhttp leaves to the server: a transfer coding other than
  ``chunked`` (501), ``Transfer-Encoding`` in HTTP/1.0 (400), a version other
  than 1.0 and 1.1 (505), an HTTP/1.1 request without exactly one ``Host``
  (400), ``CONNECT`` (501), an upgrade request with a body (501);
* pipelining: requests are queued in arrival order; a request that follows
  a bad one is never seen, because the stream stops at the error.
"""

from __future__ import annotations

import email.utils
import time
from collections import deque
from http import HTTPStatus

NEEDS_EXTRA = "forkwell's WSGI server needs httptools: pip install 'forkwell[wsgi]'"

try:
    import httptools
except ImportError:  # the optional extra is not installed
    raise ModuleNotFoundError(NEEDS_EXTRA, name="httptools") from None

# What 0 ("no limit") means for one part of a head, and the longest request
# line accepted at all (gunicorn's caps).
UNLIMITED = 1 << 20

# Header names the adapter looks at, found by length first: most names are
# of none of these lengths, so most fields cost one len() and one lookup.
_WATCHED = {
    4: b"host",
    6: b"expect",
    14: b"content-length",
    17: b"transfer-encoding",
}


class HTTPError(Exception):
    """A request the server refuses: answered with ``status`` and the connection closed."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


class Message:
    """One request as parsed so far: its head once complete, and the body bytes received."""

    __slots__ = (
        "body",
        "done",
        "error",
        "expect_continue",
        "fields",
        "has_body",
        "head_done",
        "headers",
        "hosts",
        "keep_alive",
        "method",
        "target",
        "transfer_encoding",
        "version",
    )

    def __init__(self) -> None:
        self.method = ""
        self.target = b""
        self.version = "1.1"
        self.headers: list[tuple[bytes, bytes]] = []
        self.fields = 0  # header fields, trailers included: what limit_request_fields counts
        self.body = bytearray()
        self.head_done = False
        self.done = False
        self.keep_alive = False
        self.expect_continue = False
        self.has_body = False
        self.hosts = 0
        self.transfer_encoding: bytes | None = None
        self.error: HTTPError | None = None


class RequestParser:
    """Feed it the bytes of one connection; it queues the requests in them, in order.

    ``messages[0]`` is the oldest request not yet taken.  Once the stream
    cannot be parsed further (an error, an upgrade) ``dead`` is set: the
    requests already queued are still good, then the connection must close.
    An error lands on the request it belongs to (``Message.error``).
    """

    def __init__(self, *, line: int, fields: int, field_size: int) -> None:
        self._line = line or UNLIMITED
        self._fields = fields or UNLIMITED
        self._field_size = field_size or UNLIMITED
        self._head_cap = self._line + min(self._fields * (self._field_size + 4), UNLIMITED) + 4
        self._p = httptools.HttpRequestParser(self)
        self.messages: deque[Message] = deque()
        self._msg: Message | None = None  # the request being parsed
        self._head_fed = 0
        self.dead = False

    def feed(self, data: bytes) -> None:
        if self.dead:
            return
        try:
            self._p.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._upgraded()
        except httptools.HttpParserError as exc:
            # A callback's own refusal comes back wrapped; anything else is llhttp's.
            cause = exc.__context__
            self._fail(cause if isinstance(cause, HTTPError) else HTTPError(400, str(exc)))
        else:
            msg = self._msg
            if msg is not None and not msg.head_done:
                self._head_fed += len(data)
                if self._head_fed > self._head_cap:
                    self._fail(HTTPError(431, "request head too large"))

    def _fail(self, error: HTTPError) -> None:
        self.dead = True
        msg = self._msg
        if msg is None:  # garbage between requests: it gets the answer
            msg = Message()
            self.messages.append(msg)
        msg.error = error

    def _upgraded(self) -> None:
        # llhttp stops at the end of an upgrade request's head: it does not
        # parse a body, nor what follows.  Without a body it is an ordinary
        # request for the app, after which the connection closes.
        self.dead = True
        msg = self.messages[-1] if self.messages else None
        if msg is not None and msg.has_body:
            msg.error = HTTPError(501, "an upgrade request with a body is not supported")

    # -- llhttp's callbacks

    def on_message_begin(self) -> None:
        self._msg = Message()
        self.messages.append(self._msg)
        self._head_fed = 0

    def on_url(self, url: bytes) -> None:
        msg = self._msg
        assert msg is not None
        msg.target += url
        if len(msg.target) > self._line:
            raise HTTPError(414, "request line too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        msg = self._msg
        assert msg is not None
        msg.fields += 1
        if msg.fields > self._fields:
            raise HTTPError(431, "too many header fields")
        if len(name) + len(value) + 2 > self._field_size:
            raise HTTPError(431, "header field too large")
        if msg.head_done:
            return  # a trailer field of a chunked body: counted, not passed on (as gunicorn)
        # llhttp strips the whitespace before a value, not after it (RFC 9112 OWS).
        value = value.rstrip(b" \t")
        msg.headers.append((name, value))
        watched = _WATCHED.get(len(name))
        if watched is not None and name.lower() == watched:
            self._note(msg, watched, value)

    @staticmethod
    def _note(msg: Message, name: bytes, value: bytes) -> None:
        if name == b"host":
            msg.hosts += 1
        elif name == b"expect":
            msg.expect_continue = value.lower() == b"100-continue"
        elif name == b"content-length":
            msg.has_body = msg.has_body or value != b"0"
        else:
            msg.transfer_encoding = value
            msg.has_body = True

    def on_headers_complete(self) -> None:
        msg = self._msg
        assert msg is not None
        p = self._p
        msg.version = version = p.get_http_version()
        if version not in ("1.1", "1.0"):
            raise HTTPError(505, f"HTTP/{version} is not supported")
        msg.method = p.get_method().decode("ascii")
        if msg.method == "CONNECT":
            raise HTTPError(501, "CONNECT is not supported")
        te = msg.transfer_encoding
        if te is not None:
            if version == "1.0":
                raise HTTPError(400, "Transfer-Encoding in an HTTP/1.0 request")
            if te.strip().lower() != b"chunked":
                raise HTTPError(501, "only the chunked transfer coding is supported")
        if version == "1.1" and msg.hosts != 1:
            raise HTTPError(400, "an HTTP/1.1 request needs exactly one Host header")
        if version == "1.0":
            msg.expect_continue = False
        msg.keep_alive = p.should_keep_alive()
        msg.head_done = True

    def on_body(self, body: bytes) -> None:
        msg = self._msg
        assert msg is not None
        msg.body += body

    def on_message_complete(self) -> None:
        msg = self._msg
        assert msg is not None
        msg.done = True
        self._msg = None


# ---------------------------------------------------------------- responses

_date_second = -1
_date_line = b""


def date_and_server() -> bytes:
    """``Date:`` (formatted once a second) and ``Server:`` header lines."""
    global _date_second, _date_line
    now = int(time.time())
    if now != _date_second:
        stamp = email.utils.formatdate(now, usegmt=True)
        _date_line = f"Date: {stamp}\r\nServer: forkwell\r\n".encode("ascii")
        _date_second = now
    return _date_line


def reason_phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def error_response(status: int, text: str) -> bytes:
    """A complete response refusing a request: plain text, then the connection closes."""
    body = f"{text}\n".encode("latin-1", "replace")
    head = (
        f"HTTP/1.1 {status} {reason_phrase(status)}\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n"
    ).encode("latin-1")
    return head + date_and_server() + b"\r\n" + body
