"""``forkwell daemon start|stop|status|restart``: a better ``start-stop-daemon``.

Parsing and printing only; the work is in :mod:`forkwell._daemon._service` (imported
when a subcommand runs, so ``--help`` stays fast).
"""

from __future__ import annotations

import sys
from typing import Any

USAGE = """\
usage: forkwell daemon start   --pidfile PATH [START OPTIONS] -- COMMAND [ARG]...
       forkwell daemon stop    --pidfile PATH [--signal TERM] [--timeout 10]
       forkwell daemon status  --pidfile PATH
       forkwell daemon restart --pidfile PATH [START OPTIONS] [--signal S] [--timeout T] \
-- COMMAND [ARG]..."""

HELP = f"""{USAGE}

Run COMMAND as a daemon (detached, in its own session, stdio on /dev/null or a
log, umask, working directory, user), kept unique by a locked pidfile that
names COMMAND's real pid.  'start' returns only once the daemon is up, and
says why when it is not.

start options:
  --pidfile PATH        the pidfile (required); locked by the daemon for its life
  --log FILE            append the daemon's stdout and stderr to FILE (default /dev/null)
  --workdir DIR         working directory (default /)
  --umask MODE          octal umask (default 022)
  --user USER           run as USER (name or uid), with USER's supplementary groups
  --group GROUP         run with primary group GROUP (default: USER's)
  --chroot DIR          chroot to DIR first (--workdir is then inside it)
  --env K=V             set an environment variable (repeatable)
  --ready HOW           when the daemon counts as up (default exec):
                          exec           COMMAND was exec'd successfully
                          notify         COMMAND sent READY=1 to $NOTIFY_SOCKET (sd_notify)
                          tcp:HOST:PORT  the port accepts connections (tcp:PORT = 127.0.0.1)
                          delay:SECONDS  COMMAND is still alive after SECONDS
  --ready-timeout DUR   give up (and stop the daemon) after DUR (default 60s)

stop options:
  --signal SIG          signal to send first (default TERM); KILL after --timeout
  --timeout DUR         how long to wait before SIGKILL (default 10s)

'stop' also ends whatever the daemon left in its session, and removes a stale
pidfile (one whose lock nobody holds) without signalling the pid it names.

exit status:
  start    0 started, or already running (prints its pid)
           1 failed (bad user or directory, died during start-up, readiness
             timeout; nothing is left running and no pidfile remains)
           126 COMMAND not executable, 127 COMMAND not found, 2 bad usage
  stop     0 stopped, or was not running; 1 failed; 4 not permitted
  status   0 running (pid and uptime), 1 dead but the pidfile exists,
           3 not running, 4 unknown (pidfile unreadable)
  restart  as stop, then as start
"""

_START_OPTS = {
    "--pidfile",
    "--log",
    "--workdir",
    "--umask",
    "--user",
    "--group",
    "--chroot",
    "--env",
    "--ready",
    "--ready-timeout",
}
_STOP_OPTS = {"--pidfile", "--signal", "--timeout"}
_ALLOWED = {
    "start": _START_OPTS,
    "stop": _STOP_OPTS,
    "status": {"--pidfile"},
    "restart": _START_OPTS | _STOP_OPTS,
}
_TAKES_COMMAND = {"start", "restart"}

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NOT_RUNNING = 3
EXIT_UNKNOWN = 4
EXIT_NOT_EXECUTABLE = 126
EXIT_NOT_FOUND = 127


class _Usage(Exception):
    pass


