"""Live views: transitions and program output pushed to the event streams that follow them.

The event log calls :meth:`Live.transition` and :meth:`Live.output` as
things happen (it is a push: nothing polls).  With no stream open, a
transition costs an append to a ring of the last 1,000 (numbered, so a
client that reconnects with ``Last-Event-ID`` is sent what it missed) and
output costs one dictionary look-up.

With streams open, transitions are sent in batches: the first one arms a
timer (at most one per ``FLUSH_INTERVAL``), which takes one ``ps`` snapshot
of the instances concerned and sends each event with its instance's row, so
a crash loop costs the supervisor a snapshot per batch, not per event and
per client.  Streams that asked for stats also get every instance's row
every ``STATS_INTERVAL`` (CPU, memory and uptime move without a
transition): one timer, armed only while such a stream is open.
"""

from __future__ import annotations

import codecs
import collections
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ..._exceptions import UnknownProgramError

if TYPE_CHECKING:
    import asyncio

    from .._events import Event
    from ._http import Stream

    Snapshot = Callable[[list[str] | None], Awaitable[dict[str, Any]]]
    Render = Callable[[dict[str, Any]], dict[str, str]]

FLUSH_INTERVAL = 0.1
STATS_INTERVAL = 5.0
RING = 1000
#: Transitions into these states are failed starts (counted for /metrics).
FAILED_START = frozenset({"BACKOFF", "FATAL"})


def sse(event: str, data: Any, seq: int | None = None) -> bytes:
    """One server-sent event; JSON keeps ``data`` on one line."""
    head = "" if seq is None else f"id: {seq}\n"
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


class _Watcher:
    """One open event stream: what it asked for, and what it has not been sent yet."""

    __slots__ = ("cells", "pending", "stats", "stream")

    def __init__(self, stream: Stream, cells: bool, stats: bool) -> None:
        self.stream = stream
        self.cells = cells  # also the page's rendered cells, for the status page
        self.stats = stats
        self.pending: list[tuple[int, Event]] = []


class _Follower:
    """One stream following an instance's output (``logs -f``), decoded as UTF-8."""

    __slots__ = ("decoder", "stream")

    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def send(self, data: bytes) -> None:
        text = self.decoder.decode(data)
        if text:
            self.stream.send(sse("output", {"text": text}))


