"""A fork-per-connection server that leaves no zombie and no stray descriptor.

:class:`ForkingServer` forks one child per accepted connection, like
``socketserver.ForkingMixIn``, and fixes what that gets wrong:

* the child closes the listeners and every descriptor the server owns; the
  parent closes the connection right after ``fork()``, so the peer sees the
  close when the child is done;
* children are watched through pidfds by a :class:`~forkwell.Reaper` whose fd
  sits in the same selector as the listeners: a child is reaped as soon as it
  exits, never with ``waitpid(-1)``, never in a signal handler;
* at ``max_children`` the listeners leave the selector (the kernel backlog
  holds new connections) until a child exits: back-pressure, not blocking;
* an optional per-connection ``timeout``: a child past it is killed and reaped;
* graceful shutdown: stop accepting, let children finish for
  ``graceful_timeout``, kill the rest; :meth:`serve_forever` returns only when
  every child has been reaped, also when it fails.

The helpers for addresses, handlers and the post-fork reset are shared with
:mod:`forkwell._servers._prefork`.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import logging
import os
import random
import selectors
import signal
import socket
import socketserver
import stat
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .._core._reaper import Reaper
from .._exceptions import BindError, HandlerImportError, StateError

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


def load_handler(spec: str) -> Handler:
    """Import ``"package.module:name"`` and check it is a usable handler."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise HandlerImportError(f"bad handler {spec!r} (expected MODULE:HANDLER)")
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


def call_handler(handler: Handler, conn: socket.socket, address: Any, server: object) -> None:
    """Run ``handler`` on one connection, then close it the way socketserver does."""
    try:
        if isinstance(handler, type):
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


class _Listening:
    """What both servers say of where they listen and what state they are in."""

    _listeners: Listeners
    _state: ServerState

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