def _parse(action: str, argv: list[str]) -> tuple[dict[str, list[str]], list[str]]:
    allowed = _ALLOWED[action]
    opts: dict[str, list[str]] = {}
    i = 0
    command: list[str] = []
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            command = argv[i + 1 :]
            break
        if not arg.startswith("-") or arg == "-":
            command = argv[i:]
            break
        name, eq, value = arg.partition("=")
        if name not in allowed:
            raise _Usage(f"unknown option {name!r} for {action}")
        if not eq:
            i += 1
            if i >= len(argv):
                raise _Usage(f"option {name} needs a value")
            value = argv[i]
        opts.setdefault(name, []).append(value)
        i += 1
    if action in _TAKES_COMMAND and not command:
        raise _Usage(f"{action}: no COMMAND given (put it after --)")
    if action not in _TAKES_COMMAND and command:
        raise _Usage(f"{action} takes no COMMAND (got {command[0]!r})")
    if "--pidfile" not in opts:
        raise _Usage(f"{action} needs --pidfile PATH")
    for name, values in opts.items():
        if len(values) > 1 and name != "--env":
            raise _Usage(f"option {name} given more than once")
    return opts, command


def main(argv: list[str], *, prog: str, command: str) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(HELP)
        return 0 if argv else EXIT_USAGE
    action, rest = argv[0], argv[1:]
    if action not in _ALLOWED:
        print(f"{prog}: unknown action {action!r} (start, stop, status, restart)", file=sys.stderr)
        return EXIT_USAGE
    here = f"{prog} {action}"
    if any(a in ("-h", "--help") for a in rest[: rest.index("--") if "--" in rest else None]):
        print(HELP)
        return 0
    try:
        opts, cmd = _parse(action, rest)
        if action == "status":
            return _status(here, opts)
        if action == "stop":
            return _stop(here, opts)
        if action == "restart":
            rc = _stop(here, opts)
            if rc != 0:
                return rc
        return _start(here, opts, cmd)
    except _Usage as exc:
        print(f"{here}: {exc} (see '{prog} --help')", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{here}: interrupted", file=sys.stderr)
        return 130


def _one(opts: dict[str, list[str]], name: str, default: str | None = None) -> str | None:
    values = opts.get(name)
    return values[-1] if values else default


def _status(here: str, opts: dict[str, list[str]]) -> int:
    from .._core import _proc
    from .._daemon._pidfile import Pidfile, PidfileState

    path = _one(opts, "--pidfile")
    assert path is not None
    st = Pidfile.probe(path)
    if st.state is PidfileState.RUNNING:
        if st.pid is None:
            print(f"running (pidfile {path} is locked from another pid namespace)")
            return 0
        name = _proc.name(st.pid) or "daemon"
        uptime = _proc.uptime(st.pid)
        up = f", up {_format_uptime(uptime)}" if uptime is not None else ""
        print(f"{name} is running (pid {st.pid}{up})")
        return 0
    if st.state is PidfileState.STALE:
        names = f", naming pid {st.pid} which it does not hold" if st.pid else ""
        print(f"not running, but stale pidfile {path} exists{names}")
        return EXIT_FAILED
    if st.state is PidfileState.ABSENT:
        print(f"not running (no pidfile {path})")
        return EXIT_NOT_RUNNING
    print(f"{here}: cannot tell: {st.reason}", file=sys.stderr)
    return EXIT_UNKNOWN


def _format_uptime(seconds: float) -> str:
    s = int(seconds)
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    if days:
        return f"{days}d {hours}h {minutes}m"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {s}s"
    return f"{seconds:.1f}s"


def _stop(here: str, opts: dict[str, list[str]]) -> int:
    from .._core._duration import parse_duration, parse_signal
    from .._daemon._service import stop_daemon
    from .._exceptions import PidfileError

    path = _one(opts, "--pidfile")
    assert path is not None
    try:
        sig = parse_signal(_one(opts, "--signal", "TERM") or "TERM")
        timeout = parse_duration(_one(opts, "--timeout", "10") or "10")
    except ValueError as exc:
        raise _Usage(str(exc)) from None
    try:
        result = stop_daemon(path, stop_signal=sig, timeout=timeout)
    except PermissionError as exc:
        # LSB: 4 = "user had insufficient privilege".
        print(f"{here}: not permitted: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_UNKNOWN
    except PidfileError as exc:
        print(f"{here}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except TimeoutError as exc:
        print(f"{here}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_FAILED
    if result.pid is None:
        stale = f" (removed stale pidfile {path})" if result.removed_stale else ""
        print(f"not running{stale}")
    else:
        how = " with SIGKILL" if result.killed else ""
        print(f"stopped pid {result.pid}{how}")
    return 0


def _start(here: str, opts: dict[str, list[str]], cmd: list[str]) -> int:
    import os

    from .._core._files import tail as log_tail
    from .._daemon._service import start_daemon
    from .._exceptions import DaemonStartError, PidfileError, SpawnError

    path = _one(opts, "--pidfile")
    assert path is not None
    ready, timeout, umask, env = _start_options(opts)
    log = _one(opts, "--log")
    name = os.path.basename(cmd[0])
    try:
        result = start_daemon(
            cmd,
            pidfile=path,
            log=log,
            workdir=_one(opts, "--workdir", "/") or "/",
            umask=umask,
            user=_one(opts, "--user"),
            group=_one(opts, "--group"),
            chroot=_one(opts, "--chroot"),
            env=env,
            ready=ready,
            ready_timeout=timeout or None,
        )
    except SpawnError as exc:
        print(f"{here}: {exc}", file=sys.stderr)
        return _spawn_exit(exc)
    except (DaemonStartError, PidfileError) as exc:
        print(f"{here}: {name}: {exc}", file=sys.stderr)
        # The command ran and died (or never got ready): its own words help.
        ran = getattr(exc, "step", "") == "ready"
        tail = log_tail(log, 10, 8192) if log and ran else []
        if tail:
            print(f"last lines of {log}:", file=sys.stderr)
            for line in tail:
                print(f"  {line}", file=sys.stderr)
        elif ran and not log:
            print("(no --log given: its output went to /dev/null)", file=sys.stderr)
        return EXIT_FAILED
    except OSError as exc:
        print(f"{here}: {name}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_FAILED
    if result.already_running:
        print(f"{name} is already running (pid {result.pid})")
    else:
        print(f"started {name} (pid {result.pid})")
    return 0


def _start_options(opts: dict[str, list[str]]) -> tuple[Any, float, int, dict[str, str]]:
    """(readiness, timeout, umask, environment) from the start options, or _Usage."""
    import os

    from .._core._duration import parse_duration

    try:
        ready_text = _one(opts, "--ready", "exec") or "exec"
        ready = None
        if ready_text != "exec":  # the default needs no parsing: spare the import
            from .._core._readiness import parse_ready

            ready = parse_ready(ready_text)
        timeout = parse_duration(_one(opts, "--ready-timeout", "60") or "60")
    except ValueError as exc:
        raise _Usage(str(exc)) from None
    if ready is not None and ready.kind == "cmd":
        raise _Usage("--ready cmd: is not supported here (use exec, notify, tcp, delay)")
    umask_text = _one(opts, "--umask", "022") or "022"
    try:
        umask = int(umask_text, 8)
    except ValueError:
        raise _Usage(f"invalid umask {umask_text!r} (expected octal, e.g. 022)") from None
    if not 0 <= umask <= 0o777:
        raise _Usage(f"invalid umask {umask_text!r} (expected 000 to 777)")
    env = dict(os.environ)
    for item in opts.get("--env", []):
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise _Usage(f"invalid --env {item!r} (expected NAME=VALUE)")
        env[key] = value
    return ready, timeout, umask, env


def _spawn_exit(exc: BaseException) -> int:
    from .._exceptions import CommandNotExecutableError, CommandNotFoundError

    if isinstance(exc, CommandNotFoundError):
        return EXIT_NOT_FOUND
    if isinstance(exc, CommandNotExecutableError):
        return EXIT_NOT_EXECUTABLE
    return EXIT_FAILED
