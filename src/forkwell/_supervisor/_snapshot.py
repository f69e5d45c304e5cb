"""What ``forkwell ps --json`` says of the fleet: the one schema, built in one place.

:class:`Snapshot` turns the supervisor's instances (:meth:`Supervisor.instances`)
and their process trees' use of the machine (:meth:`Supervisor.usage`) into
the document the control socket's ``ps`` answers, ``forkwell ps --json``
prints and the web API serves; ``docs/control.md`` documents it field by
field.  :data:`SCHEMA_VERSION` changes when a field changes meaning or goes
away; fields may be added without a change.

* Version 2: ``cpu_percent`` and ``rss_bytes`` are the whole process
  tree's (they were the main process's in version 1), and ``processes``,
  ``last_exit_at``, ``readiness``, ``ready_probe``, ``liveness``,
  ``liveness_probe``, ``liveness_failures``, ``last_probe_failure``,
  ``last_probe_failure_at``, ``essential`` and ``failed_starts`` were added;
  later (no change of meaning) ``liveness_failed_checks`` and ``liveness_restarts``.

CPU % is measured between two snapshots (at most a minute apart), else
over the tree's life: sampling only when asked keeps an idle supervisor
from ever waking up.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from .._core import _proc, _tree
from ._control._protocol import healthy_row

if TYPE_CHECKING:
    from typing import Protocol

    from .._core._tree import Tree

    class InstanceLike(Protocol):
        """What a row is made of (:class:`~forkwell.InstanceInfo` has it)."""

        @property
        def name(self) -> str: ...
        @property
        def program(self) -> str: ...
        @property
        def index(self) -> int: ...
        @property
        def state(self) -> str: ...
        @property
        def pid(self) -> int | None: ...
        @property
        def started_at(self) -> float | None: ...
        @property
        def ready_at(self) -> float | None: ...
        @property
        def restarts(self) -> int: ...
        @property
        def last_exit(self) -> int | None: ...
        @property
        def last_exit_at(self) -> float | None: ...
        @property
        def autostart(self) -> bool: ...
        @property
        def essential(self) -> bool | str: ...
        @property
        def readiness(self) -> str | None: ...
        @property
        def ready_probe(self) -> str: ...
        @property
        def liveness(self) -> str | None: ...
        @property
        def liveness_probe(self) -> str | None: ...
        @property
        def liveness_failures(self) -> int: ...
        @property
        def last_probe_failure(self) -> str | None: ...
        @property
        def last_probe_failure_at(self) -> float | None: ...
        @property
        def failed_starts(self) -> int: ...
        @property
        def liveness_failed_checks(self) -> int: ...
        @property
        def liveness_restarts(self) -> int: ...

    class FleetLike(Protocol):
        def instances(self) -> Sequence[InstanceLike]: ...
        def resolve(self, names: Sequence[str]) -> list[str]: ...
        def usage(self, names: Sequence[str]) -> Mapping[str, Usage]: ...


SCHEMA_VERSION = 2


class Usage(NamedTuple):
    """One instance's process tree, now."""

    cpu_ticks: int  # user + system of its live members, and of the children they waited for
    rss_bytes: int
    processes: int


def tree_usage(trees: Mapping[str, Tree]) -> dict[str, Usage]:
    """:class:`Usage` of each named tree, from one walk of the supervisor's subtree.

    None of them when /proc cannot be read (EMFILE): ``ps`` then shows their
    CPU and memory as unknown ("-") rather than failing.
    """
    try:
        found = _tree.trees_below({tree.token: tree.root for tree in trees.values()})
    except OSError:
        return {}
    out: dict[str, Usage] = {}
    for name, tree in trees.items():
        members = found.get(tree.token, {})
        out[name] = Usage(
            sum(m.cpu_ticks + m.child_ticks for m in members.values()),
            sum(m.rss_bytes for m in members.values()),
            len(members),
        )
    return out


class Snapshot:
    """Builds ``ps`` documents; it remembers each tree's CPU time between two of them."""

    RECENT = 60.0  # seconds: an older previous snapshot is not a base for CPU %

    def __init__(self) -> None:
        self._last: dict[tuple[str, int], tuple[float, int]] = {}

    def document(
        self, fleet: FleetLike, names: Sequence[str], supervisor: Mapping[str, Any]
    ) -> dict[str, Any]:
        """The ``ps`` document for ``names`` (all instances when empty)."""
        infos = list(fleet.instances())
        if names:
            wanted = set(fleet.resolve(names))
            infos = [i for i in infos if i.name in wanted]
        usage = fleet.usage([i.name for i in infos if i.pid is not None])
        now = time.time()
        rows = [self.row(i, usage.get(i.name), now) for i in infos]
        if not names:
            alive = {(i.name, i.pid) for i in infos if i.pid is not None}
            self._last = {k: v for k, v in self._last.items() if k in alive}
        healthy = all(healthy_row(r) for r in rows if r["autostart"])
        return {
            "version": SCHEMA_VERSION,
            "supervisor": dict(supervisor),
            "time": now,
            "healthy": healthy,
            "instances": rows,
        }

    def row(self, info: InstanceLike, usage: Usage | None, now: float) -> dict[str, Any]:
        """One ``INSTANCE`` of the schema (docs/control.md)."""
        running = info.pid is not None and info.started_at is not None
        return {
            "name": info.name,
            "program": info.program,
            "index": info.index,
            "state": info.state,
            "pid": info.pid,
            "started_at": info.started_at,
            "ready_at": info.ready_at,
            "uptime": round(max(0.0, now - info.started_at), 3) if running else None,  # type: ignore[operator]
            "restarts": info.restarts,
            "failed_starts": info.failed_starts,
            "last_exit": info.last_exit,
            "last_exit_at": info.last_exit_at,
            "autostart": info.autostart,
            "essential": info.essential,
            "readiness": info.readiness,
            "ready_probe": info.ready_probe,
            "liveness": info.liveness,
            "liveness_probe": info.liveness_probe,
            "liveness_failures": info.liveness_failures,
            "last_probe_failure": info.last_probe_failure,
            "last_probe_failure_at": info.last_probe_failure_at,
            "liveness_failed_checks": info.liveness_failed_checks,
            "liveness_restarts": info.liveness_restarts,
            "cpu_percent": self._cpu(info, usage),
            "rss_bytes": None if usage is None else usage.rss_bytes,
            "processes": 0 if usage is None else usage.processes,
        }

    def _cpu(self, info: InstanceLike, usage: Usage | None) -> float | None:
        """CPU % of the tree since the previous snapshot (if recent), else over its life."""
        if usage is None or info.pid is None:
            return None
        key = (info.name, info.pid)
        now_mono, now_wall = time.monotonic(), time.time()
        prev = self._last.get(key)
        self._last[key] = (now_mono, usage.cpu_ticks)
        if prev is not None and 0.05 < now_mono - prev[0] < self.RECENT:
            ticks = max(0, usage.cpu_ticks - prev[1])  # a member gone takes its time along
            return round(ticks / _proc.CLK_TCK / (now_mono - prev[0]) * 100.0, 1)
        if info.started_at is not None and now_wall - info.started_at > 0.05:
            return round(usage.cpu_ticks / _proc.CLK_TCK / (now_wall - info.started_at) * 100, 1)
        return None
