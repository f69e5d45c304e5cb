"""Before the event loop: what lets ``forkwell up`` spawn programs before importing asyncio.

:meth:`Supervisor.prestart` starts the autostart programs that need nothing
from a loop (no dependencies, ``ready = "exec"``) about 12 ms sooner than the
loop could.  Spawning one asks a loop for only a few things: watch an fd,
stop watching one, a callback soon (forgetting a batch's command lookups)
and, after a failed start, a backoff timer.  :class:`PreLoop` records them
and replays them on the real loop once ``run()`` has one; :class:`Loops`
says which of the two the supervisor's parts use.  Until ``run()`` installs
the loop's signal handlers, :class:`EarlySignals` only records a stop or
reload request: programs are running by then, and SIGTERM's default action
would orphan them.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncio

    from ._loop import Loop

_EARLY_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class _PreTimer:
    """A timer asked for before the loop ran; armed on the real loop by ``replay``."""

    def __init__(self, when: float, callback: Callable[..., object], args: tuple[Any, ...]):
        self.when = when
        self.callback = callback
        self.args = args
        self.cancelled = False
        self.handle: asyncio.TimerHandle | None = None

    def cancel(self) -> None:
        self.cancelled = True
        if self.handle is not None:
            self.handle.cancel()

    def arm(self, loop: asyncio.AbstractEventLoop) -> None:
        if not self.cancelled:
            delay = max(0.0, self.when - time.monotonic())
            self.handle = loop.call_later(delay, self.callback, *self.args)


class PreLoop:
    """A :class:`~forkwell._supervisor._loop.Loop` that records, for the real loop to replay.

    It has nothing but a Loop's methods: anything else asked of it would be
    a bug on the prestart path, and fails loudly (AttributeError).
    """

    def __init__(self) -> None:
        self.readers: dict[int, tuple[Callable[..., object], tuple[Any, ...]]] = {}
        self.timers: list[_PreTimer] = []

    def add_reader(self, fd: int, callback: Callable[..., object], *args: Any) -> None:
        self.readers[fd] = (callback, args)

    def remove_reader(self, fd: int) -> bool:
        return self.readers.pop(fd, None) is not None

    def time(self) -> float:
        """The clock of asyncio's loop, which replays these timers."""
        return time.monotonic()

    def call_soon(self, callback: Callable[..., object], *args: Any) -> _PreTimer:
        return self.call_later(0.0, callback, *args)

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> _PreTimer:
        timer = _PreTimer(self.time() + delay, callback, args)
        self.timers.append(timer)
        return timer

    def replay(self, loop: asyncio.AbstractEventLoop) -> None:
        for fd, (callback, args) in self.readers.items():
            loop.add_reader(fd, callback, *args)
        for timer in self.timers:
            timer.arm(loop)
        self.readers.clear()
        self.timers.clear()


class Loops:
    """The loop the supervisor's parts use: the pre-loop during prestart, then asyncio's.

    It also holds the background tasks (asyncio keeps only weak references).
    """

    def __init__(self) -> None:
        self._pre: PreLoop | None = None
        self._aio: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def taken(self) -> bool:
        """prestart() or run() has chosen a loop already."""
        return self._pre is not None or self._aio is not None

    @property
    def loop(self) -> Loop:
        """Readers and timers: the pre-loop until run() takes over, then asyncio's loop."""
        return self._pre if self._pre is not None else self.aio

    @property
    def aio(self) -> asyncio.AbstractEventLoop:
        """asyncio's running loop, for futures and tasks."""
        if self._aio is None:
            import asyncio

            self._aio = asyncio.get_running_loop()
        return self._aio

    def background(
        self, coro: Coroutine[Any, Any, Any], failed: Callable[[BaseException], None]
    ) -> None:
        """Run ``coro`` as a task kept until it ends; ``failed`` hears of its exception."""

        def done(task: asyncio.Task[Any]) -> None:
            self._tasks.discard(task)
            exc = None if task.cancelled() else task.exception()
            if exc is not None:
                failed(exc)

        task = self.aio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(done)

    def use_preloop(self) -> None:
        self._pre = PreLoop()

    def drop_preloop(self) -> None:
        """A refused prestart: as if it had never been called."""
        self._pre = None

    def take_over(self) -> asyncio.AbstractEventLoop:
        """run(): asyncio's loop from now on, watching what the pre-loop recorded."""
        pre, self._pre = self._pre, None
        loop = self.aio
        if pre is not None:
            pre.replay(loop)
        return loop


class EarlySignals:
    """SIGTERM, SIGINT and SIGHUP recorded (a handler does no work) until the loop handles them."""

    def __init__(self) -> None:
        self.received: list[int] = []
        self._saved: dict[int, Any] = {}

    def install(self) -> None:
        self._saved = {sig: signal.getsignal(sig) for sig in _EARLY_SIGNALS}
        for sig in _EARLY_SIGNALS:
            signal.signal(sig, self._record)

    def restore(self) -> None:
        for sig, handler in self._saved.items():
            signal.signal(sig, handler)

    def _record(self, signum: int, frame: object) -> None:
        self.received.append(signum)
