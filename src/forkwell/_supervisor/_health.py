"""What the supervisor does about its instances' health, told of every transition.

:meth:`Health.transition` hears each instance's state changes (from the
supervisor's ``transition``) and acts on three settings:

* ``liveness``: an instance entering RUNNING gets its probe
  (:class:`~forkwell._supervisor._liveness.Liveness`); leaving RUNNING
  stops it.  Too many failures in a row restart the instance: its whole
  tree is stopped as ``forkwell stop`` does, with the reason as the event's
  (``liveness: http://127.0.0.1:8000/health returned 503 (3 times in a row)``),
  then it is started again (unless ``restart = "never"``).
* ``depends_on = [{ name = "db", restart = true }]``: when db restarts (by
  hand, by liveness, or after a crash), such dependents are stopped first
  (after it, for a crash: it is already gone) and started again once db is
  ready.
* ``essential`` and ``[supervisor] exit_when``: when the supervisor's run
  is over, it stops everything (dependents first) and ``forkwell up`` exits
  with the status :func:`exit_status` gives the instance that ended it.

An essential instance ends the run when it is FATAL, or exited and is not
restarted (``essential = "on-failure"``: when that exit was a failure, as
process-compose's ``exit_on_failure``).  ``exit_when = "any-exit"`` ends it
at the first instance that exits or fails to start, whatever its status (Procfile runners' rule);
``"all-exited"`` once every instance that ran is EXITED or FATAL (a batch of
jobs), with status 0 if all succeeded, else the first failure's.  Decisions
that depend on whether an exit will be followed by a restart wait for the
end of the loop iteration that saw the exit (the restart happens in it).
Stopping by hand (``forkwell stop``) never ends the run.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from ._liveness import Liveness
from ._program import DOWN, ProgramState

if TYPE_CHECKING:
    from typing import Protocol

    from ._fleet import Fleet
    from ._probes import ProbeHost
    from ._program import Instance

    class HealthHost(ProbeHost, Protocol):
        def child_env(self, inst: Instance) -> dict[str, str]: ...
        def background(self, coro: object) -> None: ...

S = ProgramState
_ENDED = frozenset({S.EXITED, S.BACKOFF, S.FATAL})  # what an exit (or a failed start) leads to
_UP = frozenset({S.STARTING, S.RUNNING, S.BACKOFF})


def exit_status(inst: Instance) -> int:
    """The status ``forkwell up`` exits with for ``inst``: its own, 128+N for signal N, else 1."""
    rc = inst.last_exit
    if rc is None:
        return 1
    return 128 - rc if rc < 0 else rc


def _ends_the_run(inst: Instance) -> bool:
    """An essential instance's exit (not restarted) ends the run; 'on-failure': a failed one."""
    essential = inst.config.essential
    if essential == "on-failure":
        return inst.last_exit is None or inst.last_exit not in inst.config.success_exit_codes
    return bool(essential)


