""":func:`forkwell.daemonize`: the calling Python program becomes a daemon.

The original process exits only once the daemon is set up (or has called
``notify_ready``), with 0, or with 1 and the daemon's reason on its stderr
(:mod:`._launch` does the forking).  Already supervised (systemd, PID 1,
forkwell's supervisor, inetd), ``detach="auto"`` does not fork: the steps that
make sense in place are taken in this process.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import stat
import sys
from collections.abc import Iterable, Mapping
from typing import Any, Literal, NoReturn

from ._config import Config, StrPath, absolute, fd_of, resolve_identity, workdir_path
from ._handshake import Error, Kind, Message, Outcome, send
from ._launch import start
from ._pidfile import Pidfile
from ._steps import enter, redirect_stdio, run_steps, take_pidfile

Detach = bool | Literal["auto"]
Ready = Literal["immediate", "notify"]

#: Set by forkwell's own supervisor in the programs it runs.
SUPERVISED_VAR = "FORKWELL_SUPERVISED"


DEFAULT_WORKDIR = "/"
DEFAULT_UMASK = 0o022


def daemonize(  # noqa: PLR0913 (keywords mirror python-daemon's DaemonContext)
    pidfile: StrPath | None = None,
    *,
    ready: Ready = "immediate",
    ready_timeout: float | None = 90.0,
    workdir: StrPath = DEFAULT_WORKDIR,
    umask: int = DEFAULT_UMASK,
    stdin: StrPath | None = None,
    stdout: StrPath | None = None,
    stderr: StrPath | None = None,
    user: str | int | None = None,
    group: str | int | None = None,
    chroot: StrPath | None = None,
    keep_fds: Iterable[int | Any] = (),
    detach: Detach = "auto",
) -> None:
    """Turn the calling program into a daemon; returns only in the daemon.

    The original process waits until the daemon is set up (``ready="immediate"``)
    or has called :func:`forkwell.notify_ready` (``ready="notify"``), then
    exits 0.  If the daemon fails first (a step fails, it raises or exits, or
    ``ready_timeout`` seconds pass), the original prints why on its stderr and
    exits 1, and nothing is left running: no daemon, no pidfile.

    ``stdin``/``stdout``/``stderr`` are paths (output appended; default
    ``/dev/null``).  ``keep_fds`` (fds or objects with ``fileno()``, e.g. a
    logging handler's stream) stay open; every other fd above 2 is closed.
    ``user``/``group`` switch identity with ``initgroups`` (root's
    supplementary groups never survive).  ``detach="auto"`` does not fork when
    already supervised (systemd, PID 1, forkwell's supervisor, inetd); then
    only pidfile, umask, chdir, chroot, privileges and readiness apply, and
    failures raise :class:`forkwell.DaemonStartError` in the caller.

    In the daemon, SIGTERM raises ``SystemExit(0)`` (so ``finally`` blocks and
    exit handlers run) and the pidfile is removed at exit.
    """
    _check_arguments(ready, detach, umask)
    null = os.devnull
    config = Config(
        pidfile=absolute(pidfile, "pidfile"),
        workdir=workdir_path(workdir, chroot),
        umask=umask,
        stdin=absolute(stdin, "stdin") or null,
        stdout=absolute(stdout, "stdout") or null,
        stderr=absolute(stderr, "stderr") or null,
        identity=resolve_identity(user, group),
        chroot=absolute(chroot, "chroot"),
        keep_fds=frozenset(fd_of(k) for k in keep_fds),
    )
    redirect = any(s is not None for s in (stdin, stdout, stderr))
    outcome = launch(config, ready, ready_timeout, detach, redirect=redirect)
    if outcome is not None:
        _exit_original(outcome, ready_timeout)


def plain(pidfile: StrPath | None) -> Config:
    """What ``daemonize(pidfile)`` makes of the process, every other setting its default."""
    null = os.devnull
    return Config(pidfile=absolute(pidfile, "pidfile"), workdir=DEFAULT_WORKDIR,
                  umask=DEFAULT_UMASK, stdin=null, stdout=null, stderr=null, identity=None,
                  chroot=None, keep_fds=frozenset())  # fmt: skip


def launch(
    config: Config,
    ready: Ready,
    ready_timeout: float | None,
    detach: Detach = "auto",
    *,
    redirect: bool = False,
) -> Outcome | None:
    """:func:`daemonize`'s work, for a caller that reports the outcome in its own words.

    In the original process: the :class:`Outcome` (the caller then exits, 0
    only if ``outcome.ok``).  In the daemon, or in place (already supervised):
    None, once set up.  ``forkwell up --detach`` prints its failures this way.
    """
    _check_arguments(ready, detach, config.umask)
    do_detach = detach is True or (detach == "auto" and supervised_reason() is None)
    if not do_detach:
        _become_in_place(config, ready, redirect=redirect)
        return None
    outcome, events_fd = start(config, timeout=ready_timeout, ready_check=lambda w: False)
    if outcome is None:
        _in_daemon(config, ready, events_fd)
    return outcome


def _check_arguments(ready: str, detach: object, umask: int) -> None:
    if ready not in ("immediate", "notify"):
        raise ValueError(f"ready must be 'immediate' or 'notify', not {ready!r}")
    if detach not in (True, False, "auto"):
        raise ValueError(f"detach must be True, False or 'auto', not {detach!r}")
    if not 0 <= umask <= 0o777:
        raise ValueError(f"umask must be between 0 and 0o777, not {umask:#o}")
    import threading

    if threading.current_thread() is not threading.main_thread():
        # Signal handlers (reset, SIGTERM) can only be set from the main thread.
        raise RuntimeError("daemonize() must be called from the main thread")


def supervised_reason() -> str | None:
    """Why this process should not fork away (already supervised), or None."""
    if os.getpid() == 1:
        return "running as PID 1"
    if os.environ.get("NOTIFY_SOCKET"):
        return "started by a service manager ($NOTIFY_SOCKET)"
    if os.environ.get(SUPERVISED_VAR):
        return "started by forkwell's supervisor"
    if os.environ.get("INVOCATION_ID") and _parent_is_systemd():
        return "started by systemd ($INVOCATION_ID)"
    with contextlib.suppress(OSError):
        if stat.S_ISSOCK(os.fstat(0).st_mode):
            return "started by inetd (a socket on stdin)"
    return None


def _parent_is_systemd() -> bool:
    # Shells in a desktop terminal inherit INVOCATION_ID from the terminal's
    # own service, so the variable alone does not mean "we are the service".
    ppid = os.getppid()
    if ppid == 1:
        return True
    try:
        with open(f"/proc/{ppid}/comm", "rb") as f:
            return f.read().strip() == b"systemd"
    except OSError:
        return False


def _exit_original(outcome: Outcome, timeout: float | None) -> NoReturn:
    if outcome.ok:
        if outcome.status:
            # The daemon chose to say how it came up (notify_status before
            # notify_ready): the person who started it should read it.
            print(outcome.status, flush=True)
        os._exit(0)
    prog = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "daemonize"
    print(f"{prog}: {outcome.describe(timeout)}", file=sys.stderr, flush=True)
    os._exit(1)


def _in_daemon(config: Config, ready: Ready, events_fd: int) -> None:
    """The daemon's side: run the steps, then report readiness."""
    env = dict(os.environ)
    try:
        pidfile = run_steps(config, events_fd, env)
        os.environ.clear()
        os.environ.update(env)
    except BaseException as exc:
        send(events_fd, Message(Kind.ERROR, error=Error.of(exc)))
        os._exit(1)
    _install_exit_handling(pidfile)
    if ready == "immediate":
        send(events_fd, Message(Kind.READY))
        os.close(events_fd)
        return
    _NotifyRelay(events_fd).install()


def _install_exit_handling(pidfile: Pidfile | None) -> None:
    if pidfile is not None:
        atexit.register(pidfile.release)  # a no-op in forked children
    signal.signal(signal.SIGTERM, _terminate)


def _terminate(signum: int, frame: object) -> None:
    # Raising is the one thing this handler does: it unwinds the main thread
    # so that finally blocks and atexit handlers (pidfile removal) run.
    raise SystemExit(0)


class _NotifyRelay:
    """ready="notify": forward notify_*() to the original until READY=1; report raises."""

    def __init__(self, events_fd: int) -> None:
        self.fd: int | None = events_fd
        self.previous_hook = sys.excepthook

    def install(self) -> None:
        from .._core import _notify

        _notify._set_local_hook(self.on_notify)
        sys.excepthook = self.on_uncaught

    def close(self) -> None:
        from .._core import _notify

        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        _notify._set_local_hook(None)
        sys.excepthook = self.previous_hook

    def on_notify(self, fields: Mapping[str, str]) -> bool:
        if self.fd is None:
            return False
        if "STATUS" in fields:
            send(self.fd, Message(Kind.STATUS, text=fields["STATUS"]))
        if fields.get("READY") == "1":
            send(self.fd, Message(Kind.READY))
            self.close()
        return True

    def on_uncaught(self, kind: type[BaseException], value: BaseException, tb: Any) -> None:
        if self.fd is not None:
            send(self.fd, Message(Kind.ERROR, error=Error.of(value)))
        self.previous_hook(kind, value, tb)


def _become_in_place(config: Config, ready: Ready, redirect: bool) -> None:
    """detach=False (or supervised): the non-forking steps, in this process."""
    os.umask(config.umask)
    if redirect:
        redirect_stdio(config)
    pidfile = take_pidfile(config.pidfile) if config.pidfile else None
    try:
        enter(config)
    except BaseException:
        if pidfile is not None:
            pidfile.release()
        raise
    _install_exit_handling(pidfile)
    if ready == "immediate":
        from .._core._notify import notify_ready

        notify_ready()
