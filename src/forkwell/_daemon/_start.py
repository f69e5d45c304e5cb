"""Daemons done right: :func:`daemonize` (a Python program) and :func:`start_daemon` (a command).

Both follow systemd's daemon(7) SysV recipe, with its step 14 ("notify the
original process through a pipe made before the first fork") and step 15
("exit the original process only then") that the classic Python recipes skip.

Processes involved::

    original (P0) --fork--> intermediate (C1: setsid) --fork--> daemon (C2)
         ^  "status" pipe (C1 -> P0)       ^  "events" pipe (C2 -> C1)
         |  "go" pipe (P0 -> C1)            |

* The daemon (C2) runs the steps; each turns an ``OSError`` into a
  :class:`forkwell.DaemonStartError` naming the step, and reports it on the
  events pipe before exiting.  It reports ``READY`` there too (library), or
  ``EXEC`` just before ``execve`` (command: the close-on-exec events pipe then
  reads EOF, which is how an exec is known to have succeeded).
* The intermediate (C1) stays the daemon's parent until the original says
  "go": it relays the events and, should the daemon die first, reaps it and
  reports its real exit status (the original, not being its parent, could not
  learn it).  If the original goes away (or gives up: readiness timeout)
  without saying "go", C1 stops the daemon and everything in its session, so a
  failed start leaves nothing behind.
* The original (P0) waits for readiness with a deadline, then says "go",
  reaps C1 and exits 0; or reports the failure and exits non-zero.

The daemon is not a session leader (it is C1's child), so it can never acquire
a controlling terminal; after "go" it is re-parented to init or the nearest
subreaper.  Steps 1-4 of daemon(7) (close fds, reset signals and mask,
sanitize the environment) run in the daemon instead of before the first fork,
so that a failing step never damages the caller's process.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import os
import select
import signal
import stat
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, NoReturn

from .._core import _proc, _sys
from .._core._status import describe_exit
from .._exceptions import (
    CommandNotExecutableError,
    CommandNotFoundError,
    DaemonReadyTimeoutError,
    DaemonStartError,
    PidfileError,
    PidfileLockedError,
)
from ._pidfile import Pidfile, PidfileState

if TYPE_CHECKING:
    # Imported lazily at run time: socket and dataclasses cost the CLI ~20 ms.
    from .._core._notify import NotifyListener
    from .._core._readiness import ReadySpec

StrPath = str | os.PathLike[str]
Detach = bool | Literal["auto"]

#: Environment variables that describe the *caller's* relation to a service
#: manager; a detached daemon must not inherit them (it would otherwise send
#: READY=1 to the manager of whoever started it, or claim its sockets).
_MANAGER_VARS = (
    "NOTIFY_SOCKET",
    "LISTEN_PID",
    "LISTEN_FDS",
    "LISTEN_FDNAMES",
    "WATCHDOG_PID",
    "WATCHDOG_USEC",
)

#: Set by forkwell's own supervisor in the programs it runs.
SUPERVISED_VAR = "FORKWELL_SUPERVISED"

#: How long C1 waits for a daemon to go after SIGTERM when a start is abandoned.
_ABANDON_GRACE = 2.0


# --------------------------------------------------------------------------
# Configuration, validated in the caller before anything forks


class Identity(NamedTuple):
    """A resolved user/group to switch to."""

    uid: int
    gid: int
    name: str | None  # passwd name, for initgroups; None: no supplementary groups
    home: str | None = None
    shell: str | None = None


class _Config(NamedTuple):
    pidfile: str | None
    workdir: str
    umask: int
    stdin: str
    stdout: str
    stderr: str
    identity: Identity | None
    chroot: str | None
    keep_fds: frozenset[int]
    env: Mapping[str, str] | None = None
    # python: the interpreter keeps running (SIGINT/SIGPIPE as Python sets them).
    python: bool = True


def resolve_identity(user: str | int | None, group: str | int | None) -> Identity | None:
    """Look up ``user``/``group`` (names or numbers); ``DaemonStartError`` if unknown."""
    if user is None and group is None:
        return None
    import grp
    import pwd

    entry: pwd.struct_passwd | None = None
    if user is not None:
        try:
            entry = pwd.getpwuid(int(user)) if str(user).isdigit() else pwd.getpwnam(str(user))
        except KeyError:
            if not str(user).isdigit():
                raise DaemonStartError(
                    errno.EINVAL, f"unknown user {user!r}", "drop-privileges"
                ) from None
    gid: int | None = None
    if group is not None:
        try:
            gid = int(group) if str(group).isdigit() else grp.getgrnam(str(group)).gr_gid
        except KeyError:
            raise DaemonStartError(
                errno.EINVAL, f"unknown group {group!r}", "drop-privileges"
            ) from None
    if entry is not None:
        return Identity(
            entry.pw_uid,
            entry.pw_gid if gid is None else gid,
            entry.pw_name,
            entry.pw_dir,
            entry.pw_shell,
        )
    if user is not None:
        if gid is None:
            raise DaemonStartError(
                errno.EINVAL,
                f"user {user} has no passwd entry: give a group too",
                "drop-privileges",
            )
        return Identity(int(user), gid, None)
    assert gid is not None
    return Identity(os.geteuid(), gid, None)


def _abs(path: StrPath | None, what: str) -> str | None:
    if path is None:
        return None
    text = os.fspath(path)
    if not text:
        raise ValueError(f"{what} must not be empty")
    return os.path.abspath(text)


def _workdir(workdir: StrPath, chroot: StrPath | None) -> str:
    """Absolute, so the daemon's chdir does not depend on when it runs."""
    text = os.fspath(workdir)
    if not text:
        raise ValueError("workdir must not be empty")
    # Inside a chroot a relative directory is taken from its root.
    return os.path.join("/", text) if chroot is not None else os.path.abspath(text)