class Health:
    """Liveness probes, restarts that take dependents along, and the end of the run."""

    def __init__(
        self,
        host: HealthHost,
        fleet: Fleet,
        note: Callable[[str], None],
        end_run: Callable[[], None],
    ) -> None:
        self._host = host
        self._fleet = fleet
        self._note = note
        self._end_run = end_run
        self.exit_code = 0  # what run() returns
        self._first_failure: Instance | None = None  # for exit_when = "all-exited"
        self._pending: set[Instance] = set()  # exits to judge at the end of this iteration
        self._targets: tuple[object, frozenset[str]] = (None, frozenset())

    # -- transitions -----------------------------------------------------------

    def transition(self, inst: Instance, old: ProgramState, new: ProgramState) -> None:
        if new is S.RUNNING and inst.config.liveness is not None:
            self._liveness(inst).start()
        elif old is S.RUNNING and inst.liveness is not None:
            inst.liveness.stop()  # whatever the config says now (a reload may have changed it)
        if self._fleet.closed or (new not in DOWN and new is not S.BACKOFF):
            return
        if new in _ENDED:
            self._ended(inst, new)
        if new is S.EXITED or self._fleet.config.supervisor.exit_when == "all-exited":
            # Restarted in this same iteration, or not: judge once it is over.
            if not self._pending:
                self._host.loop.call_soon(self._judge)
            self._pending.add(inst)

    def _ended(self, inst: Instance, new: ProgramState) -> None:
        """``inst`` exited, or failed to start: the rules that need no waiting."""
        failed = new is S.FATAL or (
            inst.last_exit is not None and inst.last_exit not in inst.config.success_exit_codes
        )
        if failed and self._first_failure is None:
            self._first_failure = inst
        if self._fleet.config.supervisor.exit_when == "any-exit":
            self.end(inst, f"{inst.name} is {new.name} (exit_when = 'any-exit')")
        elif inst.config.essential and new is S.FATAL:
            self.end(inst, f"essential {inst.name} is FATAL")

    def _judge(self) -> None:
        pending, self._pending = self._pending, set()
        if self._fleet.closed:
            return
        for inst in pending:
            if inst.state is S.EXITED and _ends_the_run(inst):
                self.end(inst, f"essential {inst.name} exited and is not restarted")
                return
        targets = self._restart_targets()
        for inst in pending:
            if inst.state in _UP and inst.program in targets:  # a crash, its restart under way
                self._host.background(self._bounce_after_crash(inst))
        if self._fleet.config.supervisor.exit_when == "all-exited":
            self.check_all_exited()

    def _restart_targets(self) -> frozenset[str]:
        """Programs some other program restarts with (``restart = true``), for this config."""
        config = self._fleet.config
        if self._targets[0] is not config:
            names = {n for p in config.programs.values() for n in p.restart_with}
            self._targets = (config, frozenset(names))
        return self._targets[1]

    def check_all_exited(self) -> None:
        """``exit_when = "all-exited"``: every instance that ran has exited for good."""
        insts = self._fleet.all()
        if self._fleet.closed or not all(i.state in DOWN for i in insts):
            return
        if any(i.state in (S.EXITED, S.FATAL) for i in insts):
            first = self._first_failure
            self.exit_code = 0 if first is None else exit_status(first)
            self._note(f"every instance has exited (exit_when = 'all-exited'): exiting with "
                       f"status {self.exit_code}")  # fmt: skip
            self._stop_all()

    def end(self, inst: Instance, why: str) -> None:
        """The run is over because of ``inst``: stop everything, exit with its status."""
        if self._fleet.closed:
            return
        self.exit_code = exit_status(inst)
        self._note(f"{why}: stopping everything, then exiting with status {self.exit_code}")
        self._stop_all()

    def _stop_all(self) -> None:
        self._fleet.close()  # at once: nothing restarts from here on
        self._end_run()

    # -- liveness ----------------------------------------------------------------

    def _liveness(self, inst: Instance) -> Liveness:
        if inst.liveness is None:
            env = functools.partial(self._host.child_env, inst)
            inst.liveness = Liveness(
                self._host, inst, env, functools.partial(self._liveness_failed, inst)
            )
        return inst.liveness

    def _liveness_failed(self, inst: Instance, why: str) -> None:
        self._host.background(self._restart_failing(inst, why))

    async def _restart_failing(self, inst: Instance, why: str) -> None:
        if self._fleet.closed or inst.state is not S.RUNNING:
            return
        bounced = await self.stop_dependents([inst])
        await inst.stop(why)
        if self._fleet.closed:
            return
        if inst.config.restart == "never":
            inst.message = f"{inst.name} stopped: {why} (restart = 'never')"
            if inst.config.essential:
                self.end(inst, f"essential {inst.name} failed its liveness probe")
            return
        inst.restarts += 1
        if inst.liveness is not None:
            inst.liveness.restarts += 1
        self._fleet.request_start(inst)
        self.start_dependents(bounced)

    # -- dependents that restart with what they depend on -----------------------

    def restart_dependents(self, insts: list[Instance]) -> list[Instance]:
        """The instances that restart when ``insts`` restart (transitively), now up."""
        config = self._fleet.config
        programs = {i.program for i in insts}
        found: list[str] = []
        todo = list(programs)
        while todo:
            name = todo.pop()
            for prog in config.programs.values():
                if name in prog.restart_with and prog.name not in programs:
                    programs.add(prog.name)
                    found.append(prog.name)
                    todo.append(prog.name)
        chosen = set(insts)
        return [i for name in found for i in self._fleet.programs.get(name, [])
                if i.state not in DOWN and i not in chosen]  # fmt: skip

    async def with_dependents(
        self, insts: list[Instance], restart: Callable[[Instance], Awaitable[None]]
    ) -> None:
        """``restart`` each of ``insts`` at once, inside the stop and start of their
        ``restart = true`` dependents (``forkwell restart``)."""
        import asyncio

        bounced = await self.stop_dependents(insts)
        await asyncio.gather(*(restart(i) for i in insts))
        self.start_dependents(bounced)

    async def stop_dependents(self, insts: list[Instance]) -> list[Instance]:
        """Stop (dependents first) what restarts with ``insts``; return it, to start later."""
        bounced = self.restart_dependents(insts)
        if bounced:
            names = ", ".join(i.name for i in bounced)
            self._note(f"restarting {names} with {', '.join(i.name for i in insts)} "
                       "(depends_on ... restart = true)")  # fmt: skip
            await self._fleet.stop_ordered(bounced)
        return bounced

    def start_dependents(self, bounced: list[Instance]) -> None:
        """Start again what :meth:`stop_dependents` stopped (each waits for what it needs)."""
        for inst in bounced:
            if inst.state in DOWN and not self._fleet.closed:
                inst.restarts += 1
                self._fleet.request_start(inst)

    async def _bounce_after_crash(self, inst: Instance) -> None:
        bounced = await self.stop_dependents([inst])
        self.start_dependents(bounced)
