"""``forkwell init``: run one command as PID 1 or as a child subreaper.

Why it is built this way:

* **Every zombie is ours to reap.**  As PID 1 of a PID namespace every orphan
  is re-parented to us; otherwise ``PR_SET_CHILD_SUBREAPER`` makes the orphans
  of our descendants ours.  This process runs nothing but the command, so it
  may (and must) ``waitpid(-1)``: unlike a library, it steals nobody's status.
* **No work in signal context, no wake-up when idle.**  The loop keeps its
  signals blocked and takes them with ``sigwaitinfo`` (no timeout: an idle
  init never runs), as tini does; blocked signals coalesce, so a burst of
  exits costs a few wake-ups, not one handler run per SIGCHLD.  They are
  blocked only *after* the command is started, because ``subprocess``'s fast
  vfork path hands the parent's mask to the child (unblocking it would need a
  slow ``preexec_fn``).  A signal that comes before that is caught by a no-op
  handler whose ``signal.set_wakeup_fd`` pipe the loop reads once, at start.
* **Nothing is left behind.**  tini exits as soon as its child exits and
  dumb-init does not wait after its SIGTERM.  Here, when the command exits,
  every remaining descendant gets SIGTERM, then SIGKILL after ``grace``, and
  init exits only when it has no child left (as PID 1 or a subreaper, "no
  child left" means "no descendant left": orphans come back to us).
* **Transparent.**  The command inherits init's environment and every fd
  init inherited (socket activation keeps working through it).
* **Job control as a shell does it.**  The command runs in its own process
  group; if init owns the terminal, the command gets it.  When the command
  stops (Ctrl-Z, or a forwarded TSTP/TTIN/TTOU), init stops itself so the
  shell that started it sees a stopped job; a SIGCONT to init continues both.
"""

from __future__ import annotations

import enum
import errno
import os
import signal
import time
from collections.abc import Callable, Iterable, Sequence

from ._core import _proc, _sys, _tree
from ._core._process import Process, spawn
from ._core._reaper import ChildExit
from ._core._state import check

# KILL/STOP cannot be caught; CHLD is how we learn about exits.
_NEVER = {signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD}
# The kernel raises these for a fault of init's own: they get no handler (a
# handler returning to the faulting instruction would loop forever), only a
# place in the blocked set, so ``sigwaitinfo`` takes one sent by a process
# (``kill -SEGV 1``) to forward it, while a real fault still kills init: the
# kernel forces a synchronous signal through even when it is blocked.
_SYNCHRONOUS = {
    signal.SIGSEGV,
    signal.SIGBUS,
    signal.SIGILL,
    signal.SIGFPE,
    signal.SIGABRT,
    signal.SIGTRAP,
    signal.SIGSYS,
}
# Python's start-up ignores these before any code of ours runs, so "ignored"
# says nothing of the caller's wish: they are caught and forwarded like the rest.
_PYTHON_IGNORES = {signal.SIGPIPE, signal.SIGXFSZ}
_JOB_CONTROL_STOPS = {signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU, signal.SIGSTOP}
# During the grace period one of these asks init to stop waiting and kill now.
_HURRY = {signal.SIGTERM, signal.SIGINT, signal.SIGQUIT}
# Between SIGKILL rounds: descendants forked while we were killing are found by
# a rescan, since re-parenting an orphan to us raises no SIGCHLD.
_KILL_RESCAN = 0.05


def forwarded_signals() -> list[int]:
    """Every signal init passes on to the command (those the caller ignored excepted).

    A signal the caller left ignored stays ignored: init does not catch it,
    and the command inherits the disposition, as with tini.
    """
    out = []
    for sig in signal.valid_signals():
        if sig in _NEVER:
            continue
        if sig not in _PYTHON_IGNORES and signal.getsignal(sig) == signal.SIG_IGN:
            continue
        out.append(int(sig))
    return sorted(out)