def _fd_of(obj: int | Any) -> int:
    if isinstance(obj, int):
        return obj
    fileno = getattr(obj, "fileno", None)
    if fileno is None:
        raise TypeError(f"keep_fds: {obj!r} is neither an fd nor has fileno()")
    return int(fileno())


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


# --------------------------------------------------------------------------
# The steps, run in the daemon


@contextlib.contextmanager
def _step(name: str, what: str) -> Iterator[None]:
    try:
        yield
    except (DaemonStartError, PidfileError):
        raise
    except OSError as exc:
        filename = exc.filename if isinstance(exc.filename, str) else None
        raise DaemonStartError(
            exc.errno or 0, f"{what}: {exc.strerror or exc}", name, filename
        ) from exc


def _close_fds(keep: Iterable[int]) -> None:
    with _step("close-fds", "cannot close inherited file descriptors"):
        # close_range(2) on Linux: constant time whatever RLIMIT_NOFILE is.
        _sys.close_fds_except(set(keep))


def _reset_signals(python: bool) -> None:
    with _step("reset-signals", "cannot reset signal handlers"):
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


def _clear_signal_mask() -> None:
    with _step("signal-mask", "cannot clear the signal mask"):
        signal.pthread_sigmask(signal.SIG_SETMASK, set())


def _sanitize_env(env: dict[str, str], identity: Identity | None, keep_notify: bool) -> None:
    for name in _MANAGER_VARS:
        if not (keep_notify and name == "NOTIFY_SOCKET"):
            env.pop(name, None)
    if identity is not None and identity.name is not None:
        env.update(USER=identity.name, LOGNAME=identity.name)
        if identity.home:
            env["HOME"] = identity.home
        if identity.shell:
            env["SHELL"] = identity.shell


def _redirect_stdio(config: _Config) -> None:
    with _step("stdio", f"cannot open stdin {config.stdin}"):
        fd_in = os.open(config.stdin, os.O_RDONLY | os.O_NOCTTY)
    opened = {}
    for target, path in ((1, config.stdout), (2, config.stderr)):
        if path not in opened:
            with _step("stdio", f"cannot open {'stdout' if target == 1 else 'stderr'} {path}"):
                opened[path] = os.open(
                    path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOCTTY, 0o666
                )
    with _step("stdio", "cannot redirect stdio"):
        os.dup2(fd_in, 0)
        os.dup2(opened[config.stdout], 1)
        os.dup2(opened[config.stderr], 2)
        for fd in {fd_in, *opened.values()}:
            if fd > 2:
                os.close(fd)


