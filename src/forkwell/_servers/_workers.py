"""A pre-fork worker's life, and the shared slots the workers report in.

The master (:mod:`forkwell._servers._prefork`) forks; the child becomes a
:class:`Worker` and never returns.  It drops what is the master's (its
selector, its reaper, its signal pipe), accepts from the shared listeners in
an epoll set of its own with ``EPOLLEXCLUSIVE`` (or its own ``SO_REUSEPORT``
socket), and reports through its slot of a shared anonymous ``mmap``: a
heartbeat, its state (booting, running, retired), how many connections it
served and, if it fails to boot, why.
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import random
import select
import signal
import socket
import struct
import time
import traceback
from collections.abc import Callable
from typing import Any, Protocol

from ._common import (
    AGAIN,
    DONE,
    ConnectionService,
    Handler,
    Listeners,
    Session,
    SignalQueue,
    call_handler,
    child_exit,
    flush_stdio,
    make_listener,
    reseed_after_fork,
    reset_child_signals,
    try_accept,
    unblock_signals,
)

log = logging.getLogger("forkwell.server")

# Exit status of a worker that failed before it was ready (gunicorn uses 3 too).
WORKER_BOOT_ERROR = 3

# The shared heartbeat area: one fixed-size slot per live worker.
_SLOT_SIZE = 256
_MAX_WORKERS = 512
_HB = struct.Struct("d")  # offset 0: last heartbeat, time.monotonic()
_OFF_STATE = 8  # one byte, below
_OFF_REQUESTS = 12  # uint32: connections served
_OFF_REASON = 16  # uint16 length + utf-8 text: why the boot failed
_REASON_MAX = _SLOT_SIZE - _OFF_REASON - 2

_SLOT_BOOTING, _SLOT_RUNNING, _SLOT_RETIRED = 0, 1, 2


class _Slots:
    def __init__(self) -> None:
        self.mem = mmap.mmap(-1, _SLOT_SIZE * _MAX_WORKERS)  # MAP_SHARED|MAP_ANONYMOUS
        self.free = list(range(_MAX_WORKERS - 1, -1, -1))

    def take(self, now: float) -> int:
        slot = self.free.pop()
        base = slot * _SLOT_SIZE
        self.mem[base : base + _SLOT_SIZE] = bytes(_SLOT_SIZE)
        _HB.pack_into(self.mem, base, now)
        return slot

    def give_back(self, slot: int) -> None:
        self.free.append(slot)

    def beat(self, slot: int) -> None:
        _HB.pack_into(self.mem, slot * _SLOT_SIZE, time.monotonic())

    def heartbeat(self, slot: int) -> float:
        value: float = _HB.unpack_from(self.mem, slot * _SLOT_SIZE)[0]
        return value

    def state(self, slot: int) -> int:
        return self.mem[slot * _SLOT_SIZE + _OFF_STATE]

    def set_state(self, slot: int, state: int) -> None:
        self.mem[slot * _SLOT_SIZE + _OFF_STATE] = state

    def set_requests(self, slot: int, count: int) -> None:
        struct.pack_into("I", self.mem, slot * _SLOT_SIZE + _OFF_REQUESTS, count & 0xFFFFFFFF)

    def requests(self, slot: int) -> int:
        value: int = struct.unpack_from("I", self.mem, slot * _SLOT_SIZE + _OFF_REQUESTS)[0]
        return value

    def set_reason(self, slot: int, reason: str) -> None:
        data = reason.encode(errors="replace")[:_REASON_MAX]
        base = slot * _SLOT_SIZE + _OFF_REASON
        struct.pack_into("H", self.mem, base, len(data))
        self.mem[base + 2 : base + 2 + len(data)] = data

    def reason(self, slot: int) -> str:
        base = slot * _SLOT_SIZE + _OFF_REASON
        (length,) = struct.unpack_from("H", self.mem, base)
        return bytes(self.mem[base + 2 : base + 2 + length]).decode(errors="replace")


def reopen_logs(log_file: str | None) -> None:
    """SIGUSR1: point stdout/stderr at ``log_file`` anew and reopen logging's files.

    After logrotate renamed the file, writes would otherwise keep going to the
    renamed one.  ``logging.FileHandler`` reopens lazily once its stream is None.
    """
    if log_file is not None:
        flush_stdio()
        fd = os.open(log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            os.dup2(fd, 1)
            os.dup2(fd, 2)
        finally:
            os.close(fd)
    loggers: list[Any] = [logging.getLogger()]
    loggers += list(logging.Logger.manager.loggerDict.values())
    for logger in loggers:
        for handler in getattr(logger, "handlers", ()):
            if isinstance(handler, logging.FileHandler):
                with handler.lock or contextlib.nullcontext():
                    if handler.stream is not None:
                        with contextlib.suppress(OSError):
                            handler.stream.close()
                        handler.stream = None


class Master(Protocol):
    """What a worker takes from the master it was forked from (a ``PreforkServer``)."""

    handler: Handler
    reuse_port: bool
    max_requests: int
    max_requests_jitter: int
    timeout: float | None
    worker_init: Any
    log_file: str | None
    _listeners: Listeners
    _backlog: int
    _master_pid: int
    _pdeathsig: Callable[[], None] | None
    _slots: _Slots

    def _drop_master_state(self) -> None: ...


class _Parked:
    """A worker's connections between requests, in its epoll set beside the listeners."""

    def __init__(self, poller: select.epoll) -> None:
        self.poller = poller
        self.sessions: dict[int, Session] = {}
        self.ready: set[int] = set()  # a complete request is buffered: no need to wait

    def __len__(self) -> int:
        return len(self.sessions)

    def run(self, session: Session) -> None:
        """Resume ``session``; keep it parked or let it go, as it says."""
        fd = session.fileno()
        self.ready.discard(fd)
        try:
            state = session.resume()
        except Exception:
            traceback.print_exc()
            state = DONE
        if state == DONE:
            if self.sessions.pop(fd, None) is not None:
                self.poller.unregister(fd)
            session.close()
            return
        if fd not in self.sessions:
            self.sessions[fd] = session
            self.poller.register(fd, select.EPOLLIN)
        if state == AGAIN:
            self.ready.add(fd)

    def wait(self, longest: float) -> float:
        """How long the worker may sleep: not past a parked deadline; 0 with work ready."""
        if self.ready:
            return 0.0
        if not self.sessions:
            return longest
        soonest = min(s.deadline for s in self.sessions.values())
        return max(0.0, min(longest, soonest - time.monotonic()))

    def expire(self) -> None:
        now = time.monotonic()
        for fd, session in list(self.sessions.items()):
            if session.deadline <= now and fd not in self.ready:
                del self.sessions[fd]
                self.poller.unregister(fd)
                session.expire()
                session.close()

    def close_all(self) -> None:
        for session in self.sessions.values():
            session.close()
        self.sessions.clear()
        self.ready.clear()


