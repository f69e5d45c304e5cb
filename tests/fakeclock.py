"""A fake monotonic clock for tests of grace periods, backoff and timeouts.

trio's ``MockClock`` is the model: time is the real ``CLOCK_MONOTONIC`` plus
an offset that only the test moves, with :meth:`MockClock.jump`.  The code
under test reads and waits through :mod:`forkwell._core._clock`; while this
clock is installed, a wait also watches a wake-up pipe, so a jump ends every
wait at once and the waiter sees its deadline passed.  A test of a 10 s
grace therefore takes milliseconds, and is deterministic: nothing jumps by
itself, the test jumps when its handshake says the moment has come.

``MockClock.event_loop()`` is an asyncio loop on the same clock, for the
supervisor: its ``time()`` (which drives ``call_later`` and every
``loop.time()`` deadline) is the fake time, and a jump from another thread
wakes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import selectors
import threading
import time
from collections.abc import Iterator
from select import POLLIN
from typing import Any

from forkwell._core import _clock


class MockClock(_clock.Clock):
    def __init__(self) -> None:
        self.offset = 0.0
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._lock = threading.Lock()
        self._loops: list[asyncio.AbstractEventLoop] = []

    # -- the clock --------------------------------------------------------

    def monotonic(self) -> float:
        return time.monotonic() + self.offset

    def jump(self, seconds: float) -> None:
        """Move time ``seconds`` forward, and wake every wait so it sees it."""
        assert seconds >= 0, "a monotonic clock never goes back"
        with self._lock:
            self.offset += seconds
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"j")
        for loop in self._loops:
            if not loop.is_closed():
                loop.call_soon_threadsafe(lambda: None)

    # -- waits that a jump ends -------------------------------------------

    def _drain(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_r, 4096):
                pass

    def poll(self, poller: Any, timeout: float | None) -> list[tuple[int, int]]:
        poller.register(self._wake_r, POLLIN)
        try:
            got = super().poll(poller, timeout)
        finally:
            poller.unregister(self._wake_r)
        if any(fd == self._wake_r for fd, _ in got):
            self._drain()
        return [(fd, ev) for fd, ev in got if fd != self._wake_r]

    def select(
        self, selector: selectors.BaseSelector, timeout: float | None
    ) -> list[tuple[selectors.SelectorKey, int]]:
        selector.register(self._wake_r, selectors.EVENT_READ, None)
        try:
            got = selector.select(timeout)
        finally:
            selector.unregister(self._wake_r)
        if any(key.fd == self._wake_r for key, _ in got):
            self._drain()
        return [(key, ev) for key, ev in got if key.fd != self._wake_r]

    # -- asyncio ------------------------------------------------------------

    def event_loop(self) -> asyncio.AbstractEventLoop:
        """A new event loop whose time is this clock's."""
        clock = self

        class _Loop(asyncio.SelectorEventLoop):
            def time(self) -> float:
                return clock.monotonic()

        loop = _Loop()
        self._loops.append(loop)
        return loop

    def close(self) -> None:
        os.close(self._wake_r)
        os.close(self._wake_w)


@contextlib.contextmanager
def installed() -> Iterator[MockClock]:
    """A fake clock for the whole process while the block runs."""
    clock = MockClock()
    old = _clock.use(clock)
    try:
        yield clock
    finally:
        _clock.use(old)
        clock.close()
