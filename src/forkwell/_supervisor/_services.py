"""What the supervisor lends its instances: the ``_Host`` protocol, as one object.

An instance (and its readiness and liveness probes) needs a handful of
services from its surroundings: the loop, child environments, the event log,
exit tracking and tree ending.  They live here rather than as methods of
:class:`~forkwell._supervisor._engine.Supervisor`, whose own job is the
fleet's life (start, stop, reload, run); the supervisor builds one
:class:`Services` and hands it to the fleet, the instances and health.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable, Mapping
    from pathlib import Path

    from .._core import _tree
    from .._core._process import Process
    from ._childenv import ChildEnv
    from ._events import EventLog
    from ._loop import Loop
    from ._preloop import Loops
    from ._program import Instance, ProgramState
    from ._tracking import Tracker, TreeEnder


class Services(NamedTuple):
    """The ``_Host`` of every instance (and the ``HealthHost`` of health).

    A NamedTuple for its generated constructor: ``dataclasses`` would cost
    ``forkwell up`` an import it otherwise never makes.
    """

    loops: Loops
    log: EventLog
    env: ChildEnv
    trees: TreeEnder
    tracker: Tracker
    log_dir_of: Callable[[], Path]  # the config's, as it is now (reload changes it)
    on_transition: Callable[[Instance, ProgramState, ProgramState], None]  # health's

    @property
    def loop(self) -> Loop:
        """Readers and timers: during ``prestart`` a stand-in, then asyncio's loop."""
        return self.loops.loop

    @property
    def aio_loop(self) -> asyncio.AbstractEventLoop:
        """The asyncio loop the supervisor runs on, for futures and tasks."""
        return self.loops.aio

    def background(self, coro: object) -> None:
        """Run a coroutine as a task that is kept referenced; its failure is noted."""
        assert isinstance(coro, Coroutine)
        self.loops.background(coro, self._internal_error)

    def _internal_error(self, exc: BaseException) -> None:
        self.log.note(f"internal error: {type(exc).__name__}: {exc}")

    def child_env(self, inst: Instance) -> dict[str, str]:
        return self.env.for_instance(inst)

    def devnull(self) -> int:
        return self.env.devnull()

    def find_executable(self, command: str, env: Mapping[str, str]) -> str | None:
        return self.env.find_executable(command, env)

    def log_dir(self) -> Path:
        return self.log_dir_of()

    def transition(self, inst: Instance, old: ProgramState, new: ProgramState, why: str) -> None:
        self.log.transition(inst.name, old.name, new.name, why)
        self.on_transition(inst, old, new)

    def output(self, inst: Instance, stream: str, data: bytes) -> None:
        self.log.output(inst.name, stream, data, inst.colour)

    def note(self, text: str) -> None:
        """A line in the event log (an instance's news that is not a transition)."""
        self.log.note(text)

    def track(self, proc: Process, on_exit: Callable[[], None]) -> None:
        self.tracker.track(proc, on_exit)

    def untrack(self, proc: Process) -> None:
        self.tracker.untrack(proc)

    async def end_tree(
        self, tree: _tree.Tree, sig: int, grace: float, *, include_root: bool = True
    ) -> None:
        """Async :func:`forkwell._core._tree.terminate_tree`: ``sig`` to all, ``grace``, SIGKILL."""
        await self.trees.end_tree(tree, sig, grace, include_root=include_root)
