"""A zombie-free way for a Python program to fork: watch *specific* children.

The textbook SIGCHLD handler calling ``waitpid(-1)`` steals the exit status of
children that ``subprocess`` started, and does work in signal context.  The
:class:`Reaper` instead holds a pidfd per child it was told about, all in one
epoll set: its :meth:`~Reaper.fileno` becomes readable when any of them exits,
so it fits any selector or event loop, and it reaps only its own children
(``waitid(P_PIDFD)``), never one started by someone else.  No signal handler.

Two ways to use it:

* :func:`fork` -- the one-liner.  ``forkwell.fork()`` is ``os.fork()`` whose
  child is reaped as soon as it exits by one process-wide background thread
  (blocked in ``poll``: no periodic wake-up) and by the next ``fork()``
  call, whichever comes first; the optional ``on_exit`` callback always runs
  *in that thread*, never in signal context.
* :class:`Reaper` -- explicit, for programs with their own loop: ``fork()`` or
  ``watch(pid)``, then ``reap()`` when ``fileno()`` is readable, or block in
  ``wait()``, iterate ``exits()``, or ``await wait_async()``.

Both work the same in an ordinary process, a subreaper or PID 1; neither
reaps orphans a subreaper/PID 1 adopts (that is ``forkwell init``'s job: only
a process that runs no ``subprocess`` children can safely ``waitpid(-1)``).

Without pidfds (macOS, BSD, Linux < 5.4) it falls back to a SIGCHLD wake-up
pipe plus ``waitpid(pid, WNOHANG)`` on each watched pid: still only its own.
"""

from __future__ import annotations

import atexit
import os
import select
import signal
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator
from typing import NamedTuple

from .._exceptions import StateError
from . import _clock, _sys
from ._status import describe_exit, shell_status, waitid_returncode

ExitCallback = Callable[["ChildExit"], object]


class ChildExit(NamedTuple):
    """How a child ended.  ``returncode`` is ``subprocess``-style (-N for signal N).

    Immutable and hashable; compares equal to ``ChildExit(pid, returncode)``.
    (A NamedTuple, not a dataclass: ``dataclasses`` costs ~4 ms at start-up,
    and ``forkwell init`` starts with every container.)
    """

    pid: int
    returncode: int

    @property
    def exit_code(self) -> int | None:
        """The exit status (0-255), or None if a signal ended the child."""
        return self.returncode if self.returncode >= 0 else None

    @property
    def signal(self) -> int | None:
        """The number of the signal that ended the child, or None if it exited."""
        return -self.returncode if self.returncode < 0 else None

    @property
    def shell_status(self) -> int:
        """The status a shell would report: the exit code, or 128+N for signal N."""
        return shell_status(self.returncode)

    def __str__(self) -> str:
        return f"pid {self.pid} {describe_exit(self.returncode)}"


