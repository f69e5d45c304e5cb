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
instances, their dependency order and reloads (:mod:`._fleet`), the
children and their trees (:mod:`._tracking`), the event log
(:mod:`._events`), what a child is spawned with (:mod:`._childenv`), what
``run()`` takes of the process (:mod:`._session`: the state file, the
watchdog, the subreaper flag) and the stand-in loop of
:meth:`Supervisor.prestart` (:mod:`._preloop`).

A SIGKILLed supervisor takes its programs along: its watchdog
(:mod:`forkwell._supervisor._watchdog`) sees it die and kills every process carrying the
supervisor's cookie.  Should both be killed at once, the cookie is also in
the state file, and the next ``forkwell up`` ends the survivors before
starting anything.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal, NamedTuple

from .._core import _tree
from .._core._files import tail
from .._exceptions import ForkwellError, UnknownProgramError
from ._childenv import ChildEnv
from ._config import Config, load_config
from ._events import EventLog
from ._fleet import Fleet, ReloadReport, dep_ok, settle, settled
from ._health import Health
from ._loglines import is_marker
from ._logs import Console
from ._preloop import EarlySignals, Loops
from ._program import DOWN, SETTLED, Instance, ProgramState
from ._services import Services
from ._session import Session
from ._signals import SignalRelay
from ._snapshot import Usage, tree_usage
from ._tracking import Tracker, TreeEnder

if TYPE_CHECKING:
    # Imported at run time only where a coroutine needs it: ``forkwell up``
    # spawns its first programs (prestart) before asyncio is even imported.
    import asyncio
    import collections
    from collections.abc import Callable

    from ._control._server import ControlServer
    from ._events import Event
    from ._loop import Loop
    from ._web._server import WebServer

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
    last_exit_at: float | None = None  # time.time() of that exit
    essential: bool | str = False  # or "on-failure"
    readiness: str | None = None  # "ready" (RUNNING), "waiting" (STARTING), else None
    ready_probe: str = "exec"
    liveness: str | None = None  # None without a probe; "off", "pending", "ok", "failing"
    liveness_probe: str | None = None
    liveness_failures: int = 0  # in a row, now
    last_probe_failure: str | None = None  # what the last failed probe said (one line)
    last_probe_failure_at: float | None = None
    failed_starts: int = 0  # in a row, now (a crash loop: BACKOFF with this growing)
    liveness_failed_checks: int = 0  # since the supervisor started (liveness_failures: in a row)
    liveness_restarts: int = 0  # restarts the liveness probe caused, since it started


class OpResult(NamedTuple):
    """The outcome of an action on one instance."""

    instance: str
    ok: bool
    state: str
    message: str  # "" when ok, else one line
    last_exit: int | None
    log_tail: list[str]  # last lines of its log when it failed, else []


