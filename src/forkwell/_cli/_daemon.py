"""``forkwell daemon start|stop|status|restart``: a better ``start-stop-daemon``.

Parsing and printing only; the work is in :mod:`forkwell._daemon._service`,
imported when an action runs (or for the defaults ``--help`` shows: they are
the library's).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from ._options import DURATION, SIGNAL, Command, Default, Kind, Operand, Option, keyword_default
from ._parser import parse_or_report as _parse_or_report

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NOT_RUNNING = 3
EXIT_UNKNOWN = 4
EXIT_NOT_EXECUTABLE = 126
EXIT_NOT_FOUND = 127


def _start_default(name: str) -> Callable[[], Any]:
    def load() -> Any:
        from .._daemon._service import start_daemon

        return keyword_default(start_daemon, name)

    return load


def _stop_default(name: str) -> Callable[[], Any]:
    def load() -> Any:
        from .._daemon._service import stop_daemon

        return keyword_default(stop_daemon, name)

    return load


def _umask(text: str) -> int:
    try:
        umask = int(text, 8)
    except ValueError:
        raise ValueError(f"invalid umask {text!r} (expected octal, e.g. 022)") from None
    if not 0 <= umask <= 0o777:
        raise ValueError(f"invalid umask {text!r} (expected 000 to 777)")
    return umask


def _assignment(text: str) -> tuple[str, str]:
    from ._options import UsageError

    key, eq, value = text.partition("=")
    if not eq or not key:
        raise UsageError(f"invalid --env {text!r} (expected NAME=VALUE)")
    return key, value


def _ready(text: str) -> Any:
    if text == "exec":  # the default needs no parsing: spare the import
        return None
    from .._core._readiness import parse_ready

    ready = parse_ready(text)
    if ready.kind == "cmd":
        raise ValueError("cmd: is not supported here (use exec, notify, tcp, delay)")
    return ready


_PIDFILE = Option(("--pidfile",), "PATH",
                  "the pidfile (required); locked by the daemon for its life", required=True)
_START_OPTIONS = (
    _PIDFILE,
    Option(("--log-file",), "FILE",
           "append the daemon's stdout and stderr to FILE (default /dev/null)",
           aliases=("--log",)),
    Option(("--directory",), "DIR", "working directory (default {default})",
           default=Default(_start_default("workdir")), aliases=("--workdir",)),
    Option(("--umask",), "MODE", "octal umask (default {default})",
           Kind("umask", _umask, lambda mode: f"{mode:03o}"), Default(_start_default("umask"))),
    Option(("--user",), "USER", "run as USER (name or uid), with USER's supplementary groups"),
    Option(("--group",), "GROUP", "run with primary group GROUP (default: USER's)"),
    Option(("--chroot",), "DIR", "chroot to DIR first (--directory is then inside it)"),
    Option(("--env",), "K=V", "set an environment variable (repeatable)",
           Kind("assignment", _assignment), repeat=True),
    Option(("--ready",), "HOW",
           "when the daemon counts as up: exec, notify, tcp:HOST:PORT or delay:SECONDS "
           "(default {default}; see below)",
           Kind("readiness", _ready, str, none="exec"), Default(_start_default("ready"))),
    Option(("--ready-timeout",), "DUR",
           "give up (and stop the daemon) after DUR (default {default}; 0: no limit)",
           DURATION, Default(_start_default("ready_timeout"))),
)
_STOP_OPTIONS = (
    Option(("--signal",), "SIG", "signal to send first (default {default}); KILL after --grace",
           SIGNAL, Default(_stop_default("stop_signal"))),
    Option(("--grace",), "DUR", "how long to wait before SIGKILL (default {default})",
           DURATION, Default(_stop_default("timeout")), aliases=("--timeout",)),
)
_COMMAND = Operand("COMMAND", "the daemon's command and its arguments (options after it are "
                   "its own)", nargs="+", missing="no COMMAND given: put it after --")
_READY_NOTE = """\
HOW, the readiness --ready waits for:
  exec           COMMAND was exec'd successfully
  notify         COMMAND sent READY=1 to $NOTIFY_SOCKET (sd_notify)
  tcp:HOST:PORT  the port accepts connections (tcp:PORT = 127.0.0.1)
  delay:SECONDS  COMMAND is still alive after SECONDS"""
_STOP_NOTE = """\
'stop' also ends whatever the daemon left in its session, and removes a stale
pidfile (one whose lock nobody holds) without signalling the pid it names."""
_START_EXITS = (
    ("0", "started, or already running (prints its pid)"),
    ("1", "failed (bad user or directory, died during start-up, readiness timeout; nothing "
          "is left running and no pidfile remains)"),
    ("2", "bad usage"),
    ("126", "COMMAND not executable"),
    ("127", "COMMAND not found"),
)
_STOP_EXITS = (("0", "stopped, or was not running"), ("1", "failed"), ("2", "bad usage"),
               ("4", "not permitted"))
# What the daemon commands have always said, as scripts and tests know it.
_WORDS = {"unknown": "unknown option {option!r}", "unknown_short": "unknown option {option!r}",
          "extra": "takes no COMMAND (got {operand!r})"}
_WHAT = """\
Run COMMAND as a daemon (detached, in its own session, stdio on /dev/null or a
log, umask, working directory, user), kept unique by a locked pidfile that
names COMMAND's real pid."""
_WITH_COMMAND = "--pidfile PATH [OPTIONS] [--] COMMAND [ARG]..."


