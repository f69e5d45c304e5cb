"""The engine of ``forkwell daemon start|stop``: a command as a daemon (a better start-stop-daemon).

:func:`start_daemon` forks through :mod:`._launch`, takes the pidfile in the
daemon and execs the command there, so the pidfile names the command's real
pid and the command holds its lock; it returns once the command is up by its
readiness (``exec``, ``notify``, ``tcp:``, ``delay:``).  :func:`stop_daemon`
ends the pidfile's holder and what it left in its session.
"""

from __future__ import annotations

import errno
import os
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, NamedTuple, NoReturn

from .._core import _proc, _sys
from .._exceptions import (
    CommandNotExecutableError,
    CommandNotFoundError,
    DaemonReadyTimeoutError,
    DaemonStartError,
    PidfileError,
)
from ._config import Config, Identity, StrPath, absolute, resolve_identity, workdir_path
from ._handshake import Error, Failure, Kind, Message, Outcome, send
from ._launch import Waiter, start
from ._pidfile import Pidfile, PidfileState, PidfileStatus
from ._session import end_session, process_session
from ._steps import run_steps

if TYPE_CHECKING:
    # Imported lazily at run time: socket and dataclasses cost the CLI ~20 ms.
    from .._core._notify import NotifyListener
    from .._core._readiness import ReadySpec


class StartResult(NamedTuple):
    pid: int
    already_running: bool = False


class StopResult(NamedTuple):
    pid: int | None  # the daemon that was stopped, None when none ran
    killed: bool = False  # needed SIGKILL
    removed_stale: bool = False


def start_daemon(  # noqa: PLR0913 (keywords mirror start-stop-daemon's options)
    args: Sequence[str],
    *,
    pidfile: StrPath,
    log: StrPath | None = None,
    workdir: StrPath = "/",
    umask: int = 0o022,
    user: str | int | None = None,
    group: str | int | None = None,
    chroot: StrPath | None = None,
    env: Mapping[str, str] | None = None,
    ready: ReadySpec | None = None,
    ready_timeout: float | None = 60.0,
) -> StartResult:
    """Start ``args`` as a daemon and return once it is up (see ``docs/daemon.md``).

    Already running (the pidfile is locked): returns ``already_running=True``
    with the holder's pid.  Failures raise: ``CommandNotFoundError`` /
    ``CommandNotExecutableError`` (exec failed), :class:`DaemonReadyTimeoutError`,
    or :class:`DaemonStartError` (``.step``); nothing is left behind.
    """
    if not args:
        raise ValueError("no command given")
    if ready is not None and ready.kind == "cmd":
        raise ValueError("readiness cmd: is not supported by daemon start")
    path = absolute(pidfile, "pidfile")
    assert path is not None
    status = Pidfile.probe(path)
    if status.state is PidfileState.RUNNING and status.pid is not None:
        return StartResult(status.pid, already_running=True)
    identity = resolve_identity(user, group)
    log_path = absolute(log, "log") or os.devnull
    config = Config(
        pidfile=path,
        workdir=workdir_path(workdir, chroot),
        umask=umask,
        stdin=os.devnull,
        stdout=log_path,
        stderr=log_path,
        identity=identity,
        chroot=absolute(chroot, "chroot"),
        keep_fds=frozenset(),
        python=False,
    )
    environ = dict(os.environ if env is None else env)
    listener = _listener(ready, identity, chroot is not None, environ)
    try:
        outcome, events_fd = start(
            config,
            timeout=ready_timeout,
            ready_check=_Readiness(ready, listener),
            wake_fds=[listener.fileno()] if listener is not None else [],
        )
        if outcome is None:
            _exec_in_daemon(config, list(args), environ, events_fd)
    finally:
        if listener is not None:
            listener.close()
    return _start_result(outcome, args, ready_timeout)


def _listener(
    ready: ReadySpec | None, identity: Identity | None, abstract: bool, environ: dict[str, str]
) -> NotifyListener | None:
    """ready=notify: the socket the command will send READY=1 to, named in ``environ``."""
    if ready is None or ready.kind != "notify":
        environ.pop("NOTIFY_SOCKET", None)
        return None
    from .._core._notify import NotifyListener

    listener = NotifyListener(
        uid=identity.uid if identity is not None and os.geteuid() == 0 else None,
        abstract=abstract,
    )
    environ["NOTIFY_SOCKET"] = listener.path
    return listener


class _Readiness:
    """The original's ``ready_check``: the command was exec'd, then its readiness holds."""

    def __init__(self, spec: ReadySpec | None, listener: NotifyListener | None) -> None:
        self.spec = spec
        self.listener = listener
        self.since: float | None = None
        self.probed = 0.0
        self.holds = _CHECKS.get(spec.kind if spec is not None else "exec", _Readiness._never)

    def __call__(self, waiter: Waiter) -> bool:
        if not waiter.eof_after_exec:
            return False
        if self.since is None:
            self.since = time.monotonic()
        return self.holds(self, waiter)

    def _exec(self, waiter: Waiter) -> bool:
        return True

    def _never(self, waiter: Waiter) -> bool:
        return False

    def _notify(self, waiter: Waiter) -> bool:
        assert self.listener is not None
        for message in self.listener.receive():
            if "STATUS" in message:
                waiter.outcome.status = message["STATUS"]
            if message.get("READY") == "1":
                return True
        return False

    def _delay(self, waiter: Waiter) -> bool:
        assert self.spec is not None and self.spec.seconds is not None
        assert self.since is not None
        return time.monotonic() - self.since >= self.spec.seconds and waiter.daemon_alive()

    def _tcp(self, waiter: Waiter) -> bool:
        assert self.spec is not None and self.spec.host is not None
        assert self.spec.port is not None
        now = time.monotonic()
        if now - self.probed < 0.02:
            return False
        self.probed = now
        from .._core._readiness import tcp_accepts

        return tcp_accepts(self.spec.host, self.spec.port, 0.05) and waiter.daemon_alive()


