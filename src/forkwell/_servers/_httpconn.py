"""One HTTP/1.1 connection of the WSGI server: a session its worker resumes once per request.

The worker that accepted a connection serves all of it (keep-alive and
pipelined requests alike), one request at a time.  Between requests the
connection is parked in the worker's epoll set beside the listeners
(:class:`~forkwell._servers._common.Session`), so an idle keep-alive
client or one that sends its head slowly holds no worker: the worker serves
whichever of its connections has a complete request, and accepts new ones
when it is idle, as gunicorn's gthread worker does with one thread.

Inside a request, reading the body and writing the response wait with
``poll`` in slices short enough to keep the heartbeat going: a request that
makes progress is never taken for a stuck worker; an application stuck in
one request is, after ``timeout``, and the master replaces the worker.

Deadlines, which bound slow and idle clients:

* the head of the first request must be complete within ``timeout`` of the
  accept; a later one must start within ``keep_alive`` of the previous
  response and be complete within ``timeout`` of its first byte (then 408);
* each read of the body and each write of the response must progress within
  ``timeout``.

Stopping (SIGTERM, reload, ``max_requests``): the request being served is
finished, and its response, or the next one on this connection, says
``Connection: close``.  An idle keep-alive connection is not closed under a
client that may be sending (that race costs a failed request); it ends when
the client leaves it idle for ``keep_alive``.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from ._common import AGAIN, DONE, PARK
from ._http import HTTPError, Message, RequestParser, error_response
from ._wsgi import BadBody, Input, Response, base_environ, request_environ

if TYPE_CHECKING:
    from ._common import Lifeline
    from ._forwarded import TrustedProxies

log = logging.getLogger("forkwell.server")

_RECV = 65536
_DRAIN_MAX = 1 << 20  # unread body bytes read and dropped to keep a connection; more: close
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class Service(Protocol):
    """What a connection takes from the service it serves (a ``WSGIService``)."""

    app: Callable[..., Any] | None
    limit_request_line: int
    limit_request_fields: int
    limit_request_field_size: int
    keep_alive: float
    io_timeout: float
    script_name: str
    proxies: TrustedProxies

    def log_access(self, environ: dict[str, Any], response: Response, duration: float) -> None: ...


class ClientGone(ConnectionError):
    """The client closed, reset or stalled the connection: nothing more can be said to it."""


class Connection:
    """One client connection of a WSGI worker."""

    def __init__(
        self, service: Service, sock: socket.socket, address: Any, life: Lifeline
    ) -> None:
        self.service = service
        self.sock = sock
        self.fd = sock.fileno()
        self.life = life
        self.timeout = service.io_timeout
        self.slice = min(self.timeout / 4, 1.0)
        self.parser = RequestParser(
            line=service.limit_request_line,
            fields=service.limit_request_fields,
            field_size=service.limit_request_field_size,
        )
        self._poll: Any = None
        self._last = False  # max_requests reached: this worker's last request
        self._continued = False
        self._msg: Message | None = None
        self._gone = False
        self._started = False  # bytes of a request head have arrived
        self.deadline = time.monotonic() + self.timeout  # for the first request's head
        peer = address if isinstance(address, tuple) else None
        self.trusted = service.proxies.trusts(peer[0] if peer else "")
        self.base = base_environ(
            server=_server_name(sock),
            peer=(peer[0], str(peer[1])) if peer else None,
            script_name=service.script_name,
        )
        sock.setblocking(False)
        if peer is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    # -- the session: a request at a time, parked by the worker in between

    def fileno(self) -> int:
        return self.fd

    def resume(self) -> int:
        """Serve the request that has arrived, if one has: PARK, AGAIN or DONE."""
        try:
            msg = self._ready_head()
            if msg is None:
                return PARK
            if msg.error is not None:
                self._refuse(msg.error)
                return DONE
            if not self._exchange(msg):
                return DONE
        except ClientGone:
            self._gone = True
            return DONE
        # Pipelined bytes of the next head already count against its deadline.
        self._started = bool(self.parser.messages)
        wait = self.timeout if self._started else self.service.keep_alive
        self.deadline = time.monotonic() + wait
        return AGAIN if self._head_buffered() else PARK

    def expire(self) -> None:
        if self._started:  # a head begun and not finished in time: a slow client
            self._refuse(HTTPError(408, "request head not received in time"))

    def _head_buffered(self) -> bool:
        messages = self.parser.messages
        return bool(messages) and (messages[0].head_done or messages[0].error is not None)

    def _ready_head(self) -> Message | None:
        """The next request whose head is complete (or refused), from what has arrived.

        None: wait for more (parked).  At EOF or after an unparseable stream,
        raises ClientGone.
        """
        parser = self.parser
        while not self._head_buffered():
            if parser.dead:
                raise ClientGone("nothing more can be parsed")
            try:
                data = self.sock.recv(_RECV)
            except BlockingIOError:
                return None
            except OSError as exc:
                raise ClientGone(str(exc)) from None
            if not data:
                raise ClientGone("the client closed the connection")
            if not self._started:
                # The head must now be complete within timeout: a client that
                # sends it a byte at a time gets a 408, not a worker's time.
                self._started = True
                self.deadline = time.monotonic() + self.timeout
            parser.feed(data)
        return parser.messages[0]

    def _exchange(self, msg: Message) -> bool:
        """Answer one request; True if the connection carries on."""
        self.life.beat()
        self._last = self.life.request_done()
        self._msg, self._continued = msg, False
        service = self.service
        environ = request_environ(msg, self.base, service.script_name)
        if self.trusted:
            service.proxies.apply(environ)
        environ["wsgi.input"] = Input(self, msg)
        response = Response(self, head_only=msg.method == "HEAD", http10=msg.version == "1.0")
        started = time.monotonic()
        self._call_app(environ, response)
        service.log_access(environ, response, time.monotonic() - started)
        self._msg = None
        kept = not response.close and self._finish_body(msg)
        if msg.done:
            self.parser.messages.popleft()
        return kept

    def _call_app(self, environ: dict[str, Any], response: Response) -> None:
        """The application's answer on the wire; its iterable closed whatever happens."""
        result: Any = None
        app = self.service.app
        assert app is not None  # loaded at boot
        try:
            result = app(environ, response.start_response)
            response.send_iterable(result)
        except ClientGone:
            response.close = True
            raise
        except BadBody as exc:
            response.close = True
            if not response.head_sent:
                self._refuse(exc)
        except Exception:
            response.close = True
            log.exception(
                "error handling %s %s", environ["REQUEST_METHOD"], environ["RAW_URI"]
            )
            if not response.head_sent:
                response.code = 500
                self.send(error_response(500, "Internal Server Error"))
        finally:
            _close_iterable(result)

    def _finish_body(self, msg: Message) -> bool:
        """Read what the application left of the body; False if the connection must close."""
        if msg.done:
            return True
        if msg.expect_continue and not self._continued:
            return False  # the client may never send it
        dropped = 0
        try:
            while dropped <= _DRAIN_MAX and self.fill_body(msg):
                dropped += len(msg.body)
                msg.body.clear()
        except BadBody:
            return False
        return msg.done

    def _refuse(self, error: HTTPError) -> None:
        """Answer a request that cannot be served, then the connection closes."""
        log.info("refused a request: %d %s", error.status, error)
        with contextlib.suppress(ClientGone):
            self.send(error_response(error.status, str(error)))
        self._last = True
        self.parser.dead = True

    # -- what a request asks of its connection (_wsgi.Wire)

    def may_keep_alive(self) -> bool:
        msg = self._msg
        if msg is None or not msg.keep_alive or self._last or self.service.keep_alive <= 0:
            return False
        if msg.expect_continue and not self._continued and not msg.done:
            return False
        return not self.life.stopping()

    def fill_body(self, msg: Message) -> bool:
        if msg.done:
            return False
        if msg.error is not None:
            raise BadBody(msg.error.status, str(msg.error))
        if self.parser.dead:
            raise BadBody(400, "the request body cannot be parsed")
        if msg.expect_continue and not self._continued:
            self._continued = True
            self.send(_CONTINUE)
        data = self._recv(time.monotonic() + self.timeout)
        if not data:
            raise ClientGone("the client left before the end of the request body")
        self.parser.feed(data)
        if msg.error is not None:
            raise BadBody(msg.error.status, str(msg.error))
        return True

    def send(self, data: bytes, more: bool = False) -> None:
        flags = socket.MSG_MORE if more else 0
        try:
            sent = self.sock.send(data, flags)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            raise ClientGone(str(exc)) from None
        self.life.beat()  # progress: a slow but steady response is not a stuck worker
        if sent == len(data):
            return
        view = memoryview(data)[sent:]
        while view:
            self._wait(select.POLLOUT, time.monotonic() + self.timeout)
            try:
                view = view[self.sock.send(view, flags) :]
            except BlockingIOError:
                continue
            except OSError as exc:
                raise ClientGone(str(exc)) from None
            self.life.beat()

    def sendfile(self, fd: int, offset: int, count: int) -> int:
        import os

        sent = 0
        while sent < count:
            try:
                n = os.sendfile(self.fd, fd, offset + sent, min(count - sent, 1 << 20))
            except BlockingIOError:
                self._wait(select.POLLOUT, time.monotonic() + self.timeout)
                continue
            except OSError as exc:
                raise ClientGone(str(exc)) from None
            if n == 0:
                break  # the file got shorter: the response ends short (and closes)
            sent += n
            self.life.beat()
        return sent

    # -- the socket

    def _recv(self, deadline: float) -> bytes | None:
        """Bytes, ``b""`` at EOF, None at the deadline."""
        while True:
            try:
                return self.sock.recv(_RECV)
            except BlockingIOError:
                pass
            except OSError as exc:
                raise ClientGone(str(exc)) from None
            try:
                self._wait(select.POLLIN, deadline)
            except TimeoutError:
                return None

    def _wait(self, events: int, deadline: float) -> None:
        """Until the socket is ready for ``events``, beating; TimeoutError at ``deadline``."""
        poll = self._poll
        if poll is None:
            poll = self._poll = select.poll()
            poll.register(self.fd, events)
        else:
            poll.modify(self.fd, events)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            if poll.poll(min(left, self.slice) * 1000):
                return
            self.life.beat()

    def close(self) -> None:
        sock = self.sock
        if sock.fileno() < 0:
            return
        if not self._gone and self.parser.messages:
            # Unread bytes would make the kernel answer with a reset that can
            # destroy the response in flight: half-close and linger briefly.
            with contextlib.suppress(OSError, TimeoutError):
                sock.shutdown(socket.SHUT_WR)
                deadline = time.monotonic() + min(self.timeout, 2.0)
                while self._recv(deadline):
                    pass
        with contextlib.suppress(OSError):
            sock.close()


def _close_iterable(result: Any) -> None:
    close: Callable[[], object] | None = getattr(result, "close", None)
    if close is not None:
        try:
            close()
        except Exception:
            log.exception("the application's iterable raised in close()")


def _server_name(sock: socket.socket) -> tuple[str, str] | None:
    """SERVER_NAME and SERVER_PORT: the address the client reached (None for AF_UNIX)."""
    if sock.family == socket.AF_UNIX:
        return None
    host, port = sock.getsockname()[:2]
    return str(host), str(port)

