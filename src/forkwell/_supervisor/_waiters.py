"""Futures that resolve when a value (an instance's state, its exit) meets a test."""

from __future__ import annotations

from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable

T = TypeVar("T")


class Waiters(Generic[T]):
    """Who waits for what: :meth:`notify` resolves each future whose test the value passes."""

    def __init__(self) -> None:
        self._waiting: list[tuple[Callable[[T], bool], asyncio.Future[None]]] = []

    def add(
        self, loop: asyncio.AbstractEventLoop, test: Callable[[T], bool]
    ) -> asyncio.Future[None]:
        """A future resolved by the first :meth:`notify` whose value passes ``test``."""
        fut: asyncio.Future[None] = loop.create_future()
        self._waiting.append((test, fut))
        return fut

    def notify(self, value: T) -> None:
        # Cancelled futures (a timed-out or abandoned wait) are dropped here too.
        for test, fut in self._waiting:
            if not fut.done() and test(value):
                fut.set_result(None)
        self._waiting = [(t, f) for t, f in self._waiting if not f.done()]