class Supervisor:
    """Runs the programs of a :class:`~forkwell.Config`.

    ``await supervisor.run()`` is ``forkwell up``.  The other methods may be
    called from the same event loop while it runs (the control socket does).
    """

    def __init__(self, config: Config, *, quiet: bool = False) -> None:
        self.config_path: Path = config.path
        # How reload reads the config again: forkwell.toml, or the format it came in.
        self.reader: Callable[[Path], Config] = load_config
        self.socket_path: Path = config.supervisor.socket
        self.quiet = quiet
        self._loops = Loops()
        self._log = EventLog(None if quiet else Console(sys.stdout.buffer))
        self.events: collections.deque[Event] = self._log.events
        self._token = _tree.new_token()
        cookie = _tree.cookie_value(os.environ.get(_tree.COOKIE_VAR), self._token)
        self._env = ChildEnv(cookie, self._loops)
        self._trees = TreeEnder(self._loops, self._note)
        self._session = Session(
            self._token, self._loops, self._log, self._trees, lambda: self._fleet.closed
        )
        self._watchdog = self._session.watchdog
        self._tracker = Tracker(self._loops, self._watchdog)
        self._host = Services(
            self._loops, self._log, self._env, self._trees, self._tracker,
            lambda: self.config.supervisor.log_dir,
            # Late-bound: health is built after the fleet it watches.
            lambda inst, old, new: self._health.transition(inst, old, new),  # noqa: PLW0108
        )  # fmt: skip
        self._fleet = Fleet(self._host, config, self._recolour)
        end = lambda: self.background(self.shutdown())  # noqa: E731 (a callback, named)
        self._health = Health(self._host, self._fleet, self._note, end)
        self._early = EarlySignals()
        self._relay: SignalRelay | None = None
        self._done: asyncio.Future[int] | None = None
        self._shutdown_task: asyncio.Task[None] | None = None
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
        self._host.background(coro)

    def _note(self, text: str) -> None:
        self._log.note(text)

    def note(self, text: str) -> None:
        """A line in the event log (an instance's news that is not a transition)."""
        self._log.note(text)

    # -- read side ------------------------------------------------------------

    def _all(self) -> list[Instance]:
        return self._fleet.all()

    def _by_name(self) -> dict[str, Instance]:
        return self._fleet.by_name()

    def instances(self) -> list[InstanceInfo]:
        """A snapshot of every instance, by program (config order) then index."""
        return [_info(i) for i in self._all()]

    def usage(self, names: Sequence[str]) -> dict[str, Usage]:
        """CPU time, RSS and processes of each named instance's whole process tree, now."""
        return tree_usage(_trees(self._fleet.lookup(names)))

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
        """Stop then start each instance on its own; of the others, only the dependents
        with ``restart = true`` are touched (stopped first, started again after)."""
        insts = self._fleet.lookup(instances)

        async def one(inst: Instance) -> None:
            await inst.stop()
            self._fleet.request_start(inst)
            if wait:
                await settle(inst)

        work = self._health.with_dependents(insts, one)
        if not wait:
            self.background(work)
            return [_result(i, True) for i in insts]
        await work
        return [_result(i, dep_ok(i)) for i in insts]

    def send_signal(self, instances: list[str], sig: int, *, tree: bool = False) -> list[OpResult]:
        """Send ``sig`` to each instance's process (``tree``: to its whole tree)."""
        insts = self._fleet.lookup(instances)
        sent = [i.signal(sig, tree) for i in insts]
        why = "is not running"
        return [_result(i, ok, f"{i.name} {why}") for i, ok in zip(insts, sent, strict=True)]

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
        new, report = self._fleet.plan(self.reader(self.config_path))
        added, removed, changed, _, scaled, kept = report
        self._note(
            f"reload {self.config_path}: added {added or '-'}, removed {removed or '-'}, "
            f"changed {changed or '-'}, scaled {scaled or '-'}, kept scale {kept or '-'}"
        )
        to_start = await self._fleet.reload(new, report)
        self.config_path = new.path
        if to_start:
            await self.start([i.name for i in to_start])
        return report

    async def scale(self, program: str, n: int) -> list[OpResult]:
        """Run ``n`` instances of ``program``: new ones are started, surplus ones stopped.

        Existing instances below ``n`` are not touched.
        """
        programs = self._fleet.programs
        if program not in programs:
            raise self._fleet.unknown_program(program)
        if n < 0:
            raise ValueError(f"cannot scale {program} to {n} instances (must be >= 0)")
        prog = self.config.programs[program]._replace(numprocs=n)
        if n > 1 and len(set(prog.instance_names())) < n:
            raise ValueError(
                f"cannot scale {program} to {n} instances: its instance_name "
                f"{prog.instance_name!r} has no {{index}} or {{number}}"
            )
        self.config = self.config._replace(programs={**self.config.programs, program: prog})
        before = len(programs[program])
        self._note(f"scale {program} from {before} to {n}")
        touched = await self._fleet.resize(program, prog)
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
        timeout = self.config.supervisor.shutdown_timeout
        insts = await self._fleet.shutdown(timeout, self._note)
        if self._log.console is not None:
            for inst in insts:
                self._log.console.flush_partial(inst.name)
        if self._done is not None and not self._done.done():
            self._done.set_result(self._health.exit_code)  # 0, or an essential's status

    def _request_shutdown(self, hurry: bool = True) -> None:
        if self._shutdown_task is None:
            self._shutdown_task = self.aio_loop.create_task(self._shutdown())
        elif hurry and self._fleet.hurry():
            # A second Ctrl-C: do not wait for graceful stops any more.
            self._note("second stop request: SIGKILL to every tree now")

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
        if self._session.opened:
            return
        self._env.snapshot()
        self.state_file_survivors = self._session.open(
            self.config, self.config_path, len(self._all()), len(self._fleet.programs)
        )

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
        web: WebServer | None = None
        try:
            control = self._control_server()
            await control.start()
            web = await _start_web(self, self._log) if self.config.supervisor.http else None
            await self._autostart()
            code = await self._done
        finally:
            if self._shutdown_task is None:
                self._shutdown_task = loop.create_task(self._shutdown())
            await asyncio.shield(self._shutdown_task)
            if control is not None:
                await control.close()
            if web is not None:
                await web.close()
            self._release(loop)
        return code

    def _handle_signals(self, loop: asyncio.AbstractEventLoop) -> None:
        # SIGCHLD first in each dispatch: exits are known before a stop acts.
        # Only a second Ctrl-C hurries a stop; a repeated SIGTERM (an orchestrator's) does not.
        self._relay = SignalRelay(loop, {
            signal.SIGCHLD: self._tracker.reap,
            signal.SIGTERM: lambda: self._request_shutdown(False),
            signal.SIGINT: self._request_shutdown,
            signal.SIGHUP: self._request_reload,
        })  # fmt: skip
        self._relay.install()
        self._tracker.reap()  # whatever exited before the handler existed
        for sig in self._early_signals:  # what arrived during prestart()
            if sig == signal.SIGHUP:
                self._request_reload()
            else:
                self._request_shutdown()
        self._early_signals.clear()

    async def _autostart(self) -> None:
        """Start every autostart instance; report, and tell a waiting caller we are up."""
        await _autostart(self)
        if self.config.supervisor.exit_when == "all-exited":
            self._health.check_all_exited()  # a fleet of jobs all done during autostart

    def _release(self, loop: asyncio.AbstractEventLoop) -> None:
        """After the last program stopped: give back everything run() took."""
        if self._relay is not None:
            self._relay.uninstall()
        self._tracker.reap()
        self._session.close()
        self._env.close()

    def _control_server(self) -> ControlServer:
        """The control socket server (imported here: asyncio must exist first)."""
        from ._control._server import ControlServer

        return ControlServer(self, self.socket_path)