def _action(name: str, summary: str, description: str, **more: Any) -> Command:
    """An action: options end at COMMAND, and none may be given twice (but --env)."""
    return Command(f"daemon {name}", description, summary=summary, permute=False, once=True,
                   words=_WORDS, **more)  # fmt: skip


START = _action(
    "start", "run COMMAND as a daemon; return once it is up, or say why not",
    _WHAT + "  Return only once the daemon is up (--ready), and say why when it is not.",
    usage=_WITH_COMMAND, options=_START_OPTIONS, operands=(_COMMAND,), notes=_READY_NOTE,
    exits=_START_EXITS,
    examples=("forkwell daemon start --pidfile /tmp/web.pid --log-file /tmp/web.log \\",
              "    --ready tcp:127.0.0.1:8000 -- python3 -m http.server 8000"),
)
STOP = _action(
    "stop", "stop the daemon: SIGNAL, then KILL after --grace",
    "Stop the daemon that holds the pidfile.\n\n" + _STOP_NOTE,
    options=(_PIDFILE, *_STOP_OPTIONS), exits=_STOP_EXITS,
    examples=("forkwell daemon stop --pidfile /tmp/web.pid --grace 30",),
)
STATUS = _action(
    "status", "say whether the daemon runs, with LSB's exit statuses",
    "Say whether the daemon that holds the pidfile runs, with its pid and uptime.",
    options=(_PIDFILE,),
    exits=(("0", "running (pid and uptime)"), ("1", "dead but the pidfile exists"),
           ("2", "bad usage"), ("3", "not running"), ("4", "unknown (pidfile unreadable)")),
    examples=("forkwell daemon status --pidfile /tmp/web.pid || echo down",),
)
RESTART = _action(
    "restart", "stop (if running), then start",
    "Stop the daemon as 'stop' does, then start COMMAND as 'start' does.",
    usage=_WITH_COMMAND, options=(*_START_OPTIONS, *_STOP_OPTIONS), operands=(_COMMAND,),
    notes=_READY_NOTE, exits=(("-", "as stop, then as start"),),
    examples=("forkwell daemon restart --pidfile /tmp/web.pid -- python3 -m http.server 8000",),
)
DAEMON = Command(
    "daemon",
    description=_WHAT + "  'start' returns only once the daemon is up, and says why when it "
    "is not.",
    actions=(START, STOP, STATUS, RESTART),
    notes=_READY_NOTE + "\n\n" + _STOP_NOTE,
    examples=(
        "forkwell daemon start --pidfile /tmp/web.pid --log-file /tmp/web.log \\",
        "    --ready tcp:127.0.0.1:8000 -- python3 -m http.server 8000",
        "forkwell daemon status --pidfile /tmp/web.pid",
        "forkwell daemon stop --pidfile /tmp/web.pid",
    ),
)  # fmt: skip
DECLARED = {"daemon": DAEMON}


