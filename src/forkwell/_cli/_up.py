"""``forkwell up``: run the supervisor for a forkwell.toml fleet (parse and print only)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from ._options import CONFIG, DURATION, FORMAT, PROCFILE_OPTIONS, SOCKET, Command, Option
from ._parser import parse_or_report as _parse_or_report
from ._parser import report_usage

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path
    from types import SimpleNamespace

    from .._supervisor._config import Config
    from .._supervisor._engine import OpResult, Supervisor

UP = Command(
    "up",
    description="""\
Start every program of the config file (dependencies first, each when the
ones it depends on are ready), restart them when they crash, keep their
output in rotated log files, and serve the control socket for 'forkwell ps',
'start', 'stop', 'logs', 'reload'...  In the foreground each output line is
also printed as 'HH:MM:SS web:0 | line'.""",
    options=(
        CONFIG,
        FORMAT,
        Option(("-q", "--quiet"), None,
               "do not echo program output and events (log files are still written)"),
        Option(("-d", "--detach"), None,
               "run in the background; return once every autostart program is up (exit 1 "
               "with the reason if one failed)"),
        Option(("--pidfile",), "PATH", "with --detach: write and lock this pidfile"),
        SOCKET,
        Option(("--http",), "ADDR",
               "serve the status page, JSON API, /metrics and /healthz on ADDR ('127.0.0.1:9100' "
               "or 'unix:PATH'; overrides [supervisor] http; needs pip install 'forkwell[web]')"),
        Option(("--exit-after",), "SECONDS",
               "stop everything and exit after this long (demos, CI): 0, or 3 if an autostart "
               "instance is FATAL then; e.g. 10, 1.5m", DURATION),
        *PROCFILE_OPTIONS,
    ),
    notes="""\
