"""``forkwell timeout``'s engine: one command, one deadline, a process dedicated to it.

:func:`run_timeout` is what the command line calls; it owns the calling
process for the duration, which a library call like :func:`forkwell.run`
must not do:

* it becomes a child subreaper, so orphans of the command come back to it,
  are reaped here, and the tree is found by walking its own subtree;
* it catches the signals it passes on (TERM, INT, HUP, QUIT, as GNU
  ``timeout`` does, and USR1, USR2 unless the caller ignored them) with
  handlers that only make a wake-up fd readable, and the run loop forwards
  them; SIGALRM means "the time is up", as in GNU;
* like GNU, it ignores SIGTTIN/SIGTTOU itself (a background command that
  reads the terminal must not stop it) and gives the command their defaults;
  every other disposition the caller left ignored stays ignored in the command,
  except SIGPIPE and SIGXFSZ, which the command gets at their defaults (see
  docs/run.md: Python's start-up ignores both before any code of ours runs);
* the command gets ``PR_SET_PDEATHSIG`` (SIGKILL): if this process is
  killed, the command dies with it.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Sequence

from ._core import _sys, _tree
from ._core._driver import Driver, Hooks, Policy
from ._core._process import Process, spawn
from ._core._status import shell_status

#: The signals passed on to the command, as GNU timeout does.
FORWARDED = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
)
#: Forwarded only if the caller did not ignore them (GNU does not catch these at all).
_OPTIONAL = (signal.SIGUSR1, signal.SIGUSR2)
_TTY_STOPS = (signal.SIGTTIN, signal.SIGTTOU)
#: Without ``-k``, what the command leaves behind when it exits gets this long.
LEFTOVER_GRACE = 5.0
EXIT_TIMEDOUT = 124


class TimeoutResult:
    """How the command ended: ``returncode`` as ``subprocess`` has it, and why."""

    __slots__ = ("returncode", "timed_out")

    def __init__(self, returncode: int, timed_out: bool) -> None:
        self.returncode = returncode
        self.timed_out = timed_out

    def exit_status(self, *, preserve: bool = False) -> int:
        """GNU ``timeout``'s exit status for this result (``--preserve-status`` with ``preserve``).

        124 when the deadline passed, or 137 when the command had to be
        KILLed (GNU timeout signals its own group, so KILL kills it too);
        otherwise the command's status, 128+N for signal N.
        """
        if self.timed_out and not preserve:
            if self.returncode == -signal.SIGKILL:
                return 128 + signal.SIGKILL
            return EXIT_TIMEDOUT
        return shell_status(self.returncode)


def run_timeout(  # noqa: PLR0913 (GNU timeout's options)
    argv: Sequence[str],
    duration: float,
    *,
    stop_signal: int = signal.SIGTERM,
    kill_after: float | None = None,
    foreground: bool = False,
    on_timeout: Callable[[int], None] | None = None,
) -> TimeoutResult:
    """Run ``argv`` until it exits or ``duration`` seconds pass (0: no limit).

    At the deadline ``stop_signal`` goes to the whole tree; with
    ``kill_after``, SIGKILL follows that many seconds later (and a forwarded
    signal arms it too, as GNU does).  ``foreground`` leaves the command in
    our process group, so it may read the terminal.  ``on_timeout`` is
    called with the signal when the deadline passes.  Returns once nothing
    of the command is left; raises :class:`~forkwell.SpawnError` subclasses
    when it cannot start.
    """
    # Dedicated process: adopt orphans so they are reaped here, not left to init.
    own_subtree = _sys.set_subreaper() and _tree.HAVE_CHILDREN_FILE
    wake = _WakeUp(foreground)
    try:
        proc = spawn(
            argv,
            new_process_group=not foreground,
            pdeathsig=signal.SIGKILL,
            preexec_fn=_default_tty_stops,
        )
        try:
            if own_subtree and proc.tree is not None:
                # Every descendant stays below us: no need to read all of /proc.
                proc.tree.own_subtree = True
            policy = Policy(
                timeout=duration if duration > 0 else None,
                grace=0.0 if kill_after is None else kill_after,
                stop_signal=stop_signal,
                kill_after_deadline=kill_after is not None,
                leftover_grace=LEFTOVER_GRACE if kill_after is None else kill_after,
                reap_all=True,
            )
            driver = Driver(proc, policy, hooks=Hooks(wake.fd, None, on_timeout))
            driver.on_wake = _Forwarder(driver, proc, kill_after, foreground)
            driver.run()
        finally:
            proc.close()
    finally:
        wake.restore()
    rc = proc.returncode
    assert rc is not None  # the driver returns only once the command is reaped
    return TimeoutResult(rc, driver.timed_out)


class _Forwarder:
    """The run loop's wake-up callback: pass each caught signal on to the command."""

    def __init__(
        self, driver: Driver, proc: Process, kill_after: float | None, foreground: bool
    ) -> None:
        self.driver = driver
        self.proc = proc
        self.kill_after = kill_after
        self.foreground = foreground

    def __call__(self, data: bytes) -> None:
        for signum in set(data):
            if signum == signal.SIGALRM:
                self.driver.expire()  # GNU: SIGALRM is "the time is up"
                continue
            if signum not in FORWARDED or self.proc.returncode is not None:
                continue
            if self.kill_after is not None:
                # As GNU does: pass the signal on, and arm --kill-after.
                self.driver.begin_termination(signum, self.kill_after, include_root=True)
            elif self.foreground:
                self.proc.send_signal(signum)
            else:
                self.proc.signal_tree(signum)


class _WakeUp:
    """Handlers that only wake the loop, for the forwarded signals and SIGCHLD."""

    def __init__(self, foreground: bool) -> None:
        self.fd, self._w = os.pipe()
        os.set_blocking(self.fd, False)
        os.set_blocking(self._w, False)
        self._old_fd = signal.set_wakeup_fd(self._w, warn_on_full_buffer=False)
        # A background command needing the terminal must not stop us (GNU does the same).
        for sig in _TTY_STOPS:
            signal.signal(sig, signal.SIG_IGN)
        for sig in (*FORWARDED, signal.SIGCHLD, signal.SIGALRM):
            if sig in _OPTIONAL and signal.getsignal(sig) == signal.SIG_IGN:
                continue  # the caller ignores it: so does the command, inheriting that
            signal.signal(sig, _wake_only)

    def restore(self) -> None:
        signal.set_wakeup_fd(self._old_fd)
        os.close(self.fd)
        os.close(self._w)


def _default_tty_stops() -> None:
    """In the child, before exec: SIGTTIN/SIGTTOU back to their defaults, as GNU does.

    We ignore them ourselves; an ignored disposition would survive the exec.
    """
    for sig in _TTY_STOPS:
        signal.signal(sig, signal.SIG_DFL)


def _wake_only(signum: int, frame: object) -> None:
    """Every handled signal's handler: ``set_wakeup_fd`` has already woken the loop."""
