"""What both servers share: addresses and listeners, handlers, fork hygiene, the base class.

:mod:`forkwell._servers._forking` (a child per connection) and
:mod:`forkwell._servers._prefork` (a worker pool) differ in how they use
children; everything about where they listen, what a handler is, how a
freshly forked child cleans up after its parent and how the server's state
moves lives here, once.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import logging
import os
import random
import select
import signal
import socket
import socketserver
import stat
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, Self

from .._core._state import check
from .._exceptions import BindError, HandlerImportError

log = logging.getLogger("forkwell.server")

# What a handler may be: a socketserver.BaseRequestHandler subclass, used
# unchanged, or any callable taking (connected socket, client address).
Handler = type[socketserver.BaseRequestHandler] | Callable[[socket.socket, Any], object]
BindArg = str | tuple[str, int] | socket.socket
Binds = BindArg | Sequence[BindArg]

# Signals a server's main loop reacts to.  They are blocked around fork() so a
# signal sent to a brand-new child cannot run the parent's handler there.
SERVER_SIGNALS = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGHUP,
    signal.SIGUSR1,
    signal.SIGTTIN,
    signal.SIGTTOU,
)

# Pseudo-signals queued by shutdown() from any thread.
STOP_GRACEFUL = -1
STOP_FAST = -2


# ---------------------------------------------------------------- addresses


@dataclass(frozen=True)
class BindSpec:
    """A parsed listen address: ``family`` AF_INET/AF_INET6/AF_UNIX."""

    family: socket.AddressFamily
    address: Any  # (host, port) / (host, port, flow, scope) / path

    def __str__(self) -> str:
        return format_address(self.family, self.address)


def format_address(family: int, address: Any) -> str:
    if family == socket.AF_UNIX:
        return f"unix:{address}"
    if family == socket.AF_INET6:
        return f"[{address[0]}]:{address[1]}"
    return f"{address[0]}:{address[1]}"


def parse_bind(text: str) -> BindSpec:
    """``"HOST:PORT"``, ``"[V6]:PORT"`` or ``"unix:PATH"`` -> :class:`BindSpec`.

    Raises :class:`~forkwell.BindError` (EINVAL) for a malformed string and
    when the host does not resolve.
    """
    raw = text.strip()
    if raw.startswith("unix:"):
        path = raw[5:]
        if not path:
            raise BindError(errno.EINVAL, f"bad bind address {text!r}: unix: needs a path")
        return BindSpec(socket.AF_UNIX, path)
    host, sep, port_text = raw.rpartition(":")
    if not sep or not port_text.isdigit() or int(port_text) > 65535:
        raise BindError(
            errno.EINVAL,
            f"bad bind address {text!r} (expected HOST:PORT, [IPV6]:PORT or unix:PATH)",
        )
    port = int(port_text)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    host = host or "0.0.0.0"
    try:
        infos = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE | socket.AI_NUMERICSERV
        )
    except socket.gaierror as exc:
        raise BindError(errno.EINVAL, f"bad bind address {text!r}: {exc.strerror}") from None
    family, _, _, _, address = infos[0]
    return BindSpec(family, address)


def _as_specs(binds: Binds) -> list[BindSpec | socket.socket]:
    if isinstance(binds, (str, socket.socket)) or (
        isinstance(binds, tuple) and len(binds) == 2 and isinstance(binds[1], int)
    ):
        items: list[Any] = [binds]
    else:
        items = list(binds)
    if not items:
        raise BindError(errno.EINVAL, "no address to listen on")
    out: list[BindSpec | socket.socket] = []
    for item in items:
        if isinstance(item, socket.socket):
            out.append(item)
        elif isinstance(item, str):
            out.append(parse_bind(item))
        elif isinstance(item, tuple):
            out.append(
                parse_bind(f"[{item[0]}]:{item[1]}" if ":" in item[0] else f"{item[0]}:{item[1]}")
            )
        else:
            raise BindError(errno.EINVAL, f"bad bind address {item!r}")
    return out


def make_listener(
    spec: BindSpec, *, backlog: int, reuse_port: bool = False, listen: bool = True
) -> socket.socket:
    """A bound, listening, non-blocking socket; :class:`BindError` names the address.

    ``listen=False`` only binds (with ``reuse_port``: reserves the port for
    per-worker sockets without joining the group that receives connections).
    """
    sock = socket.socket(spec.family, socket.SOCK_STREAM)
    try:
        if spec.family == socket.AF_UNIX:
            _remove_stale_unix_socket(spec.address)
        else:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(spec.address)
        if listen:
            sock.listen(backlog)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        if isinstance(exc, BindError):
            raise
        raise BindError(exc.errno or 0, f"cannot listen on {spec}: {exc.strerror or exc}") from None
    return sock


def _remove_stale_unix_socket(path: str) -> None:
    # A socket file left by a dead server would make bind() fail with
    # EADDRINUSE forever; one a live server answers on must be kept.
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise BindError(errno.EADDRINUSE, f"cannot listen on unix:{path}: not a socket file")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        os.unlink(path)
        return
    except OSError:
        return
    finally:
        probe.close()
    raise BindError(errno.EADDRINUSE, f"cannot listen on unix:{path}: another server is using it")


class Listeners:
    """The sockets a server listens on, and which of them it created (to clean up)."""

    def __init__(self, binds: Binds, *, backlog: int, reuse_port: bool = False) -> None:
        self.specs: list[BindSpec] = []
        self.sockets: list[socket.socket] = []
        self._unix_paths: list[str] = []
        try:
            for item in _as_specs(binds):
                if isinstance(item, socket.socket):
                    item.setblocking(False)
                    self.sockets.append(item)
                    self.specs.append(BindSpec(item.family, item.getsockname()))
                    continue
                per_worker = reuse_port and item.family != socket.AF_UNIX
                sock = make_listener(
                    item, backlog=backlog, reuse_port=per_worker, listen=not per_worker
                )
                self.sockets.append(sock)
                self.specs.append(BindSpec(item.family, sock.getsockname()))
                if item.family == socket.AF_UNIX:
                    self._unix_paths.append(item.address)
        except BaseException:
            self.close()
            raise

    def close(self, *, unlink: bool = True) -> None:
        for sock in self.sockets:
            sock.close()
        self.sockets.clear()
        if unlink:
            for path in self._unix_paths:
                with contextlib.suppress(OSError):
                    os.unlink(path)
        self._unix_paths.clear()

    def forget(self) -> None:
        """In a forked child: close our copies, never unlink the parent's socket files."""
        self.close(unlink=False)