Ctrl-C or SIGTERM stops every program (dependents first, whole process
trees), then exits 0; a second Ctrl-C SIGKILLs what is left at once.
SIGHUP reloads the config file.  Before starting anything, a command that is
not on PATH (or not executable) is warned about, as 'forkwell check' does.""",
    exits=(
        ("0", "stopped cleanly (Ctrl-C, SIGTERM, 'forkwell down', --exit-after)"),
        ("1", "could not run: another 'forkwell up' runs for this config, the control socket "
              "or state file cannot be created, or (--detach) an autostart program failed to "
              "start"),
        ("2", "bad usage or an invalid config file (every problem is listed; nothing was "
              "started)"),
        ("3", "--exit-after: an autostart instance was FATAL when the time was up (each is "
              "named)"),
        ("N", "an essential program (or exit_when) ended the run: that program's exit "
              "status, 128+N for signal N"),
    ),
    examples=(
        "forkwell up -c examples/demo.toml",
        "forkwell up -c Procfile -m web=2         # as 'foreman start -m web=2'",
        "forkwell up -c supervisord.conf --detach && forkwell ps -c supervisord.conf",
        "forkwell up -c examples/demo.toml --exit-after 10     # a demo that ends itself",
        "forkwell up --detach && forkwell ps",
        "forkwell up --http 127.0.0.1:9100     # then open http://127.0.0.1:9100/",
    ),
    words={"extra": "unexpected argument {operand!r} (programs come from the config file)"},
)  # fmt: skip
DECLARED = {"up": UP}


EXIT_CANNOT_RUN = 1
EXIT_USAGE = 2
EXIT_FATAL = 3
# --detach: the failures shown one per line; the rest are counted.
SHOWN_FAILURES = 5
# The daemon's lines travel to the waiting original as one handshake message.
_LINE_BREAK = "\t"


def main(argv: list[str], *, prog: str, command: str) -> int:
    args = _parse_or_report(UP, argv, prog)
    if isinstance(args, int):
        return args
    if args.pidfile and not args.detach:
        return report_usage(UP, prog, "--pidfile needs --detach")
    loaded = _load(prog, args)
    if isinstance(loaded, int):
        return loaded
    config, reader = loaded
    if args.detach:
        from .._supervisor._statefile import already_running, running_pid

        # As the foreground path does, but before forking: the reason is then ours to print.
        pid = running_pid(config.supervisor.state_file)
        if pid is not None:
            print(f"{prog}: {already_running(config.path, pid)}", file=sys.stderr)
            return EXIT_CANNOT_RUN
        _detach(prog, args.pidfile)
    return _serve(config, reader, args, prog)


def _load(prog: str, args: SimpleNamespace) -> tuple[Config, Callable[[Path], Config]] | int:
    """The config and how to read it again (reload), or the exit status once its problems
    are printed."""
    from .._exceptions import ConfigError
    from . import _fleetfile

    path = _fleetfile.choose(prog, args.config)
    try:
        loaded = _fleetfile.load(prog, args, path)
    except ConfigError as exc:
        return _fleetfile.report(prog, exc.errors)
    except KeyboardInterrupt:
        return 130
    _fleetfile.warn(prog, loaded, path)
    options = _fleetfile.procfile_options(args)
    overrides = _fleetfile.overrides(args)  # --http holds across reloads too

    def reader(path: Path) -> Config:
        from .._supervisor._formats._load import load

        return load(path, loaded.format, options, overrides).config

    return loaded.config, reader


def _detach(prog: str, pidfile: str | None) -> None:
    """Become the daemon; the original exits 0 once we notify READY=1, or 1 with our reasons."""
    from pathlib import Path

    from .._daemon._daemonize import launch, plain
    from .._daemon._handshake import Failure
    from .._exceptions import ForkwellError

    try:
        outcome = launch(plain(Path(pidfile).absolute() if pidfile else None), "notify", None)
    except (ForkwellError, OSError) as exc:
        _leave(1, [f"{prog}: cannot detach: {exc}"])
    if outcome is None:
        return  # the daemon (or, already supervised, still this process)
    if outcome.ok:
        _leave(0, [outcome.status] if outcome.status else [], sys.stdout)
    lines = (outcome.message.split(_LINE_BREAK) if outcome.failure is Failure.EXCEPTION
             else [outcome.describe(None)])  # fmt: skip
    _leave(1, [f"{prog}: {line}" for line in lines])


def _leave(code: int, lines: list[str], stream: Any = None) -> NoReturn:
    """The original process of --detach: say it, and exit as the daemon's fork left us."""
    out = sys.stderr if stream is None else stream
    for line in lines:
        print(line, file=out)
    out.flush()
    os._exit(code)


def _serve(
    config: Config, reader: Callable[[Path], Config], args: SimpleNamespace, prog: str
) -> int:
    from pathlib import Path

    from .._exceptions import ForkwellError
    from .._supervisor._engine import Supervisor

    supervisor = Supervisor(config, quiet=args.quiet or args.detach)
    supervisor.reader = reader
    # The same precedence as the control commands: --socket, $FORKWELL_SOCKET, the config.
    socket_path = args.socket or os.environ.get("FORKWELL_SOCKET")
    if socket_path:
        supervisor.socket_path = Path(socket_path).absolute()
    supervisor.fail_fast = args.detach
    try:
        # Programs that need no event loop start before asyncio is even imported.
        supervisor.prestart()
        return _run(supervisor, args.exit_after, prog)
    except ForkwellError as exc:
        return _failed(prog, args.detach, _startup_failures(supervisor) or [str(exc)])
    except OSError as exc:
        return _failed(prog, args.detach, [_os_error(exc, config)])
    except KeyboardInterrupt:  # Ctrl-C before the loop handled signals
        return 130


