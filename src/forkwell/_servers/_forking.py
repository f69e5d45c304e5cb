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
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import signal
import socket
import time
import traceback
from typing import Any

from .._core._reaper import Reaper
from ._common import (
    STOP_FAST,
    STOP_GRACEFUL,
    Binds,
    Handler,
    ServerBase,
    ServerState,
    block_signals,
    call_handler,
    check_handler,
    child_exit,
    reseed_after_fork,
    reset_child_signals,
    try_accept,
    unblock_signals,
    warm_up,
)

log = logging.getLogger("forkwell.server")


class ForkingServer(ServerBase):
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

    def __init__(  # noqa: PLR0913 (socketserver's and gunicorn's settings)
        self,
        handler: Handler,
        bind: Binds = "127.0.0.1:8000",
        *,
        max_children: int = 64,
        timeout: float | None = None,
        graceful_timeout: float = 30.0,
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
        super().__init__(bind, backlog=backlog)
        self._reaper: Reaper | None = None
        self._sel: selectors.BaseSelector | None = None
        self._accepting = False  # the listeners are in the selector
        self._stop_at = float("inf")
        self._deadlines: dict[int, float] = {}  # pid -> kill time (inf: none/already killed)
        self.served = 0  # connections handed to a child so far

    # -- public surface

    @property
    def children(self) -> set[int]:
        """Pids of the children serving connections right now."""
        return set(self._deadlines)

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

    def _loop(self, sel: selectors.BaseSelector, reaper: Reaper) -> None:
        self._accepting = False
        self._stop_at = float("inf")  # graceful stop: when the rest get killed
        while True:
            self._set_accepting(
                sel, self._state == ServerState.SERVING and len(self._deadlines) < self.max_children
            )
            if self._state == ServerState.STOPPING and not self._deadlines:
                return
            wake_at = min(self._stop_at, min(self._deadlines.values(), default=float("inf")))
            timeout = None if wake_at == float("inf") else max(0.0, wake_at - time.monotonic())
            for key, _ in sel.select(timeout):
                if key.data == "listen":
                    self._accept(key.fileobj, reaper)  # type: ignore[arg-type]
                elif key.data == "reaper":
                    self._reaped(reaper)
                else:
                    self._signals.drain()
            while self._signals.pending:
                if self._on_signal(sel, self._signals.pending.popleft()):
                    return  # serve_forever's finally kills and reaps the children
            self._enforce_deadlines()

    def _set_accepting(self, sel: selectors.BaseSelector, want: bool) -> None:
        """Back-pressure: off the selector, the backlog holds connections until a child exits."""
        if want == self._accepting:
            return
        for sock in self._listeners.sockets:
            if want:
                sel.register(sock, selectors.EVENT_READ, "listen")
            else:
                sel.unregister(sock)
        self._accepting = want

    def _reaped(self, reaper: Reaper) -> None:
        for ex in reaper.reap():
            self._deadlines.pop(ex.pid, None)
            if ex.returncode < 0 and ex.signal != signal.SIGKILL:
                log.warning("connection child %d died of signal %d", ex.pid, -ex.returncode)

    def _on_signal(self, sel: selectors.BaseSelector, what: int) -> bool:
        """Act on one queued signal; True means stop now."""
        if what in (STOP_FAST, signal.SIGINT, signal.SIGQUIT):
            return True
        if what in (STOP_GRACEFUL, signal.SIGTERM) and self._state == ServerState.SERVING:
            self._set_state(ServerState.STOPPING)
            self._stop_at = time.monotonic() + self.graceful_timeout
            self._set_accepting(sel, False)
            self._listeners.close()
            log.info(
                "stopping: waiting up to %gs for %d children",
                self.graceful_timeout,
                len(self._deadlines),
            )
        return False

    def _enforce_deadlines(self) -> None:
        now = time.monotonic()
        for pid, deadline in self._deadlines.items():
            if deadline <= now:
                log.warning("connection child %d exceeded its %gs limit: killed", pid, self.timeout)
                self._kill(pid, signal.SIGKILL)
                self._deadlines[pid] = float("inf")
        if now >= self._stop_at:
            self._kill_all(signal.SIGKILL)
            self._stop_at = float("inf")

    def _accept(self, listener: socket.socket, reaper: Reaper) -> None:
        # A few per wake-up keeps one busy listener from starving the others.
        for _ in range(16):
            if len(self._deadlines) >= self.max_children:
                return
            accepted = try_accept(listener)
            if accepted is None:
                return
            conn, address = accepted
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