class Reaper:
    """Watches children by pid and reaps each one as it exits.

    >>> reaper = Reaper()
    >>> pid = reaper.fork()          # like os.fork(); the parent now watches pid
    >>> for exit in reaper.wait():   # or select on reaper.fileno()
    ...     print(exit.pid, exit.returncode)

    ``on_exit`` (and any per-child callback given to :meth:`watch`/:meth:`fork`)
    is called with each :class:`ChildExit` by whichever method reaped it
    (``reap``, ``wait``, ``exits``, ``wait_async``), in the caller's thread.
    The methods are thread-safe; the object must not be used by a child after a
    plain ``os.fork()`` (a child made by :meth:`fork` gets a clean one).
    """

    def __init__(self, on_exit: ExitCallback | None = None) -> None:
        self._on_exit = on_exit
        self._lock = threading.Lock()
        self._pidfds: dict[int, int] = {}  # pidfd -> pid
        self._pids: set[int] = set()
        self._callbacks: dict[int, ExitCallback] = {}
        self._epoll: select.epoll | None = None
        self._wake_r = self._wake_w = -1
        self._closed = False
        if _sys.HAVE_PIDFD:
            self._epoll = select.epoll()
        else:
            self._wake_r, self._wake_w = os.pipe()
            os.set_blocking(self._wake_r, False)
            os.set_blocking(self._wake_w, False)
            _install_sigchld_wakeup(self._wake_w)

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"watching {len(self._pids)}"
        return f"<forkwell.Reaper {state}>"

    def fileno(self) -> int:
        """Readable when at least one watched child has exited."""
        return self._epoll.fileno() if self._epoll is not None else self._wake_r

    def __len__(self) -> int:
        return len(self._pids)

    def pids(self) -> set[int]:
        """The pids watched and not yet reaped."""
        with self._lock:
            return set(self._pids)

    def watch(self, pid: int, on_exit: ExitCallback | None = None) -> None:
        """Start watching ``pid``, a child of this process not yet reaped.

        ``on_exit`` is called with its :class:`ChildExit` once it is reaped.
        Raises ``ChildProcessError`` if ``pid`` is not such a child.
        """
        if self._closed:
            raise StateError("this Reaper is closed; create a new one to watch children")
        with self._lock:
            if self._epoll is not None:
                fd = _sys.pidfd_open(pid)
                if fd is None:
                    raise ChildProcessError(f"pid {pid} is not a live child of this process")
                try:
                    # A pidfd opens for any process: peek (WNOWAIT) to make
                    # sure this one is ours to reap.
                    os.waitid(os.P_PIDFD, fd, os.WEXITED | os.WNOHANG | os.WNOWAIT)
                except ChildProcessError:
                    os.close(fd)
                    raise ChildProcessError(f"pid {pid} is not a child of this process") from None
                self._pidfds[fd] = pid
                self._epoll.register(fd, select.EPOLLIN)
            self._pids.add(pid)
            if on_exit is not None:
                self._callbacks[pid] = on_exit

    def fork(self, on_exit: ExitCallback | None = None) -> int:
        """``os.fork()``; the parent watches the child.  Returns 0 in the child."""
        pid = os.fork()
        if pid == 0:
            self._forget_in_child()
            return 0
        self.watch(pid, on_exit)
        return pid

    def _forget_in_child(self) -> None:
        # The child's copy must not reap its siblings (it cannot anyway) nor
        # keep the parent's fds open.  The lock may have been held by another
        # thread of the parent at fork time: replace it.
        self._lock = threading.Lock()
        self._forget_all()
        if self._epoll is not None:
            self._epoll = select.epoll()

    def _forget_all(self) -> None:
        """Close every pidfd and the epoll set; watch nothing any more."""
        for fd in self._pidfds:
            os.close(fd)
        self._pidfds.clear()
        self._pids.clear()
        self._callbacks.clear()
        if self._epoll is not None:
            self._epoll.close()

    def reap(self) -> list[ChildExit]:
        """Reap every watched child that has exited; never blocks."""
        collected = self._collect()
        self._dispatch(collected)
        return [exit_ for exit_, _ in collected]

    def _collect(self) -> list[tuple[ChildExit, ExitCallback | None]]:
        """Reap what has exited; return each exit with its per-child callback."""
        with self._lock:
            exits = self._reap_locked()
            return [(e, self._callbacks.pop(e.pid, None)) for e in exits]

    def _dispatch(self, collected: list[tuple[ChildExit, ExitCallback | None]]) -> None:
        # Callbacks run without the lock, so they may fork() or watch() again.
        # One that raises must not cost the others their exits: the first
        # error is raised once every callback has run.
        error: BaseException | None = None
        for exit_, callback in collected:
            for call in (callback, self._on_exit):
                if call is None:
                    continue
                try:
                    call(exit_)
                except Exception as exc:
                    error = error or exc
        if error is not None:
            raise error

    def _reap_locked(self) -> list[ChildExit]:
        exits: list[ChildExit] = []
        if self._epoll is not None:
            if self._epoll.closed:
                return exits
            for fd, _ in self._epoll.poll(0):
                pid = self._pidfds.pop(fd)
                self._epoll.unregister(fd)
                try:
                    result = os.waitid(os.P_PIDFD, fd, os.WEXITED)
                except ChildProcessError:
                    result = None
                os.close(fd)
                self._pids.discard(pid)
                if result is not None:
                    exits.append(ChildExit(pid, waitid_returncode(result)))
            return exits
        if self._wake_r < 0:
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
                exits.append(ChildExit(pid, os.waitstatus_to_exitcode(status)))
        return exits

    def wait(self, timeout: float | None = None) -> list[ChildExit]:
        """Block until at least one watched child exits (or ``timeout``), reap, return.

        Returns ``[]`` at once when nothing is watched, and after ``timeout``.
        """
        deadline = None if timeout is None else _clock.monotonic() + timeout
        while True:
            exits = self.reap()
            if exits or not self._pids:
                return exits
            remaining = None if deadline is None else max(0.0, deadline - _clock.monotonic())
            if remaining == 0.0:
                return []
            _wait_readable(self.fileno(), remaining)

    def exits(self, timeout: float | None = None) -> Iterator[ChildExit]:
        """Yield each exit as it happens, until no watched child is left.

        ``timeout`` bounds the whole iteration: past it, the iterator stops even
        if children are still running (they stay watched).
        """
        deadline = None if timeout is None else _clock.monotonic() + timeout
        while self._pids:
            remaining = None if deadline is None else deadline - _clock.monotonic()
            if remaining is not None and remaining <= 0:
                return
            yield from self.wait(remaining)

    async def wait_async(self) -> list[ChildExit]:
        """Like :meth:`wait` for asyncio: waits on :meth:`fileno` with ``add_reader``."""
        import asyncio

        loop = asyncio.get_running_loop()
        while True:
            exits = self.reap()
            if exits or not self._pids:
                return exits
            ready: asyncio.Future[None] = loop.create_future()

            def wake(fut: asyncio.Future[None] = ready) -> None:
                if not fut.done():
                    fut.set_result(None)

            fd = self.fileno()
            loop.add_reader(fd, wake)
            try:
                await ready
            finally:
                loop.remove_reader(fd)

    def close(self) -> None:
        """Release the pidfds.  Children still running are no longer watched."""
        with self._lock:
            self._closed = True
            self._forget_all()
            if self._wake_r >= 0:
                os.close(self._wake_r)
                os.close(self._wake_w)
                self._wake_r = self._wake_w = -1

    def __enter__(self) -> Reaper:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _wait_readable(fd: int, timeout: float | None) -> None:
    # poll(), not select(): in a busy server this fd may be above FD_SETSIZE.
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    _clock.poll(poller, timeout)


