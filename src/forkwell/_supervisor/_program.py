"""One supervised program instance (``web:0``): an explicit state machine.

States and the only transitions allowed (anything else raises
:class:`~forkwell.StateError`); each transition is recorded as an event::

    STOPPED  -> STARTING                       start requested
    STARTING -> RUNNING                        ready (exec'd, READY=1, port open...)
    STARTING -> BACKOFF                        failed start: exited before ready, or
                                               not ready within ready_timeout
    STARTING -> FATAL                          failed start number start_retries, or a
                                               dependency failed
    STARTING -> EXITED                         exited with a success code before ready
                                               (a one-shot job that is simply done)
    STARTING -> STOPPING                       stop requested while it starts
    STARTING -> STOPPED                        stop requested while waiting for dependencies
    RUNNING  -> EXITED                         the process exited (any reason)
    RUNNING  -> STOPPING                       stop requested
    BACKOFF  -> STARTING                       the backoff delay is over
    BACKOFF  -> STOPPED                        stop requested
    STOPPING -> STOPPED                        the whole tree is gone and reaped
    EXITED   -> STARTING                       restarted: at once after a crash, or by hand
    EXITED   -> BACKOFF                        it ran less than min_uptime: a failed start
    EXITED   -> FATAL                          ... and it was failed start number start_retries
    FATAL    -> STARTING                       started by hand

The instance reacts to events from the event loop (its pidfd becomes
readable, a pipe has data, a notify datagram arrives, a timer fires) with
plain callbacks, so a crash is handled and the replacement spawned in the
same loop iteration that saw the exit.  Stopping is a coroutine because it
waits for the whole tree.  The :class:`Supervisor` owns the loop, the
reaping, tree scanning and the logs; the instance asks it through ``_Host``.
What decides readiness is in :mod:`._probes`, its pipes and log files are an
:class:`~forkwell._supervisor._logs.Output`.
"""

from __future__ import annotations

import contextlib
import functools
import os
import pwd
import signal
import time
from collections.abc import Callable, Mapping
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from .._core import _sys, _tree
from .._core._process import Process, spawn
from .._core._state import check
from .._core._status import describe_exit, signal_name
from .._exceptions import SpawnError
from ._logs import Output
from ._loop import resolve
from ._waiters import Waiters

if TYPE_CHECKING:
    # asyncio is imported where a coroutine needs it: ``forkwell up`` spawns its
    # first programs before the event loop (and asyncio's ~12 ms import) exists.
    import asyncio

    from ._config import ProgramConfig
    from ._liveness import Liveness
    from ._loop import Handle, Loop
    from ._probes import Readiness


class ProgramState(Enum):
    """The state of one program instance (see the module docstring for the transitions)."""

    STOPPED = "STOPPED"  # not running and not meant to be
    STARTING = "STARTING"  # waiting for dependencies, or spawned and not ready yet
    RUNNING = "RUNNING"  # ready, and running
    BACKOFF = "BACKOFF"  # a start failed; the next attempt waits for a timer
    STOPPING = "STOPPING"  # its whole tree is being stopped
    EXITED = "EXITED"  # exited, and not restarted (restart policy or a one-shot job)
    FATAL = "FATAL"  # start_retries failed starts in a row; down until started by hand


S = ProgramState
TRANSITIONS: Mapping[ProgramState, frozenset[ProgramState]] = {
    S.STOPPED: frozenset({S.STARTING}),
    S.STARTING: frozenset({S.RUNNING, S.BACKOFF, S.FATAL, S.EXITED, S.STOPPING, S.STOPPED}),
    S.RUNNING: frozenset({S.EXITED, S.STOPPING}),
    S.BACKOFF: frozenset({S.STARTING, S.STOPPED}),
    S.STOPPING: frozenset({S.STOPPED}),
    S.EXITED: frozenset({S.STARTING, S.BACKOFF, S.FATAL}),
    S.FATAL: frozenset({S.STARTING}),
}

#: States in which a start request has been answered (for ``start(wait=True)``).
SETTLED = frozenset({S.RUNNING, S.FATAL, S.STOPPED, S.EXITED})
#: States with nothing running and nothing scheduled.
DOWN = frozenset({S.STOPPED, S.EXITED, S.FATAL})

BACKOFF_FIRST = 0.1  # seconds before the 2nd attempt; doubles each failed start