class Live:
    """The live side of the web endpoint: event streams, output followers, counters."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        snapshot: Snapshot,
        render: Render,
        background: Callable[[object], None],
    ) -> None:
        self._loop = loop
        self._snapshot = snapshot  # the ps document of some instances, or of all (None)
        self._render = render  # a row's cells as the page shows them
        self._background = background
        self.ring: collections.deque[tuple[int, Event]] = collections.deque(maxlen=RING)
        self.seq = 0
        self.failed_starts: dict[str, int] = {}
        self._watchers: list[_Watcher] = []
        self._followers: dict[tuple[str, str], list[_Follower]] = {}
        self._flush: asyncio.TimerHandle | None = None
        self._last_flush = -FLUSH_INTERVAL
        self._tick: asyncio.TimerHandle | None = None
        self._names: list[str] | None = None

    @property
    def watchers(self) -> int:
        return len(self._watchers)

    # -- the event log's listeners -------------------------------------------

    def transition(self, event: Event) -> None:
        self.seq += 1
        self.ring.append((self.seq, event))
        if event.new in FAILED_START:
            self.failed_starts[event.instance] = self.failed_starts.get(event.instance, 0) + 1
        if not self._watchers:
            return
        for watcher in self._watchers:
            watcher.pending.append((self.seq, event))
            if len(watcher.pending) > RING:
                watcher.stream.close()  # so far behind that replaying is pointless
        self._schedule_flush()

    def output(self, instance: str, stream: str, data: bytes) -> None:
        followers = self._followers.get((instance, stream))
        if followers:
            for follower in list(followers):
                follower.send(data)

    # -- streams -------------------------------------------------------------

    def watch(self, stream: Stream, *, cells: bool, stats: bool, since: int | None) -> None:
        """Send ``stream`` every transition from now on (and those after ``since``)."""
        watcher = _Watcher(stream, cells, stats)
        self._watchers.append(watcher)
        stream.on_close(lambda: self._unwatch(watcher))
        stream.send(b"retry: 2000\n\n")
        if since is not None:
            if self.ring and since < self.ring[0][0] - 1:
                stream.send(sse("fleet", {"reason": "events were missed"}))
            watcher.pending = [(seq, e) for seq, e in self.ring if seq > since]
            if watcher.pending:
                self._schedule_flush()
        if stats and self._tick is None:
            self._tick = self._loop.call_later(STATS_INTERVAL, self._on_tick)

    def _unwatch(self, watcher: _Watcher) -> None:
        self._watchers.remove(watcher)
        if self._tick is not None and not any(w.stats for w in self._watchers):
            self._tick.cancel()
            self._tick = None
        if self._flush is not None and not self._watchers:
            self._flush.cancel()
            self._flush = None

    def follow(self, instance: str, stream_name: str, stream: Stream) -> None:
        """Send ``stream`` each chunk of ``instance``'s ``stream_name`` output from now on."""
        key = (instance, stream_name)
        follower = _Follower(stream)
        self._followers.setdefault(key, []).append(follower)

        def forget() -> None:
            followers = self._followers[key]
            followers.remove(follower)
            if not followers:
                del self._followers[key]

        stream.on_close(forget)

    def close(self) -> None:
        for timer in (self._flush, self._tick):
            if timer is not None:
                timer.cancel()
        self._flush = self._tick = None

    # -- sending -------------------------------------------------------------

    def _schedule_flush(self) -> None:
        if self._flush is None:
            delay = max(0.0, self._last_flush + FLUSH_INTERVAL - self._loop.time())
            self._flush = self._loop.call_later(delay, self._on_flush)

    def _on_flush(self) -> None:
        self._flush = None
        self._last_flush = self._loop.time()
        batch = [(w, w.pending) for w in self._watchers if w.pending]
        for watcher, _ in batch:
            watcher.pending = []
        self._background(self._send(batch))

    async def _send(self, batch: list[tuple[_Watcher, list[tuple[int, Event]]]]) -> None:
        names = sorted({e.instance for _, events in batch for _, e in events})
        rows = await self._rows(names)
        cells = {name: self._render(row) for name, row in rows.items()}
        for watcher, events in batch:
            for seq, e in events:
                data: dict[str, Any] = {
                    "seq": seq,
                    "time": e.time,
                    "instance": e.instance,
                    "old": e.old,
                    "new": e.new,
                    "why": e.why,
                    "row": rows.get(e.instance),
                }
                if watcher.cells and e.instance in cells:
                    data["cells"] = cells[e.instance]
                watcher.stream.send(sse("transition", data, seq))

    async def _rows(self, names: list[str]) -> dict[str, dict[str, Any]]:
        try:
            doc = await self._snapshot(names)
        except UnknownProgramError:  # one was removed (reload, scale) since its event
            doc = await self._snapshot(None)
        return {row["name"]: row for row in doc["instances"]}

    def _on_tick(self) -> None:
        self._tick = None
        self._background(self._send_stats())

    async def _send_stats(self) -> None:
        doc = await self._snapshot(None)
        rows = doc["instances"]
        names = [row["name"] for row in rows]
        changed = self._names is not None and names != self._names
        self._names = names
        sent: dict[bool, bytes] = {}  # the event without cells, and with them: made once each
        for watcher in [w for w in self._watchers if w.stats]:
            if changed:
                watcher.stream.send(sse("fleet", {"instances": names}))
            if watcher.cells not in sent:
                data: dict[str, Any] = {"time": doc["time"], "healthy": doc["healthy"]}
                if watcher.cells:
                    data["cells"] = {row["name"]: self._render(row) for row in rows}
                else:
                    data["instances"] = rows
                sent[watcher.cells] = sse("stats", data)
            watcher.stream.send(sent[watcher.cells])
        if self._tick is None and any(w.stats for w in self._watchers):
            self._tick = self._loop.call_later(STATS_INTERVAL, self._on_tick)