def _take_pidfile(path: str) -> Pidfile:
    # PidfileError (symlink, unsafe directory, locked) passes through as is.
    return Pidfile(path).acquire()


def _chroot(path: str) -> None:
    with _step("chroot", f"cannot chroot to {path}"):
        os.chroot(path)


def _chdir(path: str) -> None:
    with _step("chdir", f"cannot change directory to {path}"):
        os.chdir(path)


def _drop_privileges(identity: Identity) -> None:
    who = identity.name or str(identity.uid)
    with _step("drop-privileges", f"cannot switch to user {who}"):
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


def _run_steps(config: _Config, events_fd: int, env: dict[str, str]) -> Pidfile | None:
    """daemon(7) steps 1-4 and 9-13, in the daemon (after both forks)."""
    _close_fds({0, 1, 2, events_fd, *config.keep_fds})
    _reset_signals(config.python)
    _clear_signal_mask()
    _sanitize_env(env, config.identity, keep_notify=not config.python)
    os.umask(config.umask)
    _redirect_stdio(config)
    pidfile = _take_pidfile(config.pidfile) if config.pidfile else None
    if config.chroot:
        _chroot(config.chroot)
    _chdir(config.workdir)
    if config.identity is not None:
        _drop_privileges(config.identity)
    return pidfile


# --------------------------------------------------------------------------
# Messages between the three processes: one line each, well under PIPE_BUF


def _send(fd: int, line: str) -> None:
    data = (line.replace("\n", " ")[:2000] + "\n").encode(errors="replace")
    with contextlib.suppress(OSError):
        os.write(fd, data)


def _error_line(exc: BaseException, step: str = "") -> str:
    """``ERROR kind errno pid step<TAB>message`` for an exception in the daemon."""
    pid = 0
    if isinstance(exc, PidfileLockedError):
        kind, pid = "locked", exc.pid or 0
    elif isinstance(exc, CommandNotFoundError):
        kind = "notfound"
    elif isinstance(exc, CommandNotExecutableError):
        kind = "notexec"
    elif isinstance(exc, DaemonStartError | PidfileError):
        kind = "step"
    else:
        kind = "exception"
    step = step or getattr(exc, "step", "") or ("pidfile" if isinstance(exc, PidfileError) else "-")
    code = exc.errno if isinstance(exc, OSError) and exc.errno else 0
    message = str(exc) if kind != "exception" else f"{type(exc).__name__}: {exc}"
    return f"ERROR {kind} {code} {pid} {step}\t{message}"


class _Outcome:
    """What the original process learnt about a start."""

    def __init__(self) -> None:
        self.ok = False
        self.pid: int | None = None
        # locked, notfound, notexec, step, exception, died, timeout, lost
        self.kind = ""
        self.errno = 0
        self.step = ""
        self.message = ""
        self.exit_status: int | None = None  # subprocess-style: -N for signal N
        self.holder: int | None = None
        self.status = ""  # last STATUS= the daemon sent
        self.execed = False
        self.events: list[str] = []


# --------------------------------------------------------------------------
# The intermediate process (C1)


def _intermediate(status_w: int, go_r: int, pidfile: str | None) -> int:
    """Run in C1: setsid, fork the daemon.  Returns in the daemon (its events fd)."""
    try:
        os.setsid()
    except OSError as exc:
        _send(status_w, f"ERROR step {exc.errno or 0} 0 setsid\tsetsid failed: {exc.strerror}")
        os._exit(1)
    events_r, events_w = os.pipe2(os.O_CLOEXEC)
    try:
        c2 = os.fork()
    except OSError as exc:
        _send(status_w, f"ERROR step {exc.errno or 0} 0 fork\tsecond fork failed: {exc.strerror}")
        os._exit(1)
    if c2 == 0:
        os.close(events_r)
        os.close(status_w)
        os.close(go_r)
        return events_w
    os.close(events_w)
    try:
        _relay(c2, events_r, status_w, go_r, pidfile)
    finally:
        os._exit(0)