class _Host(Protocol):
    """What an instance needs from its supervisor."""

    @property
    def loop(self) -> Loop: ...
    @property
    def aio_loop(self) -> asyncio.AbstractEventLoop: ...

    def child_env(self, inst: Instance) -> dict[str, str]: ...
    def devnull(self) -> int: ...
    def find_executable(self, command: str, env: Mapping[str, str]) -> str | None: ...
    def log_dir(self) -> Path: ...
    def transition(
        self, inst: Instance, old: ProgramState, new: ProgramState, why: str
    ) -> None: ...
    def output(self, inst: Instance, stream: str, data: bytes) -> None: ...
    def note(self, text: str) -> None: ...
    def track(self, proc: Process, on_exit: Callable[[], None]) -> None: ...
    def untrack(self, proc: Process) -> None: ...
    async def end_tree(
        self, tree: _tree.Tree, sig: int, grace: float, *, include_root: bool = True
    ) -> None: ...
    def background(self, coro: object) -> None: ...


class Instance:
    """One instance of a program: its process, its state, its logs."""

    def __init__(self, host: _Host, config: ProgramConfig, index: int) -> None:
        self.host = host
        self.config = config
        self.index = index
        self.program = config.name
        self.name = config.name_of(index)
        self.state = ProgramState.STOPPED
        self.proc: Process | None = None
        self.started_at: float | None = None
        self.ready_at: float | None = None
        self.restarts = 0
        self.last_exit: int | None = None
        self.last_exit_at: float | None = None  # time.time() of that exit
        self.failures = 0  # consecutive failed starts
        self.message = ""  # why the last start failed (one line), "" if it did not
        self.colour = 0
        self._started_mono = 0.0
        self._timer: Handle | None = None  # the backoff delay
        self.readiness: Readiness | None = None  # made for the first start not by exec
        self.liveness: Liveness | None = None  # made by the supervisor's health, if probed
        self._waiters: Waiters[ProgramState] = Waiters()  # wait_for()
        self._failing_task: asyncio.Task[None] | None = None
        self._failing = False  # a failed start's tree is being ended
        self._dep_task: asyncio.Task[None] | None = None
        self._exit_waiters: Waiters[int] = Waiters()  # the exit callback ran
        self.no_restart = False  # set by shutdown: an exit now is final
        self.output = Output(self._echo, host.note)

    def __repr__(self) -> str:
        return f"<Instance {self.name} {self.state.name} pid={self.pid}>"

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    # -- state machine -------------------------------------------------------

    def _set(self, new: ProgramState, why: str = "") -> None:
        old = self.state
        self.state = check(TRANSITIONS, old, new, f"{self.name}:")
        self.host.transition(self, old, new, why)
        self._waiters.notify(new)

    async def wait_for(
        self, pred: Callable[[ProgramState], bool], timeout: float | None = None
    ) -> None:
        """Return once the state satisfies ``pred`` (at once if it does), or after ``timeout``."""
        if pred(self.state):
            return
        fut = self._waiters.add(self.host.aio_loop, pred)
        handle = None if timeout is None else self.host.loop.call_later(timeout, resolve, fut)
        try:
            await fut
        finally:
            if handle is not None:
                handle.cancel()

    def uptime(self) -> float:
        """Seconds since the current process was spawned (0 if none)."""
        return 0.0 if self.proc is None else self.host.loop.time() - self._started_mono

    # -- output --------------------------------------------------------------

    def log_path(self, stream: str) -> Path:
        if stream == "stderr" and self.config.redirect_stderr:
            stream = "stdout"
        return self.host.log_dir() / f"{self.program}.{self.index}.{stream}.log"

    def _open_io(self) -> None:
        """Pipes and log files live as long as the instance, across restarts."""
        cfg = self.config
        streams = ("stdout",) if cfg.redirect_stderr else ("stdout", "stderr")
        paths = {stream: self.log_path(stream) for stream in streams}
        self.output.open(paths, cfg, self.host.loop)

    def _echo(self, stream: str, data: bytes) -> None:
        self.host.output(self, stream, data)

    def close_io(self) -> None:
        self.output.close(self.host.loop)

    # -- starting ------------------------------------------------------------

    def begin_start(self, reset: bool = True) -> None:
        """Enter STARTING (a manual start also forgets earlier failed starts)."""
        if reset:
            self.failures = 0
        self.message = ""
        self._set(S.STARTING, "start requested")

    def wait_for_dependencies(self, waiting: asyncio.Task[None]) -> None:
        """STARTING without a process until ``waiting`` calls :meth:`dependencies_done`."""
        self._dep_task = waiting

    def dependencies_done(self, failed: str = "") -> None:
        """The wait for dependencies is over: spawn now, or FATAL because one ``failed``."""
        self._dep_task = None
        if failed:
            self.message = f"{self.name} is FATAL: {failed}"
            self._set(S.FATAL, failed)
        elif self.state is S.STARTING and self.proc is None:
            self.spawn()

    def spawn(self) -> None:
        """Start the process now (state STARTING); on failure, a failed start."""
        assert self.state is S.STARTING
        free = _sys.free_fds()
        if free is not None and free < FD_RESERVE:
            # Ending trees needs fds too (pidfds, /proc): never spend the last ones.
            self._failed_start(f"too many open files: {free} left under RLIMIT_NOFILE, "
                               f"{FD_RESERVE} are kept free to stop programs")  # fmt: skip
            return
        try:
            self._open_io()
        except OSError as exc:
            # This runs from timers and exit callbacks too: report, never raise.
            where = f": {exc.filename}" if exc.filename else ""  # pipe(2) names no file
            self._failed_start(f"cannot open its pipes and log files: {exc.strerror or exc}{where}")
            return
        proc = self._spawn_process()
        if proc is None:
            return
        self.proc = proc
        self.output.mark(f"started pid {proc.pid}")
        self.started_at = time.time()
        self._started_mono = self.host.loop.time()
        self.ready_at = None
        self.host.track(proc, self._on_exit)
        self._await_readiness()

    def _spawn_process(self) -> Process | None:
        """The process, spawned with its pipes, environment and user; None: a failed start."""
        cfg = self.config
        env = self.host.child_env(self)
        if cfg.ready.kind == "notify" or cfg.watchdog_sec is not None:
            self._readiness_of().listen(cfg, env)
        stdout, stderr = self.output.write_ends()
        identity = _identity(cfg.user, cfg.group, env)
        try:
            return spawn(
                cfg.command,
                executable=self.host.find_executable(cfg.command[0], env),
                stdin=self.host.devnull(),
                stdout=stdout,
                stderr=stderr,
                cwd=cfg.directory,
                env=env,
                new_process_group=True,
                umask=-1 if cfg.umask is None else cfg.umask,
                **identity,  # type: ignore[arg-type]
            )
        except SpawnError as exc:
            why = str(exc)
        except OSError as exc:  # e.g. EMFILE: out of fds
            why = f"cannot start: {exc.strerror or exc}"
        if self.readiness is not None:
            self.readiness.close_notify()
        self._failed_start(why)
        return None

    def _await_readiness(self) -> None:
        """Just spawned: RUNNING at once for ``exec``, else a deadline and the probe."""
        if self.config.ready.kind == "exec":
            self._ready("exec'd")
        else:
            self._readiness_of().start(self.config, functools.partial(self.host.child_env, self))

    def _readiness_of(self) -> Readiness:
        if self.readiness is None:
            # Here: ``ready = "exec"`` programs, the quickest to start, never need it.
            from ._probes import Readiness

            self.readiness = Readiness(
                self.host, self._ready, self._ready_timeout, self._probe_failed, self.output
            )
        return self.readiness

    def _probe_failed(self, why: str) -> None:
        self.message = why

    def _ready(self, how: str) -> None:
        if self.state is not S.STARTING or self.proc is None or self._failing:
            return
        self._cancel_readiness(ready=True)
        self.ready_at = time.time()
        took = self.ready_at - (self.started_at or self.ready_at)
        self._set(S.RUNNING, f"pid {self.proc.pid}, ready ({how}) after {took:.3f}s")

    def _ready_timeout(self) -> None:
        if self.state is S.STARTING and self.proc is not None and not self._failing:
            why = f"not ready within {self.config.ready_timeout:g}s (ready = {self.config.ready})"
            self._fail_running_start(why)

    def _fail_running_start(self, why: str) -> None:
        """A failed start whose process still runs: end its tree, then count the failure."""
        self._failing = True
        self._cancel_readiness()
        proc = self.proc
        assert proc is not None

        async def end() -> None:
            try:
                await self._end_process(proc, self.config.stop_signal, self.config.stop_timeout)
            finally:
                self._failing = False
            if self.state is S.STARTING:
                self._failed_start(why)

        self._failing_task = self.host.aio_loop.create_task(end())

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _cancel_readiness(self, ready: bool = False) -> None:
        if self.readiness is not None:
            self.readiness.cancel(ready)

    def _failed_start(self, why: str) -> None:
        """Count a failed start: BACKOFF before the next attempt, or FATAL."""
        self.failures += 1
        if self.failures >= self.config.start_retries:
            self.message = f"{self.name} is FATAL: {why} ({self.failures} failed starts)"
            self._set(S.FATAL, f"{why} ({self.failures} failed starts)")
            return
        delay = min(BACKOFF_FIRST * 2 ** (self.failures - 1), self.config.backoff_max)
        self.message = f"{self.name} failed to start: {why}"
        self._set(S.BACKOFF, f"{why}; attempt {self.failures + 1} in {delay:g}s")
        self._timer = self.host.loop.call_later(delay, self._backoff_over)

    def _backoff_over(self) -> None:
        self._timer = None
        if self.state is S.BACKOFF and not self.no_restart:
            self._set(S.STARTING, f"attempt {self.failures + 1} of {self.config.start_retries}")
            self.spawn()

    # -- exits ---------------------------------------------------------------

    def _on_exit(self) -> None:
        """The process exited (seen through its pidfd or reaped by the supervisor)."""
        proc = self.proc
        if proc is None:
            return
        rc = proc.poll()
        if rc is None:
            return
        self.host.untrack(proc)
        self.last_exit, self.last_exit_at = rc, time.time()
        self.output.exited(proc.pid, rc, self.uptime())
        self._exit_waiters.notify(rc)
        if self.state is S.STOPPING or self._failing:
            return  # the stopping coroutine finishes the job
        self._cancel_readiness()
        self.proc = None
        uptime = self.host.loop.time() - self._started_mono
        self.host.background(self._end_leftovers(proc))
        if self.state is S.STARTING:
            self._exited_starting(rc)
        elif self.state is S.RUNNING:
            self._exited_running(rc, uptime)

    def _exited_starting(self, rc: int) -> None:
        how = describe_exit(rc)
        if self.no_restart:
            self._set(S.STOPPED, f"{how} during shutdown")
        elif _is_done(self.config, rc):
            self._set(S.EXITED, f"{how} before it was ready (done)")
        else:
            self._failed_start(f"{how} before it was ready")

    def _exited_running(self, rc: int, uptime: float) -> None:
        how = describe_exit(rc)
        self._set(S.EXITED, f"{how} after {uptime:.3f}s")
        if self.no_restart:
            return
        if uptime < self.config.min_uptime and not _is_done(self.config, rc):
            limit = self.config.min_uptime
            self._failed_start(f"{how} after {uptime:.3f}s (min_uptime {limit:g}s)")
        elif _should_restart(self.config, rc):
            # A crash after a good run: restart at once, this very loop iteration.
            self.failures = 0
            self.restarts += 1
            self._set(S.STARTING, f"restarting ({how})")
            self.spawn()
        elif not _success(self.config, rc):
            self.message = f"{self.name} {how}"

    async def _end_leftovers(self, proc: Process) -> None:
        """After the main process exited: end what it left running (its tree), then close."""
        try:
            if proc.tree is not None and proc.tree.may_have_descendants():
                await self.host.end_tree(
                    proc.tree, self.config.stop_signal, self.config.stop_timeout,
                    include_root=False,
                )  # fmt: skip
            elif proc.tree is None:
                await _end_group(proc, self.config.stop_signal, self.config.stop_timeout)
        finally:
            proc.close()

    # -- stopping ------------------------------------------------------------

    async def _end_process(self, proc: Process, sig: int, grace: float) -> None:
        """End ``proc``'s whole tree (``sig``, ``grace``, SIGKILL) and reap it."""
        if proc.tree is not None:
            await self.host.end_tree(proc.tree, sig, grace)
        else:
            await _end_group(proc, sig, grace)
        if proc.poll() is None:
            # The tree scan no longer sees it (a zombie not yet reaped, or
            # it cannot be scanned): make sure, and wait for the exit callback.
            proc.send_signal(signal.SIGKILL)
            fut = self._exit_waiters.add(self.host.aio_loop, lambda _rc: True)
            if proc.poll() is None:
                await fut
            else:
                resolve(fut)
        self.host.untrack(proc)
        self.last_exit, self.last_exit_at = proc.returncode, time.time()
        self.output.exited(proc.pid, proc.returncode, self.uptime())
        if self.proc is proc:
            self.proc = None
        proc.close()

    def _stop_unspawned(self) -> bool:
        """Stop at once what has no process (backoff, waiting for dependencies); False: it has."""
        if self.state is S.BACKOFF:
            self._cancel_timer()
            self._set(S.STOPPED, "stop requested during backoff")
            return True
        if self.state is S.STARTING and self.proc is None:
            if self._dep_task is not None:
                self._dep_task.cancel()
                self._dep_task = None
            self._set(S.STOPPED, "stop requested while waiting for dependencies")
            return True
        return False

    async def stop(self, why: str = "") -> None:
        """Stop the instance and its whole tree; return once it is STOPPED (or was down).

        ``why``: the reason, said first in the STOPPING event (a liveness failure).
        """
        if self.state is S.STOPPING:
            await self.wait_for(lambda s: s is not S.STOPPING)
            return
        if self.state in DOWN or self._stop_unspawned():
            return
        proc = self.proc
        assert proc is not None
        self._cancel_readiness()
        signame = signal_name(self.config.stop_signal)
        how = f"pid {proc.pid}: {signame} to the tree, SIGKILL after {self.config.stop_timeout:g}s"
        self._set(S.STOPPING, f"{why}; {how}" if why else how)
        pending = self._failing_task
        if pending is not None and not pending.done():
            # A failed start is already ending this tree: let it finish.
            import asyncio

            with contextlib.suppress(Exception):
                await asyncio.shield(pending)
        if self.proc is not None:
            await self._end_process(self.proc, self.config.stop_signal, self.config.stop_timeout)
        rc = self.last_exit
        self._set(S.STOPPED, "" if rc is None else describe_exit(rc))

    async def kill(self) -> None:
        """Shutdown's last resort: SIGKILL the whole tree at once, end up STOPPED."""
        self.no_restart = True
        self._cancel_timer()
        if self._failing_task is not None and not self._failing_task.done():
            self._failing_task.cancel()  # its graceful end of the tree gives way to SIGKILL
        if self._dep_task is not None:
            self._dep_task.cancel()
            self._dep_task = None
        self._cancel_readiness()
        if self.state in DOWN:
            return
        if self.state in (S.STARTING, S.RUNNING) and self.proc is not None:
            self._set(S.STOPPING, "SIGKILL to the tree (shutdown_timeout passed)")
        if self.proc is not None:
            await self._end_process(self.proc, signal.SIGKILL, 0.0)
        if self.state is not S.STOPPED:
            self._set(S.STOPPED, "killed")

    def signal(self, sig: int, tree: bool) -> bool:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return False
        if tree:
            proc.signal_tree(sig)
            return True
        return proc.send_signal(sig)