class ForkingServer(_Listening):
    """Serve each connection from its own forked child.

    >>> import http.server
    >>> server = ForkingServer(http.server.SimpleHTTPRequestHandler, "127.0.0.1:8000")
    >>> server.serve_forever()     # until SIGTERM/SIGINT or server.shutdown()

    ``handler``: a ``socketserver.BaseRequestHandler`` subclass (called as
    ``handler(sock, address, server)``) or a callable ``handler(sock, address)``.
    ``bind``: ``"HOST:PORT"``, ``"[V6]:PORT"``, ``"unix:PATH"``, an
    ``(host, port)`` tuple, a listening socket, or a list of those.  The
    sockets are bound at once, so a busy port raises
    :class:`~forkwell.BindError` here.

    In the main thread, :meth:`serve_forever` handles SIGTERM (graceful stop)
    and SIGINT/SIGQUIT (fast stop: children are killed) until it returns.
    """

    def __init__(
        self,
        handler: Handler,
        bind: Binds = "127.0.0.1:8000",
        *,
        max_children: int = 64,
        timeout: float | None = None,
        graceful_timeout: float = 10.0,
        backlog: int = 1024,
    ) -> None:
        check_handler(handler)
        if max_children < 1:
            raise ValueError("max_children must be >= 1")
        if timeout is not None and timeout <= 0:
            raise ValueError("timeout must be > 0 (or None)")
        self.handler = handler
        self.max_children = max_children
        self.timeout = timeout
        self.graceful_timeout = graceful_timeout
        self._listeners = Listeners(bind, backlog=backlog)
        self._state = ServerState.CREATED
        self._signals = SignalQueue()
        self._reaper: Reaper | None = None
        self._sel: selectors.BaseSelector | None = None
        self._deadlines: dict[int, float] = {}  # pid -> kill time (inf: none/already killed)
        self.served = 0  # connections handed to a child so far

    # -- public surface

    @property
    def children(self) -> set[int]:
        """Pids of the children serving connections right now."""
        return set(self._deadlines)

    def shutdown(self, *, graceful: bool = True) -> None:
        """Ask :meth:`serve_forever` to stop; safe from any thread."""
        self._signals.post(STOP_GRACEFUL if graceful else STOP_FAST)

    def close(self) -> None:
        """Close the listeners of a server that never served (serve_forever does it itself)."""
        if self._state == ServerState.CREATED:
            self._set_state(ServerState.CLOSED)
            self._listeners.close()
            self._signals.close()

    def __enter__(self) -> ForkingServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def serve_forever(self) -> None:
        """Accept and fork until stopped; returns once every child is reaped."""
        self._set_state(ServerState.SERVING)
        warm_up(self.handler)
        reaper = self._reaper = Reaper()
        sel = self._sel = selectors.DefaultSelector()
        installed = self._signals.install((signal.SIGTERM, signal.SIGINT, signal.SIGQUIT))
        try:
            sel.register(self._signals.wake_r, selectors.EVENT_READ, "wake")
            sel.register(reaper.fileno(), selectors.EVENT_READ, "reaper")
            self._loop(sel, reaper)
        finally:
            try:
                self._kill_all(signal.SIGKILL)
                self._reap_all(reaper)
            finally:
                if installed:
                    self._signals.restore()
                sel.close()
                reaper.close()
                self._listeners.close()
                self._signals.close()
                self._state = ServerState.CLOSED

    # -- the loop

    def _set_state(self, new: ServerState) -> None:
        if new not in _TRANSITIONS[self._state]:
            raise StateError(
                f"ForkingServer cannot go from {self._state.value} to {new.value}"
                + (" (serve_forever() runs once per server)" if new == ServerState.SERVING else "")
            )
        self._state = new

    def _loop(self, sel: selectors.BaseSelector, reaper: Reaper) -> None:
        accepting = False
        stop_at = float("inf")  # graceful stop: when the rest get killed
        while True:
            want = self._state == ServerState.SERVING and len(self._deadlines) < self.max_children
            if want != accepting:
                # Back-pressure: off the selector, the listeners' backlog holds
                # new connections until a child exits.
                for sock in self._listeners.sockets:
                    if want:
                        sel.register(sock, selectors.EVENT_READ, "listen")
                    else:
                        sel.unregister(sock)
                accepting = want
            if self._state == ServerState.STOPPING and not self._deadlines:
                return
            now = time.monotonic()
            wake_at = min(stop_at, min(self._deadlines.values(), default=float("inf")))
            timeout = None if wake_at == float("inf") else max(0.0, wake_at - now)
            for key, _ in sel.select(timeout):
                if key.data == "listen":
                    self._accept(key.fileobj, reaper)  # type: ignore[arg-type]
                elif key.data == "reaper":
                    for ex in reaper.reap():
                        self._deadlines.pop(ex.pid, None)
                        if ex.returncode < 0 and ex.signal != signal.SIGKILL:
                            log.warning(
                                "connection child %d died of signal %d", ex.pid, -ex.returncode
                            )
                else:
                    self._signals.drain()
            while self._signals.pending:
                what = self._signals.pending.popleft()
                if what in (STOP_FAST, signal.SIGINT, signal.SIGQUIT):
                    return  # serve_forever's finally kills and reaps the children
                if what in (STOP_GRACEFUL, signal.SIGTERM) and self._state == ServerState.SERVING:
                    self._set_state(ServerState.STOPPING)
                    stop_at = time.monotonic() + self.graceful_timeout
                    if accepting:
                        for sock in self._listeners.sockets:
                            sel.unregister(sock)
                        accepting = False
                    self._listeners.close()
                    log.info(
                        "stopping: waiting up to %gs for %d children",
                        self.graceful_timeout,
                        len(self._deadlines),
                    )
            now = time.monotonic()
            for pid, deadline in self._deadlines.items():
                if deadline <= now:
                    log.warning(
                        "connection child %d exceeded its %gs limit: killed", pid, self.timeout
                    )
                    self._kill(pid, signal.SIGKILL)
                    self._deadlines[pid] = float("inf")
            if now >= stop_at:
                self._kill_all(signal.SIGKILL)
                stop_at = float("inf")

    def _accept(self, listener: socket.socket, reaper: Reaper) -> None:
        # A few per wake-up keeps one busy listener from starving the others.
        for _ in range(16):
            if len(self._deadlines) >= self.max_children:
                return
            try:
                conn, address = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.error("accept failed: %s", exc.strerror)  # noqa: TRY400 (expected; no traceback)
                    return
                if exc.errno in (errno.ECONNABORTED, errno.EPROTO):
                    continue
                raise
            try:
                self._fork(conn, address, reaper)
            finally:
                conn.close()  # the parent's copy: the child owns the connection now

    def _fork(self, conn: socket.socket, address: Any, reaper: Reaper) -> None:
        old = block_signals()
        try:
            try:
                pid = reaper.fork()
            except OSError as exc:
                log.error(  # noqa: TRY400 (a resource limit, not a bug: no traceback)
                    "cannot fork for a connection from %s: %s", address, exc.strerror
                )
                return
            if pid == 0:
                self._child(conn, address, old)  # never returns
        finally:
            unblock_signals(old)
        self.served += 1
        self._deadlines[pid] = (
            float("inf") if self.timeout is None else time.monotonic() + self.timeout
        )

    def _child(self, conn: socket.socket, address: Any, old_mask: set[int]) -> None:
        code = 1
        try:
            reset_child_signals()
            self._listeners.forget()
            self._signals.close()
            if self._reaper is not None:
                self._reaper.close()
            if self._sel is not None:
                self._sel.close()
            unblock_signals(old_mask)
            reseed_after_fork()
            conn.setblocking(True)
            call_handler(self.handler, conn, address, self)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            traceback.print_exc()
        finally:
            child_exit(code)

    def _kill(self, pid: int, sig: int) -> None:
        # Safe by pid: only we reap these children, so an unreaped pid cannot
        # have been recycled.
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)

    def _kill_all(self, sig: int) -> None:
        for pid in self._deadlines:
            self._kill(pid, sig)

    def _reap_all(self, reaper: Reaper) -> None:
        while reaper.pids():
            for ex in reaper.wait(timeout=1.0):
                self._deadlines.pop(ex.pid, None)
        self._deadlines.clear()