_CHECKS: dict[str, Callable[[_Readiness, Waiter], bool]] = {
    "exec": _Readiness._exec,
    "notify": _Readiness._notify,
    "delay": _Readiness._delay,
    "tcp": _Readiness._tcp,
}


def _exec_in_daemon(
    config: Config, args: list[str], env: dict[str, str], events_fd: int
) -> NoReturn:
    pidfile: Pidfile | None = None
    try:
        pidfile = run_steps(config, events_fd, env)
        if pidfile is not None:
            # The lock must outlive exec: the command itself holds it.
            pidfile.keep_across_exec()
        send(events_fd, Message(Kind.EXEC))
        os.execvpe(args[0], args, env)
    except BaseException as exc:
        err: BaseException = exc
        step = ""
        if isinstance(exc, OSError) and not isinstance(exc, DaemonStartError | PidfileError):
            from .._exceptions import spawn_error

            err, step = spawn_error(exc, args[0], None), "exec"
        send(events_fd, Message(Kind.ERROR, error=Error.of(err, step)))
        if pidfile is not None:
            pidfile.release()
        if isinstance(err, CommandNotFoundError):
            os._exit(127)
        os._exit(126 if isinstance(err, CommandNotExecutableError) else 1)


def _start_result(
    outcome: Outcome | None, args: Sequence[str], timeout: float | None
) -> StartResult:
    assert outcome is not None
    if outcome.ok and outcome.pid is not None:
        return StartResult(outcome.pid)
    if outcome.failure is Failure.LOCKED and outcome.holder is not None:
        return StartResult(outcome.holder, already_running=True)
    name = args[0]
    if outcome.failure is Failure.NOTFOUND:
        raise CommandNotFoundError(outcome.errno, f"command not found: {name!r}", name, name)
    if outcome.failure is Failure.NOTEXEC:
        raise CommandNotExecutableError(
            outcome.errno, outcome.message or f"command not executable: {name!r}", name, name
        )
    message = outcome.describe(timeout)
    if outcome.failure is Failure.TIMEOUT:
        raise DaemonReadyTimeoutError(
            errno.ETIMEDOUT, message, "ready", exit_status=outcome.exit_status
        )
    step = outcome.step or ("ready" if outcome.execed else "start")
    raise DaemonStartError(outcome.errno, message, step, exit_status=outcome.exit_status)


def stop_daemon(
    pidfile: StrPath, *, stop_signal: int = signal.SIGTERM, timeout: float = 10.0
) -> StopResult:
    """Stop the daemon holding ``pidfile`` and everything left in its session.

    Sends ``stop_signal``, waits up to ``timeout``, then SIGKILL.  A stale
    pidfile is removed and its pid never signalled.  Raises ``PermissionError``
    when the daemon cannot be signalled, :class:`PidfileError` when the pidfile
    cannot be read, ``TimeoutError`` if even SIGKILL did not end it.
    """
    path = os.fspath(pidfile)
    status = _readable(Pidfile.probe(path), path)
    if status.state is not PidfileState.RUNNING:
        removed = status.state is PidfileState.STALE and Pidfile.remove_stale(path)
        return StopResult(None, removed_stale=removed)
    pid = status.pid
    if pid is None:
        raise PidfileError(
            errno.EPERM, f"pidfile {path} is locked from another pid namespace", path
        )
    pidfd = _sys.pidfd_open(pid)
    # The holder may have exited (and its pid been reused) between probe and
    # pidfd_open: only a process that still holds the lock is the daemon.
    if Pidfile.holder(path) != pid:
        if pidfd is not None:
            os.close(pidfd)
        return stop_daemon(path, stop_signal=stop_signal, timeout=timeout)
    sid = process_session(pid)
    try:
        killed = _stop_process(pid, pidfd, stop_signal, timeout)
        # What the daemon left in its session (forked workers, a shell's
        # background jobs) is ended too.
        # Only a session whose leader is gone, as forkwell leaves it: never a
        # login session that a daemon started from a shell still shares.
        orphaned = sid is not None and sid > 1 and not os.path.exists(f"/proc/{sid}")
        if orphaned and sid is not None and end_session(sid, stop_signal, min(timeout, 5.0)):
            killed = True
    finally:
        if pidfd is not None:
            os.close(pidfd)
    Pidfile.remove_stale(path, expect_pid=pid)
    return StopResult(pid, killed=killed)


def _readable(status: PidfileStatus, path: str) -> PidfileStatus:
    """``status``, unless the pidfile could not be read: then the error saying why."""
    if status.state is not PidfileState.UNKNOWN:
        return status
    if status.errno in (errno.EACCES, errno.EPERM):
        raise PermissionError(status.errno, f"cannot read pidfile: {status.reason}", path)
    raise PidfileError(status.errno, f"cannot read pidfile: {status.reason}", path)


def _stop_process(pid: int, pidfd: int | None, sig: int, timeout: float) -> bool:
    """``sig``, up to ``timeout`` for it to go, then SIGKILL; True if SIGKILL was needed."""
    _sys.send_signal(pid, pidfd, sig)
    if _proc.wait_gone(pid, timeout, pidfd=pidfd):
        return False
    _sys.send_signal(pid, pidfd, signal.SIGKILL)
    if _proc.wait_gone(pid, 10.0, pidfd=pidfd):
        return True
    raise TimeoutError(errno.ETIMEDOUT, f"pid {pid} did not exit even after SIGKILL")