class Worker:
    """The child side of one worker: boot, then accept and serve until told to stop.

    It is also the :class:`~forkwell._servers._common.Lifeline` of the
    connection it serves: a service beats, asks whether to stop and counts
    requests through it.
    """

    def __init__(self, server: Master, slot: int) -> None:
        self.server = server
        self.slot = slot
        self.slots = server._slots
        self.served = 0  # requests (connections, for a plain handler)
        self.limit = 0  # max_requests with this worker's jitter; 0: none
        self._queue: SignalQueue | None = None
        self._parked: _Parked | None = None
        self._stopping = False  # SIGTERM: finish, drain the backlog, leave
        self._quit = False  # SIGQUIT: leave after the current connection

    def main(self, old_mask: set[int]) -> None:
        code = WORKER_BOOT_ERROR
        booted = False
        try:
            listeners, poller = self._boot(old_mask)
            if self.server.worker_init is not None:
                self.server.worker_init()
            if isinstance(self.server.handler, ConnectionService):
                self.server.handler.boot()
            self.slots.beat(self.slot)
            self.slots.set_state(self.slot, _SLOT_RUNNING)
            booted = True
            code = self._loop(listeners, poller)
        except SystemExit as exc:
            if not booted:
                self.slots.set_reason(self.slot, f"SystemExit({exc.code!r}) during boot")
            code = exc.code if isinstance(exc.code, int) else 1
            if not booted and code == 0:
                code = WORKER_BOOT_ERROR
        except BaseException as exc:
            if not booted:
                self.slots.set_reason(self.slot, f"{type(exc).__name__}: {exc}")
            else:
                code = 1
            traceback.print_exc()
        finally:
            child_exit(code)

    def _boot(self, old_mask: set[int]) -> tuple[list[socket.socket], select.epoll]:
        """A new worker drops what is the master's and sets up its own listeners and signals."""
        reset_child_signals()
        for sig in (signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU):
            signal.signal(sig, signal.SIG_IGN)
        self.server._drop_master_state()
        signals = self._queue = SignalQueue()
        signals.install((signal.SIGTERM, signal.SIGQUIT, signal.SIGUSR1))
        unblock_signals(old_mask)
        # Die with the master even if it is SIGKILLed (graceful: TERM).
        if self.server._pdeathsig is not None:
            self.server._pdeathsig()
        reseed_after_fork()
        if self.server.max_requests:
            jitter = random.randint(0, self.server.max_requests_jitter)
            self.limit = self.server.max_requests + jitter
        listeners = self._listeners()
        poller = select.epoll()
        self._listen(poller, listeners, True)
        poller.register(signals.wake_r, select.EPOLLIN)
        return listeners, poller

    def _listeners(self) -> list[socket.socket]:
        if not self.server.reuse_port:
            return list(self.server._listeners.sockets)
        own: list[socket.socket] = []
        listeners = self.server._listeners
        for spec, shared in zip(listeners.specs, listeners.sockets, strict=True):
            if spec.family == socket.AF_UNIX:
                own.append(shared)
            else:
                own.append(make_listener(spec, backlog=self.server._backlog, reuse_port=True))
                shared.close()  # the master's port reservation: not ours to keep
        return own

    def _loop(self, listeners: list[socket.socket], poller: select.epoll) -> int:
        parked = self._parked = _Parked(poller)
        handler = self.server.handler
        cap = handler.max_sessions if isinstance(handler, ConnectionService) else 0
        listening = True  # the listeners are in the epoll set
        left = False  # stopped accepting for good (stopping, recycled, orphaned)
        idle_wait = 1.0 if self.server.timeout is None else min(self.server.timeout / 4, 1.0)
        while True:
            self._take_signals()
            if self._quit:
                parked.close_all()
                return 0
            recycled = bool(self.limit) and self.served >= self.limit
            room = not cap or len(parked) < cap  # worker_connections
            if room and not listening and not left:
                listening = self._listen(poller, listeners, True)
            accepted = None
            if listening and room and not recycled:
                accepted = next(filter(None, map(try_accept, listeners)), None)
            if accepted is not None:
                self._serve_one(*accepted)
                if parked:
                    # Between accepts, the parked connections that are ready get
                    # their turn: under load the backlog never empties, and they
                    # would wait for it (the p99 of short connections).
                    self._wait(poller, parked, 0.0)
                continue
            # Nothing queued.  Only now may a leaving worker stop accepting: it
            # was perhaps the one woken for the last connection.  Its parked
            # connections end at their next response or idle deadline.
            left = left or recycled or self._stopping or os.getppid() != self.server._master_pid
            if listening and (left or not room):
                listening = self._listen(poller, listeners, False)
            if left and not parked:
                if recycled:
                    self.slots.set_state(self.slot, _SLOT_RETIRED)
                return 0
            self.slots.beat(self.slot)
            self._wait(poller, parked, idle_wait)

    @staticmethod
    def _listen(poller: select.epoll, listeners: list[socket.socket], on: bool) -> bool:
        """Put the listeners in the epoll set or take them out; returns ``on``."""
        for sock in listeners:
            if on:
                poller.register(sock.fileno(), select.EPOLLIN | select.EPOLLEXCLUSIVE)
            else:
                poller.unregister(sock.fileno())
        return on

    def _wait(self, poller: select.epoll, parked: _Parked, idle_wait: float) -> None:
        """Sleep until a connection, a signal or a parked client; serve the parked ones ready."""
        assert self._queue is not None
        for fd, _ in poller.poll(parked.wait(idle_wait)):
            if fd == self._queue.wake_r:
                self._queue.drain()
            elif fd in parked.sessions:
                parked.ready.add(fd)
        for fd in list(parked.ready):
            session = parked.sessions.get(fd)
            if session is not None:
                parked.run(session)
        parked.expire()

    def _take_signals(self) -> None:
        """Act on the worker's queued signals: SIGQUIT, SIGTERM (noted), SIGUSR1 (logs reopened)."""
        queue = self._queue
        while queue is not None and queue.pending:
            sig = queue.pending.popleft()
            if sig == signal.SIGQUIT:
                self._quit = True
            elif sig == signal.SIGTERM:
                self._stopping = True
            elif sig == signal.SIGUSR1:
                reopen_logs(self.server.log_file)

    def _serve_one(self, conn: socket.socket, address: Any) -> None:
        """One connection, heartbeats around it; a failing handler costs only it."""
        self.slots.beat(self.slot)
        handler = self.server.handler
        if isinstance(handler, ConnectionService):
            # Served a request at a time, parked in between (it counts its requests).
            assert self._parked is not None
            try:
                session = handler.open(conn, address, self)
            except Exception:
                traceback.print_exc()
                conn.close()
                return
            self._parked.run(session)
            return
        conn.setblocking(True)
        try:
            call_handler(handler, conn, address, self.server, self)
        except Exception:
            traceback.print_exc()
        self.served += 1
        self.slots.set_requests(self.slot, self.served)
        self.slots.beat(self.slot)

    # -- the Lifeline of the connection being served

    def beat(self) -> None:
        self.slots.beat(self.slot)

    def stopping(self) -> bool:
        self._take_signals()
        recycled = bool(self.limit) and self.served >= self.limit
        return self._stopping or self._quit or recycled

    def request_done(self) -> bool:
        self.served += 1
        self.slots.set_requests(self.slot, self.served)
        return bool(self.limit) and self.served >= self.limit
