"""The fleet: every instance by program, and the order dependencies impose.

A program starts after the programs it ``depends_on`` are up (RUNNING, or a
one-shot job that finished successfully), and stops after the programs that
depend on it are stopped; everything else starts and stops in parallel.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from .._exceptions import UnknownProgramError
from ._program import DOWN, SETTLED, Instance, ProgramState

if TYPE_CHECKING:
    from ._config import Config, ProgramConfig
    from ._program import _Host

S = ProgramState


def dep_ok(dep: Instance) -> bool:
    """Whether ``dep`` is up for its dependents: RUNNING, or a one-shot job done well."""
    if dep.state is S.RUNNING:
        return True
    return (
        dep.state is S.EXITED
        and dep.last_exit is not None
        and dep.last_exit in dep.config.success_exit_codes
    )


def dep_failed(dep: Instance) -> bool:
    return dep.state in DOWN and not dep_ok(dep)


def settled(inst: Instance) -> bool:
    """What :func:`settle` would return at once for."""
    if inst.state not in SETTLED:
        return False
    if inst.state is not S.RUNNING or inst.config.ready.kind != "exec":
        return True
    return inst.config.min_uptime - inst.uptime() <= 0


async def settle(inst: Instance) -> None:
    """Wait until a start has an answer: RUNNING (and holding), EXITED, FATAL, STOPPED.

    With ``ready = "exec"`` nothing but time says a program really started,
    so RUNNING counts only once it has been up ``min_uptime``: a program
    that crashes at once is reported as failing, not as started.
    """
    while not settled(inst):
        if inst.state not in SETTLED:
            await inst.wait_for(lambda s: s in SETTLED)
        else:  # RUNNING by exec, for less than min_uptime so far
            left = inst.config.min_uptime - inst.uptime()
            await inst.wait_for(lambda s: s is not S.RUNNING, left)


def dependents_closure(config: Config, program: str) -> set[str]:
    """Every program that depends on ``program``, directly or not."""
    out: set[str] = set()
    todo = [program]
    while todo:
        for dependent in config.dependents(todo.pop()):
            if dependent not in out:
                out.add(dependent)
                todo.append(dependent)
    return out


class Fleet:
    """The instances of a config's programs, started and stopped in dependency order."""

    def __init__(self, host: _Host, config: Config) -> None:
        self.host = host
        self.config = config
        self.programs: dict[str, list[Instance]] = {
            prog.name: self.new_instances(prog, 0) for prog in config.programs.values()
        }
        self.closed = False  # shutting down: from now on nothing starts

    def new_instances(self, prog: ProgramConfig, first: int) -> list[Instance]:
        """Instances ``first`` .. ``numprocs - 1`` of ``prog``."""
        return [Instance(self.host, prog, i) for i in range(first, prog.numprocs)]

    # -- names -----------------------------------------------------------------

    def all(self) -> list[Instance]:
        return [inst for insts in self.programs.values() for inst in insts]

    def by_name(self) -> dict[str, Instance]:
        return {inst.name: inst for inst in self.all()}

    def resolve(self, names: Sequence[str]) -> list[str]:
        """Instance names for ``"web"`` (all its instances), ``"web:1"`` or ``"all"``."""
        by_name = self.by_name()
        out: dict[str, None] = {}
        for name in names:
            if name == "all":
                out.update(dict.fromkeys(by_name))
            elif name in self.programs:
                out.update(dict.fromkeys(i.name for i in self.programs[name]))
            elif name in by_name:
                out[name] = None
            else:
                raise self._unknown(name)
        return list(out)

    def _unknown(self, name: str) -> UnknownProgramError:
        program, colon, _ = name.partition(":")
        if colon and program in self.programs:
            count = len(self.programs[program])
            return UnknownProgramError(
                f"unknown instance {name!r}: {program} has instances "
                f"{program}:0..{program}:{count - 1}"
                if count
                else f"unknown instance {name!r}: {program} has no instances (numprocs 0)"
            )
        known = ", ".join(self.programs) or "(none)"
        return UnknownProgramError(f"unknown program {name!r} (programs: {known})")

    def lookup(self, names: Iterable[str]) -> list[Instance]:
        by_name = self.by_name()
        return [by_name[n] for n in self.resolve(list(names))]

    # -- starting --------------------------------------------------------------

    def deps(self, inst: Instance) -> list[Instance]:
        return [d for p in inst.config.depends_on for d in self.programs.get(p, [])]

    def request_start(self, inst: Instance) -> None:
        """Start ``inst`` (and, first, what it depends on) unless it is already on its way."""
        if inst.state in (S.RUNNING, S.STARTING, S.BACKOFF) or self.closed:
            return
        if inst.state is S.STOPPING:
            async def later() -> None:
                await inst.wait_for(lambda s: s is not S.STOPPING)
                self.request_start(inst)

            self.host.background(later())
            return
        inst.no_restart = False
        inst.begin_start()
        deps = self.deps(inst)
        for dep in deps:
            self.request_start(dep)
        if all(dep_ok(d) for d in deps):
            inst.spawn()
        else:
            inst.wait_for_dependencies(self.host.aio_loop.create_task(self._await_deps(inst, deps)))

    async def _await_deps(self, inst: Instance, deps: list[Instance]) -> None:
        for dep in deps:
            while not dep_ok(dep):
                if dep_failed(dep):
                    inst.dependencies_done(failed=f"dependency {dep.name} is {dep.state.name}")
                    return
                await dep.wait_for(lambda s: s in SETTLED)
        inst.dependencies_done()

    # -- stopping --------------------------------------------------------------

    async def stop_ordered(self, insts: list[Instance]) -> None:
        """Stop ``insts``: each program after the programs that depend on it; others in parallel."""
        import asyncio

        by_program: dict[str, list[Instance]] = {}
        for inst in insts:
            by_program.setdefault(inst.program, []).append(inst)
        tasks: dict[str, asyncio.Task[None]] = {}

        async def stop_program(group: list[Instance], first: list[asyncio.Task[None]]) -> None:
            if first:
                await asyncio.gather(*first, return_exceptions=True)
            await asyncio.gather(*(i.stop() for i in group))

        order = [p for p in self.config.start_order() if p in by_program]
        order += [p for p in by_program if p not in order]  # removed by a reload
        loop = self.host.aio_loop
        for program in reversed(order):
            first = [tasks[q] for q in dependents_closure(self.config, program) if q in tasks]
            tasks[program] = loop.create_task(stop_program(by_program[program], first))
        try:
            await asyncio.gather(*tasks.values())
        finally:
            for task in tasks.values():
                task.cancel()

    def rebuild(self, config: Config, unchanged: list[str], scaled: list[str]) -> None:
        """Take a reloaded ``config``: new instances, but for unchanged and scaled programs."""
        programs: dict[str, list[Instance]] = {}
        for name, prog in config.programs.items():
            if name in unchanged or name in scaled:
                programs[name] = self.programs[name]
                if name in unchanged:
                    for inst in programs[name]:
                        inst.config = prog
            else:
                programs[name] = self.new_instances(prog, 0)
        self.config = config
        self.programs = programs

    async def remove(self, insts: list[Instance]) -> None:
        """Stop ``insts`` for good: their pipes and log files are closed too."""
        await self.stop_ordered(insts)
        for inst in insts:
            inst.close_io()

    async def resize(self, name: str, prog: ProgramConfig) -> list[Instance]:
        """Run ``prog.numprocs`` instances of ``name``; return the ones added or removed."""
        insts = self.programs[name]
        n = prog.numprocs
        for inst in insts:
            inst.config = prog._replace(numprocs=n)
        if n < len(insts):
            victims = insts[n:]
            await self.remove(victims)
            del insts[n:]
            return victims
        fresh = self.new_instances(prog, len(insts))
        insts.extend(fresh)
        return fresh