def _run(supervisor: Supervisor, exit_after: float | None, prog: str) -> int:
    """Serve until stopped; with ``exit_after``, stop then, and say whether all was well."""
    if "ssl" not in sys.modules:
        # asyncio imports ssl eagerly (~5 MiB of RSS, a fifth of the supervisor);
        # the supervisor never speaks TLS, and asyncio copes with ssl missing.
        sys.modules["ssl"] = None  # type: ignore[assignment]
    import asyncio

    fatal: list[str] = []

    async def time_up() -> None:
        # What --exit-after reports is the fleet as it is when the time is up.
        fatal.extend(i.name for i in supervisor.instances() if i.autostart and i.state == "FATAL")
        await supervisor.shutdown()

    async def serve() -> int:
        loop = asyncio.get_running_loop()
        if exit_after is not None:
            loop.call_later(exit_after, lambda: supervisor.background(time_up()))
        return await supervisor.run()

    loop = _new_loop(asyncio)
    with asyncio.Runner(loop_factory=lambda: loop) as runner:
        code = runner.run(serve())
    if fatal and code == 0:
        print(f"{prog}: --exit-after: {_count(len(fatal))} FATAL when the time was up: "
              f"{', '.join(fatal)}", file=sys.stderr)  # fmt: skip
        return EXIT_FATAL
    return code


def _count(n: int) -> str:
    return f"{n} autostart instance{'s were' if n != 1 else ' was'}"


def _startup_failures(supervisor: Supervisor) -> list[str]:
    """--detach: each failed autostart instance (the first few), one line each, and the count."""
    failed: list[OpResult] = supervisor.startup_failures
    if not failed:
        return []
    lines = [r.message.replace(_LINE_BREAK, " ") for r in failed[:SHOWN_FAILURES]]
    rest = len(failed) - SHOWN_FAILURES
    if rest > 0:
        log = supervisor.config.supervisor.log_dir / "forkwell.log"
        lines.append(f"and {rest} more; all of them: grep -F ' is FATAL' {log} | tail -n "
                     f"{len(failed)}")  # fmt: skip
    lines.append(f"{_count(len(failed))} not started; nothing is left running")
    return lines


def _os_error(exc: OSError, config: Config) -> str:
    """``Permission denied: /x/.forkwell``, said as what that place is and how to choose another."""
    why = exc.strerror or str(exc)
    if not exc.filename:
        return why
    place = Path(os.fsdecode(exc.filename))
    sup = config.supervisor
    keys = [key for key, path in (("log_dir", sup.log_dir), ("state_file", sup.state_file.parent),
                                  ("socket", sup.socket.parent))
            if path == place or place in path.parents]  # fmt: skip
    if not keys:
        return f"{why}: {place}"
    them = ", ".join(keys[:-1]) + (" and " if len(keys) > 1 else "") + keys[-1]
    return (f"cannot create {place}, the supervisor's state directory: {why} (it holds "
            f"its {them}; choose another place with [supervisor] {them} in {config.path})")


def _new_loop(asyncio: Any) -> Any:
    """The event loop; an OSError (EMFILE: no fd for its self-pipe) is the one-line error.

    A loop that failed half-built prints a traceback from ``__del__`` at exit
    (it closes a self-pipe it never made): collect it here, quietly.
    """
    import gc

    hook, sys.unraisablehook = sys.unraisablehook, lambda _unraisable: None
    try:
        try:
            return asyncio.new_event_loop()
        except OSError as exc:
            # A fresh error: the original's traceback would keep the loop alive.
            error = OSError(exc.errno, f"cannot create its event loop: {exc.strerror}")
        gc.collect()
    finally:
        sys.unraisablehook = hook
    raise error


def _failed(prog: str, detached: bool, lines: list[str]) -> int:
    """The run failed: say why (with --detach, to the original process, which says it)."""
    if detached:
        from .._exceptions import ForkwellError

        # daemonize(ready="notify") relays an uncaught exception to the original
        # through sys.excepthook; the traceback itself goes to /dev/null.
        exc = ForkwellError(_LINE_BREAK.join(lines))
        sys.excepthook(type(exc), exc, None)
    else:
        for line in lines:
            print(f"{prog}: {line}", file=sys.stderr)
    return EXIT_CANNOT_RUN
