"""Readiness probes of a starting instance: ``delay:``, ``tcp:`` and ``cmd:``.

Each probe is a coroutine that returns, saying how, once the instance counts
as ready.  The instance runs it as a task while it is STARTING and cancels it
when it is stopped, or failed first (``ready_timeout``).  They poll every
:data:`READY_POLL` seconds, and only while an instance starts: an idle
supervisor has no timer at all.
"""

from __future__ import annotations

import functools
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING

from .._core._process import DEVNULL, spawn
from ._loop import resolve

if TYPE_CHECKING:
    import asyncio
    from pathlib import Path
    from typing import Protocol

    from .._core import _tree
    from .._core._process import Process

    class ProbeHost(Protocol):
        """What the ``cmd:`` probe needs of the supervisor (its ``_Host`` has it)."""

        @property
        def aio_loop(self) -> asyncio.AbstractEventLoop: ...
        def track(self, proc: Process, on_exit: Callable[[], None]) -> None: ...
        def untrack(self, proc: Process) -> None: ...
        async def end_tree(
            self, tree: _tree.Tree, sig: int, grace: float, *, include_root: bool = True
        ) -> None: ...


READY_POLL = 0.1  # seconds between tcp:/cmd: readiness probes


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