def main(argv: list[str], *, prog: str, command: str) -> int:
    args = _parse_or_report(DAEMON, argv, prog)
    if isinstance(args, int):
        return args
    here = f"{prog} {args.action}"
    try:
        return _ACTIONS[args.action](here, args)
    except KeyboardInterrupt:
        print(f"{here}: interrupted", file=sys.stderr)
        return 130


def _restart(here: str, args: SimpleNamespace) -> int:
    return _stop(here, args) or _start(here, args)


def _status(here: str, args: SimpleNamespace) -> int:
    from .._core import _proc
    from .._daemon._pidfile import Pidfile, PidfileState

    path = args.pidfile
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


def _stop(here: str, args: SimpleNamespace) -> int:
    from .._daemon._service import stop_daemon
    from .._exceptions import PidfileError

    try:
        result = stop_daemon(args.pidfile, stop_signal=args.signal, timeout=args.grace)
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
        stale = f" (removed stale pidfile {args.pidfile})" if result.removed_stale else ""
        print(f"not running{stale}")
    else:
        how = " with SIGKILL" if result.killed else ""
        print(f"stopped pid {result.pid}{how}")
    return 0


def _start(here: str, args: SimpleNamespace) -> int:
    from .._daemon._service import start_daemon
    from .._exceptions import DaemonStartError, PidfileError, SpawnError

    name = os.path.basename(args.command[0])
    try:
        result = start_daemon(
            args.command,
            pidfile=args.pidfile,
            log=args.log_file,
            workdir=args.directory,
            umask=args.umask,
            user=args.user,
            group=args.group,
            chroot=args.chroot,
            env={**os.environ, **dict(args.env)},
            ready=args.ready,
            ready_timeout=args.ready_timeout or None,
        )
    except SpawnError as exc:
        print(f"{here}: {exc}", file=sys.stderr)
        return _spawn_exit(exc)
    except (DaemonStartError, PidfileError) as exc:
        print(f"{here}: {name}: {exc}", file=sys.stderr)
        # The command ran and died (or never got ready): its own words help.
        if getattr(exc, "step", "") == "ready":
            _print_log_tail(args.log_file)
        return EXIT_FAILED
    except OSError as exc:
        print(f"{here}: {name}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_FAILED
    if result.already_running:
        print(f"{name} is already running (pid {result.pid})")
    else:
        print(f"started {name} (pid {result.pid})")
    return 0


def _print_log_tail(log: str | None) -> None:
    from .._core._files import tail as log_tail

    if not log:
        print("(no --log-file given: its output went to /dev/null)", file=sys.stderr)
        return
    tail = log_tail(log, 10, 8192)
    if tail:
        print(f"last lines of {log}:", file=sys.stderr)
        for line in tail:
            print(f"  {line}", file=sys.stderr)


def _spawn_exit(exc: BaseException) -> int:
    from .._exceptions import CommandNotExecutableError, CommandNotFoundError

    if isinstance(exc, CommandNotFoundError):
        return EXIT_NOT_FOUND
    if isinstance(exc, CommandNotExecutableError):
        return EXIT_NOT_EXECUTABLE
    return EXIT_FAILED


_ACTIONS: dict[str, Callable[[str, SimpleNamespace], int]] = {
    "start": _start,
    "stop": _stop,
    "status": _status,
    "restart": _restart,
}