def _sent_by_a_process(info: signal.struct_siginfo) -> bool:
    """Not raised by the kernel for init's own doing (a fault, a write to a closed pipe)."""
    if info.si_signo in _SYNCHRONOUS:
        return info.si_code <= 0  # SI_USER, SI_QUEUE, SI_TKILL: kill(2) and friends
    if info.si_signo == signal.SIGPIPE:
        return info.si_pid != os.getpid()  # our own write to a closed stderr is not news
    return True


class InitState(enum.Enum):
    RUNNING = "running"  # the command runs; signals are forwarded, zombies reaped
    ENDING = "ending"  # the command exited; SIGTERM sent to what is left, grace runs
    KILLING = "killing"  # grace over: SIGKILL until no descendant is left
    DONE = "done"  # no child left; the exit status is known


_TRANSITIONS: dict[InitState, frozenset[InitState]] = {
    InitState.RUNNING: frozenset({InitState.ENDING, InitState.DONE}),
    InitState.ENDING: frozenset({InitState.KILLING, InitState.DONE}),
    InitState.KILLING: frozenset({InitState.DONE}),
    InitState.DONE: frozenset(),
}


class Init:
    """One run of ``forkwell init``: ``Init(args, ...).run()`` returns the exit status.

    It installs handlers for every forwarded signal and reaps with
    ``waitpid(-1)``: use it only in a process dedicated to being init (the CLI).
    Raises :class:`~forkwell.SpawnError` subclasses when the command cannot start.
    """

    def __init__(  # noqa: PLR0913 (forkwell init's options, as tini's)
        self,
        args: Sequence[str],
        *,
        pgroup: bool = False,
        grace: float = 5.0,
        remap_exit: Iterable[int] = (),
        verbose: bool = False,
        pdeathsig: int | None = None,
        log: Callable[[str], None] = lambda message: None,
    ) -> None:
        self.args = list(args)
        self.pgroup = pgroup
        self.grace = grace
        self.remap_exit = frozenset(remap_exit)
        self.verbose = verbose
        self.pdeathsig = pdeathsig
        self.log = log
        self.state = InitState.RUNNING
        self.pid1 = os.getpid() == 1
        # /proc must show our PID namespace: `unshare --pid --fork` without
        # --mount-proc leaves the host's, whose pids are not ours to signal.
        self._proc_ours = _proc_is_ours()
        self.main_exit: ChildExit | None = None
        self.orphans_reaped = 0
        self._proc: Process | None = None
        self._tty: int | None = None
        self._stop_asked = False  # a TSTP/TTIN/TTOU was forwarded to the command
        self._wake_r = self._wake_w = -1
        self._old_wakeup_fd = -1
        self._old_handlers: dict[int, object] = {}
        self._sigset: set[int] = set()
        self._old_mask: set[int | signal.Signals] | None = None
        # pid -> (pidfd, starttime) of descendants already sent SIGTERM.
        self._termed: dict[int, tuple[int, int]] = {}

    # -- state -------------------------------------------------------------

    def _to(self, new: InitState) -> None:
        self.state = check(_TRANSITIONS, self.state, new, "init")

    # -- set-up --------------------------------------------------------------

    def _become_reaper(self) -> None:
        if self.pid1:
            return
        if not _sys.set_subreaper():
            self.log(
                "warning: not PID 1 and cannot become a child subreaper: "
                "orphans will not be reaped by init (needs Linux >= 3.4)"
            )

    def _install_signals(self) -> None:
        # O_CLOEXEC: the command must not inherit the wake-up pipe.
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._old_wakeup_fd = signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        forwarded = forwarded_signals()
        for sig in [*forwarded, signal.SIGCHLD]:
            if sig in _SYNCHRONOUS:
                continue  # blocked below, never handled
            try:
                self._old_handlers[sig] = signal.signal(sig, _wake_only)
            except (OSError, ValueError):
                continue  # a signal this platform will not let us catch
        self._sigset = set(self._old_handlers) | (_SYNCHRONOUS & set(forwarded))

    def _block_signals(self) -> list[int]:
        """Block our signals (the command is started); return those caught before."""
        self._old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, self._sigset)
        return self._pending_signals()

    def _wait_signals(self, timeout: float | None) -> list[int]:
        """Block until one of our signals is pending (or ``timeout``); take them all.

        Blocked signals coalesce: a burst of 10,000 exits is a few SIGCHLDs to
        take here, not 10,000 handler runs interrupting the reaping.
        """
        if timeout is None:
            first: signal.struct_siginfo | None = signal.sigwaitinfo(self._sigset)
        else:
            first = signal.sigtimedwait(self._sigset, max(timeout, 0.0))
        got = []
        info = first
        while info is not None:
            if _sent_by_a_process(info):
                got.append(info.si_signo)
            info = signal.sigtimedwait(self._sigset, 0)
        return got

    def _restore_signals(self) -> None:
        if self._old_mask is not None:
            # Pending signals now run the no-op handlers: harmless.
            signal.pthread_sigmask(signal.SIG_SETMASK, self._old_mask)
            self._old_mask = None
        for sig, old in self._old_handlers.items():
            try:
                signal.signal(sig, old)  # type: ignore[arg-type]
            except (OSError, ValueError, TypeError):
                continue
        self._old_handlers.clear()
        signal.set_wakeup_fd(self._old_wakeup_fd)
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._wake_r = self._wake_w = -1

    def _find_tty(self) -> int | None:
        """The terminal init owns as foreground job, if any: the command will get it."""
        for fd in (0, 1, 2):
            try:
                if os.isatty(fd) and os.tcgetpgrp(fd) == os.getpgrp():
                    return fd
            except OSError:
                continue
        return None

    def _start(self) -> Process:
        self._tty = self._find_tty()
        preexec: Callable[[], None] | None = None
        if self._tty is not None:
            tty = self._tty

            def preexec() -> None:
                # In the child, already leading its own group: take the terminal.
                # SIGTTOU is blocked, else the kernel stops a background caller.
                signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTTOU})
                try:
                    os.tcsetpgrp(tty, os.getpgrp())
                finally:
                    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTTOU})

        return spawn(
            self.args,
            pass_fds=_inherited_fds(),
            new_process_group=True,
            track_tree=False,  # init finds descendants by parentage, no cookie needed
            pdeathsig=self.pdeathsig,
            preexec_fn=preexec,
        )

    # -- the loop ------------------------------------------------------------

    def run(self) -> int:
        """Start the command, serve it until it exits, clean up, return the status."""
        self._become_reaper()
        self._install_signals()
        try:
            self._proc = self._start()
            self._serve()
            self._end_descendants()
            self._to(InitState.DONE)
        finally:
            self._close_pins()
            self._restore_signals()
            self._give_back_tty()
            if self._proc is not None:
                self._proc.close()
        assert self.main_exit is not None
        status = self.main_exit.shell_status
        return 0 if status in self.remap_exit else status

    def _serve(self) -> None:
        signals = self._block_signals()
        while True:
            for sig in signals:
                if sig != signal.SIGCHLD:
                    self._forward(sig)
            self._reap()
            if self.main_exit is not None:
                return
            # No timeout: an idle init sleeps until a signal (SIGCHLD included).
            signals = self._wait_signals(None)

    def _pending_signals(self) -> list[int]:
        got = bytearray()
        while True:
            try:
                chunk = os.read(self._wake_r, 4096)
            except BlockingIOError:
                break
            if not chunk:
                break
            got += chunk
        return list(got)

    def _forward(self, sig: int) -> None:
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        if sig in _JOB_CONTROL_STOPS:
            self._stop_asked = True
        if self.pgroup:
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                pass
        else:
            proc.send_signal(sig)

    def _reap(self) -> bool:
        """Reap every zombie child; True while children remain."""
        # WUNTRACED tells us when the command stops (job control); PID 1 cannot
        # stop itself, so it does not ask.
        flags = os.WNOHANG | (0 if self.pid1 else os.WUNTRACED)
        main = -1 if self._proc is None or self.main_exit is not None else self._proc.pid
        waitpid = os.waitpid
        stopped = os.WIFSTOPPED
        # The hot loop of a burst: an orphan costs one waitpid and two tests
        # unless -v asks for its status.
        while True:
            try:
                pid, status = waitpid(-1, flags)
            except ChildProcessError:
                return False
            if pid == 0:
                return True
            if pid != main:
                if stopped(status):
                    continue
                self.orphans_reaped += 1
                if self.verbose:
                    self.log(f"reaped orphan: {ChildExit(pid, os.waitstatus_to_exitcode(status))}")
                continue
            if stopped(status):
                self._command_stopped()
                continue
            assert self._proc is not None
            self.main_exit = ChildExit(pid, os.waitstatus_to_exitcode(status))
            main = -1
            # We reaped it with waitpid(-1): tell its Process object.
            self._proc._set_reaped(self.main_exit.returncode)
            if self.verbose:
                self.log(f"command: {self.main_exit}")

    def _command_stopped(self) -> None:
        proc = self._proc
        assert proc is not None
        # Like an interactive shell: a stopped job is reported up (by stopping
        # ourselves) when we run a terminal's job, or when the stop came through
        # us.  A command stopped by someone else directly is their business:
        # init keeps reaping.
        if self._tty is None and not self._stop_asked:
            return
        self._stop_asked = False
        # The stop was reported once; the command may have been continued since.
        if self._proc_ours:
            try:
                info = _proc.read_stat(proc.pid)
            except OSError:  # no fd to read it with: cannot tell, so do not stop
                return
            if info is None or info.state not in ("T", "t"):
                return
        self._give_back_tty()
        os.kill(os.getpid(), signal.SIGSTOP)
        # Continued (the shell's `fg`/`bg` sent SIGCONT to our group).
        if self._tty is not None:
            _set_foreground(self._tty, proc.pid)
        try:
            os.killpg(proc.pid, signal.SIGCONT)
        except ProcessLookupError:
            pass

    def _give_back_tty(self) -> None:
        if self._tty is not None:
            _set_foreground(self._tty, os.getpgrp())

    # -- the end -------------------------------------------------------------

    def _end_descendants(self) -> None:
        if not self._reap():
            return
        self._to(InitState.ENDING)
        deadline = time.monotonic() + max(self.grace, 0.0)
        self._term_new()
        while self._reap():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            if any(sig in _HURRY for sig in self._wait_signals(remaining)):
                break
            self._term_new()
        else:
            return
        self._to(InitState.KILLING)
        if self.verbose:
            self.log(f"grace of {self.grace:g}s over: killing what is left")
        while self._reap():
            self._kill_all()
            self._wait_signals(_KILL_RESCAN)

    def _term_new(self) -> None:
        """SIGTERM each descendant not yet sent one (a second TERM can mean "abort")."""
        if not self._proc_ours:
            # Nothing to find descendants with.  PID 1: everyone in the
            # namespace is one (kill(-1) spares us); otherwise the command's
            # group.  Once.
            if not self._termed:
                self._termed[0] = (-1, 0)
                for sig in (signal.SIGTERM, signal.SIGCONT):
                    if self.pid1:
                        _kill_everyone(sig)
                    else:
                        self._signal_group(sig)
            return
        found = self._descendants_or_blind(signal.SIGTERM)
        for info in found.values():
            held = self._termed.get(info.pid)
            if held is not None and held[1] == info.starttime:
                continue
            if held is not None and held[0] >= 0:
                os.close(held[0])
            fd, by_pid = _pin_or_pid(info)
            if fd is None and not by_pid:
                continue  # gone meanwhile
            self._termed[info.pid] = (-1 if fd is None else fd, info.starttime)
            if self.verbose:
                self.log(f"sending SIGTERM to remaining descendant {info.pid}")
            if _sys.send_signal(info.pid, fd, signal.SIGTERM):
                # A stopped process would keep SIGTERM pending forever.
                _sys.send_signal(info.pid, fd, signal.SIGCONT)

    def _kill_all(self) -> None:
        if self.pid1:
            _kill_everyone(signal.SIGKILL)
            return
        if not self._proc_ours:
            self._signal_group(signal.SIGKILL)
            return
        found = self._descendants_or_blind(signal.SIGKILL)
        for info in found.values():
            fd, by_pid = _pin_or_pid(info)
            if fd is not None or by_pid:
                _sys.send_signal(info.pid, fd, signal.SIGKILL)
            if fd is not None:
                os.close(fd)

    def _descendants_or_blind(self, sig: int) -> dict[int, _proc.ProcStat]:
        """Our live descendants; none when /proc is unreadable, and ``sig`` went out blind."""
        try:
            return _descendants()
        except OSError:
            self._blind(sig)
            return {}

    def _blind(self, sig: int) -> None:
        """/proc cannot be read (EMFILE): ``sig`` (once) to whom we reach without it.

        The namespace for PID 1, else the command's group; the loop's next
        wake-up (a child's exit) scans again, and ``_reap`` knows when no
        child is left without reading /proc.
        """
        key = -sig  # beside the pids in _termed: "sent blind"
        if key in self._termed:
            return
        if sig != signal.SIGKILL:  # a KILL may go again: it reaches newcomers
            self._termed[key] = (-1, 0)
        for each in (sig, signal.SIGCONT):
            if self.pid1:
                _kill_everyone(each)
            else:
                self._signal_group(each)

    def _signal_group(self, sig: int) -> None:
        if self._proc is not None:
            try:
                os.killpg(self._proc.pid, sig)
            except ProcessLookupError:
                pass

    def _close_pins(self) -> None:
        for fd, _ in self._termed.values():
            if fd >= 0:
                os.close(fd)
        self._termed.clear()


