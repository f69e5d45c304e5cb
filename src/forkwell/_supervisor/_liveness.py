"""Liveness: is a RUNNING instance still doing its job?  Kubernetes' semantics.

While an instance is RUNNING, its :class:`Liveness` runs the ``liveness``
check (an http(s):// URL, ``tcp:``, ``cmd:``) every ``liveness_period``,
the first one ``liveness_delay`` after it became RUNNING; a check not
answered within ``liveness_timeout`` failed.  ``liveness_failures``
failures in a row, and ``failed(instance, why)`` is called, once: the
supervisor restarts the instance.  A success resets the count.  (A
Kubernetes startup probe's role, holding liveness off until the program
is up, is ``ready``'s: liveness starts only once the instance is RUNNING.)

``liveness = "watchdog"`` is systemd's ``WatchdogSec=`` instead: the
program sends ``WATCHDOG=1`` to ``$NOTIFY_SOCKET`` (its readiness socket,
see :class:`~forkwell._supervisor._probes.Readiness`), and ``watchdog_sec``
without one is a failure.

Cost: one timer per RUNNING instance that has a probe, and one task while a
check runs; no thread, no polling between checks.  The watchdog's timer
fires once per ``watchdog_sec`` whatever the number of pings (each ping
only records the time; the timer, when it fires, moves itself to the last
ping's deadline).  An instance without ``liveness`` has no timer at all.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncio
    from typing import Protocol

    from ._config import ProgramConfig
    from ._loop import Handle
    from ._probes import ProbeHost, Readiness

    class Probed(Protocol):
        """What a probe needs of its instance (:class:`~._program.Instance` has it)."""

        @property
        def config(self) -> ProgramConfig: ...
        @property
        def readiness(self) -> Readiness | None: ...


#: Every ``Liveness.state``, in the order /metrics lists them.
STATES = ("off", "pending", "ok", "failing")


class Liveness:
    """The liveness probe of one instance: ``state`` is what ``ps`` shows.

    ``off`` (not RUNNING), ``pending`` (RUNNING, no answer yet), ``ok``,
    ``failing`` (failed ``failures`` times in a row, fewer than the limit).
    """

    def __init__(
        self,
        host: ProbeHost,
        inst: Probed,
        env: Callable[[], dict[str, str]],
        failed: Callable[[str], None],
    ) -> None:
        self._host = host
        self._inst = inst
        self._env = env  # a cmd: probe's environment: the instance's own
        self._failed = failed
        self.state = "off"
        self.failures = 0  # in a row
        self.checks = 0  # checks run, ever
        # Since the supervisor started, for /metrics' counters (start() keeps them):
        self.failures_total = 0  # failed checks, and missed watchdog deadlines
        self.restarts = 0  # restarts this probe caused (counted by the restarter)
        self.last_failure = ""
        self.last_failure_at: float | None = None  # time.time()
        self._timer: Handle | None = None
        self._task: asyncio.Task[None] | None = None
        self._began = 0.0  # loop time the running check (or the watch) began

    def start(self) -> None:
        """The instance is RUNNING: the first check after ``liveness_delay``."""
        self.stop()
        cfg = self._inst.config
        self.state = "pending"
        self.failures = 0
        self._began = self._host.loop.time()
        if cfg.watchdog_sec is not None:
            self._after(self._watchdog_due, cfg.watchdog_sec)
        else:
            self._after(self._check, cfg.liveness_delay)

    def stop(self) -> None:
        """No longer RUNNING: no timer, no check."""
        self.state = "off"
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._task is not None:
            self._task.cancel()
            self._task = None

    def _after(self, callback: Callable[[], None], seconds: float) -> None:
        self._timer = self._host.loop.call_later(max(0.0, seconds), callback)

    def _check(self) -> None:
        self._timer = None
        self._began = self._host.loop.time()
        self._task = self._host.aio_loop.create_task(self._run())

    async def _run(self) -> None:
        import asyncio

        from ._probes import check

        cfg = self._inst.config
        spec = cfg.liveness
        assert spec is not None
        self.checks += 1
        try:
            async with asyncio.timeout(cfg.liveness_timeout):
                why = await check(self._host, spec, cfg.directory, self._env)
        except TimeoutError:
            why = f"{spec}: no answer within {cfg.liveness_timeout:g}s"
        self._task = None
        if self._answer(why):
            # The next check a period after this one began (Kubernetes' periodSeconds).
            self._after(self._check, self._began + cfg.liveness_period - self._host.loop.time())

    def _answer(self, why: str | None) -> bool:
        """Count one check's answer; False once the instance is to be restarted."""
        if why is None:
            self.state = "ok"
            self.failures = 0
            return True
        self.failures += 1
        self.failures_total += 1
        self.last_failure = why
        self.last_failure_at = time.time()
        limit = self._inst.config.liveness_failures
        if self.failures < limit:
            self.state = "failing"
            return True
        self.stop()
        times = "once" if limit == 1 else f"{limit} times in a row"
        self._failed(f"liveness: {why} ({times})")
        return False

    def _watchdog_due(self) -> None:
        self._timer = None
        readiness = self._inst.readiness
        seconds = self._inst.config.watchdog_sec
        assert seconds is not None
        last = max(self._began, readiness.watchdog_at if readiness is not None else 0.0)
        left = last + seconds - self._host.loop.time()
        if left > 0:
            self.state = "ok" if last > self._began else self.state
            self._after(self._watchdog_due, left)
            return
        self.failures = 1
        self.failures_total += 1
        self.last_failure = f"watchdog: no WATCHDOG=1 for {seconds:g}s (watchdog_sec)"
        self.last_failure_at = time.time()
        self.stop()
        self._failed(f"liveness: {self.last_failure}")