async def _autostart(sup: Supervisor) -> None:
    """:meth:`Supervisor._autostart`'s work, kept out of the class for its size."""
    # One that prestart() spawned may have exited already: its exit was
    # handled by its restart policy; starting it here would run a
    # restart = "never" program (a Procfile's) twice.
    auto = [i.name for i in sup._all() if i.config.autostart and i.state is not S.EXITED]
    results = await sup.start(auto) if auto else []
    failed = [r for r in results if not r.ok]
    for r in failed:
        sup._note(r.message)
        for line in r.log_tail[-5:]:
            sup._note(f"  {r.instance} | {line}")
    sup.startup_failures = failed
    sup._note(f"autostart done: {len(results) - len(failed)} up, {len(failed)} failed")
    if failed and sup.fail_fast:
        more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
        raise ForkwellError(f"{failed[0].message}{more}")
    _notify_ready(failed, len(sup._all()), sup._note)
    sup.up.set()


async def _start_web(sup: Supervisor, log: EventLog) -> WebServer:
    """The web endpoint ``http`` asks for (h11 and the rest are imported only then)."""
    from ._web._server import WebServer

    web = WebServer(sup, log)
    await web.start()
    return web


def _notify_ready(failed: list[OpResult], instances: int, note: Callable[[str], None]) -> None:
    """Tell a waiting ``forkwell up --detach`` (or systemd Type=notify) we are up."""
    from .._core._notify import notify

    status = (
        f"{len(failed)} instance(s) failed to start: {failed[0].message}"
        if failed
        else f"forkwell up: supervisor running (pid {os.getpid()}), {instances} "
        f"instance{'' if instances == 1 else 's'} up"
    )
    try:
        notify(READY=1, STATUS=status, MAINPID=os.getpid())
    except (OSError, ValueError) as exc:
        note(f"cannot notify readiness: {exc}")


def _trees(insts: list[Instance]) -> dict[str, _tree.Tree]:
    out = {}
    for inst in insts:
        if inst.proc is not None and inst.proc.tree is not None:
            out[inst.name] = inst.proc.tree
    return out


def _info(i: Instance) -> InstanceInfo:
    live, ready = i.liveness, i.readiness
    failure, failure_at = ("", None) if live is None else (live.last_failure, live.last_failure_at)
    if i.state is S.STARTING and ready is not None and ready.last_failure:
        failure, failure_at = ready.last_failure, None  # now: it is still being probed
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
        last_exit_at=i.last_exit_at,
        essential=i.config.essential,
        readiness=_READINESS.get(i.state),
        ready_probe=str(i.config.ready),
        liveness=None if i.config.liveness is None else "off" if live is None else live.state,
        liveness_probe=None if i.config.liveness is None else str(i.config.liveness),
        liveness_failures=0 if live is None else live.failures,
        last_probe_failure=failure or None,
        last_probe_failure_at=failure_at,
        failed_starts=i.failures,
        liveness_failed_checks=0 if live is None else live.failures_total,
        liveness_restarts=0 if live is None else live.restarts,
    )


_READINESS = {S.RUNNING: "ready", S.STARTING: "waiting"}


def _result(inst: Instance, ok: bool, message: str = "") -> OpResult:
    log_tail: list[str] = []
    if not ok:
        for stream in ("stderr", "stdout"):
            # The program's last words; the markers repeat what the message says.
            log_tail = [x for x in tail(inst.log_path(stream), 20) if not is_marker(x)][-10:]
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
