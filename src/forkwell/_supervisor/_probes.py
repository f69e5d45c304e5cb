"""Whether a starting instance is ready, and the one-shot checks liveness repeats.

:class:`Readiness` holds, for one instance, what decides that its process
just spawned counts as RUNNING: the ``ready_timeout`` deadline, and either a
notify socket, a watch on its output (``log:REGEX``) or a probe.  Each probe
is a coroutine that returns, saying how, once the instance is ready; it runs
as a task while the instance is STARTING and is cancelled when the instance
is stopped, or failed first.  Probes poll every :data:`READY_POLL` seconds,
and only while an instance starts: an idle supervisor has no timer at all.

The checks themselves (:func:`check_tcp`, :func:`check_cmd`, and
:func:`forkwell._supervisor._http.http_status`) answer once: None for a
success, else why not in one line.  Readiness repeats them until one
succeeds; liveness (:mod:`._liveness`) every ``liveness_period``.
"""

from __future__ import annotations

import functools
import os
import pwd
import signal
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from .._core._process import DEVNULL, spawn
from .._core._status import describe_exit
from ._loop import resolve

if TYPE_CHECKING:
    import asyncio
    from pathlib import Path
    from typing import Protocol

    from .._core import _tree
    from .._core._notify import NotifyListener
    from .._core._process import Process
    from ._config import ProgramConfig
    from ._logs import Output
    from ._loop import Handle, Loop
    from ._probespec import ProbeSpec

    class ProbeHost(Protocol):
        """What readiness needs of the supervisor (the instances' ``_Host`` has it)."""

        @property
        def loop(self) -> Loop: ...
        @property
        def aio_loop(self) -> asyncio.AbstractEventLoop: ...
        def track(self, proc: Process, on_exit: Callable[[], None]) -> None: ...
        def untrack(self, proc: Process) -> None: ...
        async def end_tree(
            self, tree: _tree.Tree, sig: int, grace: float, *, include_root: bool = True
        ) -> None: ...


READY_POLL = 0.1  # seconds between tcp:/cmd:/http readiness probes
READY_ATTEMPT = 0.5  # seconds one readiness attempt (a connect, a GET) may take


class Readiness:
    """The deadline and the probe (or notify socket) of one instance's start.

    ``ready(how)`` is called once the process counts as ready, ``timeout()``
    when ``ready_timeout`` passed first, ``failed(why)`` when a ``cmd:``
    probe could not even be started (it is retried).
    """

    def __init__(
        self,
        host: ProbeHost,
        ready: Callable[[str], None],
        timeout: Callable[[], None],
        failed: Callable[[str], None],
        output: Output,
    ) -> None:
        self._host = host
        self._ready = ready
        self._timeout = timeout
        self._failed = failed
        self._output = output
        self._deadline: Handle | None = None
        self._task: asyncio.Task[str] | None = None
        self._notify: NotifyListener | None = None
        self._keep_notify = False  # the watchdog needs the socket after readiness too
        self.last_failure = ""  # why the last probe said "not yet", for ps
        self.watchdog_at = 0.0  # loop time of the last WATCHDOG=1 (or of the spawn)

    def listen(self, cfg: ProgramConfig, env: dict[str, str]) -> None:
        """Before the spawn, for ``ready = "notify"`` or the watchdog: a private socket.

        Its path goes into ``env`` as ``NOTIFY_SOCKET``; with ``watchdog_sec``,
        ``WATCHDOG_USEC`` too, as systemd sets it (``sd_watchdog_enabled()``).
        """
        from .._core._notify import NotifyListener

        uid = _uid_of(cfg.user)
        self._notify = NotifyListener(uid=uid if uid and os.geteuid() == 0 else None)
        env.update(self._notify.environ())
        self._keep_notify = cfg.watchdog_sec is not None
        if cfg.watchdog_sec is not None:
            env["WATCHDOG_USEC"] = str(int(cfg.watchdog_sec * 1_000_000))
        self.watchdog_at = self._host.loop.time()
        self._host.loop.add_reader(self._notify.fileno(), self._on_notify)

    def start(self, cfg: ProgramConfig, env: Callable[[], dict[str, str]]) -> None:
        """After the spawn: the deadline, and the probe ``cfg.ready`` asks for."""
        spec = cfg.ready
        self.last_failure = ""
        self._deadline = self._host.loop.call_later(cfg.ready_timeout, self._deadline_passed)
        aio = self._host.aio_loop
        if spec.kind == "delay":
            self._probe(delay(aio, spec.seconds or 0.0))
        elif spec.kind == "log":
            self._output.watch = LogWatch(spec.pattern or "", self._log_matched)
        elif spec.kind in ("tcp", "cmd", "http"):
            self._probe(self._until_ready(spec, cfg.directory, env))

    async def _until_ready(
        self, spec: ProbeSpec, cwd: Path, env: Callable[[], dict[str, str]]
    ) -> str:
        """Repeat the check every READY_POLL seconds until it succeeds; say how it did."""
        import asyncio

        aio = self._host.aio_loop
        while True:
            try:
                async with asyncio.timeout(None if spec.kind == "cmd" else READY_ATTEMPT):
                    why = await check(self._host, spec, cwd, env)
            except TimeoutError:
                why = f"{spec}: no answer within {READY_ATTEMPT:g}s"
            if why is None:
                return _success(spec)
            self.last_failure = why
            if why.startswith("cannot start"):
                self._failed(f"readiness command failed to start: {why}")
            await pause(aio, READY_POLL)

    def _log_matched(self, line: str) -> None:
        self._output.watch = None
        self._ready(f"output matched {line!r}")

    def _probe(self, probe: Coroutine[Any, Any, str]) -> None:
        # The probe is the task itself: a wrapper cancelled before its first
        # step (the process exited in the same loop iteration) would leave the
        # probe's coroutine never awaited.
        self._task = self._host.aio_loop.create_task(probe)
        self._task.add_done_callback(self._probe_done)

    def _probe_done(self, task: asyncio.Task[str]) -> None:
        if task.cancelled():
            return
        if self._task is task:
            self._task = None
        self._ready(task.result())  # a probe's own error is raised here, to the loop

    def _deadline_passed(self) -> None:
        self._deadline = None
        self._timeout()

    def _on_notify(self) -> None:
        if self._notify is None:
            return
        for fields in self._notify.receive():
            if fields.get("WATCHDOG") == "1":
                self.watchdog_at = self._host.loop.time()
            if fields.get("READY") == "1":
                self._ready("READY=1")  # a no-op once RUNNING: only the watchdog listens then

    def cancel(self, ready: bool = False) -> None:
        """The start has its answer (or is given up): no deadline, probe or socket any more.

        ``ready``: it is RUNNING, and a watchdog keeps the notify socket open.
        """
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self._output.watch = None
        if not (ready and self._keep_notify):
            self.close_notify()

    def close_notify(self) -> None:
        if self._notify is not None:
            self._host.loop.remove_reader(self._notify.fileno())
            self._notify.close()
            self._notify = None


