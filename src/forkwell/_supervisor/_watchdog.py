"""The supervisor's watchdog: its programs die with it, even when it is SIGKILLed.

Why not ``PR_SET_PDEATHSIG`` on each program: setting it needs code between
fork and exec.  A Python ``preexec_fn`` forces ``subprocess`` onto its slow
fork path, and a ``setpriv --pdeathsig`` wrapper costs a second exec per
program (a third of the time ``forkwell up`` took to start 100 programs).
And it reaches only direct children, not a ``setsid``'d grandchild.

Instead the supervisor forks one small process before it starts anything.
The watchdog holds the read end of a pipe whose only write end the
supervisor holds (close-on-exec, so no program inherits it).  However the
supervisor dies, the kernel closes that write end; the watchdog reads EOF
and SIGKILLs every process carrying the supervisor's cookie (see
:mod:`forkwell._core._tree`), setsid'd and double-forked descendants included.  A
clean shutdown writes one byte first, and the watchdog exits without
scanning.

If the watchdog is killed, the supervisor sees it through a pidfd and forks a
new one (:class:`Keeper`).  Both killed at the same moment is what the state
file is for: the next ``forkwell up`` ends the survivors before starting
anything.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from .._core import _sys, _tree
from .._core._status import describe_exit, waitid_returncode
from .._exceptions import ForkwellError

if TYPE_CHECKING:
    from ._preloop import Loops

#: What ``ps`` shows for the watchdog (``/proc/PID/comm``, at most 15 bytes).
COMM = "forkwell-watch"
_CLEAN = b"q"
#: Signals a terminal or a shell's job control could send to our process group.
_TERMINAL_SIGNALS = ("SIGINT", "SIGQUIT", "SIGHUP", "SIGTSTP", "SIGTTIN", "SIGTTOU")


class Watchdog:
    """A forked process that ends every process carrying ``token`` once we are gone."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.pid: int | None = None
        self.pidfd = -1
        #: Set by whoever reaps it, if not :meth:`reap` (a SIGCHLD handler reaping all).
        self.returncode: int | None = None
        self._write_end = -1

    def start(self) -> int:
        """Fork the watchdog; return its pid.  Raises OSError if fork fails."""
        r, w = os.pipe2(os.O_CLOEXEC)
        try:
            pid = os.fork()
        except OSError:
            os.close(r)
            os.close(w)
            raise
        if pid == 0:  # pragma: no cover (runs in the child, which never returns)
            try:
                _watch(r, self.token)
            finally:
                os._exit(0)
        os.close(r)
        self.pid = pid
        self._write_end = w
        self.pidfd = _sys.pidfd_open(pid) or -1
        return pid

    def reap(self) -> int | None:
        """After the watchdog exited: collect it (unless already reaped) and forget it.

        Returns its wait status as a ``returncode`` (``-N`` for signal N), or
        None if someone else reaped it without setting :attr:`returncode`.
        """
        code = self.returncode
        with contextlib.suppress(ChildProcessError):
            if self.pidfd >= 0:
                # By pidfd: the pid may have been reaped (SIGCHLD) and reused.
                info = os.waitid(os.P_PIDFD, self.pidfd, os.WEXITED)
                code = None if info is None else waitid_returncode(info)
            elif self.pid is not None:
                _pid, status = os.waitpid(self.pid, 0)
                code = os.waitstatus_to_exitcode(status)
        self._forget()
        return code

    def stop(self, timeout: float = 5.0) -> None:
        """Clean shutdown: tell the watchdog to exit without killing anything; reap it."""
        if self.pid is None:
            return
        with contextlib.suppress(OSError):
            os.write(self._write_end, _CLEAN)
        if self.pidfd >= 0 and not _sys.wait_ready([self.pidfd], timeout):
            # Stopped or wedged: it must not outlive us either.
            _sys.pidfd_signal(self.pidfd, signal.SIGKILL)
        self.reap()

    def _forget(self) -> None:
        if self._write_end >= 0:
            os.close(self._write_end)
        if self.pidfd >= 0:
            os.close(self.pidfd)
        self._write_end = self.pidfd = -1
        self.pid = None
        self.returncode = None


class Keeper:
    """Keeps a watchdog running while the supervisor runs: a killed one is replaced.

    ``closed()`` says the supervisor is shutting down (no replacement then);
    ``on_new()`` is told of each replacement (the state file names it).
    """

    def __init__(
        self,
        watchdog: Watchdog,
        loops: Loops,
        note: Callable[[str], None],
        closed: Callable[[], bool],
        on_new: Callable[[], None],
    ) -> None:
        self.watchdog = watchdog
        self._loops = loops
        self._note = note
        self._closed = closed
        self._on_new = on_new
        self._started = 0.0

    def start(self) -> None:
        """Fork the watchdog and watch its pidfd; ForkwellError if it cannot be forked."""
        dog = self.watchdog
        try:
            pid = dog.start()
        except OSError as exc:
            why = exc.strerror or exc
            raise ForkwellError(f"cannot start the watchdog process: {why}") from None
        self._started = time.monotonic()
        if dog.pidfd >= 0:
            self._loops.loop.add_reader(dog.pidfd, self._exited)
        self._note(f"watchdog: pid {pid}")

    def stop(self) -> None:
        dog = self.watchdog
        if dog.pid is None:
            return
        if dog.pidfd >= 0:
            self._loops.loop.remove_reader(dog.pidfd)
        dog.stop()

    def _exited(self) -> None:
        """Someone killed the watchdog: without it a SIGKILL of us would orphan the fleet."""
        dog = self.watchdog
        self._loops.loop.remove_reader(dog.pidfd)
        pid = dog.pid
        code = dog.reap()
        if self._closed():
            return
        how = "exited" if code is None else describe_exit(code)
        # At most one new watchdog a second, should something kill each at birth.
        delay = max(0.0, self._started + 1.0 - time.monotonic())
        self._note(f"watchdog (pid {pid}) {how}; starting a new one")
        self._loops.loop.call_later(delay, self._restart)

    def _restart(self) -> None:
        if self._closed() or self.watchdog.pid is not None:
            return
        try:
            self.start()
        except ForkwellError as exc:
            self._note(f"{exc}; retrying in 1s")
            self._started = time.monotonic()
            self._loops.loop.call_later(1.0, self._restart)
            return
        self._on_new()


def _watch(read_end: int, token: str) -> None:  # pragma: no cover (forked child)
    """The watchdog's whole life: wait for EOF (or the clean byte), then end the fleet."""
    # Inherited from the supervisor's event loop: signal handlers that would
    # write to a wake-up fd we are about to close.
    with contextlib.suppress(ValueError):
        signal.set_wakeup_fd(-1)
    for name in ("SIGTERM", "SIGCHLD", "SIGUSR1", "SIGUSR2", "SIGALRM"):
        signal.signal(getattr(signal, name), signal.SIG_DFL)
    # Its own process group keeps Ctrl-C away; an explicit kill still works
    # (and the supervisor then forks a new watchdog).
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)
    for name in _TERMINAL_SIGNALS:
        signal.signal(getattr(signal, name), signal.SIG_IGN)
    # Hold nothing of the supervisor's: not its terminal or pipes (a reader
    # waiting for EOF on its stdout would wait for us), not its sockets or pidfds.
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    _sys.close_fds_except({read_end})
    with contextlib.suppress(OSError), open("/proc/self/comm", "w") as f:
        f.write(COMM)
    while True:
        data = os.read(read_end, 1)
        if data == _CLEAN:
            return
        if not data:
            break
    tree = _tree.Tree(token, -1)
    tree.kill_all(timeout=30.0, include_root=False)
