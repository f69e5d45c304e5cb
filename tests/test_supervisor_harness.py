"""Shared by the supervisor tests (no tests here): drive a real Supervisor in-process."""

from __future__ import annotations

import asyncio
import json
import textwrap
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from helpers import PY

from forkwell import Config, InstanceInfo, Supervisor, load_config

if TYPE_CHECKING:
    from fakeclock import MockClock

T = TypeVar("T")

#: How much of a timer the tests leave to check that it holds: after a jump
#: to this short of its deadline, it must not have fired.  Real time runs on
#: under a fake clock too, so it is a whole second: loop turns take far less.
MARGIN = 1.0

#: drive()'s timeout for the body is on the loop's clock, which these tests move
#: by minutes: an hour.  Each wait of theirs has a real-time bound of its own.
LONG = 3600


def cmd(*argv: str) -> str:
    """A TOML array for an argv (JSON strings are valid TOML strings)."""
    return json.dumps(list(argv))


def py(code: str) -> str:
    """A TOML command array running ``code`` in this Python."""
    return cmd(PY, "-c", textwrap.dedent(code))


def config(tmp_path: Path, text: str) -> Config:
    head = "[supervisor]\nshutdown_timeout = 10\n\n"
    path = tmp_path / "forkwell.toml"
    path.write_text(head + textwrap.dedent(text))
    return load_config(path)


def drive(
    cfg: Config,
    body: Callable[[Supervisor], Awaitable[T]],
    timeout: float = 30,
    *,
    supervisor: Supervisor | None = None,
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
) -> T:
    """Run the supervisor (as ``forkwell up`` does) around ``body``, then shut it down.

    ``supervisor``: one made (and perhaps prestarted) by the test, else a new one.
    ``loop_factory``: the event loop to run in (``MockClock.event_loop`` for a fake clock).
    """

    async def main() -> T:
        sup = supervisor or Supervisor(cfg, quiet=True)
        task = asyncio.create_task(sup.run())
        up = asyncio.create_task(sup.up.wait())
        done, _ = await asyncio.wait({task, up}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            up.cancel()
            task.result()
            raise AssertionError("Supervisor.run() returned before it was up")
        try:
            return await asyncio.wait_for(body(sup), timeout)
        finally:
            await sup.shutdown()
            assert await task == 0

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(main())


async def pause(seconds: float) -> None:
    """Let the loop run for ``seconds`` (a timer, not a blocking sleep)."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[None] = loop.create_future()
    loop.call_later(seconds, fut.set_result, None)
    await fut


async def turns(n: int = 20) -> None:
    """Let the loop run ``n`` iterations, no time passing: what was due has happened.

    For checking, on a fake clock, that a timer still holds: after a jump to
    just short of its deadline and these turns, a timer that fires too soon
    would have fired.
    """
    for _ in range(n):
        await asyncio.sleep(0)


async def jump_past(clock: MockClock, seconds: float, holds: Callable[[], bool]) -> None:
    """Move the clock ``seconds``, checking on the way that ``holds()`` until the very end."""
    if seconds > MARGIN:
        clock.jump(seconds - MARGIN)
        await turns()
        assert holds(), f"the {seconds:g}s timer fired {MARGIN:g}s or more too soon"
        clock.jump(MARGIN)
    else:
        clock.jump(seconds)


async def until(pred: Callable[[], Any], timeout: float = 5.0, what: str = "condition") -> None:
    """Poll ``pred`` every 5 ms while the loop runs; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await pause(0.005)


def info(sup: Supervisor, name: str) -> InstanceInfo:
    return next(i for i in sup.instances() if i.name == name)


def states(sup: Supervisor, name: str) -> list[str]:
    """Every state ``name`` went through, in order."""
    return [e.new for e in sup.events if e.instance == name]


def when(sup: Supervisor, name: str, new: str, nth: int = 0) -> float:
    """time.time() of the ``nth`` transition of ``name`` into ``new``."""
    times = [e.time for e in sup.events if e.instance == name and e.new == new]
    return times[nth]


def log_text(sup: Supervisor, name: str, stream: str = "stdout") -> str:
    """What the program wrote to its log (the supervisor's ``--- forkwell:`` markers left out)."""
    try:
        text = sup.log_path(name, stream).read_text()  # type: ignore[arg-type]
    except FileNotFoundError:
        return ""
    return "".join(line for line in text.splitlines(True) if not line.startswith(MARKER))


#: How the supervisor's own lines in a program's log begin (forkwell._supervisor._loglines).
MARKER = "--- forkwell: "


def all_gone(pids: Sequence[int]) -> bool:
    from helpers import running

    return not any(running(p) for p in pids)