def _relay(c2: int, events_r: int, status_w: int, go_r: int, pidfile: str | None) -> None:
    pidfd = _sys.pidfd_open(c2)
    _send(status_w, f"PID {c2}")
    os.set_blocking(events_r, False)
    poller = select.poll()
    poller.register(events_r, select.POLLIN)
    poller.register(go_r, select.POLLIN)
    if pidfd is not None:
        poller.register(pidfd, select.POLLIN)
    events_open = True

    def drain() -> bool:
        """Relay what the daemon wrote; False at EOF."""
        while True:
            try:
                data = os.read(events_r, 65536)
            except BlockingIOError:
                return True
            if not data:
                return False
            os.write(status_w, data)

    def finish(code: int) -> NoReturn:
        if events_open:
            drain()
        _end_session(os.getpid(), signal.SIGKILL)
        if pidfile is not None:
            # Also when the original is gone (Ctrl-C): a failed start leaves
            # no pidfile.  Only the daemon's own, and only if nobody holds it.
            Pidfile.remove_stale(pidfile, expect_pid=c2)
        _send(status_w, f"EXIT {code}")
        os._exit(0)

    while True:
        try:
            ready = {fd for fd, _ in poller.poll(None if pidfd is not None else 50)}
        except InterruptedError:
            continue
        if events_open and events_r in ready and not drain():
            events_open = False
            poller.unregister(events_r)
            os.close(events_r)
            code = _exited(c2, pidfd)
            if code is not None:
                finish(code)
            _send(status_w, "EOF")
        code = _exited(c2, pidfd)
        if code is not None:
            finish(code)
        if go_r in ready:
            data = os.read(go_r, 64)
            if b"GO" in data:
                return
            if not data:
                # The original gave up (readiness timeout) or died: stop the
                # daemon rather than leave an unreported one running.
                if pidfd is not None:
                    _sys.pidfd_signal(pidfd, signal.SIGTERM)
                    deadline = time.monotonic() + _ABANDON_GRACE
                    while True:
                        code = _exited(c2, pidfd)
                        if code is not None:
                            finish(code)
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            break
                        _sys.wait_ready([pidfd], remaining)
                    _sys.pidfd_signal(pidfd, signal.SIGKILL)
                else:
                    os.kill(c2, signal.SIGKILL)
                _, status = os.waitpid(c2, 0)
                finish(os.waitstatus_to_exitcode(status))


def _exited(pid: int, pidfd: int | None) -> int | None:
    """Reap ``pid`` if it has exited: its returncode, else None."""
    if pidfd is not None and not _sys.wait_ready([pidfd], 0):
        return None
    try:
        got, status = os.waitpid(pid, 0 if pidfd is not None else os.WNOHANG)
    except ChildProcessError:
        return -signal.SIGKILL
    if got == 0:
        return None
    return os.waitstatus_to_exitcode(status)


# --------------------------------------------------------------------------
# Sessions: what "the whole daemon" means for stop and for a failed start


def session_members(sid: int) -> list[int]:
    """Live processes in session ``sid`` (from /proc), excluding this process."""
    return [pid for pid, info in _proc.live_processes().items() if info.sid == sid]


def _end_session(sid: int, sig: int) -> list[int]:
    members = session_members(sid)
    for pid in members:
        with contextlib.suppress(OSError):
            os.kill(pid, sig)
    return members


def process_session(pid: int) -> int | None:
    info = _proc.read_stat(pid)
    return None if info is None else info.sid


# --------------------------------------------------------------------------
# The original process (P0)