def _install_sigchld_wakeup(fd: int) -> None:
    # Fallback only: the handler writes one byte and returns (no work in signal context).
    def handler(signum: int, frame: object) -> None:
        try:
            os.write(fd, b"\0")
        except OSError:
            pass

    signal.signal(signal.SIGCHLD, handler)


# -- the one-liner: forkwell.fork() -------------------------------------------


class _BackgroundReaper:
    """One :class:`Reaper` drained by a daemon thread blocked in ``poll``.

    :func:`fork` also collects the children that have exited each time it is
    called, so a program forking in a tight loop (holding the GIL the thread
    needs) still has at most the children of one fork's time as zombies.  It
    hands those exits to the thread, which runs every callback: callbacks
    always run in the reaper thread, never in the caller's nor in a signal
    handler.  The thread holds no lock while it sleeps, and
    ``os.register_at_fork`` makes a forked child start without it.
    """

    def __init__(self) -> None:
        self.reaper = Reaper()
        self._handoff: deque[tuple[ChildExit, ExitCallback | None]] = deque()
        self._stop_r, self._stop_w = os.pipe()
        self._note_r, self._note_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.thread = threading.Thread(target=self._run, name="forkwell-reaper", daemon=True)
        self.thread.start()

    def collect_now(self) -> None:
        """Reap what has exited, in the caller's thread; the callbacks go to the thread."""
        collected = self.reaper._collect()
        if collected:
            self._handoff.extend(collected)
            try:
                os.write(self._note_w, b"x")
            except BlockingIOError:
                pass  # the thread has a wake-up pending already

    def _run(self) -> None:
        poller = select.poll()  # not select(): a server's fds may pass FD_SETSIZE
        for fd in (self.reaper.fileno(), self._stop_r, self._note_r):
            poller.register(fd, select.POLLIN)
        while True:
            ready = {fd for fd, _ in poller.poll()}
            if self._note_r in ready:
                try:
                    os.read(self._note_r, 4096)
                except BlockingIOError:
                    pass
            self._deliver()
            if self._stop_r in ready:
                # Asked to stop (at exit): what had exited by then was delivered just above.
                return

    def _deliver(self) -> None:
        # Those fork() collected first: they exited before the others.
        collected = []
        while self._handoff:
            collected.append(self._handoff.popleft())
        collected += self.reaper._collect()
        try:
            self.reaper._dispatch(collected)
        except Exception:
            # A failing callback must not stop the reaping of the others.
            sys.excepthook(*sys.exc_info())

    def close_fds(self) -> None:
        for fd in (self._stop_r, self._stop_w, self._note_r, self._note_w):
            os.close(fd)

    def stop(self) -> None:
        os.write(self._stop_w, b"x")
        self.thread.join()
        self.close_fds()
        self.reaper.close()


