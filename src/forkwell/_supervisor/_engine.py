"""The supervisor engine: keep a fleet of program instances running.

One asyncio event loop in one thread does everything, and does nothing while
nothing happens (no timers tick in steady state):

* each child's pidfd is registered with ``loop.add_reader``; its exit runs
  the instance's callback, which spawns the replacement in the same loop
  iteration (:mod:`forkwell._supervisor._tracking`);
* each instance's stdout/stderr pipe is registered the same way and copied
  to its log file;
* backoff delays, readiness deadlines and probes are ``call_later`` timers
  that exist only while an instance starts;
* SIGCHLD (delivered through asyncio's wake-up fd, not handled in signal
  context) reaps orphans re-parented to the supervisor, which is a
  subreaper (or PID 1), without stealing the statuses of its own children;
* SIGTERM/SIGINT shut down, SIGHUP reloads.

:class:`Supervisor` orchestrates; its parts live in their own modules: the
instances and their dependency order (:mod:`._fleet`), the children and
their trees (:mod:`._tracking`), the event log (:mod:`._events`), what a
child is spawned with (:mod:`._childenv`), the state file
(:mod:`._statefile`), the watchdog (:mod:`._watchdog`) and the stand-in loop
of :meth:`Supervisor.prestart` (:mod:`._preloop`).

A SIGKILLed supervisor takes its programs along: its watchdog
(:mod:`forkwell._supervisor._watchdog`) sees it die and kills every process carrying the
supervisor's cookie.  Should both be killed at once, the cookie is also in
the state file, and the next ``forkwell up`` ends the survivors before
starting anything.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Coroutine, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from .._core import _sys, _tree
from .._core._files import tail
from .._core._process import Process
from .._exceptions import ForkwellError, UnknownProgramError
from . import _statefile
from ._childenv import ChildEnv
from ._config import Config, ProgramConfig, load_config
from ._events import EventLog
from ._fleet import Fleet, dep_ok, settle, settled
from ._logs import Console
from ._preloop import EarlySignals, Loops
from ._program import DOWN, SETTLED, Instance, ProgramState
from ._tracking import Tracker, TreeEnder
from ._watchdog import Keeper, Watchdog

if TYPE_CHECKING:
    # Imported at run time only where a coroutine needs it: ``forkwell up``
    # spawns its first programs (prestart) before asyncio is even imported.
    import asyncio
    import collections
    from collections.abc import Callable

    from ._control._server import ControlServer
    from ._events import Event
    from ._loop import Loop

S = ProgramState


class InstanceInfo(NamedTuple):
    """A snapshot of one instance, for ``forkwell ps``."""

    name: str  # "web:0"
    program: str
    index: int  # type: ignore[assignment]  # (shadows tuple.index; the name is the protocol's)
    state: str  # a ProgramState member name
    pid: int | None
    started_at: float | None  # time.time() when the current process was spawned
    ready_at: float | None
    restarts: int
    last_exit: int | None  # subprocess-style returncode (-N = signal N)
    autostart: bool


class OpResult(NamedTuple):
    """The outcome of an action on one instance."""

    instance: str
    ok: bool
    state: str
    message: str  # "" when ok, else one line
    last_exit: int | None
    log_tail: list[str]  # last lines of its log when it failed, else []


class ReloadReport(NamedTuple):
    """Program names, by what a reload did to them."""

    added: list[str]
    removed: list[str]
    changed: list[str]
    unchanged: list[str]
    scaled: list[str]


class Supervisor:
    """Runs the programs of a :class:`~forkwell.Config`.

    ``await supervisor.run()`` is ``forkwell up``.  The other methods may be
    called from the same event loop while it runs (the control socket does).
    """

    def __init__(self, config: Config, *, quiet: bool = False) -> None:
        self.config_path: Path = config.path
        self.socket_path: Path = config.supervisor.socket
        self.quiet = quiet
        self._loops = Loops()
        self._log = EventLog(None if quiet else Console(sys.stdout.buffer))
        self.events: collections.deque[Event] = self._log.events
        self._fleet = Fleet(self, config)
        self._token = _tree.new_token()
        cookie = _tree.cookie_value(os.environ.get(_tree.COOKIE_VAR), self._token)
        self._env = ChildEnv(cookie, self._loops)
        self._watchdog = Watchdog(self._token)
        self._keeper = Keeper(
            self._watchdog, self._loops, self._note, lambda: self._fleet.closed, self._new_watchdog
        )
        self._tracker = Tracker(self._loops, self._watchdog)
        self._trees = TreeEnder(self._loops, self._note)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._early = EarlySignals()
        self._prepared = False
        self._made_subreaper = False
        self._done: asyncio.Future[int] | None = None
        self._shutdown_task: asyncio.Task[None] | None = None
        self._graceful: asyncio.Task[None] | None = None
        self.startup_failures: list[OpResult] = []
        # --detach: an autostart failure ends the run (the caller is told why).
        self.fail_fast = False
        self._up: asyncio.Event | None = None
        # Pids a killed predecessor left running, ended by run() before starting anything.
        self.state_file_survivors: list[int] = []
        self._recolour()

    @property
    def config(self) -> Config:
        return self._fleet.config

    @config.setter
    def config(self, config: Config) -> None:
        self._fleet.config = config

    # -- the event loop ------------------------------------------------------

    @property
    def loop(self) -> Loop:
        """Readers and timers: during :meth:`prestart` a stand-in, then asyncio's loop."""
        return self._loops.loop

    @property
    def aio_loop(self) -> asyncio.AbstractEventLoop:
        """The asyncio loop :meth:`run` runs on, for futures and tasks."""
        return self._loops.aio

    @property
    def up(self) -> asyncio.Event:
        """Set by :meth:`run` once autostart has settled (every instance up or failed)."""
        if self._up is None:
            import asyncio

            self._up = asyncio.Event()
        return self._up

    def background(self, coro: object) -> None:
        """Run a coroutine as a task the supervisor keeps a reference to."""
        assert isinstance(coro, Coroutine)
        task = self.aio_loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            self._note(f"internal error: {type(exc).__name__}: {exc}")

    # -- services for instances (the _Host protocol) --------------------------

    def child_env(self, inst: Instance) -> dict[str, str]:
        return self._env.for_instance(inst)

    def devnull(self) -> int:
        return self._env.devnull()

    def find_executable(self, command: str, env: Mapping[str, str]) -> str | None:
        return self._env.find_executable(command, env)

    def log_dir(self) -> Path:
        return self.config.supervisor.log_dir

    def transition(self, inst: Instance, old: ProgramState, new: ProgramState, why: str) -> None:
        self._log.transition(inst.name, old.name, new.name, why)

    def output(self, inst: Instance, stream: str, data: bytes) -> None:
        if self._log.console is not None:
            self._log.console.output(inst.name, stream, data, inst.colour)

    def track(self, proc: Process, on_exit: Callable[[], None]) -> None:
        self._tracker.track(proc, on_exit)

    def untrack(self, proc: Process) -> None:
        self._tracker.untrack(proc)

    async def end_tree(
        self, tree: _tree.Tree, sig: int, grace: float, *, include_root: bool = True
    ) -> None:
        """Async :func:`forkwell._core._tree.terminate_tree`: ``sig`` to all, ``grace``, SIGKILL."""
        await self._trees.end_tree(tree, sig, grace, include_root=include_root)

    def _note(self, text: str) -> None:
        self._log.note(text)

    # -- read side ------------------------------------------------------------

    def _all(self) -> list[Instance]:
        return self._fleet.all()

    def _by_name(self) -> dict[str, Instance]:
        return self._fleet.by_name()

    def instances(self) -> list[InstanceInfo]:
        """A snapshot of every instance, by program (config order) then index."""
        return [_info(i) for i in self._all()]

    def resolve(self, names: Sequence[str]) -> list[str]:
        """Instance names for ``"web"`` (all its instances), ``"web:1"`` or ``"all"``."""
        return self._fleet.resolve(names)

    def log_path(self, instance: str, stream: Literal["stdout", "stderr"]) -> Path:
        insts = self._fleet.lookup([instance])
        if len(insts) != 1:
            raise UnknownProgramError(
                f"{instance!r} is not one instance; name one, e.g. {insts[0].name if insts else ''}"
            )
        return insts[0].log_path(stream)

    # -- start, stop, restart, signal ------------------------------------------

    async def start(self, instances: list[str], *, wait: bool = True) -> list[OpResult]:
        """Start instances (their dependencies first); with ``wait``, until RUNNING or failed."""
        import asyncio

        insts = self._fleet.lookup(instances)
        if self._fleet.closed:
            why = "the supervisor is shutting down"
            return [_result(i, False, f"{i.name}: {why}") for i in insts]
        for inst in insts:
            self._fleet.request_start(inst)
        if not wait:
            return [_result(i, i.state is not S.FATAL) for i in insts]
        while True:
            # Most starts are settled already (exec'd, no min_uptime): no task for those.
            await asyncio.gather(*(settle(i) for i in insts if not settled(i)))
            # A crash-restart may have moved one back to STARTING meanwhile.
            if all(i.state in SETTLED for i in insts):
                return [_result(i, dep_ok(i)) for i in insts]

    async def stop(self, instances: list[str], *, wait: bool = True) -> list[OpResult]:
        """Stop instances and their whole trees; dependents before their dependencies."""
        insts = self._fleet.lookup(instances)
        if not wait:
            self.background(self._fleet.stop_ordered(insts))
            return [_result(i, True) for i in insts]
        await self._fleet.stop_ordered(insts)
        return [_result(i, i.state in DOWN) for i in insts]

    async def restart(self, instances: list[str], *, wait: bool = True) -> list[OpResult]:
        """Stop then start each instance on its own: no other instance is touched."""
        import asyncio

        insts = self._fleet.lookup(instances)

        async def one(inst: Instance) -> None:
            await inst.stop()
            self._fleet.request_start(inst)
            if wait:
                await settle(inst)

        if not wait:
            for inst in insts:
                self.background(one(inst))
            return [_result(i, True) for i in insts]
        await asyncio.gather(*(one(i) for i in insts))
        return [_result(i, dep_ok(i)) for i in insts]

    def send_signal(self, instances: list[str], sig: int, *, tree: bool = False) -> list[OpResult]:
        """Send ``sig`` to each instance's process (``tree``: to its whole tree)."""
        results = []
        for inst in self._fleet.lookup(instances):
            if inst.signal(sig, tree):
                results.append(_result(inst, True))
            else:
                results.append(_result(inst, False, f"{inst.name} is not running"))
        return results

    # -- reload and scale ----------------------------------------------------

    def _recolour(self) -> None:
        for n, insts in enumerate(self._fleet.programs.values()):
            for inst in insts:
                inst.colour = n
        if self._log.console is not None:
            self._log.console.set_names([*self._by_name(), "forkwell"])

    async def reload(self) -> ReloadReport:
        """Re-read ``config_path`` and apply only what changed.

        An invalid file raises :class:`~forkwell.ConfigError` and changes
        nothing.  Unchanged programs keep their processes; a program whose
        only change is ``numprocs`` is scaled in place; changed programs are
        restarted with the new settings; removed ones are stopped.
        """
        new = load_config(self.config_path)
        report = _compare(self.config, new)
        added, removed, changed, unchanged, scaled = report
        self._note(
            f"reload {self.config_path}: added {added or '-'}, removed {removed or '-'}, "
            f"changed {changed or '-'}, scaled {scaled or '-'}"
        )
        programs = self._fleet.programs
        was_up = {name: any(i.state not in DOWN for i in programs[name]) for name in changed}
        # Stop what goes away under the old config (its dependency order).
        going = [i for name in (*removed, *changed) for i in programs[name]]
        if going:
            await self._fleet.remove(going)
        self._fleet.rebuild(new._replace(supervisor=self.config.supervisor), unchanged, scaled)
        self.config_path = new.path
        self._recolour()
        to_start = await self._grow(scaled, new) + [
            i
            for name in (*added, *changed)
            if new.programs[name].autostart or was_up.get(name, False)
            for i in self._fleet.programs[name]
        ]
        if to_start:
            await self.start([i.name for i in to_start])
        return report

    async def _grow(self, scaled: list[str], new: Config) -> list[Instance]:
        """Scale the programs whose numprocs changed; return new instances meant to run."""
        grown: list[Instance] = []
        for name in scaled:
            prog = new.programs[name]
            before = len(self._fleet.programs[name])
            kept = self._fleet.programs[name][: prog.numprocs]
            touched = await self._resize(name, prog)
            # New instances run if the program is meant to (autostart, or its others run).
            if prog.numprocs > before and (
                prog.autostart or any(i.state not in DOWN for i in kept)
            ):
                grown.extend(touched)
        return grown

    async def _resize(self, name: str, prog: ProgramConfig) -> list[Instance]:
        touched = await self._fleet.resize(name, prog)
        self._recolour()
        return touched

    async def scale(self, program: str, n: int) -> list[OpResult]:
        """Run ``n`` instances of ``program``: new ones are started, surplus ones stopped.

        Existing instances below ``n`` are not touched.
        """
        programs = self._fleet.programs
        if program not in programs:
            known = ", ".join(programs) or "(none)"
            raise UnknownProgramError(f"unknown program {program!r} (programs: {known})")
        if n < 0:
            raise ValueError(f"cannot scale {program} to {n} instances (must be >= 0)")
        prog = self.config.programs[program]._replace(numprocs=n)
        self.config = self.config._replace(programs={**self.config.programs, program: prog})
        before = len(programs[program])
        self._note(f"scale {program} from {before} to {n}")
        touched = await self._resize(program, prog)
        if n > before:
            return await self.start([i.name for i in touched])
        return [_result(i, i.state in DOWN) for i in touched]

    # -- shutting down ---------------------------------------------------------

    async def shutdown(self) -> None:
        """Stop everything, dependents first; after ``shutdown_timeout``, SIGKILL the rest."""
        import asyncio

        if self._shutdown_task is None:
            self._shutdown_task = self.aio_loop.create_task(self._shutdown())
        await asyncio.shield(self._shutdown_task)

    async def _shutdown(self) -> None:
        import asyncio

        insts = self._all()
        self._fleet.closed = True  # from now on nothing starts
        for inst in insts:
            inst.no_restart = True
        self._note("shutting down: stopping every program, dependents first")
        timeout = self.config.supervisor.shutdown_timeout
        graceful = self.aio_loop.create_task(self._fleet.stop_ordered(insts))
        self._graceful = graceful
        done, _ = await asyncio.wait({graceful}, timeout=timeout)
        if not done:
            self._note(f"shutdown_timeout ({timeout:g}s) passed: SIGKILL to what is left")
        if not graceful.done():
            graceful.cancel()
        try:
            await graceful
        except asyncio.CancelledError:
            pass
        except Exception as exc:  # whatever it was, the SIGKILL pass below still runs
            self._note(f"graceful stop failed: {type(exc).__name__}: {exc}")
        await asyncio.gather(*(i.kill() for i in insts if i.state not in DOWN))
        for inst in insts:
            inst.close_io()
        if self._log.console is not None:
            for inst in insts:
                self._log.console.flush_partial(inst.name)
        if self._done is not None and not self._done.done():
            self._done.set_result(0)

    def _request_shutdown(self) -> None:
        if self._shutdown_task is None:
            self._shutdown_task = self.aio_loop.create_task(self._shutdown())
        elif self._graceful is not None and not self._graceful.done():
            # A second Ctrl-C: do not wait for graceful stops any more.
            self._note("second stop request: SIGKILL to every tree now")
            self._graceful.cancel()

    def _request_reload(self) -> None:
        async def reload() -> None:
            from .._exceptions import ConfigError

            try:
                await self.reload()
            except ConfigError as exc:
                self._note("reload refused, nothing changed:")
                for line in exc.errors:
                    self._note(f"  {line}")

        self.background(reload())

    # -- running ---------------------------------------------------------------

    @property
    def _early_signals(self) -> list[int]:
        """The stop and reload requests that arrived during :meth:`prestart`."""
        return self._early.received

    def prepare(self) -> None:
        """The synchronous first half of :meth:`run`; it calls this itself.

        Refuse to run twice for one state file, end what a killed predecessor
        left, fork the watchdog, record the state file, raise the fd limit and
        become a subreaper: everything that must precede the first spawn.
        Raises :class:`~forkwell.StateError` when another supervisor runs.
        """
        if self._prepared:
            return
        self._env.snapshot()
        log_dir = self.config.supervisor.log_dir
        log_dir.mkdir(parents=True, exist_ok=True)
        self._log.open(log_dir / "forkwell.log")
        try:
            # Before touching anything process-wide: refuse to run twice.
            self.state_file_survivors = _statefile.take_over(
                self.config.supervisor.state_file, self.config_path, self._note
            )
            self._note(
                f"forkwell up: pid {os.getpid()}, {len(self._all())} instances "
                f"of {len(self._fleet.programs)} programs from {self.config_path}"
            )
            # Before anything is spawned: from here on the fleet dies with us.
            self._keeper.start()
            self._write_state()
        except BaseException:
            self._keeper.stop()
            self._log.close()
            raise
        _raise_fd_limit()
        was_subreaper = _sys.is_subreaper()
        self._made_subreaper = not was_subreaper and _sys.set_subreaper()
        # Every descendant then stays in our own subtree: scans walk it, not all of /proc.
        self._trees.own_subtree = _tree.HAVE_CHILDREN_FILE and (
            was_subreaper or self._made_subreaper
        )
        self._prepared = True

    def _write_state(self) -> None:
        _statefile.write(
            self.config.supervisor.state_file,
            token=self._token,
            config_path=self.config_path,
            watchdog=self._watchdog.pid,
        )

    def _new_watchdog(self) -> None:
        with contextlib.suppress(OSError):
            self._write_state()

    def prestart(self) -> int:
        """Spawn, before any event loop exists, what needs none; return how many.

        ``forkwell up`` calls this before it even imports asyncio (~12 ms), so
        the programs start that much sooner.  Autostart instances without
        dependencies and with ``ready = "exec"`` need nothing from a loop to
        start: the fds and timers they register meanwhile are recorded and
        handed to the real loop by :meth:`run`, which starts everything else.
        """
        if self._loops.taken:
            return 0
        # Until run() installs the loop's handlers, a stop or reload request is
        # only recorded: programs are running from here on.
        self._early.install()
        self._loops.use_preloop()
        try:
            self.prepare()
        except BaseException:
            self._loops.drop_preloop()  # nothing was started: as if never called
            self._early.restore()
            raise
        started = 0
        for inst in self._all():
            cfg = inst.config
            if cfg.autostart and not cfg.depends_on and cfg.ready.kind == "exec":
                self._fleet.request_start(inst)
                started += 1
        return started

    async def run(self) -> int:
        """``forkwell up``: serve until :meth:`shutdown` (or SIGTERM/SIGINT); return 0.

        Raises :class:`~forkwell.StateError` when another supervisor is
        running for the same state file.
        """
        import asyncio

        loop = self._loops.take_over()  # what prestart() spawned, the real loop now watches
        self._done = loop.create_future()
        self.prepare()
        self._handle_signals(loop)
        control: ControlServer | None = None
        try:
            control = self._control_server()
            await control.start()
            await self._autostart()
            code = await self._done
        finally:
            if self._shutdown_task is None:
                self._shutdown_task = loop.create_task(self._shutdown())
            await asyncio.shield(self._shutdown_task)
            if control is not None:
                await control.close()
            self._release(loop)
        return code

    def _handle_signals(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.add_signal_handler(signal.SIGTERM, self._request_shutdown)
        loop.add_signal_handler(signal.SIGINT, self._request_shutdown)
        loop.add_signal_handler(signal.SIGHUP, self._request_reload)
        loop.add_signal_handler(signal.SIGCHLD, self._tracker.reap)
        self._tracker.reap()  # whatever exited before the handler existed
        for sig in self._early_signals:  # what arrived during prestart()
            if sig == signal.SIGHUP:
                self._request_reload()
            else:
                self._request_shutdown()
        self._early_signals.clear()

    async def _autostart(self) -> None:
        """Start every autostart instance; report, and tell a waiting caller we are up."""
        auto = [i.name for i in self._all() if i.config.autostart]
        results = await self.start(auto) if auto else []
        failed = [r for r in results if not r.ok]
        for r in failed:
            self._note(r.message)
            for line in r.log_tail[-5:]:
                self._note(f"  {r.instance} | {line}")
        self.startup_failures = failed
        self._note(f"autostart done: {len(results) - len(failed)} up, {len(failed)} failed")
        if failed and self.fail_fast:
            more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
            raise ForkwellError(f"{failed[0].message}{more}")
        self._notify_ready(failed)
        self.up.set()

    def _release(self, loop: asyncio.AbstractEventLoop) -> None:
        """After the last program stopped: give back everything run() took."""
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
            loop.remove_signal_handler(sig)
        self._tracker.reap()
        self._trees.own_subtree = False
        self._keeper.stop()
        if self._made_subreaper:
            _sys.set_subreaper(False)
        _statefile.remove(self.config.supervisor.state_file)
        self._env.close()
        self._note("forkwell up: all stopped, exiting")
        self._log.close()

    def _control_server(self) -> ControlServer:
        """The control socket server (imported here: asyncio must exist first)."""
        from ._control._server import ControlServer

        return ControlServer(self, self.socket_path)

    def _notify_ready(self, failed: list[OpResult]) -> None:
        """Tell a waiting ``forkwell up --detach`` (or systemd Type=notify) we are up."""
        from .._core._notify import notify

        status = (
            f"{len(failed)} instance(s) failed to start: {failed[0].message}"
            if failed
            else f"forkwell up: supervisor running (pid {os.getpid()}), "
            f"{len(self._all())} instances up"
        )
        try:
            notify(READY=1, STATUS=status, MAINPID=os.getpid())
        except (OSError, ValueError) as exc:
            self._note(f"cannot notify readiness: {exc}")


def _info(i: Instance) -> InstanceInfo:
    return InstanceInfo(
        name=i.name,
        program=i.program,
        index=i.index,
        state=i.state.name,
        pid=i.pid,
        started_at=i.started_at if i.proc is not None else None,
        ready_at=i.ready_at if i.proc is not None else None,
        restarts=i.restarts,
        last_exit=i.last_exit,
        autostart=i.config.autostart,
    )


def _result(inst: Instance, ok: bool, message: str = "") -> OpResult:
    log_tail: list[str] = []
    if not ok:
        for stream in ("stderr", "stdout"):
            log_tail = tail(inst.log_path(stream), 10)
            if log_tail:
                break
    return OpResult(
        instance=inst.name,
        ok=ok,
        state=inst.state.name,
        message="" if ok else (message or inst.message or f"{inst.name} is {inst.state.name}"),
        last_exit=inst.last_exit,
        log_tail=log_tail,
    )


def _compare(old: Config, new: Config) -> ReloadReport:
    """What a reload from ``old`` to ``new`` does to each program."""
    report = ReloadReport(
        added=[n for n in new.programs if n not in old.programs],
        removed=[n for n in old.programs if n not in new.programs],
        changed=[],
        unchanged=[],
        scaled=[],
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


def _raise_fd_limit() -> None:
    """Each instance holds ~7 fds (pidfd, 2 pipes, 2 log files): use the hard limit.

    supervisord's "Too many open files" around 200 programs (its issue 489)
    came from a soft limit of 1024.
    """
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
