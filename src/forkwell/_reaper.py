"""A zombie-free way for a Python program to fork: watch *specific* children.

The textbook SIGCHLD handler calling ``waitpid(-1)`` steals the exit status of
children that ``subprocess`` started, and does work in signal context.  The
:class:`Reaper` instead holds a pidfd per child it was told about, all in one
epoll set: its :meth:`~Reaper.fileno` becomes readable when any of them exits,
so it fits any selector or event loop, and it reaps only its own children
(``waitid(P_PIDFD)``), never one started by someone else.  No signal handler.

Without pidfds (macOS, BSD, Linux < 5.4) it falls back to a SIGCHLD wake-up
pipe plus ``waitpid(pid, WNOHANG)`` on each watched pid: still only its own.
"""

from __future__ import annotations

import os
import select
import signal
import time
from dataclasses import dataclass

from . import _sys


@dataclass(frozen=True)
class ChildExit:
    """How a child ended.  ``returncode`` is ``subprocess``-style (-N for signal N)."""

    pid: int
    returncode: int

    @property
    def exit_code(self) -> int | None:
        return self.returncode if self.returncode >= 0 else None

    @property
    def signal(self) -> int | None:
        return -self.returncode if self.returncode < 0 else None

    @property
    def shell_status(self) -> int:
        """The status a shell would report: the exit code, or 128+N for signal N."""
        return self.returncode if self.returncode >= 0 else 128 - self.returncode


def decode_wait_status(status: int) -> int:
    """A ``waitpid`` status as a ``subprocess``-style return code."""
    return os.waitstatus_to_exitcode(status)


class Reaper:
    """Watches children by pid and reaps each one as it exits.

    >>> reaper = Reaper()
    >>> pid = reaper.fork()          # like os.fork(); the parent now watches pid
    >>> for exit in reaper.wait():   # or select on reaper.fileno()
    ...     print(exit.pid, exit.returncode)
    """

    def __init__(self) -> None:
        self._owner = os.getpid()
        self._pidfds: dict[int, int] = {}  # pidfd -> pid
        self._pids: set[int] = set()
        self._epoll: select.epoll | None = None
        self._wake_r = self._wake_w = -1
        if _sys.HAVE_PIDFD:
            self._epoll = select.epoll()
        else:
            self._wake_r, self._wake_w = os.pipe()
            os.set_blocking(self._wake_r, False)
            os.set_blocking(self._wake_w, False)
            _install_sigchld_wakeup(self._wake_w)

    def fileno(self) -> int:
        """Readable when at least one watched child has exited."""
        return self._epoll.fileno() if self._epoll is not None else self._wake_r

    def __len__(self) -> int:
        return len(self._pids)

    def pids(self) -> set[int]:
        return set(self._pids)

    def watch(self, pid: int) -> None:
        """Start watching ``pid``, a child of this process not yet reaped."""
        self._pids.add(pid)
        if self._epoll is not None:
            fd = _sys.pidfd_open(pid)
            if fd is None:
                raise ChildProcessError(f"pid {pid} is not a live child of this process")
            self._pidfds[fd] = pid
            self._epoll.register(fd, select.EPOLLIN)

    def fork(self) -> int:
        """``os.fork()``; the parent watches the child.  Returns 0 in the child."""
        pid = os.fork()
        if pid == 0:
            self._forget_in_child()
            return 0
        self.watch(pid)
        return pid

    def _forget_in_child(self) -> None:
        # The child's copy must not reap its siblings (it cannot anyway) nor
        # keep the parent's fds open.
        for fd in self._pidfds:
            os.close(fd)
        self._pidfds.clear()
        self._pids.clear()
        if self._epoll is not None:
            self._epoll.close()
            self._epoll = select.epoll()

    def reap(self) -> list[ChildExit]:
        """Reap every watched child that has exited; never blocks."""
        exits: list[ChildExit] = []
        if self._epoll is not None:
            for fd, _ in self._epoll.poll(0):
                pid = self._pidfds.pop(fd)
                self._epoll.unregister(fd)
                try:
                    result = os.waitid(os.P_PIDFD, fd, os.WEXITED)  # type: ignore[attr-defined]
                except ChildProcessError:
                    result = None
                os.close(fd)
                self._pids.discard(pid)
                if result is not None:
                    exits.append(ChildExit(pid, _waitid_returncode(result)))
            return exits
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass
        for pid in list(self._pids):
            try:
                got, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                self._pids.discard(pid)
                continue
            if got:
                self._pids.discard(pid)
                exits.append(ChildExit(pid, decode_wait_status(status)))
        return exits

    def wait(self, timeout: float | None = None) -> list[ChildExit]:
        """Block until at least one watched child exits (or ``timeout``), reap, return."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            exits = self.reap()
            if exits or not self._pids:
                return exits
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if remaining == 0.0:
                return []
            select.select([self.fileno()], [], [], remaining)

    def close(self) -> None:
        for fd in self._pidfds:
            os.close(fd)
        self._pidfds.clear()
        if self._epoll is not None:
            self._epoll.close()
        if self._wake_r >= 0:
            os.close(self._wake_r)
            os.close(self._wake_w)
            self._wake_r = self._wake_w = -1


def _waitid_returncode(result: os.waitid_result) -> int:
    if result.si_code == os.CLD_EXITED:
        return int(result.si_status)
    return -int(result.si_status)


def _install_sigchld_wakeup(fd: int) -> None:
    # Fallback only: the handler writes one byte and returns (no work in signal context).
    def handler(signum: int, frame: object) -> None:
        try:
            os.write(fd, b"\0")
        except OSError:
            pass

    signal.signal(signal.SIGCHLD, handler)
