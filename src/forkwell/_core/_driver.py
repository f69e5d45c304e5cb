"""The run loop shared by ``forkwell.run()``, ``run_async()`` and ``forkwell timeout``.

One loop (:class:`Driver`) waits on everything at once: the child's pidfd, its
output pipes, its input pipe, the deadline, and, once termination has begun,
the pidfds of every descendant that was signalled.  Nothing polls and nothing
sleeps.  Kept free of heavy imports (no dataclasses): the CLI imports it.
"""

from __future__ import annotations

import enum
import os
import selectors
import signal
from collections.abc import Callable, Mapping

from . import _clock
from ._process import Process
from ._state import check

_CHUNK = 65536


class Capture:
    """Collects a stream, keeping at most ``limit`` bytes: the head and the tail."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.head = bytearray()
        self.tail = bytearray()
        self.omitted = 0
        self._head_limit = None if limit is None else limit - limit // 2
        self._tail_limit = 0 if limit is None else limit // 2

    def add(self, data: bytes) -> None:
        if self._head_limit is None:
            self.head += data
            return
        room = self._head_limit - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        if not data:
            return
        self.tail += data
        excess = len(self.tail) - self._tail_limit
        if excess > 0:
            del self.tail[:excess]
            self.omitted += excess

    def value(self) -> bytes:
        if not self.omitted:
            return bytes(self.head + self.tail)
        marker = f"\n[... forkwell: {self.omitted} bytes omitted ...]\n".encode()
        return bytes(self.head) + marker + bytes(self.tail)


class Phase(enum.Enum):
    RUNNING = "running"  # the child runs; waiting for it or the deadline
    TERMINATING = "terminating"  # stop signal sent; waiting for the tree to go, or the kill time
    DRAINING = "draining"  # the tree is gone; collecting what is left in the pipes
    DONE = "done"


# The one transition table of the run loop.
_TRANSITIONS: dict[Phase, frozenset[Phase]] = {
    Phase.RUNNING: frozenset({Phase.TERMINATING, Phase.DRAINING}),
    Phase.TERMINATING: frozenset({Phase.DRAINING}),
    Phase.DRAINING: frozenset({Phase.DONE}),
    Phase.DONE: frozenset(),
}


# Plain classes, not NamedTuples: creating a NamedTuple class costs ~0.15 ms of
# start-up each, and ``forkwell timeout`` imports this module.
class Policy:
    """How a run ends: its deadline, and what the deadline sets off."""

    __slots__ = ("grace", "kill_after_deadline", "leftover_grace", "reap_all", "stop_signal",
                 "timeout")  # fmt: skip

    def __init__(  # noqa: PLR0913 (one field each)
        self,
        timeout: float | None,
        grace: float,
        stop_signal: int,
        *,
        kill_after_deadline: bool = True,
        leftover_grace: float | None = None,
        reap_all: bool = False,
    ) -> None:
        self.timeout = timeout  # seconds from the spawn; None: no deadline
        self.grace = grace  # after the stop signal, how long until SIGKILL
        self.stop_signal = stop_signal
        # False is GNU timeout without -k: signal at the deadline, then wait for
        # the command itself however long it takes (its leftovers still get a grace).
        self.kill_after_deadline = kill_after_deadline
        # What the command leaves running when it exits gets this grace (None: ``grace``).
        self.leftover_grace = leftover_grace
        # A dedicated process (the CLI): reap every child, adopted orphans too.
        self.reap_all = reap_all


class Pumps:
    """The bytes a run feeds the child and collects from it."""

    __slots__ = ("captures", "input")

    def __init__(
        self, input: bytes | None = None, captures: Mapping[int, Capture] | None = None
    ) -> None:
        self.input = input
        self.captures = captures  # fd -> where its output goes


class Hooks:
    """How the caller takes part in the loop: a wake-up fd and two callbacks."""

    __slots__ = ("on_timeout", "on_wake", "wake_fd")

    def __init__(
        self,
        wake_fd: int | None = None,
        on_wake: Callable[[bytes], None] | None = None,
        on_timeout: Callable[[int], None] | None = None,
    ) -> None:
        self.wake_fd = wake_fd  # readable: call ``on_wake`` with what was read
        self.on_wake = on_wake
        # Each signal the deadline sends: the stop signal, then SIGKILL when the grace ends.
        self.on_timeout = on_timeout


class Driver:
    """Runs one spawned child to the end.  See the module docstring."""

    def __init__(
        self, proc: Process, policy: Policy, pumps: Pumps | None = None, hooks: Hooks | None = None
    ) -> None:
        pumps = pumps or Pumps()
        hooks = hooks or Hooks()
        self.proc = proc
        self.grace = policy.grace
        leftover = policy.leftover_grace
        self.leftover_grace = policy.grace if leftover is None else leftover
        self.stop_signal = policy.stop_signal
        self.kill_after_deadline = policy.kill_after_deadline
        self.deadline = None if policy.timeout is None else proc.started + policy.timeout
        self.kill_at: float | None = None
        self.phase = Phase.RUNNING
        self.timed_out = False
        self.killed = False
        self.reap_all = policy.reap_all
        self.on_wake = hooks.on_wake
        self.on_timeout = hooks.on_timeout
        self._input = memoryview(pumps.input) if pumps.input is not None else None
        self._captures = dict(pumps.captures or {})
        self.sel = selectors.DefaultSelector()
        self._member_fds: set[int] = set()
        self._exit_handled = False  # _child_exited ran (pidfd readable, or polled)
        self._register(hooks.wake_fd)

    def _register(self, wake_fd: int | None) -> None:
        proc = self.proc
        if proc.fileno() >= 0:
            self.sel.register(proc.fileno(), selectors.EVENT_READ, self._on_child)
        for fd in self._captures:
            os.set_blocking(fd, False)
            self.sel.register(fd, selectors.EVENT_READ, self._on_output)
        if self._input is not None and proc.stdin is not None:
            fd = proc.stdin.fileno()
            os.set_blocking(fd, False)
            self.sel.register(fd, selectors.EVENT_WRITE, self._write_input)
        if wake_fd is not None:
            self.sel.register(wake_fd, selectors.EVENT_READ, self._on_wake_fd)

    def expire(self) -> None:
        """Let the deadline pass now (``forkwell timeout`` got SIGALRM, as GNU treats it)."""
        if self.phase is Phase.RUNNING:
            self.deadline = _clock.monotonic()

    def _goto(self, phase: Phase) -> None:
        self.phase = check(_TRANSITIONS, self.phase, phase, "the run loop")

    # -- termination ---------------------------------------------------------

    def begin_termination(self, sig: int, grace: float | None, *, include_root: bool) -> None:
        """Send ``sig`` to the tree; SIGKILL whoever is left after ``grace`` (None: never)."""
        if self.phase is Phase.RUNNING:
            self._goto(Phase.TERMINATING)
        now = _clock.monotonic()
        self.kill_at = None if grace is None else now + grace
        tree = self.proc.tree
        if tree is None:
            self.proc.signal_tree(sig)
            return
        self._signal_members(sig, include_root=include_root, only_new=False)

    def _signal_members(self, sig: int, *, include_root: bool, only_new: bool) -> None:
        tree = self.proc.tree
        assert tree is not None
        members = tree.members(include_root=include_root and self.proc.returncode is None)
        tree.signal(sig, members, only_new=only_new)
        pinned = tree.pinned()
        for pid in members:
            held = pinned.get(pid)
            if pid == self.proc.pid or held is None or held[0] in self._member_fds:
                continue
            self._member_fds.add(held[0])
            self.sel.register(held[0], selectors.EVENT_READ, self._on_member)
        self._check_tree_gone()

    def _check_tree_gone(self) -> None:
        if self.phase is not Phase.TERMINATING or self.proc.returncode is None:
            return
        if self._member_fds:
            return
        tree = self.proc.tree
        if tree is not None:
            # All we signalled are gone: look again for any forked meanwhile.
            tree.reap_adopted()
            if tree.members(include_root=False):
                self._signal_members(self.stop_signal, include_root=False, only_new=True)
                return
        self._goto(Phase.DRAINING)

    def kill_everything(self) -> None:
        self.killed = True
        tree = self.proc.tree
        if self.proc.returncode is None:
            if tree is None:
                self.proc.signal_tree(signal.SIGKILL)
            else:
                self.proc.send_signal(signal.SIGKILL)
        if tree is not None:
            tree.kill_all()
        self._reap_child(block=True)
        if tree is not None:
            tree.kill_all()
        for fd in list(self._member_fds):
            self.sel.unregister(fd)
        self._member_fds.clear()
        if self.phase is Phase.TERMINATING:
            self._goto(Phase.DRAINING)

    # -- events --------------------------------------------------------------

    def _reap_child(self, block: bool = False) -> None:
        if self.proc.returncode is not None:
            return
        if self.reap_all:
            self._reap_any()
            if self.proc.returncode is None and block:
                self.proc.wait()
            return
        if block:
            self.proc.wait()
        else:
            self.proc.poll()

    def _reap_any(self) -> None:
        """A dedicated process (the CLI): reap every child, including adopted orphans."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.proc.pid:
                self.proc._set_reaped(os.waitstatus_to_exitcode(status))

    def _child_exited(self) -> None:
        if self._exit_handled:
            return
        self._exit_handled = True
        if self.proc.fileno() >= 0:
            self.sel.unregister(self.proc.fileno())
        self._reap_child(block=True)
        if self.phase is Phase.RUNNING:
            tree = self.proc.tree
            left = tree is not None and tree.may_have_descendants()
            if left and tree is not None and tree.members(include_root=False):
                self.begin_termination(self.stop_signal, self.leftover_grace, include_root=False)
            else:
                self._goto(Phase.DRAINING)
        elif self.phase is Phase.TERMINATING:
            if self.kill_at is None:
                # GNU semantics without -k: we waited for the command itself;
                # what it left behind still gets the leftover grace.
                self.kill_at = _clock.monotonic() + self.leftover_grace
            self._check_tree_gone()

    def _read(self, fd: int) -> bool:
        """Read what is there; False at EOF."""
        try:
            data = os.read(fd, _CHUNK)
        except BlockingIOError:
            return True
        except OSError:
            data = b""
        if not data:
            return False
        self._captures[fd].add(data)
        return True

    def _write_input(self, fd: int) -> None:
        assert self._input is not None
        try:
            n = os.write(fd, self._input[:_CHUNK])
        except BlockingIOError:
            return
        except (BrokenPipeError, OSError):
            n = len(self._input)
        self._input = self._input[n:]
        if not self._input:
            self.sel.unregister(fd)
            assert self.proc.stdin is not None
            try:
                self.proc.stdin.close()
            except OSError:
                pass

    def _timeout(self) -> float | None:
        now = _clock.monotonic()
        wait = None
        if self.phase is Phase.RUNNING and self.deadline is not None:
            wait = max(0.0, self.deadline - now)
        elif self.phase is Phase.TERMINATING and self.kill_at is not None:
            wait = max(0.0, self.kill_at - now)
        if self.phase in (Phase.RUNNING, Phase.TERMINATING) and self.proc.fileno() < 0:
            # No pidfd (Linux < 5.3, FORKWELL_NO_PIDFD=1): poll for the child and
            # its tree, also during a grace (else every stop waits it out).
            wait = 0.05 if wait is None else min(wait, 0.05)
        return wait

    def run(self) -> None:
        try:
            while self.phase in (Phase.RUNNING, Phase.TERMINATING):
                for key, _ in _clock.select(self.sel, self._timeout()):
                    key.data(key.fd)
                    if self.phase not in (Phase.RUNNING, Phase.TERMINATING):
                        break
                self._on_clock()
        except BaseException:
            # KeyboardInterrupt or a bug: the promise still holds.
            if self.proc.returncode is None or self.proc.tree is not None:
                self.kill_everything()
            raise
        finally:
            self._drain_and_close()

    def _on_child(self, fd: int) -> None:
        self._child_exited()

    def _on_member(self, fd: int) -> None:
        self.sel.unregister(fd)
        self._member_fds.discard(fd)
        self._check_tree_gone()

    def _on_output(self, fd: int) -> None:
        if not self._read(fd):
            self.sel.unregister(fd)

    def _on_wake_fd(self, fd: int) -> None:
        try:
            data = os.read(fd, 512)
        except BlockingIOError:
            data = b""
        if self.reap_all:
            self._reap_any()
            if self.proc.returncode is not None:
                self._child_exited()
        if self.on_wake is not None and data:
            self.on_wake(data)

    def _on_clock(self) -> None:
        now = _clock.monotonic()
        if self.proc.fileno() < 0 and self._poll_exit():
            return
        if self.phase is Phase.RUNNING and self.deadline is not None and now >= self.deadline:
            self.timed_out = True
            if self.on_timeout is not None:
                self.on_timeout(self.stop_signal)
            grace = self.grace if self.kill_after_deadline else None
            self.begin_termination(self.stop_signal, grace, include_root=True)
        elif self.phase is Phase.TERMINATING and self.kill_at is not None and now >= self.kill_at:
            if self.timed_out and self.on_timeout is not None:
                self.on_timeout(signal.SIGKILL)  # the grace after the deadline is over too
            self.kill_everything()

    def _poll_exit(self) -> bool:
        """No pidfd: the child's exit, and its tree's, are seen only by polling here.

        The same handling as a readable pidfd (leftovers get the stop signal
        and the grace), not a shortcut to DRAINING that would leave them.
        """
        if self.phase not in (Phase.RUNNING, Phase.TERMINATING):
            return False
        if not self._exit_handled:
            self._reap_child()
            if self.proc.returncode is None:
                return False
            self._child_exited()
        elif self.phase is Phase.TERMINATING:
            self._check_tree_gone()  # members have no pidfd to wake us either
        return self.phase not in (Phase.RUNNING, Phase.TERMINATING)

    def _drain_and_close(self) -> None:
        # Only what is already buffered: a writer that escaped the tree must
        # not make us wait (the fds are non-blocking).
        for fd, cap in self._captures.items():
            if fd not in self.sel.get_map():
                continue
            while True:
                try:
                    data = os.read(fd, _CHUNK)
                except OSError:
                    break
                if not data:
                    break
                cap.add(data)
        if self.proc.tree is not None:
            self.proc.tree.reap_adopted()
        if self.reap_all:
            self._reap_any()
        self.sel.close()
        if self.phase is Phase.DRAINING:
            self._goto(Phase.DONE)