async def pause(loop: asyncio.AbstractEventLoop, seconds: float) -> None:
    fut: asyncio.Future[None] = loop.create_future()
    handle = loop.call_later(seconds, resolve, fut)
    try:
        await fut
    finally:
        handle.cancel()


async def delay(loop: asyncio.AbstractEventLoop, seconds: float) -> str:
    await pause(loop, seconds)
    return f"alive after delay:{seconds:g}"


def _success(spec: ProbeSpec) -> str:
    if spec.kind == "tcp":
        return f"{spec.host}:{spec.port} accepts"
    if spec.kind == "cmd":
        return f"cmd:{spec.command} exited 0"
    return f"{spec.url} answered"


async def check(
    host: ProbeHost, spec: ProbeSpec, cwd: Path, env: Callable[[], dict[str, str]]
) -> str | None:
    """One check of a tcp:, cmd: or http probe: None when it succeeds, else why not."""
    if spec.kind == "http":
        from ._http import http_status

        return await http_status(host.aio_loop, spec)
    if spec.kind == "tcp":
        from ._http import connect

        assert spec.host is not None and spec.port is not None
        try:
            (await connect(host.aio_loop, spec.host, spec.port)).close()
        except OSError as exc:
            return f"{spec}: {exc.strerror or exc}"
        return None
    assert spec.command is not None
    return await check_cmd(host, spec.command, cwd, env)


async def check_cmd(
    host: ProbeHost, command: str, cwd: Path, env: Callable[[], dict[str, str]]
) -> str | None:
    """Run ``command`` once: None if it exits 0; cancelled, its whole tree is killed."""
    try:
        probe = spawn(
            ["/bin/sh", "-c", command],
            stdin=DEVNULL, stdout=DEVNULL, stderr=DEVNULL, cwd=cwd, env=env(),
        )  # fmt: skip
    except OSError as exc:
        return f"cannot start /bin/sh: {exc}"
    exited: asyncio.Future[None] = host.aio_loop.create_future()
    host.track(probe, functools.partial(resolve, exited))
    try:
        await exited
    finally:
        if probe.returncode is None and probe.tree is not None:
            # Cancelled (a timeout, a stop, ready by other means): the probe goes too.
            await host.end_tree(probe.tree, signal.SIGKILL, 0.0)
            probe.wait()
        host.untrack(probe)
        probe.close()
    rc = probe.returncode
    return None if rc == 0 else f"cmd:{command} {describe_exit(rc if rc is not None else -9)}"


class LogWatch:
    """``log:REGEX``: calls ``matched(line)`` at the first line of output that matches.

    An unfinished line is searched too (a prompt that ends without a newline),
    up to 64 KiB of it.
    """

    MAX_PARTIAL = 65536

    def __init__(self, pattern: str, matched: Callable[[str], None]) -> None:
        import re

        self._regex = re.compile(pattern)
        self._matched = matched
        self._partial = b""

    def __call__(self, data: bytes) -> None:
        lines = (self._partial + data).split(b"\n")
        self._partial = lines[-1][-self.MAX_PARTIAL :]
        for raw in lines:
            line = raw.decode(errors="replace").rstrip("\r")
            if self._regex.search(line):
                self._matched(line if len(line) <= 80 else line[:77] + "...")
                return


def _uid_of(user: str | None) -> int | None:
    if user is None:
        return None
    return int(user) if user.isdigit() else pwd.getpwnam(user).pw_uid
