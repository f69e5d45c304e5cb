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
import os
import select
import selectors
import signal
import time
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
    ConnectionService,
    Handler,
    ServerBase,
    ServerState,
    block_signals,
    check_handler,
    load_handler,
    reimport,
    unblock_signals,
    warm_up,
)
from ._workers import (
    _MAX_WORKERS,
    _SLOT_BOOTING,
    _SLOT_RETIRED,
    _SLOT_RUNNING,
    Worker,
    _Slots,
    reopen_logs,
)

log = logging.getLogger("forkwell.server")

RELOAD = -3  # pseudo-signal queued by reload()

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
            n = len(self._workers)
            log.info("fast stop: killing %d worker%s", n, "" if n == 1 else "s")
            return True
        if what in (STOP_GRACEFUL, signal.SIGTERM):
            if self._state == ServerState.SERVING:
                self._set_state(ServerState.STOPPING)
                n = len(self._workers)
                log.info(
                    "graceful stop: waiting up to %gs for %d worker%s to finish",
                    self.graceful_timeout,
                    n,
                    "" if n == 1 else "s",
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
        try:
            self._reimport()
        except HandlerImportError as exc:
            log.error("reload failed, keeping the running workers: %s", exc)  # noqa: TRY400
            return
        except Exception as exc:  # the new code may raise anything at import
            log.error(  # noqa: TRY400 (the user's error, reported in one line)
                "reload failed, keeping the running workers: %s: %s", type(exc).__name__, exc
            )
            return
        self._generation += 1
        n = self.target
        log.info("reloading: starting %d new worker%s", n, "" if n == 1 else "s")

    def _reimport(self) -> None:
        """The new code, in the master, before new workers fork from it."""
        if isinstance(self.handler, ConnectionService):
            self.handler.reload()
        elif self._handler_spec is not None:
            reimport(self._handler_spec.partition(":")[0])
            self.handler = load_handler(self._handler_spec)

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

    def _drop_master_state(self) -> None:
        """In a new worker: what the master holds and a worker must not.

        Its selector, its reaper (pidfds of the siblings) and its signal pipe.
        """
        self._signals.close()
        if self._sel is not None:
            self._sel.close()
        if self._reaper is not None:
            self._reaper.close()

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
                Worker(self, slot).main(old)  # never returns
        finally:
            unblock_signals(old)
        self._workers[pid] = _Worker(pid, slot, self._generation, now)
        return True

    # -- worker
