"""``/metrics``: the fleet in Prometheus' text exposition format (version 0.0.4).

Names follow Prometheus' conventions: a ``forkwell_`` prefix, base units
(seconds, bytes), ``_total`` on counters, and labels ``program`` and
``instance`` on every per-instance series.  Counters start at zero when the
supervisor starts (``forkwell_supervisor_start_time_seconds`` says when), as
Prometheus' ``rate()`` expects of a restarted process.  A series whose value
does not exist (the start time of an instance that is not running, the last
exit of one that never exited) is left out rather than given a fake 0.

CPU and memory are read from ``/proc`` when scraped, never sampled in the
background.  The ``liveness_*`` series exist only for instances with a
``liveness`` probe.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, NamedTuple

from ..._core import _proc
from .._liveness import STATES as _LIVENESS
from .._program import ProgramState

if TYPE_CHECKING:
    from .._snapshot import InstanceLike as _InstanceInfo

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_STATES = tuple(s.name for s in ProgramState)


class Family(NamedTuple):
    """One metric: its name, type and help, and its samples (labels, value)."""

    name: str
    kind: str  # gauge, counter
    help: str
    samples: list[tuple[str, float]]  # (the label set as rendered by labels(), value)


class SupervisorStats(NamedTuple):
    """What the supervisor and its web endpoint count of themselves."""

    start_time: float
    programs: int
    ready: bool
    transitions: int
    http: Mapping[str, int]  # connections, streams, requests, refused, rejected


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value))
    return repr(float(value))


def labels(pairs: Iterable[tuple[str, str]]) -> str:
    """A label set in the text format, ``program="web",instance="web:0"``, made once per
    instance and shared by its every sample (rendering is most of a scrape's cost)."""
    return ",".join(f'{k}="{_escape(v)}"' for k, v in pairs)


def render(families: Iterable[Family]) -> bytes:
    """The text format: ``# HELP``, ``# TYPE`` and the samples of each family."""
    out: list[str] = []
    for fam in families:
        out.append(f"# HELP {fam.name} {fam.help.replace(chr(92), chr(92) * 2)}\n")
        out.append(f"# TYPE {fam.name} {fam.kind}\n")
        name = fam.name
        out.extend(
            f"{name}{{{text}}} {_number(value)}\n" if text else f"{name} {_number(value)}\n"
            for text, value in fam.samples
        )
    return "".join(out).encode()


def instance_families(
    infos: Sequence[_InstanceInfo],
    failed_starts: Mapping[str, int],
) -> list[Family]:
    """Every per-instance metric (``failed_starts``: counted by instance name)."""

    def fam(name: str, kind: str, help: str) -> Family:
        return Family(f"forkwell_instance_{name}", kind, help, [])

    up = fam("up", "gauge", "1 when the instance is RUNNING (started and ready), else 0.")
    state = fam("state", "gauge", "1 for the instance's current state, 0 for the others.")
    restarts = fam("restarts_total", "counter", "Restarts after a crash that followed a good run.")
    failed = fam("failed_starts_total", "counter",
                 "Failed starts: exits before ready or within min_uptime, readiness timeouts.")
    started = fam("start_time_seconds", "gauge",
                  "Unix time the running process was started (absent while none runs).")
    last = fam("last_exit_code", "gauge",
               "Exit status of the last process to end; -N when signal N killed it.")
    cpu = fam("cpu_seconds_total", "counter",
              "User and system CPU time of the running main process, from /proc.")
    memory = fam("memory_bytes", "gauge", "Resident memory of the running main process.")
    live = fam("liveness_state", "gauge",
               "1 for the liveness probe's current state, 0 for the others.")
    in_a_row = fam("liveness_consecutive_failures", "gauge",
                   "Liveness checks failed in a row, now; liveness_failures of them restart it.")
    live_failed = fam("liveness_failures_total", "counter",
                      "Liveness checks that failed, and watchdog deadlines missed.")
    live_restarts = fam("liveness_restarts_total", "counter",
                        "Restarts caused by the liveness probe (counted in restarts_total too).")
    for info in infos:
        who = labels((("program", info.program), ("instance", info.name)))
        up.samples.append((who, info.state == "RUNNING"))
        state.samples.extend((f'{who},state="{s}"', info.state == s) for s in _STATES)
        restarts.samples.append((who, info.restarts))
        failed.samples.append((who, failed_starts.get(info.name, 0)))
        if info.last_exit is not None:
            last.samples.append((who, info.last_exit))
        if info.liveness is not None:
            live.samples.extend((f'{who},state="{s}"', info.liveness == s) for s in _LIVENESS)
            in_a_row.samples.append((who, info.liveness_failures))
            live_failed.samples.append((who, info.liveness_failed_checks))
            live_restarts.samples.append((who, info.liveness_restarts))
        if info.pid is None:
            continue
        if info.started_at is not None:
            started.samples.append((who, info.started_at))
        stat = _stat_or_none(info.pid)
        if stat is not None:
            cpu.samples.append((who, stat.cpu_ticks / _proc.CLK_TCK))
            memory.samples.append((who, stat.rss_bytes))
    return [up, state, restarts, failed, started, last, cpu, memory,
            live, in_a_row, live_failed, live_restarts]  # fmt: skip


def _stat_or_none(pid: int) -> _proc.ProcStat | None:
    """None when gone, or unreadable (EMFILE): the sample is left out, not made up."""
    try:
        return _proc.read_stat(pid)
    except OSError:
        return None


def supervisor_families(stats: SupervisorStats, instances: int) -> list[Family]:
    """The supervisor's own metrics, and its web endpoint's."""
    me = _stat_or_none(os.getpid())
    times = os.times()
    try:
        fds = len(os.listdir("/proc/self/fd"))
    except OSError:
        fds = 0
    http = stats.http

    def one(name: str, kind: str, help: str, value: float) -> Family:
        return Family(f"forkwell_supervisor_{name}", kind, help, [("", value)])

    return [
        one("start_time_seconds", "gauge", "Unix time the supervisor started.", stats.start_time),
        one("cpu_seconds_total", "counter", "The supervisor's own user and system CPU time.",
            times.user + times.system),
        one("memory_bytes", "gauge", "The supervisor's own resident memory.",
            0 if me is None else me.rss_bytes),
        one("open_fds", "gauge", "File descriptors the supervisor holds open.", fds),
        one("programs", "gauge", "Programs in the config.", stats.programs),
        one("instances", "gauge", "Instances of all programs.", instances),
        one("ready", "gauge", "1 when every autostart instance is up (as /readyz says).",
            stats.ready),
        one("transitions_total", "counter", "Instance state transitions.", stats.transitions),
        one("http_connections", "gauge", "Open HTTP connections.", http["connections"]),
        one("http_event_streams", "gauge", "Open server-sent event streams.", http["streams"]),
        one("http_requests_total", "counter", "HTTP requests answered.", http["requests"]),
        one("http_refused_connections_total", "counter",
            "HTTP connections refused or closed to make room (the connection cap).",
            http["refused"]),
        one("http_rejected_requests_total", "counter",
            "HTTP requests refused before reaching a handler: too large, too slow, malformed.",
            http["rejected"]),
    ]  # fmt: skip