_background: _BackgroundReaper | None = None
_background_lock = threading.Lock()


_at_fork_registered = False


def _background_reaper() -> _BackgroundReaper:
    global _background, _at_fork_registered
    with _background_lock:
        if _background is None:
            _background = _BackgroundReaper()
            if not _at_fork_registered:
                os.register_at_fork(after_in_child=_forget_background_in_child)
                # The thread is a daemon (a program must not hang at exit for a
                # child that runs on), so without this the exits it had not yet
                # delivered when the interpreter ends would be lost silently.
                atexit.register(_stop_background)
                _at_fork_registered = True
        return _background


def _forget_background_in_child() -> None:
    # The thread did not survive the fork; the child's copy of the Reaper holds
    # the parent's pidfds.  Drop both: the child starts a fresh one if it forks.
    global _background, _background_lock
    old = _background
    _background = None
    _background_lock = threading.Lock()
    if old is not None:
        old.reaper._forget_in_child()
        old.reaper.close()
        old.close_fds()


def fork(on_exit: ExitCallback | None = None) -> int:
    """``os.fork()`` whose child is reaped as soon as it exits: no zombies, no work.

    Returns 0 in the child and the child's pid in the parent, like ``os.fork()``.
    A process-wide background thread reaps the child (only children forked by
    this function: ``subprocess`` keeps its own exit statuses) and then calls
    ``on_exit(ChildExit)`` *from that thread*, never from a signal handler.

    >>> import os, forkwell
    >>> pid = forkwell.fork(on_exit=lambda e: print(e))
    >>> if pid == 0:
    ...     os._exit(3)          # the parent later prints "pid N exited with status 3"
    """
    background = _background_reaper()
    background.collect_now()
    reaper = background.reaper
    # Fork under the reaper's lock: the child must not inherit it held.
    with reaper._lock:
        pid = os.fork()
    if pid == 0:
        return 0  # the at-fork hook has already given the child a clean state
    reaper.watch(pid, on_exit)
    return pid


def background_pids() -> set[int]:
    """Children forked by :func:`fork` and not yet reaped (mainly for tests)."""
    return set() if _background is None else _background.reaper.pids()


def _stop_background() -> None:
    """Deliver every exit reaped so far, then stop the thread (at exit, and in tests).

    A child still running is not waited for: it runs on (reparented to init or
    the nearest subreaper) and its ``on_exit`` is never called.
    """
    global _background
    with _background_lock:
        old, _background = _background, None
    if old is not None:
        old.stop()
