"""Signals to the supervisor, never lost in a storm of SIGCHLD.

asyncio's ``add_signal_handler`` carries each signal's *number* through its
wake-up socket.  Programs that exit at once and are restarted at once send a
storm of SIGCHLD that fills that socket, and a SIGTERM written into a full
socket is dropped: the supervisor would then ignore the operator's stop.

Here each signal's Python-level handler only records the signal in a set
(Python's own per-signal flag guarantees the handler runs, full socket or
not) and schedules one dispatch on the loop; a wake-up pipe whose bytes mean
nothing wakes ``epoll_wait``, so a full pipe loses nothing either.  The
dispatch, in the loop, does the work.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncio


class SignalRelay:
    """Runs ``handlers[sig]()`` in the loop for each signal received (coalesced)."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, handlers: Mapping[int, Callable[[], None]]
    ) -> None:
        self._loop = loop
        self._handlers = dict(handlers)
        self._tripped: set[int] = set()
        self._scheduled = False
        self._saved: dict[int, Any] = {}
        self._old_wakeup = -1
        self._pipe = (-1, -1)

    def install(self) -> None:
        r, w = self._pipe = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._loop.add_reader(r, self._drain)
        self._old_wakeup = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
        for sig in self._handlers:
            self._saved[sig] = signal.signal(sig, self._on_signal)
            signal.siginterrupt(sig, False)  # SA_RESTART, as asyncio sets it

    def uninstall(self) -> None:
        for sig, old in self._saved.items():
            signal.signal(sig, old)
        self._saved.clear()
        signal.set_wakeup_fd(self._old_wakeup)
        r, w = self._pipe
        if r >= 0:
            self._loop.remove_reader(r)
            os.close(r)
            os.close(w)
        self._pipe = (-1, -1)

    def _on_signal(self, signum: int, frame: object) -> None:
        # Signal context: record and wake, nothing else.
        self._tripped.add(signum)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon_threadsafe(self._dispatch)

    def _drain(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._pipe[0], 4096):
                pass

    def _dispatch(self) -> None:
        self._scheduled = False  # a signal from now on schedules another dispatch
        for sig, handler in self._handlers.items():
            if sig in self._tripped:
                self._tripped.discard(sig)
                handler()
