"""``forkwell up``: run the supervisor for a forkwell.toml fleet (parse and print only)."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, NamedTuple

from ._getopt import UsageError, split_options

if TYPE_CHECKING:
    from .._supervisor._config import Config

HELP = """\
usage: {prog} [-h] [-c FILE] [-q] [-d] [--pidfile PATH] [--socket PATH]
       {pad} [--exit-after SECONDS]

Start every program of the config file (dependencies first, each when the
ones it depends on are ready), restart them when they crash, keep their
output in rotated log files, and serve the control socket for 'forkwell ps',
'start', 'stop', 'logs', 'reload'...  In the foreground each output line is
also printed as 'HH:MM:SS web:0 | line'.

Ctrl-C or SIGTERM stops every program (dependents first, whole process
trees), then exits 0; a second Ctrl-C SIGKILLs what is left at once.
SIGHUP reloads the config file.

options:
  -h, --help            show this help message and exit
  -c, --config FILE     the config file (default: ./forkwell.toml)
  -q, --quiet           do not echo program output and events (log files are
                        still written)
  -d, --detach          run in the background; return once every autostart
                        program is up (exit 1 with the reason if one failed)
  --pidfile PATH        with --detach: write and lock this pidfile
  --socket PATH         control socket (default: $FORKWELL_SOCKET, else
                        [supervisor] socket)
  --exit-after SECONDS  stop everything and exit 0 after this long (demos,
                        CI); e.g. 10, 1.5m

exit status:
  0   stopped cleanly (Ctrl-C, SIGTERM, 'forkwell down', --exit-after)
  1   could not run: another 'forkwell up' runs for this config, the control
      socket or state file cannot be created, or (--detach) an autostart
      program failed to start
  2   bad usage or an invalid config file (every problem is listed; nothing
      was started)

example:
  forkwell up -c examples/demo.toml
  forkwell up -c examples/demo.toml --exit-after 10     # a demo that ends itself
  forkwell up --detach && forkwell ps"""

# Not argparse: parsing these six options by hand keeps ~3 ms (argparse,
# gettext, locale) off the time until every program runs.
_FLAGS = {
    "-h": "help", "--help": "help", "-q": "quiet", "--quiet": "quiet",
    "-d": "detach", "--detach": "detach",
}  # fmt: skip
_VALUED = {
    "-c": "config", "--config": "config", "--pidfile": "pidfile", "--socket": "socket",
    "--exit-after": "exit_after",
}  # fmt: skip


class _Args(NamedTuple):
    config: str = "forkwell.toml"
    quiet: bool = False
    detach: bool = False
    pidfile: str | None = None
    socket: str | None = None
    exit_after: str | None = None
    help: bool = False


def _parse(argv: list[str]) -> _Args:
    pairs, rest = split_options(argv, flags=_FLAGS, valued=_VALUED)
    if rest:
        raise UsageError(f"unexpected argument {rest[0]!r} (programs come from the config file)")
    values: dict[str, object] = {}
    for key, value in pairs:
        values[key] = True if value is None else value
    return _Args(**values)  # type: ignore[arg-type]


def main(argv: list[str], *, prog: str, command: str) -> int:
    try:
        args = _parse(argv)
    except UsageError as exc:
        print(f"{prog}: {exc} (see '{prog} --help')", file=sys.stderr)
        return 2
    if args.help:
        print(HELP.format(prog=prog, pad=" " * len(prog)))
        return 0
    exit_after: float | None = None
    if args.exit_after is not None:
        from .._core._duration import parse_duration

        try:
            exit_after = parse_duration(args.exit_after)
        except ValueError as exc:
            print(f"{prog}: --exit-after: {exc}", file=sys.stderr)
            return 2
    if args.pidfile and not args.detach:
        print(f"{prog}: --pidfile needs --detach", file=sys.stderr)
        return 2

    from .._exceptions import ConfigError
    from .._supervisor._config import load_config

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        for line in exc.errors:
            print(f"{prog}: {line}", file=sys.stderr)
        if len(exc.errors) > 1:
            print(f"{prog}: {len(exc.errors)} problems; nothing was started", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130

    if args.detach:
        from pathlib import Path

        from .._daemon._daemonize import daemonize
        from .._exceptions import ForkwellError

        try:
            # Returns in the daemon only; the original exits 0 once we notify
            # READY=1 (after autostart), or 1 with the reason we report.
            daemonize(
                pidfile=Path(args.pidfile).absolute() if args.pidfile else None,
                ready="notify",
                ready_timeout=None,
            )
        except (ForkwellError, OSError) as exc:
            print(f"{prog}: cannot detach: {exc}", file=sys.stderr)
            return 1
    return _serve(config, args, prog, exit_after)


def _serve(config: Config, args: _Args, prog: str, exit_after: float | None) -> int:
    from pathlib import Path

    from .._exceptions import ForkwellError
    from .._supervisor._engine import Supervisor

    supervisor = Supervisor(config, quiet=args.quiet or args.detach)
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
            if exit_after is not None:
                loop.call_later(exit_after, lambda: loop.create_task(supervisor.shutdown()))
            return await supervisor.run()

        code = asyncio.run(serve())
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


def _report_detached_failure(detached: bool, exc: BaseException) -> None:
    """With --detach, make the waiting original process print why we failed."""
    if detached:
        # daemonize(ready="notify") relays an uncaught exception to the original
        # through sys.excepthook; the traceback itself goes to /dev/null.
        sys.excepthook(type(exc), exc, None)