# ---------------------------------------------------------------- handlers


def import_object(module_name: str, attr: str) -> Any:
    """``attr`` (``"name"``, ``"a.b"``) of the module, imported; HandlerImportError says why not."""
    from importlib import import_module

    try:
        module = import_module(module_name)
    except Exception as exc:  # the user's module may raise anything at import
        raise HandlerImportError(
            f"cannot import {module_name!r}: {type(exc).__name__}: {exc}", name=module_name
        ) from exc
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise HandlerImportError(
                f"module {module_name!r} has no attribute {attr!r}", name=module_name
            ) from None
    return obj


def reimport(module_name: str) -> None:
    """On reload, in the master: the module's new code, if it was imported at all."""
    import importlib

    module = sys.modules.get(module_name)
    if module is None:
        return
    try:
        importlib.reload(module)
    except Exception as exc:  # the new code may raise anything
        raise HandlerImportError(
            f"cannot import {module_name!r}: {type(exc).__name__}: {exc}", name=module_name
        ) from exc


def load_handler(spec: str) -> Handler:
    """Import ``"package.module:name"`` and check it is a usable handler."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise HandlerImportError(f"bad handler {spec!r} (expected MODULE:HANDLER)")
    obj = import_object(module_name, attr)
    try:
        check_handler(obj)
    except TypeError as exc:
        raise HandlerImportError(str(exc), name=module_name) from None
    handler: Handler = obj
    return handler


def check_handler(handler: object) -> None:
    if isinstance(handler, type):
        if not issubclass(handler, socketserver.BaseRequestHandler):
            raise TypeError(
                f"{handler.__name__} is a class but not a socketserver.BaseRequestHandler"
            )
    elif not callable(handler):
        raise TypeError(f"handler {handler!r} is neither a request-handler class nor callable")


class Lifeline(Protocol):
    """What a pre-fork worker offers the service that serves one of its connections.

    A connection may carry many requests (HTTP keep-alive) and last long: the
    service reports progress (``beat``, the heartbeat the master watches),
    asks whether the worker was told to stop (then it ends the connection at
    the next request boundary), and counts requests (``max_requests``).
    """

    def beat(self) -> None: ...

    def stopping(self) -> bool: ...

    def request_done(self) -> bool:
        """Count one request; True once the worker should leave after it."""
        ...


class _Unattended:
    """The lifeline of a connection outside a pre-fork worker: nobody watches, nothing stops."""

    def beat(self) -> None:
        pass

    def stopping(self) -> bool:
        return False

    def request_done(self) -> bool:
        return False


UNATTENDED = _Unattended()


# What Session.resume() says about its connection.
PARK = 0  # waiting for the client: poll the connection, resume when it is readable
AGAIN = 1  # a complete request is buffered: resume it without waiting
DONE = 2  # closed


class Session(Protocol):
    """One connection a service serves a request at a time, parked in between."""

    deadline: float  # time.monotonic() by which it must be readable, else expire()

    def fileno(self) -> int: ...

    def resume(self) -> int:
        """Serve what has arrived, without waiting for more: PARK, AGAIN or DONE."""
        ...

    def expire(self) -> None:
        """The client was silent past ``deadline``: close (answering 408 if mid-request)."""
        ...

    def close(self) -> None: ...


class ConnectionService:
    """A handler that serves whole connections and takes part in the worker's life.

    Plain handlers see a socket and are done; a service (the WSGI server) also
    loads its application in each new worker (``boot``), re-imports it in the
    master on reload (``reload``), and turns a connection into a
    :class:`Session` (``open``) that a pre-fork worker parks between requests
    beside its listeners, so an idle keep-alive connection never holds a
    worker.  It stays a ``handler(sock, address)`` too (served blocking).
    """

    # At most this many connections per worker (0: no limit): at the cap the
    # worker stops accepting until one ends (gunicorn's worker_connections).
    max_sessions = 0

    def boot(self) -> None:
        """In a new pre-fork worker, before it accepts: an exception is a boot failure."""

    def reload(self) -> None:
        """In the master on HUP, before the new workers fork: raise to keep the old ones."""

    def open(self, conn: socket.socket, address: Any, life: Lifeline) -> Session:
        raise NotImplementedError

    def serve(self, conn: socket.socket, address: Any, life: Lifeline = UNATTENDED) -> None:
        """The whole connection, blocking: for a server that gives each connection a process."""
        session = self.open(conn, address, life)
        poller = select.poll()
        poller.register(session.fileno(), select.POLLIN)
        while (state := session.resume()) != DONE:
            if state == AGAIN:
                continue
            left = session.deadline - time.monotonic()
            if left <= 0 or not poller.poll(left * 1000):
                session.expire()
                return

    def __call__(self, conn: socket.socket, address: Any) -> None:
        self.serve(conn, address)


def call_handler(
    handler: Handler, conn: socket.socket, address: Any, server: object, life: Lifeline = UNATTENDED
) -> None:
    """Run ``handler`` on one connection, then close it the way socketserver does."""
    try:
        if isinstance(handler, ConnectionService):
            handler.serve(conn, address, life)
        elif isinstance(handler, type):
            # http.server's handlers log address[0]; AF_UNIX peers have no
            # address (''), so give them a readable stand-in.
            if not isinstance(address, tuple):
                address = (address or "unix", 0)
            handler(conn, address, server)
        else:
            handler(conn, address)
    finally:
        with contextlib.suppress(OSError):
            conn.shutdown(socket.SHUT_WR)
        conn.close()


def warm_up(handler: Handler) -> None:
    """Do once in the parent what every forked child would otherwise redo.

    ``SimpleHTTPRequestHandler`` parses ``/etc/mime.types`` (about 70 KB) on
    its first request: in a fork-per-connection server that is every request,
    and it costs more than the fork itself.  Parsed once before forking, the
    table is inherited by every child.
    """
    http_server = sys.modules.get("http.server")
    if (
        http_server is not None
        and isinstance(handler, type)
        and issubclass(handler, http_server.SimpleHTTPRequestHandler)
    ):
        import mimetypes

        mimetypes.init()


# ---------------------------------------------------------------- fork hygiene


class SignalQueue:
    """Signal handlers that only enqueue the signal and wake the loop.

    The C-level handler writes a byte to the wake-up pipe (``set_wakeup_fd``),
    which interrupts any ``select``; the Python-level handler appends the
    number to a deque.  The main loop does all the work.  ``post`` lets
    another thread queue a pseudo-signal the same way.
    """

    def __init__(self) -> None:
        self.pending: deque[int] = deque()
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._old: dict[int, Any] = {}
        self._old_wakeup: int | None = None

    def install(self, signals: Sequence[int]) -> bool:
        """Install the handlers; False (and nothing done) outside the main thread."""
        if threading.current_thread() is not threading.main_thread():
            return False
        self._old_wakeup = signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        for sig in signals:
            self._old[sig] = signal.signal(sig, self._handler)
        return True

    def _handler(self, signum: int, frame: object) -> None:
        self.pending.append(signum)

    def post(self, what: int) -> None:
        self.pending.append(what)
        with contextlib.suppress(OSError):
            os.write(self.wake_w, b"\0")

    def drain(self) -> None:
        with contextlib.suppress(OSError):
            while os.read(self.wake_r, 4096):
                pass

    def restore(self) -> None:
        if self._old_wakeup is not None:
            signal.set_wakeup_fd(self._old_wakeup)
            self._old_wakeup = None
        for sig, old in self._old.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)
        self._old.clear()

    def close(self) -> None:
        """Close the pipe; in a forked child, drop the handlers without restoring."""
        for fd in (self.wake_r, self.wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.wake_r = self.wake_w = -1


def block_signals() -> set[int]:
    """Block the server signals (around fork); returns the old mask."""
    return signal.pthread_sigmask(signal.SIG_BLOCK, SERVER_SIGNALS)


def unblock_signals(old: set[int]) -> None:
    signal.pthread_sigmask(signal.SIG_SETMASK, old)


def reset_child_signals() -> None:
    """In a freshly forked child (signals still blocked): parent handlers off.

    The parent's wake-up fd and handlers were inherited; left in place, a
    signal sent to the child would wake the *parent's* loop.  SIGINT is
    ignored because Ctrl-C reaches the whole process group and the parent
    decides what happens to its children.
    """
    with contextlib.suppress(ValueError):
        signal.set_wakeup_fd(-1)
    for sig in SERVER_SIGNALS:
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def try_accept(listener: socket.socket) -> tuple[socket.socket, Any] | None:
    """One connection from a non-blocking listener, or None if none is waiting now.

    A peer that gave up while queued (ECONNABORTED, EPROTO) is skipped; running
    out of descriptors or memory is logged and answered "none now": the
    connection stays in the backlog for the next try, and the server lives.
    """
    while True:
        try:
            return listener.accept()
        except (BlockingIOError, InterruptedError):
            return None
        except OSError as exc:
            if exc.errno in (errno.ECONNABORTED, errno.EPROTO):
                continue
            if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                log.error("accept failed: %s", exc.strerror)  # noqa: TRY400 (expected; no traceback)
                return None
            raise


def reseed_after_fork() -> None:
    # Every child would otherwise draw the same "random" numbers as its siblings.
    random.seed()


def flush_stdio() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


def child_exit(code: int) -> None:
    """Leave a forked child without running the parent's atexit/finally code."""
    flush_stdio()
    os._exit(code)


