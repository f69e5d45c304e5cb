"""The daemon(7) steps, run in the daemon after both forks.

Each step turns an ``OSError`` into a :class:`forkwell.DaemonStartError`
naming it (``.step``), which the daemon reports to the original process
before it exits.  Steps 1-4 (close fds, reset signals and mask, sanitize the
environment) run here rather than before the first fork, so that a failing
step never damages the caller's process.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
from collections.abc import Iterable, Iterator
from typing import Any

from .._core import _sys
from .._exceptions import DaemonStartError, PidfileError
from ._config import Config, Identity
from ._pidfile import Pidfile

#: Environment variables that describe the *caller's* relation to a service
#: manager; a detached daemon must not inherit them (it would otherwise send
#: READY=1 to the manager of whoever started it, or claim its sockets).
MANAGER_VARS = (
    "NOTIFY_SOCKET",
    "LISTEN_PID",
    "LISTEN_FDS",
    "LISTEN_FDNAMES",
    "WATCHDOG_PID",
    "WATCHDOG_USEC",
)


@contextlib.contextmanager
def step(name: str, what: str) -> Iterator[None]:
    """An ``OSError`` inside becomes ``DaemonStartError(step=name)``: "``what``: strerror"."""
    try:
        yield
    except (DaemonStartError, PidfileError):
        raise
    except OSError as exc:
        filename = exc.filename if isinstance(exc.filename, str) else None
        raise DaemonStartError(
            exc.errno or 0, f"{what}: {exc.strerror or exc}", name, filename
        ) from exc


def run_steps(config: Config, events_fd: int, env: dict[str, str]) -> Pidfile | None:
    """daemon(7) steps 1-4 and 9-13, in the daemon (after both forks)."""
    close_fds({0, 1, 2, events_fd, *config.keep_fds})
    reset_signals(config.python)
    clear_signal_mask()
    sanitize_env(env, config.identity, keep_notify=not config.python)
    os.umask(config.umask)
    redirect_stdio(config)
    pidfile = take_pidfile(config.pidfile) if config.pidfile else None
    enter(config)
    return pidfile


def enter(config: Config) -> None:
    """The last steps, also taken in place: chroot, chdir, drop privileges."""
    if config.chroot:
        chroot(config.chroot)
    chdir(config.workdir)
    if config.identity is not None:
        drop_privileges(config.identity)


def close_fds(keep: Iterable[int]) -> None:
    with step("close-fds", "cannot close inherited file descriptors"):
        # close_range(2) on Linux: constant time whatever RLIMIT_NOFILE is.
        _sys.close_fds_except(set(keep))


def reset_signals(python: bool) -> None:
    with step("reset-signals", "cannot reset signal handlers"):
        for sig in signal.valid_signals():
            if sig in (signal.SIGKILL, signal.SIGSTOP):
                continue
            handler: Any = signal.SIG_DFL
            if python and sig == signal.SIGINT:
                handler = signal.default_int_handler
            elif python and sig in (signal.SIGPIPE, signal.SIGXFSZ):
                # What the interpreter itself sets at start-up, so writes to a
                # closed pipe raise BrokenPipeError instead of killing us.
                handler = signal.SIG_IGN
            with contextlib.suppress(OSError, ValueError):
                signal.signal(sig, handler)


def clear_signal_mask() -> None:
    with step("signal-mask", "cannot clear the signal mask"):
        signal.pthread_sigmask(signal.SIG_SETMASK, set())


def sanitize_env(env: dict[str, str], identity: Identity | None, keep_notify: bool) -> None:
    for name in MANAGER_VARS:
        if not (keep_notify and name == "NOTIFY_SOCKET"):
            env.pop(name, None)
    if identity is not None and identity.name is not None:
        env.update(USER=identity.name, LOGNAME=identity.name)
        if identity.home:
            env["HOME"] = identity.home
        if identity.shell:
            env["SHELL"] = identity.shell


def redirect_stdio(config: Config) -> None:
    with step("stdio", f"cannot open stdin {config.stdin}"):
        fd_in = os.open(config.stdin, os.O_RDONLY | os.O_NOCTTY)
    opened = {}
    for target, path in ((1, config.stdout), (2, config.stderr)):
        if path not in opened:
            with step("stdio", f"cannot open {'stdout' if target == 1 else 'stderr'} {path}"):
                opened[path] = os.open(
                    path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOCTTY, 0o666
                )
    with step("stdio", "cannot redirect stdio"):
        os.dup2(fd_in, 0)
        os.dup2(opened[config.stdout], 1)
        os.dup2(opened[config.stderr], 2)
        for fd in {fd_in, *opened.values()}:
            if fd > 2:
                os.close(fd)


def take_pidfile(path: str) -> Pidfile:
    # PidfileError (symlink, unsafe directory, locked) passes through as is.
    return Pidfile(path).acquire()


def chroot(path: str) -> None:
    with step("chroot", f"cannot chroot to {path}"):
        os.chroot(path)


def chdir(path: str) -> None:
    with step("chdir", f"cannot change directory to {path}"):
        os.chdir(path)


def drop_privileges(identity: Identity) -> None:
    who = identity.name or str(identity.uid)
    with step("drop-privileges", f"cannot switch to user {who}"):
        if os.geteuid() == 0:
            # Supplementary groups become the target user's: never root's.
            if identity.name is not None:
                os.initgroups(identity.name, identity.gid)
            else:
                os.setgroups([identity.gid])
        os.setgid(identity.gid)
        os.setuid(identity.uid)
        if identity.uid != 0 and os.geteuid() == 0:
            raise DaemonStartError(
                errno.EPERM, f"still root after switching to {who}", "drop-privileges"
            )
