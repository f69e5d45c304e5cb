"""The supervisor's event log: every transition and note, said once for every reader.

A line goes to ``forkwell.log`` (with a timestamp), to the console when
``forkwell up`` runs in the foreground, and transitions also into
:attr:`EventLog.events`, the last 1,000 kept for the Python API and tests.

Listeners (the web endpoint's live views) are told of each transition and
each chunk of program output as it happens: a push, so nothing polls.  A
listener must be quick and must not raise: it runs inside the instance's
state change.
"""

from __future__ import annotations

import collections
import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from ._logs import Console, LogFile


class Event(NamedTuple):
    """One state transition, as logged."""

    time: float
    instance: str
    old: str
    new: str
    why: str


class EventLog:
    """Writes the supervisor's events to its log file and its console."""

    def __init__(self, console: Console | None) -> None:
        self.console = console
        self.events: collections.deque[Event] = collections.deque(maxlen=1000)
        self._file: LogFile | None = None
        self._stamp = (0, "")
        self.listeners: list[Callable[[Event], None]] = []
        self.output_listeners: list[Callable[[str, str, bytes], None]] = []

    def open(self, path: Path) -> None:
        self._file = LogFile(path, 10 << 20, 3)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def transition(self, instance: str, old: str, new: str, why: str) -> None:
        event = Event(time.time(), instance, old, new, why)
        self.events.append(event)
        self.note(f"{instance} {old} -> {new}" + (f" ({why})" if why else ""))
        for listener in self.listeners:
            listener(event)

    def output(self, instance: str, stream: str, data: bytes, colour: int) -> None:
        """A chunk of an instance's output: to the console, and to whoever follows it."""
        if self.console is not None:
            self.console.output(instance, stream, data, colour)
        for listener in self.output_listeners:
            listener(instance, stream, data)

    def note(self, text: str) -> None:
        if self._file is not None:
            now = int(time.time())
            if now != self._stamp[0]:  # strftime once a second, not per event
                self._stamp = (now, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now)))
            stamp = self._stamp[1]
            with contextlib.suppress(OSError):
                self._file.write(f"{stamp} {text}\n".encode())
        if self.console is not None:
            self.console.event(text)