def _wake_only(signum: int, frame: object) -> None:
    """The handler of every signal init handles: ``set_wakeup_fd`` does the waking."""


def _set_foreground(tty: int, pgrp: int) -> None:
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTTOU})
    try:
        os.tcsetpgrp(tty, pgrp)
    except OSError as exc:
        if exc.errno not in (errno.ENOTTY, errno.EPERM, errno.ESRCH, errno.EINVAL):
            raise
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTTOU})


def _inherited_fds() -> list[int]:
    """The fds (>= 3) init inherited: an init passes them on, as tini does.

    Socket activation (``LISTEN_FDS``) and fd-passing conventions must work
    through init.  Python opens its own fds non-inheritable (PEP 446), so the
    inheritable ones are exactly those we were given.
    """
    try:
        names = os.listdir("/proc/self/fd" if _sys.HAVE_PROC else "/dev/fd")
    except OSError:
        return []
    fds: list[int] = []
    for name in names:
        fd = int(name)
        if fd < 3:
            continue
        try:
            if os.get_inheritable(fd):
                fds.append(fd)
        except OSError:
            continue  # the directory's own fd, closed by now
    return sorted(fds)


def _pin_or_pid(info: _proc.ProcStat) -> tuple[int | None, bool]:
    """A pidfd for ``info`` (None if gone), and whether to signal it by pid instead.

    By pid where the kernel has no pidfds, or no fd is free for one (EMFILE):
    the scan has just seen its start time.
    """
    try:
        fd = _proc.pin(info)
    except OSError:
        return None, True
    return fd, fd is None and not _sys.HAVE_PIDFD


def _descendants() -> dict[int, _proc.ProcStat]:
    """Every live descendant of this process, by closure over parentage in /proc."""
    if not _sys.HAVE_PROC:
        return {}
    infos = _proc.live_processes()
    children: dict[int, list[int]] = {}
    for pid, info in infos.items():
        children.setdefault(info.ppid, []).append(pid)
    mine = set(children.get(os.getpid(), ()))
    return _tree.close_over_children({"": mine}, infos, children)[""]


def _proc_is_ours() -> bool:
    """True when /proc is mounted for our PID namespace (its ``self`` is us)."""
    if not _sys.HAVE_PROC:
        return False
    try:
        return os.readlink("/proc/self") == str(os.getpid())
    except OSError:
        return False


def _kill_everyone(sig: int) -> None:
    """As PID 1: every process of our namespace is a descendant; kill(-1) spares us."""
    try:
        os.kill(-1, sig)
    except ProcessLookupError:
        pass
