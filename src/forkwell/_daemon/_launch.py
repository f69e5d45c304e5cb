"""Forking the daemon: the three processes and the start handshake between them.

Both :func:`forkwell.daemonize` and ``forkwell daemon start`` follow systemd's
daemon(7) SysV recipe, with its step 14 ("notify the original process through
a pipe made before the first fork") and step 15 ("exit the original process
only then") that the classic Python recipes skip::

    original (P0) --fork--> intermediate (C1: setsid) --fork--> daemon (C2)
         ^  "status" pipe (C1 -> P0)       ^  "events" pipe (C2 -> C1)
         |  "go" pipe (P0 -> C1)            |

* The daemon (C2) runs the steps (:mod:`._steps`) and reports a failure on
  the events pipe before exiting.  It reports ``READY`` there too (library),
  or ``EXEC`` just before ``execve`` (command: the close-on-exec events pipe
  then reads EOF, which is how an exec is known to have succeeded).
* The intermediate (C1) stays the daemon's parent until the original says
  "go": it relays the events and, should the daemon die first, reaps it and
  reports its real exit status (the original, not being its parent, could not
  learn it).  If the original goes away (or gives up: readiness timeout)
  without saying "go", C1 stops the daemon and everything in its session, so a
  failed start leaves nothing behind.
* The original (P0) waits for readiness with a deadline, then says "go",
  reaps C1 and exits 0; or reports the failure and exits non-zero.

The daemon is not a session leader (it is C1's child), so it can never acquire
a controlling terminal; after "go" it is re-parented to init or the nearest
subreaper.  The messages are :mod:`._handshake`'s.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import time
from collections.abc import Callable, Sequence
from typing import NoReturn

from .._core import _proc, _sys
from .._exceptions import DaemonStartError
from ._config import Config
from ._handshake import Decoder, Error, Failure, Kind, Message, Outcome, send, write
from ._pidfile import Pidfile
from ._session import signal_session
from ._steps import step

#: How long C1 waits for a daemon to go after SIGTERM when a start is abandoned.
ABANDON_GRACE = 2.0


def start(
    config: Config,
    *,
    timeout: float | None,
    ready_check: Callable[[Waiter], bool],
    wake_fds: Sequence[int] = (),
) -> tuple[Outcome | None, int]:
    """Fork the daemon.  In P0: (outcome, 0).  In the daemon: (None, events fd).

    ``ready_check`` says whether the daemon is up by other means than its
    ``READY`` (the command's readiness); ``wake_fds`` wake the wait to ask it.
    """
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    status_r, status_w = os.pipe2(os.O_CLOEXEC)
    go_r, go_w = os.pipe2(os.O_CLOEXEC)
    try:
        c1 = os.fork()
    except OSError as exc:
        for fd in (status_r, status_w, go_r, go_w):
            os.close(fd)
        raise DaemonStartError(
            exc.errno or 0, f"first fork failed: {exc.strerror}", "fork"
        ) from None
    if c1 == 0:
        os.close(status_r)
        os.close(go_w)
        return None, _intermediate(status_w, go_r, config.pidfile)
    os.close(status_w)
    os.close(go_r)
    waiter = Waiter(c1, status_r, go_w, wake_fds)
    waiter.wait(timeout, ready_check)
    return waiter.finish(config.pidfile), 0


# --------------------------------------------------------------------------
# The intermediate process (C1)


def _intermediate(status_w: int, go_r: int, pidfile: str | None) -> int:
    """Run in C1: setsid, fork the daemon.  Returns in the daemon (its events fd)."""
    try:
        with step("setsid", "setsid failed"):
            os.setsid()
        with step("fork", "cannot make the events pipe"):
            events_r, events_w = os.pipe2(os.O_CLOEXEC)
        with step("fork", "second fork failed"):
            c2 = os.fork()
    except DaemonStartError as exc:
        send(status_w, Message(Kind.ERROR, error=Error.of(exc)))
        os._exit(1)
    if c2 == 0:
        os.close(events_r)
        os.close(status_w)
        os.close(go_r)
        return events_w
    os.close(events_w)
    try:
        _Relay(c2, events_r, status_w, go_r, pidfile).run()
    finally:
        os._exit(0)


class _Relay:
    """C1 until the original says GO: relay the daemon's events, report its end."""

    def __init__(self, c2: int, events_r: int, status_w: int, go_r: int, pidfile: str | None):
        self.c2 = c2
        self.pidfd = _sys.pidfd_open(c2)
        self.events_r: int | None = events_r
        self.status_w = status_w
        self.go_r = go_r
        self.pidfile = pidfile
        self.poller = select.poll()

    def run(self) -> None:
        """Returns once the original said GO; every other way ends C1."""
        send(self.status_w, Message(Kind.PID, number=self.c2))
        assert self.events_r is not None
        os.set_blocking(self.events_r, False)
        for fd in (self.events_r, self.go_r, self.pidfd):
            if fd is not None:
                self.poller.register(fd, select.POLLIN)
        while True:
            ready = self._poll()
            if self.events_r in ready and not self._drain():
                self._events_closed()
            self._finish_if_exited()
            if self.go_r in ready and self._go():
                return

    def _poll(self) -> set[int]:
        # Without a pidfd nothing wakes us when the daemon dies: look every 50 ms.
        try:
            return {fd for fd, _ in self.poller.poll(None if self.pidfd is not None else 50)}
        except InterruptedError:
            return set()

    def _drain(self) -> bool:
        """Relay what the daemon wrote; False at EOF."""
        assert self.events_r is not None
        while True:
            try:
                data = os.read(self.events_r, 65536)
            except BlockingIOError:
                return True
            if not data:
                return False
            # The original may be gone (Ctrl-C): keep going, the go pipe says so.
            write(self.status_w, data)

    def _events_closed(self) -> None:
        assert self.events_r is not None
        self.poller.unregister(self.events_r)
        os.close(self.events_r)
        self.events_r = None
        self._finish_if_exited()
        send(self.status_w, Message(Kind.EOF))

    def _go(self) -> bool:
        data = os.read(self.go_r, 64)
        if b"GO" in data:
            return True
        if not data:
            self._abandon()
        return False

    def _abandon(self) -> NoReturn:
        """The original gave up (readiness timeout) or died without GO: stop the daemon.

        An unreported daemon must not be left running.
        """
        _sys.send_signal(self.c2, self.pidfd, signal.SIGTERM)
        if not _proc.wait_gone(self.c2, ABANDON_GRACE, pidfd=self.pidfd):
            _sys.send_signal(self.c2, self.pidfd, signal.SIGKILL)
        self._finish(_reap(self.c2))

    def _finish_if_exited(self) -> None:
        code = _exited(self.c2, self.pidfd)
        if code is not None:
            self._finish(code)

    def _finish(self, code: int) -> NoReturn:
        """The daemon ended before GO: report how, leaving nothing behind."""
        if self.events_r is not None:
            self._drain()
        signal_session(os.getpid(), signal.SIGKILL)
        if self.pidfile is not None:
            # Also when the original is gone (Ctrl-C): a failed start leaves
            # no pidfile.  Only the daemon's own, and only if nobody holds it.
            Pidfile.remove_stale(self.pidfile, expect_pid=self.c2)
        send(self.status_w, Message(Kind.EXIT, number=code))
        os._exit(0)


def _exited(pid: int, pidfd: int | None) -> int | None:
    """Reap ``pid`` if it has exited: its returncode, else None."""
    if pidfd is not None:
        return _reap(pid) if _sys.wait_ready([pidfd], 0) else None
    try:
        got, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return -signal.SIGKILL
    return None if got == 0 else os.waitstatus_to_exitcode(status)


def _reap(pid: int) -> int:
    """Wait for child ``pid``: its returncode."""
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        # A SIGCHLD handler inherited from the caller reaped it: the status is lost.
        return -signal.SIGKILL
    return os.waitstatus_to_exitcode(status)


# --------------------------------------------------------------------------
# The original process (P0)


class Waiter:
    """P0's side: read C1's messages until ready, failure or deadline."""

    def __init__(self, c1: int, status_r: int, go_w: int, extra_fds: Sequence[int]) -> None:
        self.c1 = c1
        self.extra_fds = list(extra_fds)
        self.status_r = status_r
        self.go_w: int | None = go_w
        self.decoder = Decoder()
        self.outcome = Outcome()
        self.closed = False
        self.pidfd: int | None = None

    def wait(self, timeout: float | None, ready_check: Callable[[Waiter], bool]) -> None:
        """Until the outcome is known: ready, failed, or ``timeout`` passed (TIMEOUT)."""
        o = self.outcome
        deadline = None if timeout is None else time.monotonic() + timeout
        while not (o.ok or o.failure is not None or self.failed):
            if ready_check(self):
                o.ok = True
                return
            remaining = 0.05 if deadline is None else min(deadline - time.monotonic(), 0.05)
            if deadline is not None and remaining <= 0:
                o.failure = Failure.TIMEOUT
                return
            self.read(remaining)

    def read(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for messages; False once C1 closed the pipe."""
        if self.closed:
            return False
        readable = _sys.wait_ready([self.status_r, *self.extra_fds], max(timeout, 0))
        if self.status_r not in readable:
            return True
        data = os.read(self.status_r, 65536)
        if not data:
            self.closed = True
            return False
        for message in self.decoder.feed(data):
            self.outcome.record(message)
            if message.kind is Kind.PID:
                self.pidfd = _sys.pidfd_open(message.number)
        return True

    @property
    def eof_after_exec(self) -> bool:
        """The daemon exec'd its command (EXEC, then the close-on-exec pipe closed)."""
        return self.outcome.execed and self.outcome.eof

    @property
    def failed(self) -> bool:
        return self.outcome.exit_status is not None or self.closed

    def daemon_alive(self) -> bool:
        if self.pidfd is None:
            return not self.failed
        return not _sys.wait_ready([self.pidfd], 0)

    def finish(self, pidfile: str | None) -> Outcome:
        """After success (go) or failure: collect C1's last words and reap it."""
        o = self.outcome
        if o.ok:
            self._close_go(b"GO")
        else:
            self._collect_failure()
        try:
            _, status = os.waitpid(self.c1, 0)
        except ChildProcessError:
            status = 0  # a caller's SIGCHLD handler reaped it first: C1 said all in words
        os.close(self.status_r)
        if self.pidfd is not None:
            os.close(self.pidfd)
        if not o.ok and o.failure in (None, Failure.DIED) and os.waitstatus_to_exitcode(status):
            o.failure, o.message = Failure.LOST, "the intermediate process failed"
        if not o.ok and pidfile and o.pid is not None:
            # The daemon is gone (C1 reaped it); a pidfile it left is stale.
            Pidfile.remove_stale(pidfile, expect_pid=o.pid)
        return o

    def _collect_failure(self) -> None:
        if self.outcome.failure not in (None, Failure.TIMEOUT):
            # The daemon reported an error and is on its way out: let it
            # finish, so the status reported is its own, not our SIGTERM.
            self._read_until(lambda: self.outcome.exit_status is not None, 5.0)
        # Closing the go pipe without GO: C1 stops the daemon and reports.
        self._close_go(b"")
        self._read_until(lambda: False, ABANDON_GRACE + 10)

    def _read_until(self, done: Callable[[], bool], timeout: float) -> None:
        """Read until ``done()``, C1 closes the pipe, or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        while not done() and time.monotonic() < deadline:
            if not self.read(deadline - time.monotonic()):
                return

    def _close_go(self, word: bytes) -> None:
        if self.go_w is not None:
            if word:
                with contextlib.suppress(OSError):
                    os.write(self.go_w, word)
            os.close(self.go_w)
            self.go_w = None
