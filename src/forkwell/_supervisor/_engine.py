"""The supervisor engine: keep a fleet of program instances running.

One asyncio event loop in one thread does everything, and does nothing while
nothing happens (no timers tick in steady state):

* each child's pidfd is registered with ``loop.add_reader``; its exit runs
  the instance's callback, which spawns the replacement in the same loop
  iteration;
* each instance's stdout/stderr pipe is registered the same way and copied
  to its log file;
* backoff delays, readiness deadlines and probes are ``call_later`` timers
  that exist only while an instance starts;
* SIGCHLD (delivered through asyncio's wake-up fd, not handled in signal
  context) reaps orphans re-parented to the supervisor, which is a
  subreaper (or PID 1), without stealing the statuses of its own children;
* SIGTERM/SIGINT shut down, SIGHUP reloads.

Stopping an instance ends its whole tree (every process carrying its cookie,
``setsid``'d and double-forked ones included; see :mod:`forkwell._core._tree`).
When many trees are ended at once, one scan of ``/proc`` serves them all.

A SIGKILLed supervisor takes its programs along: its watchdog
(:mod:`forkwell._supervisor._watchdog`) sees it die and kills every process carrying the
supervisor's cookie.  Should both be killed at once, the cookie is also in
the state file, and the next ``forkwell up`` ends the survivors before
starting anything.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, cast

from .._core import _proc, _process, _sys, _tree
from .._core._files import tail
from .._core._process import Process
from .._core._status import describe_exit, waitid_returncode
from .._exceptions import ForkwellError, StateError, UnknownProgramError
from ._config import Config, ProgramConfig, load_config
from ._logs import Console, LogFile
from ._program import DOWN, KILL_GRACE, SETTLED, Instance, ProgramState, _resolve
from ._watchdog import Watchdog

if TYPE_CHECKING:
    # Imported at run time only where a coroutine needs it: ``forkwell up``
    # spawns its first programs (prestart) before asyncio is even imported.
    import asyncio

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


class Event(NamedTuple):
    """One state transition, as logged."""

    time: float
    instance: str
    old: str
    new: str
    why: str


class Supervisor:
    """Runs the programs of a :class:`~forkwell.Config`.

    ``await supervisor.run()`` is ``forkwell up``.  The other methods may be
    called from the same event loop while it runs (the control socket does).
    """

    def __init__(self, config: Config, *, quiet: bool = False) -> None:
        self.config = config
        self.config_path: Path = config.path
        self.socket_path: Path = config.supervisor.socket
        self.quiet = quiet
        self.events: collections.deque[Event] = collections.deque(maxlen=1000)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._programs: dict[str, list[Instance]] = {}
        for prog in config.programs.values():
            self._programs[prog.name] = [Instance(self, prog, i) for i in range(prog.numprocs)]
        self._token = _tree.new_token()
        self._cookie = _tree.cookie_value(os.environ.get(_tree.COOKIE_VAR), self._token)
        self._watchdog = Watchdog(self._token)
        # The environment programs inherit, taken when run() starts (copying
        # os.environ for each spawn was a tenth of the cost of starting one).
        self._base_env: dict[str, str] | None = None
        self._watchdog_started = 0.0
        # pid -> (process, exit callback): every child the supervisor spawned.
        self._tracked: dict[int, tuple[Process, Any]] = {}
        self._scan_queue: list[tuple[str, tuple[int, ...], asyncio.Future[Any]]] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._console: Console | None = None if quiet else Console(sys.stdout.buffer)
        self._event_log: LogFile | None = None
        self._stamp = (0, "")
        self._prepared = False
        self._devnull = -1
        self._executables: dict[tuple[str, str], str | None] = {}
        self._early_signals: list[int] = []
        self._made_subreaper = False
        self._done: asyncio.Future[int] | None = None
        self._shutdown_task: asyncio.Task[None] | None = None
        self._graceful: asyncio.Task[None] | None = None
        self._closed = False
        self.startup_failures: list[OpResult] = []
        # True while we are the subreaper (run()): every descendant of every
        # program then stays in our own process subtree, so scans walk it
        # instead of reading all of /proc.
        self._own_subtree = False
        # --detach: an autostart failure ends the run (the caller is told why).
        self.fail_fast = False
        self._up: asyncio.Event | None = None
        # Pids a killed predecessor left running, ended by run() before starting anything.
        self.state_file_survivors: list[int] = []
        self._recolour()

    # -- the event loop ------------------------------------------------------

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            import asyncio

            self._loop = asyncio.get_running_loop()
        return self._loop

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
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            self._note(f"internal error: {type(exc).__name__}: {exc}")

    # -- services for instances (the _Host protocol) --------------------------

    def child_env(self, inst: Instance) -> dict[str, str]:
        if self._base_env is None:
            self._base_env = _base_env()
        env = self._base_env.copy()
        env.update(inst.config.environment)
        env[_tree.COOKIE_VAR] = self._cookie
        env["FORKWELL_INSTANCE"] = inst.name
        env["FORKWELL_INDEX"] = str(inst.index)
        # forkwell.daemonize(detach="auto") then stays in the foreground: a
        # supervised program that daemonizes would otherwise look like a crash.
        env["FORKWELL_SUPERVISED"] = "1"
        return env

    def devnull(self) -> int:
        """One /dev/null fd for every program's stdin (Popen would open one per spawn)."""
        if self._devnull < 0:
            self._devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        return self._devnull

    def find_executable(self, command: str, env: Mapping[str, str]) -> str | None:
        """Look each command up once per batch of starts (``start all``, autostart).

        The lookups are forgotten as soon as the loop moves on, so a program
        installed meanwhile is found exactly as exec would find it.
        """
        key = (command, env.get("PATH") or os.defpath)
        if key not in self._executables:
            if not self._executables:
                self.loop.call_soon(self._executables.clear)
            self._executables[key] = _process.find_executable(*key)
        return self._executables[key]

    def log_dir(self) -> Path:
        return self.config.supervisor.log_dir

    def transition(self, inst: Instance, old: ProgramState, new: ProgramState, why: str) -> None:
        event = Event(time.time(), inst.name, old.name, new.name, why)
        self.events.append(event)
        text = f"{inst.name} {old.name} -> {new.name}" + (f" ({why})" if why else "")
        self._note(text)

    def _note(self, text: str) -> None:
        if self._event_log is not None:
            now = int(time.time())
            if now != self._stamp[0]:  # strftime once a second, not per event
                self._stamp = (now, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now)))
            stamp = self._stamp[1]
            with contextlib.suppress(OSError):
                self._event_log.write(f"{stamp} {text}\n".encode())
        if self._console is not None:
            self._console.event(text)

    def output(self, inst: Instance, stream: str, data: bytes) -> None:
        if self._console is not None:
            self._console.output(inst.name, stream, data, inst.colour)

    def track(self, proc: Process, on_exit: Any) -> None:
        self._tracked[proc.pid] = (proc, on_exit)
        fd = proc.fileno()
        if fd >= 0:
            self.loop.add_reader(fd, self._pidfd_readable, proc.pid)

    def untrack(self, proc: Process) -> None:
        entry = self._tracked.get(proc.pid)
        if entry is not None and entry[0] is proc:
            del self._tracked[proc.pid]
            fd = proc.fileno()
            if fd >= 0:
                self.loop.remove_reader(fd)

    def _pidfd_readable(self, pid: int) -> None:
        entry = self._tracked.get(pid)
        if entry is None:
            return
        proc, on_exit = entry
        # One-shot: a readable pidfd stays readable; the callback reaps.
        self.loop.remove_reader(proc.fileno())
        on_exit()

    def _on_sigchld(self) -> None:
        """Reap every exited child: ours are handed to their instance, adopted orphans dropped.

        ``WNOWAIT`` peeks first, so a child we track is reaped here only to
        give its status to its :class:`Process`; nothing else reaps it behind
        its back.
        """
        while True:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return
            if info is None or info.si_pid == 0:
                return
            pid = info.si_pid
            try:
                done = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG)
            except ChildProcessError:
                continue
            if done is None:
                continue
            entry = self._tracked.get(pid)
            if entry is not None:
                proc = entry[0]
                proc._set_reaped(waitid_returncode(done))
                self._pidfd_readable(pid)
            elif pid == self._watchdog.pid:
                self._watchdog.returncode = waitid_returncode(done)

    # -- ending process trees --------------------------------------------------

    async def end_tree(
        self, tree: _tree.Tree, sig: int, grace: float, *, include_root: bool = True
    ) -> None:
        """Async :func:`forkwell._core._tree.terminate_tree`: ``sig`` to all, ``grace``, SIGKILL."""
        loop = self.loop
        deadline = loop.time() + max(grace, 0.0)
        escalate = True
        while True:
            members = await self._members(tree, include_root)
            if not members:
                escalate = False
                break
            tree.signal(sig, members, only_new=True)
            fds = [fd for pid, (fd, _) in tree.pinned().items() if pid in members]
            gone = await self._wait_fds(fds, deadline)
            tree.reap_adopted()
            if not gone:
                break
        if escalate:
            kill_deadline = loop.time() + KILL_GRACE
            while True:
                members = await self._members(tree, include_root)
                if not members:
                    break
                fds = tree.signal(signal.SIGKILL, members)
                await self._wait_fds(fds, kill_deadline)
                tree.reap_adopted()
                if loop.time() >= kill_deadline:
                    self._note(f"could not kill pids {sorted(members)} (uninterruptible?)")
                    break
        tree.reap_adopted()

    async def _members(self, tree: _tree.Tree, include_root: bool) -> dict[int, _proc.ProcStat]:
        if not tree.may_have_descendants():
            # The kernel allocated no pid after the root: it has no descendants.
            if not include_root:
                return {}
            info = _proc.read_stat(tree.root)
            return {} if info is None or info.state in ("Z", "X") else {tree.root: info}
        fut: asyncio.Future[dict[int, _proc.ProcStat]] = self.loop.create_future()
        if not self._scan_queue:
            self.loop.call_soon(self._run_scans)
        self._scan_queue.append((tree.token, (tree.root,) if include_root else (), fut))
        members = await fut
        if not include_root:
            members.pop(tree.root, None)
        return members

    def _run_scans(self) -> None:
        """One pass over /proc answers every tree scan requested in this loop iteration."""
        queue, self._scan_queue = self._scan_queue, []
        wanted = {token: roots for token, roots, _ in queue}
        try:
            found = scan_subtree(wanted) if self._own_subtree else scan_trees(wanted)
        except Exception as exc:  # answer the waiters rather than hang them
            for _, _, fut in queue:
                if not fut.done():
                    fut.set_exception(exc)
            return
        for token, _, fut in queue:
            if not fut.done():
                fut.set_result(dict(found.get(token, {})))

    async def _wait_fds(self, fds: list[int], deadline: float) -> bool:
        """Wait until every pidfd in ``fds`` is readable (exited), or ``deadline``."""
        pending = set(fds)
        if not pending:
            return True
        loop = self.loop
        fut: asyncio.Future[None] = loop.create_future()

        def readable(fd: int) -> None:
            pending.discard(fd)
            loop.remove_reader(fd)
            if not pending and not fut.done():
                fut.set_result(None)

        for fd in pending:
            loop.add_reader(fd, readable, fd)
        timer = loop.call_at(deadline, _resolve, fut)
        try:
            await fut
        finally:
            timer.cancel()
            for fd in pending:
                loop.remove_reader(fd)
        return not pending

    # -- read side ------------------------------------------------------------

    def _all(self) -> list[Instance]:
        return [inst for insts in self._programs.values() for inst in insts]

    def _by_name(self) -> dict[str, Instance]:
        return {inst.name: inst for inst in self._all()}

    def instances(self) -> list[InstanceInfo]:
        """A snapshot of every instance, by program (config order) then index."""
        return [
            InstanceInfo(
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
            for i in self._all()
        ]

    def resolve(self, names: Sequence[str]) -> list[str]:
        """Instance names for ``"web"`` (all its instances), ``"web:1"`` or ``"all"``."""
        by_name = self._by_name()
        out: dict[str, None] = {}
        for name in names:
            if name == "all":
                out.update(dict.fromkeys(by_name))
            elif name in self._programs:
                out.update(dict.fromkeys(i.name for i in self._programs[name]))
            elif name in by_name:
                out[name] = None
            else:
                program, colon, _ = name.partition(":")
                if colon and program in self._programs:
                    count = len(self._programs[program])
                    raise UnknownProgramError(
                        f"unknown instance {name!r}: {program} has instances "
                        f"{program}:0..{program}:{count - 1}"
                        if count
                        else f"unknown instance {name!r}: {program} has no instances (numprocs 0)"
                    )
                known = ", ".join(self._programs) or "(none)"
                raise UnknownProgramError(f"unknown program {name!r} (programs: {known})")
        return list(out)

    def _lookup(self, names: Iterable[str]) -> list[Instance]:
        by_name = self._by_name()
        return [by_name[n] for n in self.resolve(list(names))]

    def log_path(self, instance: str, stream: Literal["stdout", "stderr"]) -> Path:
        insts = self._lookup([instance])
        if len(insts) != 1:
            raise UnknownProgramError(
                f"{instance!r} is not one instance; name one, e.g. {insts[0].name if insts else ''}"
            )
        return insts[0].log_path(stream)

    def _result(self, inst: Instance, ok: bool, message: str = "") -> OpResult:
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

    # -- starting --------------------------------------------------------------

    def _deps(self, inst: Instance) -> list[Instance]:
        return [d for p in inst.config.depends_on for d in self._programs.get(p, [])]

    @staticmethod
    def _dep_ok(dep: Instance) -> bool:
        if dep.state is S.RUNNING:
            return True
        # A one-shot job that finished successfully satisfies its dependents.
        return (
            dep.state is S.EXITED
            and dep.last_exit is not None
            and dep.last_exit in dep.config.success_exit_codes
        )

    @classmethod
    def _dep_failed(cls, dep: Instance) -> bool:
        return dep.state in DOWN and not cls._dep_ok(dep)

    def _request_start(self, inst: Instance) -> None:
        """Start ``inst`` (and, first, what it depends on) unless it is already on its way."""
        if inst.state in (S.RUNNING, S.STARTING, S.BACKOFF) or self._closed:
            return
        if inst.state is S.STOPPING:
            async def later() -> None:
                await inst.wait_for(lambda s: s is not S.STOPPING)
                self._request_start(inst)

            self.background(later())
            return
        inst.no_restart = False
        inst.begin_start()
        deps = self._deps(inst)
        for dep in deps:
            self._request_start(dep)
        if all(self._dep_ok(d) for d in deps):
            inst.spawn()
        else:
            inst._dep_task = self.loop.create_task(self._await_deps(inst, deps))

    async def _await_deps(self, inst: Instance, deps: list[Instance]) -> None:
        for dep in deps:
            while not self._dep_ok(dep):
                if self._dep_failed(dep):
                    inst._dep_task = None
                    why = f"dependency {dep.name} is {dep.state.name}"
                    inst.message = f"{inst.name} is FATAL: {why}"
                    inst._set(S.FATAL, why)
                    return
                await dep.wait_for(lambda s: s in SETTLED)
        inst._dep_task = None
        if inst.state is S.STARTING and inst.proc is None:
            inst.spawn()

    def _settled(self, inst: Instance) -> bool:
        """What :meth:`_settle` would return at once for."""
        if inst.state not in SETTLED:
            return False
        if inst.state is not S.RUNNING or inst.config.ready.kind != "exec":
            return True
        return inst.config.min_uptime - inst.uptime() <= 0

    async def _settle(self, inst: Instance) -> None:
        """Wait until a start has an answer: RUNNING (and holding), EXITED, FATAL, STOPPED.

        With ``ready = "exec"`` nothing but time says a program really started,
        so RUNNING counts only once it has been up ``min_uptime``: a program
        that crashes at once is reported as failing, not as started.
        """
        while not self._settled(inst):
            if inst.state not in SETTLED:
                await inst.wait_for(lambda s: s in SETTLED)
            else:  # RUNNING by exec, for less than min_uptime so far
                left = inst.config.min_uptime - inst.uptime()
                await inst.wait_for_or_timeout(lambda s: s is not S.RUNNING, left)

    def _start_result(self, inst: Instance) -> OpResult:
        return self._result(inst, self._dep_ok(inst))

    async def start(self, instances: list[str], *, wait: bool = True) -> list[OpResult]:
        """Start instances (their dependencies first); with ``wait``, until RUNNING or failed."""
        import asyncio

        insts = self._lookup(instances)
        if self._closed:
            why = "the supervisor is shutting down"
            return [self._result(i, False, f"{i.name}: {why}") for i in insts]
        for inst in insts:
            self._request_start(inst)
        if not wait:
            return [self._result(i, i.state is not S.FATAL) for i in insts]
        while True:
            # Most starts are settled already (exec'd, no min_uptime): no task for those.
            await asyncio.gather(*(self._settle(i) for i in insts if not self._settled(i)))
            # A crash-restart may have moved one back to STARTING meanwhile.
            if all(i.state in SETTLED for i in insts):
                return [self._start_result(i) for i in insts]

    # -- stopping --------------------------------------------------------------

    def _dependents_closure(self, program: str) -> set[str]:
        out: set[str] = set()
        todo = [program]
        while todo:
            for dependent in self.config.dependents(todo.pop()):
                if dependent not in out:
                    out.add(dependent)
                    todo.append(dependent)
        return out

    async def _stop_ordered(self, insts: list[Instance]) -> None:
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
        for program in reversed(order):
            first = [tasks[q] for q in self._dependents_closure(program) if q in tasks]
            tasks[program] = self.loop.create_task(stop_program(by_program[program], first))
        try:
            await asyncio.gather(*tasks.values())
        finally:
            for task in tasks.values():
                task.cancel()

    async def stop(self, instances: list[str], *, wait: bool = True) -> list[OpResult]:
        """Stop instances and their whole trees; dependents before their dependencies."""
        insts = self._lookup(instances)
        if not wait:
            self.background(self._stop_ordered(insts))
            return [self._result(i, True) for i in insts]
        await self._stop_ordered(insts)
        return [self._result(i, i.state in DOWN) for i in insts]

    async def restart(self, instances: list[str], *, wait: bool = True) -> list[OpResult]:
        """Stop then start each instance on its own: no other instance is touched."""
        import asyncio

        insts = self._lookup(instances)

        async def one(inst: Instance) -> None:
            await inst.stop()
            self._request_start(inst)
            if wait:
                await self._settle(inst)

        if not wait:
            for inst in insts:
                self.background(one(inst))
            return [self._result(i, True) for i in insts]
        await asyncio.gather(*(one(i) for i in insts))
        return [self._start_result(i) for i in insts]

    def send_signal(self, instances: list[str], sig: int, *, tree: bool = False) -> list[OpResult]:
        """Send ``sig`` to each instance's process (``tree``: to its whole tree)."""
        results = []
        for inst in self._lookup(instances):
            if inst.signal(sig, tree):
                results.append(self._result(inst, True))
            else:
                results.append(self._result(inst, False, f"{inst.name} is not running"))
        return results

    # -- reload and scale ----------------------------------------------------

    def _recolour(self) -> None:
        for n, insts in enumerate(self._programs.values()):
            for inst in insts:
                inst.colour = n
        if self._console is not None:
            self._console.set_names([*self._by_name(), "forkwell"])

    async def _remove(self, insts: list[Instance]) -> None:
        await self._stop_ordered(insts)
        for inst in insts:
            inst.close_io()

    async def reload(self) -> ReloadReport:
        """Re-read ``config_path`` and apply only what changed.

        An invalid file raises :class:`~forkwell.ConfigError` and changes
        nothing.  Unchanged programs keep their processes; a program whose
        only change is ``numprocs`` is scaled in place; changed programs are
        restarted with the new settings; removed ones are stopped.
        """
        new = load_config(self.config_path)
        old = self.config
        added = [n for n in new.programs if n not in old.programs]
        removed = [n for n in old.programs if n not in new.programs]
        changed: list[str] = []
        scaled: list[str] = []
        unchanged: list[str] = []
        for name in new.programs:
            if name not in old.programs:
                continue
            a, b = old.programs[name], new.programs[name]
            if a == b:
                unchanged.append(name)
            elif a.same_except_numprocs(b):
                scaled.append(name)
            else:
                changed.append(name)
        self._note(
            f"reload {self.config_path}: added {added or '-'}, removed {removed or '-'}, "
            f"changed {changed or '-'}, scaled {scaled or '-'}"
        )
        # Stop what goes away under the old config (its dependency order).
        was_up = {
            name: any(i.state not in DOWN for i in self._programs[name]) for name in changed
        }
        going = [i for name in (*removed, *changed) for i in self._programs[name]]
        if going:
            await self._remove(going)
        self.config = new._replace(supervisor=old.supervisor)
        self.config_path = new.path
        programs: dict[str, list[Instance]] = {}
        for name, prog in new.programs.items():
            if name in unchanged or name in scaled:
                programs[name] = self._programs[name]
                for inst in programs[name]:
                    inst.config = prog if name in unchanged else inst.config
            else:
                programs[name] = [Instance(self, prog, i) for i in range(prog.numprocs)]
        self._programs = programs
        self._recolour()
        grown: list[Instance] = []
        for name in scaled:
            prog = new.programs[name]
            before = len(self._programs[name])
            kept = self._programs[name][: prog.numprocs]
            touched = await self._scale(name, prog)
            # New instances run if the program is meant to (autostart, or its others run).
            if prog.numprocs > before and (
                prog.autostart or any(i.state not in DOWN for i in kept)
            ):
                grown.extend(touched)
        to_start = grown + [
            i
            for name in (*added, *changed)
            if new.programs[name].autostart or was_up.get(name, False)
            for i in self._programs[name]
        ]
        if to_start:
            await self.start([i.name for i in to_start])
        return ReloadReport(added, removed, changed, unchanged, scaled)

    async def _scale(self, name: str, prog: ProgramConfig) -> list[Instance]:
        insts = self._programs[name]
        n = prog.numprocs
        for inst in insts:
            inst.config = prog._replace(numprocs=n)
        if n < len(insts):
            victims = insts[n:]
            await self._remove(victims)
            del insts[n:]
            self._recolour()
            return victims
        fresh = [Instance(self, prog, i) for i in range(len(insts), n)]
        insts.extend(fresh)
        self._recolour()
        return fresh

    async def scale(self, program: str, n: int) -> list[OpResult]:
        """Run ``n`` instances of ``program``: new ones are started, surplus ones stopped.

        Existing instances below ``n`` are not touched.
        """
        if program not in self._programs:
            known = ", ".join(self._programs) or "(none)"
            raise UnknownProgramError(f"unknown program {program!r} (programs: {known})")
        if n < 0:
            raise ValueError(f"cannot scale {program} to {n} instances (must be >= 0)")
        prog = self.config.programs[program]._replace(numprocs=n)
        programs = dict(self.config.programs)
        programs[program] = prog
        self.config = self.config._replace(programs=programs)
        before = len(self._programs[program])
        self._note(f"scale {program} from {before} to {n}")
        touched = await self._scale(program, prog)
        if n > before:
            return await self.start([i.name for i in touched])
        return [self._result(i, i.state in DOWN) for i in touched]

    # -- running and shutting down ---------------------------------------------

    async def shutdown(self) -> None:
        """Stop everything, dependents first; after ``shutdown_timeout``, SIGKILL the rest."""
        import asyncio

        if self._shutdown_task is None:
            self._shutdown_task = self.loop.create_task(self._shutdown())
        await asyncio.shield(self._shutdown_task)

    async def _shutdown(self) -> None:
        import asyncio

        insts = self._all()
        self._closed = True  # from now on nothing starts
        for inst in insts:
            inst.no_restart = True
        self._note("shutting down: stopping every program, dependents first")
        timeout = self.config.supervisor.shutdown_timeout
        graceful = self.loop.create_task(self._stop_ordered(insts))
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
        if self._console is not None:
            for inst in insts:
                self._console.flush_partial(inst.name)
        if self._done is not None and not self._done.done():
            self._done.set_result(0)

    def _request_shutdown(self) -> None:
        if self._shutdown_task is None:
            self._shutdown_task = self.loop.create_task(self._shutdown())
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

    def prepare(self) -> None:
        """The synchronous first half of :meth:`run`; it calls this itself.

        Refuse to run twice for one state file, end what a killed predecessor
        left, fork the watchdog, record the state file, raise the fd limit and
        become a subreaper: everything that must precede the first spawn.
        Raises :class:`~forkwell.StateError` when another supervisor runs.
        """
        if self._prepared:
            return
        self._base_env = _base_env()
        log_dir = self.config.supervisor.log_dir
        log_dir.mkdir(parents=True, exist_ok=True)
        self._event_log = LogFile(log_dir / "forkwell.log", 10 << 20, 3)
        try:
            # Before touching anything process-wide: refuse to run twice.
            self._take_over_state()
            self._note(
                f"forkwell up: pid {os.getpid()}, {len(self._all())} instances "
                f"of {len(self._programs)} programs from {self.config_path}"
            )
            # Before anything is spawned: from here on the fleet dies with us.
            self._start_watchdog()
            self._write_state()
        except BaseException:
            self._stop_watchdog()
            self._event_log.close()
            self._event_log = None
            raise
        _raise_fd_limit()
        was_subreaper = _sys.is_subreaper()
        self._made_subreaper = not was_subreaper and _sys.set_subreaper()
        self._own_subtree = _HAVE_CHILDREN_FILE and (was_subreaper or self._made_subreaper)
        self._prepared = True

    def _early_signal(self, signum: int, frame: object) -> None:
        self._early_signals.append(signum)

    def prestart(self) -> int:
        """Spawn, before any event loop exists, what needs none; return how many.

        ``forkwell up`` calls this before it even imports asyncio (~12 ms), so
        the programs start that much sooner.  Autostart instances without
        dependencies and with ``ready = "exec"`` need nothing from a loop to
        start: the fds and timers they register meanwhile are recorded and
        handed to the real loop by :meth:`run`, which starts everything else.
        """
        if self._loop is not None:
            return 0
        # Until run() installs the loop's handlers, a stop or reload request is
        # only recorded (a signal handler does no work): programs are running
        # from here on, and SIGTERM's default action would orphan them.
        handlers = {sig: signal.getsignal(sig) for sig in _EARLY_SIGNALS}
        for sig in _EARLY_SIGNALS:
            signal.signal(sig, self._early_signal)
        pre = _PreLoop()
        self._loop = cast("asyncio.AbstractEventLoop", pre)
        try:
            self.prepare()
        except BaseException:
            self._loop = None  # nothing was started: as if never called
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
            raise
        started = 0
        for inst in self._all():
            cfg = inst.config
            if cfg.autostart and not cfg.depends_on and cfg.ready.kind == "exec":
                self._request_start(inst)
                started += 1
        return started

    async def run(self) -> int:
        """``forkwell up``: serve until :meth:`shutdown` (or SIGTERM/SIGINT); return 0.

        Raises :class:`~forkwell.StateError` when another supervisor is
        running for the same state file.
        """
        import asyncio

        pre = self._loop if isinstance(self._loop, _PreLoop) else None
        if pre is not None:
            self._loop = None
        loop = self.loop
        if pre is not None:
            pre.replay(loop)  # what prestart() spawned, the real loop now watches
        self._done = loop.create_future()
        self.prepare()
        assert self._event_log is not None
        handled = [signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD]
        loop.add_signal_handler(signal.SIGTERM, self._request_shutdown)
        loop.add_signal_handler(signal.SIGINT, self._request_shutdown)
        loop.add_signal_handler(signal.SIGHUP, self._request_reload)
        loop.add_signal_handler(signal.SIGCHLD, self._on_sigchld)
        self._on_sigchld()  # whatever exited before the handler existed
        for sig in self._early_signals:  # what arrived during prestart()
            if sig == signal.SIGHUP:
                self._request_reload()
            else:
                self._request_shutdown()
        self._early_signals.clear()
        control: Any = None
        try:
            control = self._control_server()
            if control is not None:
                await control.start()
            auto = [i.name for i in self._all() if i.config.autostart]
            results = await self.start(auto) if auto else []
            failed = [r for r in results if not r.ok]
            for r in failed:
                self._note(r.message)
                for line in r.log_tail[-5:]:
                    self._note(f"  {r.instance} | {line}")
            self.startup_failures = failed
            self._note(
                f"autostart done: {len(results) - len(failed)} up, {len(failed)} failed"
            )
            if failed and self.fail_fast:
                more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
                raise ForkwellError(f"{failed[0].message}{more}")
            self._notify_ready(failed)
            self.up.set()
            code = await self._done
        finally:
            if self._shutdown_task is None:
                self._shutdown_task = loop.create_task(self._shutdown())
            await asyncio.shield(self._shutdown_task)
            if control is not None:
                await control.close()
            for sig in handled:
                loop.remove_signal_handler(sig)
            self._on_sigchld()
            self._own_subtree = False
            self._stop_watchdog()
            if self._made_subreaper:
                _sys.set_subreaper(False)
            with contextlib.suppress(OSError):
                self.config.supervisor.state_file.unlink()
            if self._devnull >= 0:
                os.close(self._devnull)
                self._devnull = -1
            self._note("forkwell up: all stopped, exiting")
            self._event_log.close()
            self._event_log = None
        return code

    # -- the watchdog (see forkwell._supervisor._watchdog) --------------------------------

    def _start_watchdog(self) -> None:
        try:
            pid = self._watchdog.start()
        except OSError as exc:
            why = exc.strerror or exc
            raise ForkwellError(f"cannot start the watchdog process: {why}") from None
        self._watchdog_started = time.monotonic()
        if self._watchdog.pidfd >= 0:
            self.loop.add_reader(self._watchdog.pidfd, self._watchdog_exited)
        self._note(f"watchdog: pid {pid}")

    def _watchdog_exited(self) -> None:
        """Someone killed the watchdog: without it a SIGKILL of us would orphan the fleet."""
        self.loop.remove_reader(self._watchdog.pidfd)
        pid = self._watchdog.pid
        code = self._watchdog.reap()
        if self._closed:
            return
        how = "exited" if code is None else describe_exit(code)
        # At most one new watchdog a second, should something kill each at birth.
        delay = max(0.0, self._watchdog_started + 1.0 - time.monotonic())
        self._note(f"watchdog (pid {pid}) {how}; starting a new one")
        self.loop.call_later(delay, self._restart_watchdog)

    def _restart_watchdog(self) -> None:
        if self._closed or self._watchdog.pid is not None:
            return
        try:
            self._start_watchdog()
        except ForkwellError as exc:
            self._note(f"{exc}; retrying in 1s")
            self._watchdog_started = time.monotonic()
            self.loop.call_later(1.0, self._restart_watchdog)
            return
        with contextlib.suppress(OSError):
            self._write_state()

    def _stop_watchdog(self) -> None:
        if self._watchdog.pid is None:
            return
        if self._watchdog.pidfd >= 0:
            self.loop.remove_reader(self._watchdog.pidfd)
        self._watchdog.stop()

    def _control_server(self) -> Any:
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

    def _take_over_state(self) -> None:
        """Refuse to run twice; end what a killed predecessor (and its watchdog) left."""
        path = self.config.supervisor.state_file
        old: dict[str, Any] = {}
        with contextlib.suppress(OSError, ValueError):
            old = json.loads(path.read_text())
        pid = old.get("pid")
        if isinstance(pid, int):
            # Our own pid too: another Supervisor of this process runs (a test).
            info = _proc.read_stat(pid)
            alive = info is not None and info.state not in ("Z", "X")
            if alive and info is not None and info.starttime == old.get("starttime"):
                raise StateError(
                    f"another forkwell up is running for {self.config_path} (pid {pid}); "
                    f"stop it with 'forkwell down' first"
                )
        token = old.get("token")
        if isinstance(token, str) and token:
            survivors = _tree.Tree(token, -1)
            members = survivors.members(include_root=False)
            self.state_file_survivors = sorted(members)
            if members:
                self._note(
                    f"ending {len(members)} process(es) left by a killed supervisor "
                    f"(pid {pid}): {sorted(members)}"
                )
                # Blocking is fine: nothing else is served before this is done.
                _tree.terminate_tree(survivors, signal.SIGTERM, 5.0, include_root=False)
            survivors.close()

    def _write_state(self) -> None:
        """Record who we are, our cookie and our watchdog, for the next ``forkwell up``."""
        path = self.config.supervisor.state_file
        me = _proc.read_stat(os.getpid())
        state = {
            "pid": os.getpid(),
            "starttime": None if me is None else me.starttime,
            "token": self._token,
            "config": str(self.config_path),
            "watchdog": self._watchdog.pid,
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(state, f)
        os.replace(tmp, path)


_EARLY_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class _PreTimer:
    """A timer asked for before the loop ran; armed on the real loop by ``replay``."""

    def __init__(self, when: float, callback: Callable[..., object], args: tuple[Any, ...]):
        self.when = when
        self.callback = callback
        self.args = args
        self.cancelled = False
        self.handle: asyncio.TimerHandle | None = None

    def cancel(self) -> None:
        self.cancelled = True
        if self.handle is not None:
            self.handle.cancel()

    def arm(self, loop: asyncio.AbstractEventLoop) -> None:
        if not self.cancelled:
            delay = max(0.0, self.when - time.monotonic())
            self.handle = loop.call_later(delay, self.callback, *self.args)


class _PreLoop:
    """Stands in for the event loop during :meth:`Supervisor.prestart`.

    Spawning an exec-ready instance asks a loop for only a few things: watch
    an fd, stop watching one, a callback soon (forgetting a batch's command
    lookups) and, after a failed start, a backoff timer.
    They are recorded here and replayed on the real loop.  Anything else
    would be a bug on that path, and fails loudly (AttributeError).
    """

    def __init__(self) -> None:
        self.readers: dict[int, tuple[Callable[..., object], tuple[Any, ...]]] = {}
        self.timers: list[_PreTimer] = []

    def add_reader(self, fd: int, callback: Callable[..., object], *args: Any) -> None:
        self.readers[fd] = (callback, args)

    def remove_reader(self, fd: int) -> bool:
        return self.readers.pop(fd, None) is not None

    def call_soon(self, callback: Callable[..., object], *args: Any) -> _PreTimer:
        return self.call_later(0.0, callback, *args)

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> _PreTimer:
        timer = _PreTimer(time.monotonic() + delay, callback, args)
        self.timers.append(timer)
        return timer

    def replay(self, loop: asyncio.AbstractEventLoop) -> None:
        for fd, (callback, args) in self.readers.items():
            loop.add_reader(fd, callback, *args)
        for timer in self.timers:
            timer.arm(loop)
        self.readers.clear()
        self.timers.clear()


def _base_env() -> dict[str, str]:
    env = dict(os.environ)
    # Our own notify socket (systemd, --detach) is not the programs' to use.
    env.pop("NOTIFY_SOCKET", None)
    return env


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


# The scans live in the core; these names keep the engine's call sites short.
_HAVE_CHILDREN_FILE = _tree.HAVE_CHILDREN_FILE
scan_trees = _tree.find_trees
scan_subtree = _tree.walk_subtree
