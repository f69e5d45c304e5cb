"""``forkwell up``: run the supervisor for a forkwell.toml fleet (parse and print only)."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

from ._options import CONFIG, DURATION, FORMAT, PROCFILE_OPTIONS, SOCKET, Command, Option
from ._parser import parse_or_report as _parse_or_report
from ._parser import report_usage

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path
    from types import SimpleNamespace

    from .._supervisor._config import Config

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
               "stop everything and exit 0 after this long (demos, CI); e.g. 10, 1.5m",
               DURATION),
        *PROCFILE_OPTIONS,
    ),
    notes="""\
Ctrl-C or SIGTERM stops every program (dependents first, whole process
trees), then exits 0; a second Ctrl-C SIGKILLs what is left at once.
SIGHUP reloads the config file.""",
    exits=(
        ("0", "stopped cleanly (Ctrl-C, SIGTERM, 'forkwell down', --exit-after)"),
        ("1", "could not run: another 'forkwell up' runs for this config, the control socket "
              "or state file cannot be created, or (--detach) an autostart program failed to "
              "start"),
        ("2", "bad usage or an invalid config file (every problem is listed; nothing was "
              "started)"),
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
        failed = _detach(prog, args.pidfile)
        if failed:
            return failed
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
    options = _fleetfile.procfile_options(args)
    overrides = _fleetfile.overrides(args)  # --http holds across reloads too

    def reader(path: Path) -> Config:
        from .._supervisor._formats._load import load

        return load(path, loaded.format, options, overrides).config

    return loaded.config, reader


def _detach(prog: str, pidfile: str | None) -> int:
    """Become the daemon (0); the original exits 0 once we notify READY=1, or 1 with the reason."""
    from pathlib import Path

    from .._daemon._daemonize import daemonize
    from .._exceptions import ForkwellError

    try:
        daemonize(
            pidfile=Path(pidfile).absolute() if pidfile else None,
            ready="notify",
            ready_timeout=None,
        )
    except (ForkwellError, OSError) as exc:
        print(f"{prog}: cannot detach: {exc}", file=sys.stderr)
        return 1
    return 0


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
        if "ssl" not in sys.modules:
            # asyncio imports ssl eagerly (~5 MiB of RSS, a fifth of the supervisor);
            # the supervisor never speaks TLS, and asyncio copes with ssl missing.
            sys.modules["ssl"] = None  # type: ignore[assignment]
        import asyncio

        async def serve() -> int:
            loop = asyncio.get_running_loop()
            if args.exit_after is not None:
                loop.call_later(args.exit_after, lambda: loop.create_task(supervisor.shutdown()))
            return await supervisor.run()

        loop = _new_loop(asyncio)
        with asyncio.Runner(loop_factory=lambda: loop) as runner:
            code = runner.run(serve())
    except ForkwellError as exc:
        _report_detached_failure(args.detach, exc)
        print(f"{prog}: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        _report_detached_failure(args.detach, exc)
        print(f"{prog}: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C before the loop handled signals
        return 130
    return code


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


def _report_detached_failure(detached: bool, exc: BaseException) -> None:
    """With --detach, make the waiting original process print why we failed."""
    if detached:
        # daemonize(ready="notify") relays an uncaught exception to the original
        # through sys.excepthook; the traceback itself goes to /dev/null.
        sys.excepthook(type(exc), exc, None)