class _Waiter:
    """P0's side: read C1's status lines until ready, failure or deadline."""

    def __init__(self, c1: int, status_r: int, go_w: int, extra_fds: Sequence[int]) -> None:
        self.c1 = c1
        self.extra_fds = list(extra_fds)
        self.status_r = status_r
        self.go_w: int | None = go_w
        self.buffer = b""
        self.outcome = _Outcome()
        self.closed = False
        self.pidfd: int | None = None

    def read(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for status lines; False once C1 closed the pipe."""
        if self.closed:
            return False
        readable = _sys.wait_ready([self.status_r, *self.extra_fds], max(timeout, 0))
        if self.status_r not in readable:
            return True
        data = os.read(self.status_r, 65536)
        if not data:
            self.closed = True
            return False
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        for raw in lines:
            self._handle(raw.decode(errors="replace"))
        return True

    def _handle(self, line: str) -> None:
        o = self.outcome
        o.events.append(line)
        word, _, rest = line.partition(" ")
        if word == "PID":
            o.pid = int(rest)
            self.pidfd = _sys.pidfd_open(o.pid)
        elif word == "READY":
            o.ok = True
        elif word == "STATUS":
            o.status = rest
        elif word == "EXEC":
            o.execed = True
        elif word == "EXIT":
            o.exit_status = int(rest)
            if not o.kind:
                o.kind = "died"
        elif word == "ERROR":
            head, _, message = rest.partition("\t")
            kind, code, holder, step = [*head.split(" "), "", "", ""][:4]
            o.kind, o.errno, o.step, o.message = kind, int(code or 0), step, message
            o.holder = int(holder) if holder.isdigit() and int(holder) > 0 else None
        # EOF: the events pipe closed (exec succeeded, when EXEC came first).

    @property
    def eof_after_exec(self) -> bool:
        return self.outcome.execed and "EOF" in self.outcome.events

    @property
    def failed(self) -> bool:
        return self.outcome.exit_status is not None or self.closed

    def daemon_alive(self) -> bool:
        if self.pidfd is None:
            return not self.failed
        return not _sys.wait_ready([self.pidfd], 0)

    def go(self) -> None:
        if self.go_w is not None:
            with contextlib.suppress(OSError):
                os.write(self.go_w, b"GO")
            os.close(self.go_w)
            self.go_w = None

    def abandon(self) -> None:
        """Close the go pipe without GO: C1 stops the daemon and reports."""
        if self.go_w is not None:
            os.close(self.go_w)
            self.go_w = None

    def finish(self, pidfile: str | None) -> _Outcome:
        """After success (go) or failure: collect C1's last words and reap it."""
        o = self.outcome
        if not o.ok:
            if o.kind not in ("", "timeout"):
                # The daemon reported an error and is on its way out: let it
                # finish, so the status reported is its own, not our SIGTERM.
                deadline = time.monotonic() + 5.0
                while o.exit_status is None and time.monotonic() < deadline:
                    if not self.read(deadline - time.monotonic()):
                        break
            self.abandon()
            deadline = time.monotonic() + _ABANDON_GRACE + 10
            while time.monotonic() < deadline and self.read(deadline - time.monotonic()):
                pass
        else:
            self.go()
        try:
            _, status = os.waitpid(self.c1, 0)
        except ChildProcessError:
            status = 0  # a caller's SIGCHLD handler reaped it first: C1 said all in words
        os.close(self.status_r)
        if self.pidfd is not None:
            os.close(self.pidfd)
        if not o.ok and o.kind in ("", "died") and os.waitstatus_to_exitcode(status) != 0:
            o.kind, o.message = "lost", "the intermediate process failed"
        if not o.ok and pidfile and o.pid is not None:
            # The daemon is gone (C1 reaped it); a pidfile it left is stale.
            Pidfile.remove_stale(pidfile, expect_pid=o.pid)
        return o


def _start(
    config: _Config,
    *,
    timeout: float | None,
    ready_check: Callable[[_Waiter], bool],
    wake_fds: Sequence[int] = (),
) -> tuple[_Outcome | None, int]:
    """Fork the daemon.  In P0: (outcome, 0).  In the daemon: (None, events fd)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    status_r, status_w = os.pipe2(os.O_CLOEXEC)
    go_r, go_w = os.pipe2(os.O_CLOEXEC)
    try:
        c1 = os.fork()
    except OSError as exc:
        for fd in (status_r, status_w, go_r, go_w):
            os.close(fd)
        raise DaemonStartError(
            exc.errno or 0, f"first fork failed: {exc.strerror}", "fork"
        ) from None
    if c1 == 0:
        os.close(status_r)
        os.close(go_w)
        return None, _intermediate(status_w, go_r, config.pidfile)
    os.close(status_w)
    os.close(go_r)
    waiter = _Waiter(c1, status_r, go_w, wake_fds)
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        if waiter.outcome.ok or waiter.outcome.kind or waiter.failed:
            break
        if ready_check(waiter):
            waiter.outcome.ok = True
            break
        remaining = 0.05 if deadline is None else min(deadline - time.monotonic(), 0.05)
        if deadline is not None and remaining <= 0:
            waiter.outcome.kind = "timeout"
            break
        waiter.read(remaining)
    return waiter.finish(config.pidfile), 0


# --------------------------------------------------------------------------
# daemonize(): a Python program becomes a daemon


def daemonize(
    pidfile: StrPath | None = None,
    *,
    ready: Literal["immediate", "notify"] = "immediate",
    ready_timeout: float | None = 90.0,
    workdir: StrPath = "/",
    umask: int = 0o022,
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
    do_detach = detach is True or (detach == "auto" and supervised_reason() is None)
    null = os.devnull
    config = _Config(
        pidfile=_abs(pidfile, "pidfile"),
        workdir=_workdir(workdir, chroot),
        umask=umask,
        stdin=_abs(stdin, "stdin") or null,
        stdout=_abs(stdout, "stdout") or null,
        stderr=_abs(stderr, "stderr") or null,
        identity=resolve_identity(user, group),
        chroot=_abs(chroot, "chroot"),
        keep_fds=frozenset(_fd_of(k) for k in keep_fds),
    )
    if not do_detach:
        _become_in_place(
            config, ready, redirect=any(s is not None for s in (stdin, stdout, stderr))
        )
        return
    outcome, events_fd = _start(config, timeout=ready_timeout, ready_check=lambda w: False)
    if outcome is not None:
        _exit_original(outcome, ready_timeout)
    _in_daemon(config, ready, events_fd)


def _exit_original(outcome: _Outcome, timeout: float | None) -> NoReturn:
    if outcome.ok:
        if outcome.status:
            # The daemon chose to say how it came up (notify_status before
            # notify_ready): the person who started it should read it.
            print(outcome.status, flush=True)
        os._exit(0)
    prog = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "daemonize"
    print(f"{prog}: {describe_failure(outcome, timeout)}", file=sys.stderr, flush=True)
    os._exit(1)


def describe_failure(o: _Outcome, timeout: float | None) -> str:
    """One line saying why a start failed."""
    died = f" (it {describe_exit(o.exit_status)})" if o.exit_status is not None else ""
    if o.kind == "locked":
        who = f"pid {o.holder}" if o.holder else "another process"
        return f"already running: pidfile is locked by {who}"
    if o.kind == "exception":
        return f"daemon failed before it was ready: {o.message}{died}"
    if o.kind in ("step", "notfound", "notexec"):
        return f"daemon failed at step {o.step}: {o.message}"
    if o.kind == "timeout":
        last = f" (last status: {o.status})" if o.status else ""
        return f"daemon not ready after {timeout:g}s{last}; it was stopped"
    if o.kind == "died" and o.exit_status is not None:
        return f"daemon {describe_exit(o.exit_status)} before it was ready"
    return "daemon start failed: the intermediate process died unexpectedly"


def _in_daemon(config: _Config, ready: str, events_fd: int) -> None:
    """The daemon's side of daemonize(): run the steps, then report readiness."""
    env = dict(os.environ)
    try:
        pidfile = _run_steps(config, events_fd, env)
        os.environ.clear()
        os.environ.update(env)
    except BaseException as exc:
        _send(events_fd, _error_line(exc))
        os._exit(1)
    _install_exit_handling(pidfile)
    if ready == "immediate":
        _send(events_fd, "READY")
        os.close(events_fd)
        return
    _await_notify_ready(events_fd)


def _install_exit_handling(pidfile: Pidfile | None) -> None:
    if pidfile is not None:
        atexit.register(pidfile.release)  # a no-op in forked children
    signal.signal(signal.SIGTERM, _terminate)


def _terminate(signum: int, frame: object) -> None:
    # Raising is the one thing this handler does: it unwinds the main thread
    # so that finally blocks and atexit handlers (pidfile removal) run.
    raise SystemExit(0)


def _await_notify_ready(events_fd: int) -> None:
    """ready="notify": forward notify_*() to the original until READY=1; report raises."""
    from .._core import _notify

    state = {"fd": events_fd}
    previous_hook = sys.excepthook

    def close() -> None:
        fd = state.pop("fd", None)
        if fd is not None:
            os.close(fd)
        _notify._set_local_hook(None)
        sys.excepthook = previous_hook

    def on_notify(fields: Mapping[str, str]) -> bool:
        fd = state.get("fd")
        if fd is None:
            return False
        if "STATUS" in fields:
            _send(fd, f"STATUS {fields['STATUS']}")
        if fields.get("READY") == "1":
            _send(fd, "READY")
            close()
        return True

    def on_uncaught(kind: type[BaseException], value: BaseException, tb: Any) -> None:
        fd = state.get("fd")
        if fd is not None:
            _send(fd, _error_line(value))
        previous_hook(kind, value, tb)

    _notify._set_local_hook(on_notify)
    sys.excepthook = on_uncaught


def _become_in_place(config: _Config, ready: str, redirect: bool) -> None:
    """detach=False (or supervised): the non-forking steps, in this process."""
    os.umask(config.umask)
    if redirect:
        _redirect_stdio(config)
    pidfile = _take_pidfile(config.pidfile) if config.pidfile else None
    try:
        if config.chroot:
            _chroot(config.chroot)
        _chdir(config.workdir)
        if config.identity is not None:
            _drop_privileges(config.identity)
    except BaseException:
        if pidfile is not None:
            pidfile.release()
        raise
    _install_exit_handling(pidfile)
    if ready == "immediate":
        from .._core._notify import notify_ready

        notify_ready()


# --------------------------------------------------------------------------
# start_daemon(): a command becomes a daemon (forkwell daemon start)


class StartResult(NamedTuple):
    pid: int
    already_running: bool = False


def start_daemon(
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
    kind = "exec" if ready is None else ready.kind
    if kind == "cmd":
        raise ValueError("readiness cmd: is not supported by daemon start")
    path = _abs(pidfile, "pidfile")
    assert path is not None
    status = Pidfile.probe(path)
    if status.state is PidfileState.RUNNING and status.pid is not None:
        return StartResult(status.pid, already_running=True)
    identity = resolve_identity(user, group)
    log_path = _abs(log, "log")
    environ = dict(os.environ if env is None else env)
    listener: NotifyListener | None = None
    if kind == "notify":
        from .._core._notify import NotifyListener

        listener = NotifyListener(
            uid=identity.uid if identity is not None and os.geteuid() == 0 else None,
            abstract=chroot is not None,
        )
        environ["NOTIFY_SOCKET"] = listener.path
    else:
        environ.pop("NOTIFY_SOCKET", None)
    config = _Config(
        pidfile=path,
        workdir=_workdir(workdir, chroot),
        umask=umask,
        stdin=os.devnull,
        stdout=log_path or os.devnull,
        stderr=log_path or os.devnull,
        identity=identity,
        chroot=_abs(chroot, "chroot"),
        keep_fds=frozenset(),
        env=environ,
        python=False,
    )
    try:
        check = _ready_check(ready, listener)
        outcome, events_fd = _start(
            config,
            timeout=ready_timeout,
            ready_check=check,
            wake_fds=[listener.fileno()] if listener is not None else [],
        )
        if outcome is None:
            _exec_in_daemon(config, list(args), environ, events_fd, listener)
    finally:
        if listener is not None:
            listener.close()
    return _start_result(outcome, args, ready_timeout)


def _ready_check(
    spec: ReadySpec | None, listener: NotifyListener | None
) -> Callable[[_Waiter], bool]:
    state: dict[str, float] = {}

    def check(w: _Waiter) -> bool:
        if not w.eof_after_exec:
            return False
        if spec is None or spec.kind == "exec":
            return True
        if "since" not in state:
            state["since"] = time.monotonic()
            state["probe"] = 0.0
        if spec.kind == "notify":
            assert listener is not None
            for message in listener.receive():
                if "STATUS" in message:
                    w.outcome.status = message["STATUS"]
                if message.get("READY") == "1":
                    return True
            return False
        if spec.kind == "delay":
            assert spec.seconds is not None
            return time.monotonic() - state["since"] >= spec.seconds and w.daemon_alive()
        if spec.kind == "tcp":
            assert spec.host is not None and spec.port is not None
            now = time.monotonic()
            if now - state["probe"] < 0.02:
                return False
            state["probe"] = now
            from .._core._readiness import tcp_accepts

            return tcp_accepts(spec.host, spec.port, 0.05) and w.daemon_alive()
        return False

    return check


def _exec_in_daemon(
    config: _Config,
    args: list[str],
    env: dict[str, str],
    events_fd: int,
    listener: NotifyListener | None,
) -> NoReturn:
    pidfile: Pidfile | None = None
    try:
        pidfile = _run_steps(config, events_fd, env)
        if pidfile is not None:
            # The lock must outlive exec: the command itself holds it.
            pidfile.keep_across_exec()
        _send(events_fd, "EXEC")
        os.execvpe(args[0], args, env)
    except BaseException as exc:
        err: BaseException = exc
        step = ""
        if isinstance(exc, OSError) and not isinstance(exc, DaemonStartError | PidfileError):
            from .._exceptions import spawn_error

            err, step = spawn_error(exc, args[0], None), "exec"
        _send(events_fd, _error_line(err, step))
        if pidfile is not None:
            pidfile.release()
        if isinstance(err, CommandNotFoundError):
            os._exit(127)
        os._exit(126 if isinstance(err, CommandNotExecutableError) else 1)


def _start_result(
    outcome: _Outcome | None, args: Sequence[str], timeout: float | None
) -> StartResult:
    assert outcome is not None
    if outcome.ok and outcome.pid is not None:
        return StartResult(outcome.pid)
    if outcome.kind == "locked" and outcome.holder is not None:
        return StartResult(outcome.holder, already_running=True)
    name = args[0]
    if outcome.kind == "notfound":
        raise CommandNotFoundError(outcome.errno, f"command not found: {name!r}", name, name)
    if outcome.kind == "notexec":
        raise CommandNotExecutableError(
            outcome.errno, outcome.message or f"command not executable: {name!r}", name, name
        )
    message = describe_failure(outcome, timeout)
    if outcome.kind == "timeout":
        raise DaemonReadyTimeoutError(
            errno.ETIMEDOUT, message, "ready", exit_status=outcome.exit_status
        )
    step = outcome.step or ("ready" if outcome.execed else "start")
    raise DaemonStartError(outcome.errno, message, step, exit_status=outcome.exit_status)


# --------------------------------------------------------------------------
# stop and status


class StopResult(NamedTuple):
    pid: int | None  # the daemon that was stopped, None when none ran
    killed: bool = False  # needed SIGKILL
    removed_stale: bool = False


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
    status = Pidfile.probe(path)
    if status.state is PidfileState.UNKNOWN:
        if status.errno in (errno.EACCES, errno.EPERM):
            raise PermissionError(status.errno, f"cannot read pidfile: {status.reason}", path)
        raise PidfileError(status.errno, f"cannot read pidfile: {status.reason}", path)
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
        if orphaned and sid is not None and _end_session(sid, stop_signal):
            deadline = time.monotonic() + min(timeout, 5.0)
            while session_members(sid) and time.monotonic() < deadline:
                select.select([], [], [], 0.02)
            if _end_session(sid, signal.SIGKILL):
                killed = True
    finally:
        if pidfd is not None:
            os.close(pidfd)
    Pidfile.remove_stale(path, expect_pid=pid)
    return StopResult(pid, killed=killed)


def _stop_process(pid: int, pidfd: int | None, sig: int, timeout: float) -> bool:
    """``sig``, up to ``timeout`` for it to go, then SIGKILL; True if SIGKILL was needed."""
    _sys.send_signal(pid, pidfd, sig)
    if _proc.wait_gone(pid, timeout, pidfd=pidfd):
        return False
    _sys.send_signal(pid, pidfd, signal.SIGKILL)
    if _proc.wait_gone(pid, 10.0, pidfd=pidfd):
        return True
    raise TimeoutError(errno.ETIMEDOUT, f"pid {pid} did not exit even after SIGKILL")


__all__ = [
    "Identity",
    "StartResult",
    "StopResult",
    "daemonize",
    "start_daemon",
    "stop_daemon",
    "supervised_reason",
]
