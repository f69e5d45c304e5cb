"""A pre-fork server: one master, N long-lived workers that accept connections.

The master never touches a connection.  It binds the listeners, forks the
workers, and then only reacts: to worker exits (a :class:`~forkwell.Reaper`
fd in its selector), to signals (queued by handlers that do nothing else) and
to its timers (heartbeats, kill deadlines, respawn backoff).

Accepting without a thundering herd
    Each worker has its own epoll set holding the shared listeners with
    ``EPOLLEXCLUSIVE`` (Linux 4.5): a new connection wakes one idle worker
    instead of all of them, and busy workers are not woken at all.  A worker
    that was woken always tries to ``accept`` before anything else (even when
    told to stop), so a wake-up is never lost with the connection left queued.
    With ``reuse_port=True`` each worker opens its own ``SO_REUSEPORT``
    socket instead and the kernel spreads connections by hash; the price is
    that connections queued on a worker's own socket are reset when that
    worker exits (reload, recycling), which the shared listener avoids.

Heartbeats
    Workers write a ``CLOCK_MONOTONIC`` timestamp into their slot of a shared
    anonymous ``mmap`` (no fd, no syscall) between connections and at least
    every ``timeout / 4`` seconds when idle.  A worker silent past ``timeout``
    gets SIGTERM, then SIGKILL, and is replaced at once.

Boot failures
    A worker marks its slot "running" once it is ready to accept.  One that
    exits before that failed to boot; after ``max_boot_failures`` in a row the
    master stops everything and :meth:`PreforkServer.serve_forever` raises
    :class:`~forkwell.WorkerBootError` with the last worker's reason, instead
    of respawning forever.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import logging
import mmap
import os
import random
import select
import selectors
import signal
import socket
import struct
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

from .._core import _sys
from .._core._reaper import ChildExit, Reaper
from .._core._state import check
from .._exceptions import HandlerImportError, WorkerBootError
from ._common import (
    SERVER_SIGNALS,
    STOP_FAST,
    STOP_GRACEFUL,
    Binds,
    Handler,
    ServerBase,
    ServerState,
    SignalQueue,
    block_signals,
    call_handler,
    check_handler,
    child_exit,
    flush_stdio,
    load_handler,
    make_listener,
    reseed_after_fork,
    reset_child_signals,
    try_accept,
    unblock_signals,
    warm_up,
)

log = logging.getLogger("forkwell.server")

RELOAD = -3  # pseudo-signal queued by reload()

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


class WorkerState(enum.Enum):
    BOOTING = "booting"  # forked, not yet accepting
    RUNNING = "running"  # accepting; heartbeats watched
    RETIRING = "retiring"  # told to stop (SIGTERM): finishes its connection, then exits
    KILLING = "killing"  # timed out: SIGTERM sent, SIGKILL at kill_at


_WORKER_TRANSITIONS: dict[WorkerState, frozenset[WorkerState]] = {
    WorkerState.BOOTING: frozenset(
        {WorkerState.RUNNING, WorkerState.RETIRING, WorkerState.KILLING}
    ),
    WorkerState.RUNNING: frozenset({WorkerState.RETIRING, WorkerState.KILLING}),
    WorkerState.RETIRING: frozenset({WorkerState.KILLING}),
    WorkerState.KILLING: frozenset(),
}


@dataclass
class _Worker:
    pid: int
    slot: int
    generation: int
    started: float
    state: WorkerState = WorkerState.BOOTING
    kill_at: float = field(default=float("inf"))

    def move(self, new: WorkerState) -> None:
        self.state = check(_WORKER_TRANSITIONS, self.state, new, f"worker {self.pid}")


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


class PreforkServer(ServerBase):
    """A master process and ``workers`` pre-forked workers serving one handler.

    >>> import http.server
    >>> server = PreforkServer(http.server.SimpleHTTPRequestHandler, "127.0.0.1:8000", workers=4)
    >>> server.serve_forever()     # until SIGTERM/SIGINT/SIGQUIT or server.shutdown()

    ``handler`` is a ``socketserver.BaseRequestHandler`` subclass, a callable
    ``handler(sock, address)``, or ``"MODULE:NAME"`` (imported now, and again
    on SIGHUP so a reload picks up new code).  ``bind`` as for
    :class:`~forkwell.ForkingServer`.

    Signals to the master (handled while :meth:`serve_forever` runs in the main
    thread): HUP graceful reload, TTIN/TTOU one worker more/less, TERM graceful
    stop, INT/QUIT fast stop, USR1 reopen log files.
    """

    def __init__(  # noqa: PLR0913 (gunicorn's settings, by their names)
        self,
        handler: Handler | str,
        bind: Binds = "127.0.0.1:8000",
        *,
        workers: int = 2,
        reuse_port: bool = False,
        max_requests: int = 0,
        max_requests_jitter: int = 0,
        timeout: float | None = 30.0,
        graceful_timeout: float = 30.0,
        max_boot_failures: int = 3,
        backlog: int = 2048,
        worker_init: Any = None,
        log_file: str | None = None,
    ) -> None:
        self._handler_spec = handler if isinstance(handler, str) else None
        self.handler: Handler = load_handler(handler) if isinstance(handler, str) else handler
        check_handler(self.handler)
        if not 1 <= workers <= _MAX_WORKERS:
            raise ValueError(f"workers must be between 1 and {_MAX_WORKERS}")
        if max_requests < 0 or max_requests_jitter < 0:
            raise ValueError("max_requests and max_requests_jitter must be >= 0")
        if timeout is not None and timeout <= 0:
            raise ValueError("timeout must be > 0 (or None)")
        if max_boot_failures < 1:
            raise ValueError("max_boot_failures must be >= 1")
        if not hasattr(select, "EPOLLEXCLUSIVE"):
            raise OSError(errno.ENOSYS, "PreforkServer needs Linux epoll with EPOLLEXCLUSIVE")
        self.target = workers
        self.reuse_port = reuse_port
        self.max_requests = max_requests
        self.max_requests_jitter = max_requests_jitter
        self.timeout = timeout
        self.graceful_timeout = graceful_timeout
        self.max_boot_failures = max_boot_failures
        self.worker_init = worker_init
        self.log_file = log_file
        self._backlog = backlog
        super().__init__(bind, backlog=backlog, reuse_port=reuse_port)
        self._slots = _Slots()
        self._workers: dict[int, _Worker] = {}
        self._generation = 0
        self._boot_failures = 0
        self._last_boot_failure = ""
        self._crashes = 0
        self._last_crash = 0.0
        self._spawn_at = 0.0
        self._halt: WorkerBootError | None = None
        self._reaper: Reaper | None = None
        self._sel: selectors.BaseSelector | None = None
        self._master_pid = os.getpid()
        self._pdeathsig: Any = None

    # -- public surface

    @property
    def workers(self) -> dict[int, str]:
        """pid -> state of every live worker, e.g. ``{4242: "running"}``."""
        return {pid: w.state.value for pid, w in self._workers.items()}

    def reload(self) -> None:
        """Like SIGHUP: new workers up, then the old ones finish and exit.  Any thread."""
        self._signals.post(RELOAD)

    def serve_forever(self) -> None:
        """Run the master until stopped; returns once every worker is reaped.

        Raises :class:`~forkwell.WorkerBootError` when workers keep failing to boot.
        """
        self._set_state(ServerState.SERVING)
        self._master_pid = os.getpid()
        # Made here, in the master: it checks the worker's parent is this pid.
        self._pdeathsig = _sys.make_pdeathsig_preexec(signal.SIGTERM)
        if self.log_file is not None:
            reopen_logs(self.log_file)
        warm_up(self.handler)
        reaper = self._reaper = Reaper()
        sel = self._sel = selectors.DefaultSelector()
        installed = self._signals.install(SERVER_SIGNALS)
        try:
            sel.register(self._signals.wake_r, selectors.EVENT_READ, "wake")
            sel.register(reaper.fileno(), selectors.EVENT_READ, "reaper")
            log.debug(
                "listening on %s (pre-fork, %d workers, pid %d)",
                ", ".join(self.addresses),
                self.target,
                os.getpid(),
            )
            self._loop(sel, reaper)
        finally:
            try:
                for w in self._workers.values():
                    self._kill(w.pid, signal.SIGKILL)
                while reaper.pids():
                    for ex in reaper.wait(timeout=1.0):
                        self._forget(ex.pid)
                for w in list(self._workers.values()):
                    self._forget(w.pid)
            finally:
                if installed:
                    self._signals.restore()
                sel.close()
                reaper.close()
                self._listeners.close()
                self._signals.close()
                self._state = ServerState.CLOSED
        if self._halt is not None:
            raise self._halt

    # -- master

    def _loop(self, sel: selectors.BaseSelector, reaper: Reaper) -> None:
        check_every = 1.0 if self.timeout is None else min(self.timeout / 4, 1.0)
        while True:
            now = time.monotonic()
            self._watch_workers(now)
            if self._halt is not None:
                return
            if self._state == ServerState.SERVING:
                self._keep_worker_count(now)
            elif not self._workers:
                return
            wake_at = now + check_every
            if any(w.state == WorkerState.BOOTING for w in self._workers.values()):
                wake_at = now + 0.05  # notice boots promptly: a reload waits on them
            wake_at = min([wake_at, *(w.kill_at for w in self._workers.values())])
            if self._spawn_at > now:
                wake_at = min(wake_at, self._spawn_at)
            for key, _ in sel.select(max(0.0, wake_at - time.monotonic())):
                if key.data == "reaper":
                    for ex in reaper.reap():
                        self._on_exit(ex)
                else:
                    self._signals.drain()
            while self._signals.pending:
                if self._on_signal(self._signals.pending.popleft()):
                    return

    def _on_signal(self, what: int) -> bool:
        """Act on one queued signal; True means stop now (the caller kills the rest)."""
        if what in (STOP_FAST, signal.SIGINT, signal.SIGQUIT):
            log.info("fast stop: killing %d workers", len(self._workers))
            return True
        if what in (STOP_GRACEFUL, signal.SIGTERM):
            if self._state == ServerState.SERVING:
                self._set_state(ServerState.STOPPING)
                log.info(
                    "graceful stop: %d workers finish within %gs",
                    len(self._workers),
                    self.graceful_timeout,
                )
                for w in list(self._workers.values()):
                    if w.state in (WorkerState.BOOTING, WorkerState.RUNNING):
                        self._retire(w)
            return False
        if self._state != ServerState.SERVING:
            return False
        if what in (RELOAD, signal.SIGHUP):
            self._reload()
        elif what == signal.SIGTTIN:
            if self.target < _MAX_WORKERS:
                self.target += 1
            log.info("TTIN: %d workers", self.target)
        elif what == signal.SIGTTOU:
            self.target = max(1, self.target - 1)
            log.info("TTOU: %d workers", self.target)
        elif what == signal.SIGUSR1:
            log.info("USR1: reopening log files")
            reopen_logs(self.log_file)
            for w in self._workers.values():
                self._kill(w.pid, signal.SIGUSR1)
        return False

    def _reload(self) -> None:
        if self._handler_spec is not None:
            import importlib
            import sys

            module_name = self._handler_spec.partition(":")[0]
            try:
                if module_name in sys.modules:
                    importlib.reload(sys.modules[module_name])
                self.handler = load_handler(self._handler_spec)
            except HandlerImportError as exc:
                log.error("reload failed, keeping the running workers: %s", exc)  # noqa: TRY400
                return
            except Exception as exc:  # the new code may raise anything at import
                log.error(  # noqa: TRY400 (the user's error, reported in one line)
                    "reload failed, keeping the running workers: cannot import %r: %s: %s",
                    module_name,
                    type(exc).__name__,
                    exc,
                )
                return
        self._generation += 1
        log.info("reloading: starting %d new workers", self.target)

    def _watch_workers(self, now: float) -> None:
        for w in list(self._workers.values()):
            if w.state == WorkerState.BOOTING and self._slots.state(w.slot) == _SLOT_RUNNING:
                w.move(WorkerState.RUNNING)
                self._boot_failures = 0
                log.info("worker %d booted", w.pid)
            if w.kill_at <= now:
                log.warning("worker %d did not stop in time: SIGKILL", w.pid)
                self._kill(w.pid, signal.SIGKILL)
                w.kill_at = float("inf")
            elif (
                self.timeout is not None
                and w.state in (WorkerState.BOOTING, WorkerState.RUNNING)
                and now - self._slots.heartbeat(w.slot) > self.timeout
            ):
                log.warning("worker %d silent for over %gs: SIGTERM", w.pid, self.timeout)
                w.move(WorkerState.KILLING)
                w.kill_at = now + min(self.timeout, self.graceful_timeout)
                self._kill(w.pid, signal.SIGTERM)
        if self._crashes and any(
            w.state == WorkerState.RUNNING and w.started > self._last_crash and now - w.started > 1
            for w in self._workers.values()
        ):
            self._crashes = 0

    def _keep_worker_count(self, now: float) -> None:
        current = [
            w
            for w in self._workers.values()
            if w.generation == self._generation
            and w.state in (WorkerState.BOOTING, WorkerState.RUNNING)
        ]
        current.sort(key=lambda w: w.started)
        while len(current) > self.target:
            self._retire(current.pop(0))  # TTOU: the oldest goes
        if now >= self._spawn_at:
            for _ in range(self.target - len(current)):
                if not self._spawn(now):
                    break
        old = [
            w
            for w in self._workers.values()
            if w.generation != self._generation
            and w.state in (WorkerState.BOOTING, WorkerState.RUNNING)
        ]
        if old and sum(w.state == WorkerState.RUNNING for w in current) >= self.target:
            # The new generation is up: the old one finishes its connections
            # and exits.  Until now both accepted, so no connection waited.
            for w in old:
                self._retire(w)

    def _retire(self, w: _Worker) -> None:
        w.move(WorkerState.RETIRING)
        w.kill_at = time.monotonic() + self.graceful_timeout
        self._kill(w.pid, signal.SIGTERM)

    def _on_exit(self, ex: ChildExit) -> None:
        w = self._workers.get(ex.pid)
        if w is None:
            return
        slot_state = self._slots.state(w.slot)
        reason = self._slots.reason(w.slot)
        served = self._slots.requests(w.slot)
        self._forget(ex.pid)
        how = f"exit status {ex.exit_code}" if ex.signal is None else f"signal {ex.signal}"
        hung_in_boot = w.state == WorkerState.KILLING and slot_state == _SLOT_BOOTING
        if self._state != ServerState.SERVING or (
            w.state in (WorkerState.RETIRING, WorkerState.KILLING) and not hung_in_boot
        ):
            log.info("worker %d exited (%s)", ex.pid, how)
            return
        if slot_state == _SLOT_RETIRED:
            log.info("worker %d retired after %d connections", ex.pid, served)
            return
        now = time.monotonic()
        if self._halt is not None:
            # Already halting: workers that failed in the same batch of exits
            # change nothing (and must not inflate the count in the message).
            log.info("worker %d exited (%s) while halting", ex.pid, how)
            return
        if slot_state == _SLOT_BOOTING:
            # A worker killed for hanging in worker_init failed to boot too:
            # otherwise a stuck boot would be replaced forever.
            self._boot_failures += 1
            if hung_in_boot:
                reason = f"not ready within the {self.timeout:g}s timeout"
            self._last_boot_failure = reason or f"exited before it was ready ({how})"
            log.error(
                "worker %d failed to boot (%d in a row): %s",
                ex.pid,
                self._boot_failures,
                self._last_boot_failure,
            )
            if self._boot_failures >= self.max_boot_failures:
                self._halt = WorkerBootError(
                    f"workers failed to boot {self._boot_failures} times in a row; "
                    f"halting (last: {self._last_boot_failure})"
                )
                return
        else:
            log.warning("worker %d died unexpectedly (%s); respawning", ex.pid, how)
        self._crashes += 1
        self._last_crash = now
        # The first crash is replaced at once, then 0.1, 0.2, 0.4 ... 10 s apart.
        delay = 0.0 if self._crashes == 1 else min(0.1 * 2 ** (self._crashes - 2), 10.0)
        self._spawn_at = now + delay

    def _forget(self, pid: int) -> None:
        w = self._workers.pop(pid, None)
        if w is not None:
            self._slots.give_back(w.slot)

    def _kill(self, pid: int, sig: int) -> None:
        # By pid is safe: only this master reaps its workers, so an unreaped
        # pid cannot have been recycled.
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)

    def _spawn(self, now: float) -> bool:
        if not self._slots.free:
            log.error("no free worker slot (at most %d workers)", _MAX_WORKERS)
            return False
        assert self._reaper is not None
        slot = self._slots.take(now)
        old = block_signals()
        try:
            try:
                pid = self._reaper.fork()
            except OSError as exc:
                self._slots.give_back(slot)
                log.error("cannot fork a worker: %s", exc.strerror)  # noqa: TRY400
                self._crashes += 1
                self._last_crash = now
                self._spawn_at = now + min(0.1 * 2**self._crashes, 10.0)
                return False
            if pid == 0:
                self._worker_main(slot, old)  # never returns
        finally:
            unblock_signals(old)
        self._workers[pid] = _Worker(pid, slot, self._generation, now)
        return True

    # -- worker

    def _worker_main(self, slot: int, old_mask: set[int]) -> None:
        code = WORKER_BOOT_ERROR
        booted = False
        try:
            listeners, poller, signals = self._worker_boot(old_mask)
            if self.worker_init is not None:
                self.worker_init()
            self._slots.beat(slot)
            self._slots.set_state(slot, _SLOT_RUNNING)
            booted = True
            code = self._worker_loop(slot, listeners, poller, signals)
        except SystemExit as exc:
            if not booted:
                self._slots.set_reason(slot, f"SystemExit({exc.code!r}) during boot")
            code = exc.code if isinstance(exc.code, int) else 1
            if not booted and code == 0:
                code = WORKER_BOOT_ERROR
        except BaseException as exc:
            if not booted:
                self._slots.set_reason(slot, f"{type(exc).__name__}: {exc}")
            else:
                code = 1
            traceback.print_exc()
        finally:
            child_exit(code)

    def _worker_boot(
        self, old_mask: set[int]
    ) -> tuple[list[socket.socket], select.epoll, SignalQueue]:
        """A new worker drops what is the master's and sets up its own listeners and signals."""
        reset_child_signals()
        for sig in (signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU):
            signal.signal(sig, signal.SIG_IGN)
        # What the master holds and a worker must not: its selector, its
        # reaper (pidfds of the siblings) and its signal pipe.
        self._signals.close()
        if self._sel is not None:
            self._sel.close()
        if self._reaper is not None:
            self._reaper.close()
        signals = SignalQueue()
        signals.install((signal.SIGTERM, signal.SIGQUIT, signal.SIGUSR1))
        unblock_signals(old_mask)
        # Die with the master even if it is SIGKILLed (graceful: TERM).
        if self._pdeathsig is not None:
            self._pdeathsig()
        reseed_after_fork()
        listeners = self._worker_listeners()
        poller = select.epoll()
        for sock in listeners:
            poller.register(sock.fileno(), select.EPOLLIN | select.EPOLLEXCLUSIVE)
        poller.register(signals.wake_r, select.EPOLLIN)
        return listeners, poller, signals

    def _worker_listeners(self) -> list[socket.socket]:
        if not self.reuse_port:
            return list(self._listeners.sockets)
        own: list[socket.socket] = []
        for spec, shared in zip(self._listeners.specs, self._listeners.sockets, strict=True):
            if spec.family == socket.AF_UNIX:
                own.append(shared)
            else:
                own.append(make_listener(spec, backlog=self._backlog, reuse_port=True))
                shared.close()  # the master's port reservation: not ours to keep
        return own

    def _worker_loop(
        self,
        slot: int,
        listeners: list[socket.socket],
        poller: select.epoll,
        signals: SignalQueue,
    ) -> int:
        limit = 0
        if self.max_requests:
            limit = self.max_requests + random.randint(0, self.max_requests_jitter)
        idle_wait = 1.0 if self.timeout is None else min(self.timeout / 4, 1.0)
        served = 0
        stopping = False
        while True:
            action = self._worker_signals(signals)
            if action == signal.SIGQUIT:
                return 0
            stopping = stopping or action == signal.SIGTERM
            accepted = next(filter(None, map(try_accept, listeners)), None)
            if accepted is not None:
                served += 1
                self._serve_one(slot, served, *accepted)
                if limit and served >= limit:
                    self._slots.set_state(slot, _SLOT_RETIRED)
                    return 0
                continue
            # Nothing queued.  Only now may a stopping worker leave: it was
            # perhaps the one woken for the last connection.
            if stopping or os.getppid() != self._master_pid:
                return 0
            self._slots.beat(slot)
            for fd, _ in poller.poll(idle_wait):
                if fd == signals.wake_r:
                    signals.drain()

    def _worker_signals(self, signals: SignalQueue) -> int | None:
        """Take the worker's queued signals: SIGQUIT (leave now) or SIGTERM (finish), if any."""
        action: int | None = None
        while signals.pending:
            sig = signals.pending.popleft()
            if sig == signal.SIGQUIT:
                return sig
            if sig == signal.SIGTERM:
                action = sig
            elif sig == signal.SIGUSR1:
                reopen_logs(self.log_file)
        return action

    def _serve_one(self, slot: int, served: int, conn: socket.socket, address: Any) -> None:
        """One connection, heartbeats around it; a failing handler costs only it."""
        self._slots.beat(slot)
        conn.setblocking(True)
        try:
            call_handler(self.handler, conn, address, self)
        except Exception:
            traceback.print_exc()
        self._slots.set_requests(slot, served)
        self._slots.beat(slot)
