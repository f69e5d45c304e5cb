"""Whether a starting instance is ready: ``notify``, ``delay:``, ``tcp:`` and ``cmd:``.

:class:`Readiness` holds, for one instance, what decides that its process
just spawned counts as RUNNING: the ``ready_timeout`` deadline, and either a
notify socket or a probe.  Each probe is a coroutine that returns, saying
how, once the instance is ready; it runs as a task while the instance is
STARTING and is cancelled when the instance is stopped, or failed first.
Probes poll every :data:`READY_POLL` seconds, and only while an instance
starts: an idle supervisor has no timer at all.
"""

from __future__ import annotations

import functools
import os
import pwd
import signal
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from .._core._process import DEVNULL, spawn
from ._loop import resolve

if TYPE_CHECKING:
    import asyncio
    from pathlib import Path
    from typing import Protocol

    from .._core import _tree
    from .._core._notify import NotifyListener
    from .._core._process import Process
    from ._config import ProgramConfig
    from ._loop import Handle, Loop

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


READY_POLL = 0.1  # seconds between tcp:/cmd: readiness probes


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
    ) -> None:
        self._host = host
        self._ready = ready
        self._timeout = timeout
        self._failed = failed
        self._deadline: Handle | None = None
        self._task: asyncio.Task[str] | None = None
        self._notify: NotifyListener | None = None

    def listen(self, user: str | None, env: dict[str, str]) -> None:
        """Before the spawn, for ``ready = "notify"``: a private socket, named in ``env``."""
        from .._core._notify import NotifyListener

        uid = _uid_of(user)
        self._notify = NotifyListener(uid=uid if uid and os.geteuid() == 0 else None)
        env.update(self._notify.environ())
        self._host.loop.add_reader(self._notify.fileno(), self._on_notify)

    def start(self, cfg: ProgramConfig, env: Callable[[], dict[str, str]]) -> None:
        """After the spawn: the deadline, and the probe ``cfg.ready`` asks for."""
        spec = cfg.ready
        self._deadline = self._host.loop.call_later(cfg.ready_timeout, self._deadline_passed)
        aio = self._host.aio_loop
        if spec.kind == "delay":
            self._probe(delay(aio, spec.seconds or 0.0))
        elif spec.kind == "tcp":
            assert spec.host is not None and spec.port is not None
            self._probe(tcp(aio, spec.host, spec.port))
        elif spec.kind == "cmd":
            assert spec.command is not None
            self._probe(cmd(self._host, spec.command, cfg.directory, env, self._failed))

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
            if fields.get("READY") == "1":
                self._ready("READY=1")
                return

    def cancel(self) -> None:
        """The start has its answer (or is given up): no deadline, probe or socket any more."""
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        if self._task is not None:
            self._task.cancel()
            self._task = None
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


async def tcp(loop: asyncio.AbstractEventLoop, host: str, port: int) -> str:
    while not await _tcp_connects(loop, host, port, READY_POLL * 5):
        await pause(loop, READY_POLL)
    return f"{host}:{port} accepts"


async def cmd(
    host: ProbeHost,
    command: str,
    cwd: Path,
    env: Callable[[], dict[str, str]],
    failed: Callable[[str], None],
) -> str:
    """Run ``command`` until it exits 0; ``failed`` hears why it could not even start."""
    while True:
        try:
            probe = spawn(
                ["/bin/sh", "-c", command],
                stdin=DEVNULL, stdout=DEVNULL, stderr=DEVNULL, cwd=cwd, env=env(),
            )  # fmt: skip
        except OSError as exc:
            failed(f"readiness command failed to start: {exc}")
            await pause(host.aio_loop, READY_POLL)
            continue
        exited: asyncio.Future[None] = host.aio_loop.create_future()
        host.track(probe, functools.partial(resolve, exited))
        try:
            await exited
        finally:
            if probe.returncode is None and probe.tree is not None:
                # Cancelled (stop, or ready by other means): the probe goes too.
                await host.end_tree(probe.tree, signal.SIGKILL, 0.0)
                probe.wait()
            host.untrack(probe)
            probe.close()
        if probe.returncode == 0:
            return f"cmd:{command} exited 0"
        await pause(host.aio_loop, READY_POLL)


async def _tcp_connects(
    loop: asyncio.AbstractEventLoop, host: str, port: int, timeout: float
) -> bool:
    """One non-blocking connect attempt to each address of ``host``.

    :func:`forkwell._core._readiness.tcp_accepts` is the same probe, but it
    blocks: here the connect is awaited, so the loop serves everyone meanwhile.
    """
    import asyncio
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return False
    for family, type_, proto, _name, address in infos:
        with socket.socket(family, type_ | socket.SOCK_CLOEXEC, proto) as sock:
            sock.setblocking(False)
            try:
                await asyncio.wait_for(loop.sock_connect(sock, address), timeout)
            except (OSError, TimeoutError):
                continue
            return True
    return False


def _uid_of(user: str | None) -> int | None:
    if user is None:
        return None
    return int(user) if user.isdigit() else pwd.getpwnam(user).pw_uid
