"""``forkwell up``: run the supervisor for a forkwell.toml fleet (parse and print only)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._config import Config

DESCRIPTION = """\
Start every program of the config file (dependencies first, each when the
ones it depends on are ready), restart them when they crash, keep their
output in rotated log files, and serve the control socket for 'forkwell ps',
'start', 'stop', 'logs', 'reload'...  In the foreground each output line is
also printed as 'HH:MM:SS web:0 | line'.

Ctrl-C or SIGTERM stops every program (dependents first, whole process
trees), then exits 0; a second Ctrl-C SIGKILLs what is left at once.
SIGHUP reloads the config file."""

EPILOG = """\
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


def _parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "-c", "--config", metavar="FILE", default="forkwell.toml",
        help="the config file (default: ./forkwell.toml)",
    )  # fmt: skip
    p.add_argument(
        "-q", "--quiet", action="store_true",
        help="do not echo program output and events (log files are still written)",
    )  # fmt: skip
    p.add_argument(
        "-d", "--detach", action="store_true",
        help="run in the background; return once every autostart program is up "
        "(exit 1 with the reason if one failed)",
    )  # fmt: skip
    p.add_argument(
        "--pidfile", metavar="PATH", help="with --detach: write and lock this pidfile"
    )
    p.add_argument(
        "--socket", metavar="PATH",
        help="control socket (default: $FORKWELL_SOCKET, else [supervisor] socket)"
    )
    p.add_argument(
        "--exit-after", metavar="SECONDS",
        help="stop everything and exit 0 after this long (demos, CI); e.g. 10, 1.5m",
    )  # fmt: skip
    return p


def main(argv: list[str], *, prog: str, command: str) -> int:
    parser = _parser(prog)
    args = parser.parse_args(argv)
    exit_after: float | None = None
    if args.exit_after is not None:
        from ._duration import parse_duration

        try:
            exit_after = parse_duration(args.exit_after)
        except ValueError as exc:
            print(f"{prog}: --exit-after: {exc}", file=sys.stderr)
            return 2
    if args.pidfile and not args.detach:
        print(f"{prog}: --pidfile needs --detach", file=sys.stderr)
        return 2

    from ._config import load_config
    from ._exceptions import ConfigError

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

        from ._daemon import daemonize
        from ._exceptions import ForkwellError

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


def _serve(config: Config, args: argparse.Namespace, prog: str, exit_after: float | None) -> int:
    if "ssl" not in sys.modules:
        # asyncio imports ssl eagerly (~5 MiB of RSS, a fifth of the supervisor);
        # the supervisor never speaks TLS, and asyncio copes with ssl missing.
        sys.modules["ssl"] = None  # type: ignore[assignment]
    import asyncio
    from pathlib import Path

    from ._exceptions import ForkwellError
    from ._supervisor import Supervisor

    supervisor = Supervisor(config, quiet=args.quiet or args.detach)
    # The same precedence as the control commands: --socket, $FORKWELL_SOCKET, the config.
    socket_path = args.socket or os.environ.get("FORKWELL_SOCKET")
    if socket_path:
        supervisor.socket_path = Path(socket_path).absolute()

    async def serve() -> int:
        loop = asyncio.get_running_loop()
        if exit_after is not None:
            loop.call_later(exit_after, lambda: loop.create_task(supervisor.shutdown()))
        if args.detach:
            supervisor.fail_fast = True
        return await supervisor.run()

    try:
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
