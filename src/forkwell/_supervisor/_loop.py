"""The loop the supervisor's parts register their fds and timers with, as a type.

Spawning an instance and handling its exit ask a loop for readers, timers
and the time only (the loop's clock: a test's fake clock moves it).
asyncio's loop offers them, and so does the pre-loop that stands in for it
while ``forkwell up`` spawns its first programs before asyncio is imported
(:mod:`forkwell._supervisor._preloop`): both are a :class:`Loop`.  Futures and
tasks need asyncio's loop itself, and code that makes them asks for that one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    # Only for the type checker: defining Protocols costs start-up time, and
    # ``forkwell up`` imports this before it spawns its first program.
    import asyncio
    from collections.abc import Callable
    from typing import Any, Protocol

    class Handle(Protocol):
        """A scheduled callback that can be called off (``asyncio.TimerHandle`` is one)."""

        def cancel(self) -> None: ...

    class Loop(Protocol):
        """Readers, timers and the time: the part of an event loop a spawn and an exit use."""

        def time(self) -> float: ...
        def add_reader(self, fd: int, callback: Callable[..., object], *args: Any) -> None: ...
        def remove_reader(self, fd: int) -> bool: ...
        def call_soon(self, callback: Callable[..., object], *args: Any) -> Handle: ...
        def call_later(
            self, delay: float, callback: Callable[..., object], *args: Any
        ) -> Handle: ...


def resolve(fut: asyncio.Future[None]) -> None:
    """Wake whoever awaits ``fut``, unless it is done already (a timer and an event raced)."""
    if not fut.done():
        fut.set_result(None)
