"""The fleet: every instance by program, and the order dependencies impose.

A program starts after the programs it ``depends_on`` are up (RUNNING, or a
one-shot job that finished successfully), and stops after the programs that
depend on it are stopped; everything else starts and stops in parallel.  A
reload changes only the programs whose settings changed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, NamedTuple

from .._exceptions import UnknownProgramError
from ._program import DOWN, SETTLED, Instance, ProgramState

if TYPE_CHECKING:
    import asyncio

    from ._config import Config, ProgramConfig
    from ._program import _Host

S = ProgramState


class ReloadReport(NamedTuple):
    """Program names, by what a reload did to them."""

    added: list[str]
    removed: list[str]
    changed: list[str]
    unchanged: list[str]
    scaled: list[str]
    # Scaled at run time (`forkwell scale`), and the file's numprocs has not changed since:
    # the run-time count is kept.
    kept: list[str]


def compare(old: Config, new: Config, kept: list[str] | None = None) -> ReloadReport:
    """What a reload from ``old`` to ``new`` does to each program."""
    report = ReloadReport(
        added=[n for n in new.programs if n not in old.programs],
        removed=[n for n in old.programs if n not in new.programs],
        changed=[],
        unchanged=[],
        scaled=[],
        kept=kept or [],
    )
    for name, b in new.programs.items():
        a = old.programs.get(name)
        if a is None:
            continue
        if a == b:
            report.unchanged.append(name)
        elif a.same_except_numprocs(b):
            report.scaled.append(name)
        else:
            report.changed.append(name)
    return report


def keep_scale(loaded: Config, running: Config, read: Config) -> tuple[Config, list[str]]:
    """``read`` (the file now), with the run-time ``numprocs`` of each program scaled by hand.

    The rule of ``kubectl apply``: a count changed at run time stays until
    the file's own count changes (``loaded`` is the file as last read).
    Also the names of the programs whose run-time count was kept.
    """
    programs = dict(read.programs)
    kept = []
    for name, prog in read.programs.items():
        was, now = loaded.programs.get(name), running.programs.get(name)
        if was is None or now is None or prog.numprocs != was.numprocs:
            continue
        if now.numprocs != prog.numprocs:
            programs[name] = prog._replace(numprocs=now.numprocs)
            kept.append(name)
    return read._replace(programs=programs), kept


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


def _ranked(config: Config) -> list[str]:
    """Program names by ``priority`` (lower first), then file order: the order they start in."""
    return sorted(config.programs, key=lambda name: config.programs[name].priority)


class Fleet:
    """The instances of a config's programs, started and stopped in dependency order.

    ``on_change()`` is told whenever programs or instances come or go.
    """

    def __init__(self, host: _Host, config: Config, on_change: Callable[[], None]) -> None:
        self.host = host
        self.config = config  # as it runs (`forkwell scale` changes it)
        self.loaded = config  # as the file said when last read
        self._on_change = on_change
        self.programs: dict[str, list[Instance]] = {
            name: self.new_instances(config.programs[name], 0) for name in _ranked(config)
        }
        self.closed = False  # shutting down: from now on nothing starts
        self._graceful: asyncio.Task[None] | None = None

    def new_instances(self, prog: ProgramConfig, first: int) -> list[Instance]:
        """Instances ``first`` .. ``numprocs - 1`` of ``prog``."""
        return [Instance(self.host, prog, i) for i in range(first, prog.numprocs)]

    # -- names -----------------------------------------------------------------

    def all(self) -> list[Instance]:
        return [inst for insts in self.programs.values() for inst in insts]

    def by_name(self) -> dict[str, Instance]:
        return {inst.name: inst for inst in self.all()}

    def resolve(self, names: Sequence[str]) -> list[str]:
        """Instance names for ``"web"`` (all its instances), ``"web:1"`` or ``"all"``.

        A group (``group = "g"``) is named ``g`` or ``g:*``, as supervisorctl names it.
        """
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
                members = self.group(name.removesuffix(":*"))
                if not members:
                    raise self._unknown(name)
                out.update(dict.fromkeys(i.name for i in members))
        return list(out)

    def group(self, name: str) -> list[Instance]:
        """Every instance of the programs whose ``group`` is ``name``."""
        return [i for i in self.all() if i.config.process_group == name]

    def _unknown(self, name: str) -> UnknownProgramError:
        program, colon, _ = name.partition(":")
        if colon and program in self.programs:
            # Instance names are the format's (supervisord's process_name): said as they are.
            insts = self.programs[program]
            if not insts:
                has = "no instances (numprocs 0)"
            elif len(insts) == 1:
                has = f"one instance, {insts[0].name}"
            else:
                has = f"instances {insts[0].name}..{insts[-1].name}"
            return UnknownProgramError(f"unknown instance {name!r}: {program} has {has}")
        return self.unknown_program(name)

    def unknown_program(self, name: str) -> UnknownProgramError:
        known = ", ".join(self.programs) or "(none)"
        groups = sorted({i.config.process_group for i in self.all() if i.config.process_group})
        also = f"; groups: {', '.join(groups)}" if groups else ""
        return UnknownProgramError(f"unknown program {name!r} (programs: {known}{also})")

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
            if not dep_ok(dep):  # a job that finished well is not run again for a dependent
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
            # Only tasks made already are awaited (the reverse start order): no cycle.
            after = dependents_closure(self.config, program) | self._stops_before(program)
            first = [tasks[q] for q in after if q in tasks]
            tasks[program] = loop.create_task(stop_program(by_program[program], first))
        try:
            await asyncio.gather(*tasks.values())
        finally:
            for task in tasks.values():
                task.cancel()

    def _stops_before(self, program: str) -> set[str]:
        """Programs with a higher ``priority``: supervisord stops them first."""
        programs = self.config.programs
        mine = programs[program].priority if program in programs else None
        if mine is None:
            return set()
        return {name for name, p in programs.items() if p.priority > mine}

    async def remove(self, insts: list[Instance]) -> None:
        """Stop ``insts`` for good: their pipes and log files are closed too."""
        await self.stop_ordered(insts)
        for inst in insts:
            inst.close_io()

    def close(self) -> None:
        """From now on nothing starts, and no exit is followed by a restart."""
        self.closed = True
        for inst in self.all():
            inst.no_restart = True

    async def shutdown(self, timeout: float, note: Callable[[str], None]) -> list[Instance]:
        """Stop everything, dependents first; after ``timeout``, SIGKILL what is left.

        From now on nothing starts.  Returns the instances, all STOPPED.
        """
        import asyncio

        insts = self.all()
        self.close()
        note("shutting down: stopping every program, dependents first")
        tell_manager(STOPPING=1)
        graceful = self.host.aio_loop.create_task(self.stop_ordered(insts))
        self._graceful = graceful
        done, _ = await asyncio.wait({graceful}, timeout=timeout)
        if not done:
            note(f"shutdown_timeout ({timeout:g}s) passed: SIGKILL to what is left")
        if not graceful.done():
            graceful.cancel()
        try:
            await graceful
        except asyncio.CancelledError:
            pass
        except Exception as exc:  # whatever it was, the SIGKILL pass below still runs
            note(f"graceful stop failed: {type(exc).__name__}: {exc}")
        await asyncio.gather(*(i.kill() for i in insts if i.state not in DOWN))
        for inst in insts:
            inst.close_io()
        return insts

    def hurry(self) -> bool:
        """A second stop request: give up the graceful stops; False if there are none."""
        if self._graceful is None or self._graceful.done():
            return False
        self._graceful.cancel()
        return True

    # -- reload and scale ------------------------------------------------------

    def plan(self, read: Config) -> tuple[Config, ReloadReport]:
        """The config a reload to ``read`` (the file, just read) runs, and what it does."""
        new, kept = keep_scale(self.loaded, self.config, read)
        self.loaded = read
        return new, compare(self.config, new, kept)

    async def reload(self, new: Config, report: ReloadReport) -> list[Instance]:
        """Apply ``report`` (see :func:`compare`); return the instances to start now."""
        added, removed, changed, unchanged, scaled, _ = report
        tell_manager(RELOADING=1)
        was_up = {name: any(i.state not in DOWN for i in self.programs[name]) for name in changed}
        # Stop what goes away under the old config (its dependency order).
        going = [i for name in (*removed, *changed) for i in self.programs[name]]
        if going:
            await self.remove(going)
        self._rebuild(new._replace(supervisor=self.config.supervisor), unchanged, scaled)
        tell_manager(READY=1)  # the new config is in force; what it adds starts now
        return await self._grow(scaled, new) + [
            i
            for name in (*added, *changed)
            if new.programs[name].autostart or was_up.get(name, False)
            for i in self.programs[name]
        ]

    def _rebuild(self, config: Config, unchanged: list[str], scaled: list[str]) -> None:
        """Take ``config``: new instances, but for the unchanged and scaled programs."""
        programs: dict[str, list[Instance]] = {}
        for name, prog in config.programs.items():
            if name in unchanged or name in scaled:
                programs[name] = self.programs[name]
                if name in unchanged:
                    for inst in programs[name]:
                        inst.config = prog
            else:
                programs[name] = self.new_instances(prog, 0)
        programs = {name: programs[name] for name in _ranked(config)}
        self.config = config
        self.programs = programs
        self._on_change()

    async def _grow(self, scaled: list[str], new: Config) -> list[Instance]:
        """Scale the programs whose numprocs changed; return the new instances meant to run."""
        grown: list[Instance] = []
        for name in scaled:
            prog = new.programs[name]
            before = len(self.programs[name])
            kept = self.programs[name][: prog.numprocs]
            touched = await self.resize(name, prog)
            # New instances run if the program is meant to (autostart, or its others run).
            if prog.numprocs > before and (
                prog.autostart or any(i.state not in DOWN for i in kept)
            ):
                grown.extend(touched)
        return grown

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
            self._on_change()
            return victims
        fresh = self.new_instances(prog, len(insts))
        insts.extend(fresh)
        self._on_change()
        return fresh


def tell_manager(**fields: object) -> None:
    """``STOPPING=1``, ``RELOADING=1``... to systemd, for ``Type=notify`` (no-op without one).

    A broken ``$NOTIFY_SOCKET`` is the manager's problem, reported once at
    READY=1: it must not stop a shutdown or a reload.
    """
    from .._core._notify import notify

    try:
        notify(**fields)
    except (OSError, ValueError):
        pass