# ---------------------------------------------------------------- the server


class ServerState(enum.Enum):
    CREATED = "created"  # bound, not serving yet
    SERVING = "serving"  # the loop runs
    STOPPING = "stopping"  # not accepting; waiting for children
    CLOSED = "closed"  # every child reaped, listeners closed


_TRANSITIONS: dict[ServerState, frozenset[ServerState]] = {
    ServerState.CREATED: frozenset({ServerState.SERVING, ServerState.CLOSED}),
    ServerState.SERVING: frozenset({ServerState.STOPPING, ServerState.CLOSED}),
    ServerState.STOPPING: frozenset({ServerState.CLOSED}),
    ServerState.CLOSED: frozenset(),
}


class ServerBase:
    """What both servers share: their listeners, their state, their stop requests.

    Not public: :class:`~forkwell.ForkingServer` and
    :class:`~forkwell.PreforkServer` are.
    """

    def __init__(self, bind: Binds, *, backlog: int, reuse_port: bool = False) -> None:
        self._listeners = Listeners(bind, backlog=backlog, reuse_port=reuse_port)
        self._state = ServerState.CREATED
        self._signals = SignalQueue()

    @property
    def addresses(self) -> list[str]:
        """Where it listens, e.g. ``["127.0.0.1:8000", "unix:/run/app.sock"]``."""
        return [str(spec) for spec in self._listeners.specs]

    @property
    def server_address(self) -> Any:
        """The first listener's address, as ``socketserver`` spells it."""
        return self._listeners.specs[0].address

    @property
    def state(self) -> ServerState:
        return self._state

    def shutdown(self, *, graceful: bool = True) -> None:
        """Ask ``serve_forever()`` to stop; safe from any thread."""
        self._signals.post(STOP_GRACEFUL if graceful else STOP_FAST)

    def close(self) -> None:
        """Close the listeners of a server that never served (``serve_forever`` does it itself)."""
        if self._state == ServerState.CREATED:
            self._set_state(ServerState.CLOSED)
            self._listeners.close()
            self._signals.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _set_state(self, new: ServerState) -> None:
        once = " (serve_forever() runs once per server)" if new == ServerState.SERVING else ""
        self._state = check(_TRANSITIONS, self._state, new, type(self).__name__, once)