async def _end_group(proc: Process, sig: int, grace: float) -> None:
    """No /proc, so no Tree: the process group is the tree (``_core/_sys`` table).

    ``sig`` to the group, up to ``grace`` for the program to exit (polled:
    nothing else wakes us for the group), then SIGKILL to whatever is left
    of the group.  A descendant that left it (``setsid``) cannot be found.
    """
    import asyncio  # the engine's loop is running: asyncio is imported already

    with contextlib.suppress(OSError):
        os.killpg(proc.pid, sig)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max(grace, 0.0)
    while proc.returncode is None and loop.time() < deadline:
        await asyncio.sleep(0.05)
    with contextlib.suppress(OSError):
        os.killpg(proc.pid, signal.SIGKILL)


#: fds a start must leave free: a stop needs a pidfd per member and one /proc
#: read at a time, a control connection one more.
FD_RESERVE = 16


def _success(cfg: ProgramConfig, rc: int) -> bool:
    return rc >= 0 and rc in cfg.success_exit_codes


def _is_done(cfg: ProgramConfig, rc: int) -> bool:
    """A success code, and a policy that lets it stay down: a job that is done."""
    return _success(cfg, rc) and cfg.restart != "always"


def _should_restart(cfg: ProgramConfig, rc: int) -> bool:
    if cfg.restart == "always":
        return True
    if cfg.restart == "never":
        return False
    return not _success(cfg, rc)


def _identity(user: str | None, group: str | None, env: dict[str, str]) -> dict[str, object]:
    """spawn()'s user, group and extra_groups for ``user``/``group``; HOME and USER into ``env``."""
    if user is None:
        return {} if group is None else {"group": _gid_of(group)}
    pw = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    gid = pw.pw_gid if group is None else _gid_of(group)
    env.update(HOME=pw.pw_dir, USER=pw.pw_name, LOGNAME=pw.pw_name)
    return {"user": pw.pw_uid, "group": gid, "extra_groups": os.getgrouplist(pw.pw_name, gid)}


def _gid_of(group: str) -> int:
    import grp

    return int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
