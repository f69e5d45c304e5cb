"""Time, read and waited for through one seam, so that tests can replace it.

Every deadline in the core (the run loop's timeout and grace, ending a tree,
waiting for a pid to go, a reaper's ``wait(timeout)``) reads the time with
:func:`monotonic` and waits with :func:`poll` or :func:`select`.  By default
that is the real ``CLOCK_MONOTONIC`` and a real wait.  A test that must see
a ten-second grace period run out installs a fake clock with :func:`use`
(``tests/fakeclock.py``, after trio's ``MockClock``): its time is real time
plus an offset the test advances with ``jump()``, and its waits return at
once when it jumps, so the code under test sees the deadline pass without
anyone waiting ten seconds.  The supervisor's asyncio loop gets the same by
a loop whose ``time()`` is the fake clock's.

Only monotonic time is used anywhere in forkwell: a change of the wall clock
never moves a deadline.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the control client imports this module: it needs neither
    import select as _select
    import selectors


#: The longest single wait (poll(2) and epoll_wait(2) take an int of milliseconds:
#: about 24.8 days).  A caller with a longer deadline simply waits again, so
#: ``forkwell timeout 1e300 ...`` means "practically forever", as in GNU timeout.
MAX_WAIT = (2**31 - 1) // 1000


class Clock:
    """Real time: ``CLOCK_MONOTONIC``, and waits that really wait."""

    def monotonic(self) -> float:
        return time.monotonic()

    def poll(self, poller: _select.poll, timeout: float | None) -> list[tuple[int, int]]:
        """``poller.poll`` for ``timeout`` seconds (None: no limit)."""
        if timeout is None:
            return poller.poll(None)
        return poller.poll(max(0, math.ceil(min(timeout, MAX_WAIT) * 1000)))

    def select(
        self, selector: selectors.BaseSelector, timeout: float | None
    ) -> list[tuple[selectors.SelectorKey, int]]:
        """``selector.select`` for ``timeout`` seconds (None: no limit)."""
        return selector.select(None if timeout is None else min(timeout, MAX_WAIT))


_clock = Clock()


def monotonic() -> float:
    """Now, in seconds, on the clock in use."""
    return _clock.monotonic()


def poll(poller: _select.poll, timeout: float | None) -> list[tuple[int, int]]:
    """Wait on ``poller`` for at most ``timeout`` seconds of the clock in use."""
    return _clock.poll(poller, timeout)


def select(
    selector: selectors.BaseSelector, timeout: float | None
) -> list[tuple[selectors.SelectorKey, int]]:
    """Wait on ``selector`` for at most ``timeout`` seconds of the clock in use."""
    return _clock.select(selector, timeout)


def use(clock: Clock) -> Clock:
    """Install ``clock`` for the whole process; return the one it replaces."""
    global _clock
    old, _clock = _clock, clock
    return old


def current() -> Any:
    """The clock in use (a fake one in tests)."""
    return _clock
