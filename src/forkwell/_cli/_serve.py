"""``forkwell serve``: parse, build a ForkingServer or PreforkServer, report."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

    from .._servers._forking import ForkingServer
    from .._servers._prefork import PreforkServer

DESCRIPTION = """\
Serve a socketserver request handler (or a callable handler(sock, address))
from pre-forked workers (default) or one forked child per connection; or a
WSGI application (--wsgi, or any callable app(environ, start_response)) over
HTTP/1.1 from pre-forked workers, with gunicorn's option names.

  forkwell serve http.server:SimpleHTTPRequestHandler --bind 127.0.0.1:8000 --workers 4
  forkwell serve myproject.wsgi:application --wsgi --workers 4

WSGI needs the extra: pip install 'forkwell[wsgi]'.

Signals (pre-fork): HUP reload (re-imports MODULE), TTIN/TTOU one worker
more/less, TERM graceful stop, INT/QUIT fast stop, USR1 reopen --log-file.
Per-connection: TERM graceful stop, INT/QUIT fast stop.
"""

EPILOG = """\
exit status: 0 stopped by a signal; 1 cannot listen (address in use,
permission); 2 bad usage (options, bind address, MODULE:HANDLER, the WSGI
extra missing); 3 workers failed to boot --max-boot-failures times in a row.
"""

# The WSGI options: (flags, argparse keywords).  gunicorn's names, and its
# spellings of the access log options as aliases.
_WSGI_OPTIONS: list[tuple[tuple[str, ...], dict[str, object]]] = [
    (("--wsgi",), {"action": "store_true",
                   "help": "MODULE:APP is a WSGI application (also detected: app(environ, "
                           "start_response)); APP may be a factory call, create_app()"}),
    (("--preload",), {"action": "store_true",
                      "help": "WSGI: import the app once in the master, before forking "
                              "(default: in each worker; HUP then re-imports all the code)"}),
    (("--keep-alive",), {"type": "duration", "metavar": "S",
                         "help": "WSGI: keep an idle connection S for its next request "
                                 "(default 2s; 0: one request per connection)"}),
    (("--worker-connections",), {"type": "positive", "metavar": "N",
                                 "help": "WSGI: at most N connections per worker (default 1000)"}),
    (("--limit-request-line",), {"type": "count", "metavar": "N",
                                 "help": "WSGI: longest request target (default 4094; 0: none)"}),
    (("--limit-request-fields",), {"type": "count", "metavar": "N",
                                   "help": "WSGI: most header fields (default 100)"}),
    (("--limit-request-field-size", "--limit-request-field_size"), {"type": "count", "metavar": "N",
                                       "help": "WSGI: largest header field, bytes (default 8190)"}),
    (("--access-log", "--access-logfile"), {"metavar": "PATH",
                                            "help": "WSGI: a line per response ('-': stdout)"}),
    (("--access-log-format", "--access-logformat"), {"metavar": "FMT",
                                                    "help": "WSGI: gunicorn's %%(h)s-style atoms"}),
    (("--forwarded-allow-ips",), {"metavar": "IPS",
                                  "help": "WSGI: proxies trusted for X-Forwarded-*/Forwarded "
                                          "(default 127.0.0.1,::1; '*': all)"}),
]
_WSGI_ONLY = ("preload", "keep_alive", "worker_connections", "limit_request_line",
              "limit_request_fields", "limit_request_field_size", "access_log",
              "access_log_format", "forwarded_allow_ips")



def _int_at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid number {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {text!r}")
        return value

    return parse


_positive_int = _int_at_least(1)
_count = _int_at_least(0)


def _duration(text: str) -> float:
    from .._core._duration import parse_duration

    try:
        value = parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # One line, not argparse's usage dump.
        self.exit(2, f"{self.prog}: {message} (see '{self.prog} --help')\n")


def _parser(prog: str) -> argparse.ArgumentParser:
    p = _Parser(
        prog=prog,
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "-w",
        "--workers",
        type=_positive_int,
        metavar="N",
        help="pre-fork N workers (default: the number of CPUs)",
    )
    mode.add_argument(
        "--per-connection",
        action="store_true",
        help="fork one child per connection instead of pre-forking",
    )
    p.add_argument(
        "-b",
        "--bind",
        action="append",
        metavar="ADDR",
        help="HOST:PORT, [IPV6]:PORT or unix:PATH; repeatable (default 127.0.0.1:8000)",
    )
    p.add_argument(
        "--max-requests",
        type=_count,
        default=0,
        metavar="N",
        help="pre-fork: replace a worker after N connections (0: never)",
    )
    p.add_argument(
        "--max-requests-jitter",
        type=_count,
        default=0,
        metavar="N",
        help="pre-fork: add 0..N at random to --max-requests, per worker",
    )
    p.add_argument(
        "--timeout",
        type=_duration,
        metavar="S",
        help="pre-fork: kill and replace a worker silent for S (default 30s); "
        "per-connection: kill a child after S (default: no limit)",
    )
    p.add_argument(
        "--graceful-timeout",
        type=_duration,
        default=None,
        metavar="S",
        help="on TERM/reload, let connections finish for S, then kill (default 30s)",
    )
    p.add_argument(
        "--max-children",
        type=_positive_int,
        metavar="N",
        help="per-connection: at most N children; more connections wait (default 64)",
    )
    p.add_argument(
        "--reuse-port",
        action="store_true",
        help="pre-fork: one SO_REUSEPORT socket per worker instead of a shared one",
    )
    p.add_argument(
        "--max-boot-failures",
        type=_positive_int,
        default=3,
        metavar="N",
        help="pre-fork: halt after N workers in a row fail to boot (default 3)",
    )
    p.add_argument(
        "--log-file",
        metavar="PATH",
        help="pre-fork: append stdout/stderr to PATH, reopened on USR1",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    types = {"duration": _duration, "count": _count, "positive": _positive_int}
    for flags, kw in _WSGI_OPTIONS:
        kind = kw.get("type")
        options = {**kw, "type": types[kind]} if isinstance(kind, str) else kw
        p.add_argument(*flags, **options)  # type: ignore[arg-type]
    p.add_argument(
        "handler",
        metavar="MODULE:HANDLER",
        help="e.g. http.server:SimpleHTTPRequestHandler, or a WSGI app: myproject.wsgi:application",
    )
    return p


def _wsgi_flags(args: argparse.Namespace) -> list[str]:
    return ["--" + name.replace("_", "-") for name in _WSGI_ONLY
            if getattr(args, name) not in (None, False)]


def _check_wsgi_flags(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.per_connection and (args.wsgi or _wsgi_flags(args)):
        flag = "--wsgi" if args.wsgi else _wsgi_flags(args)[0]
        p.error(f"{flag} applies to WSGI apps, served by pre-forked workers, not --per-connection")


def _wsgi_server(args: argparse.Namespace, app: object, binds: list[str]) -> PreforkServer:
    """The WSGI pre-fork server the options describe (``app``: the app, or its spec)."""
    from .._servers._wsgiserver import WSGISettings, wsgi_server

    chosen = {
        name: getattr(args, name)
        for name in _WSGI_ONLY
        if getattr(args, name) is not None and name != "preload"
    }
    settings = WSGISettings(
        workers=args.workers or os.cpu_count() or 1,
        preload=args.preload,
        timeout=30.0 if args.timeout is None else (args.timeout or None),
        graceful_timeout=30.0 if args.graceful_timeout is None else args.graceful_timeout,
        max_requests=args.max_requests,
        max_requests_jitter=args.max_requests_jitter,
        reuse_port=args.reuse_port,
        max_boot_failures=args.max_boot_failures,
        log_file=args.log_file,
        **chosen,
    )
    return wsgi_server(app, binds, settings)  # type: ignore[arg-type]


def _is_wsgi(spec: str) -> bool:
    """Without --wsgi: whether the handler is a WSGI app (imported here to look at it)."""
    from .._servers._common import load_handler
    from .._servers._wsgiserver import looks_like_wsgi

    return looks_like_wsgi(load_handler(spec))


def _preloaded(args: argparse.Namespace) -> str:
    # Detecting the app imported it in the master: it is preloaded (and HUP
    # re-imports its module there), as --preload would have it.
    args.preload = True
    spec: str = args.handler
    return spec


def main(argv: list[str], *, prog: str, command: str) -> int:
    p = _parser(prog)
    args = p.parse_args(argv)
    per_conn = bool(args.per_connection)
    if per_conn:
        for flag, value in (
            ("--max-requests", args.max_requests),
            ("--max-requests-jitter", args.max_requests_jitter),
            ("--reuse-port", args.reuse_port),
            ("--log-file", args.log_file),
        ):
            if value:
                p.error(f"{flag} applies to pre-fork workers, not --per-connection")
    elif args.max_children is not None:
        p.error("--max-children applies to --per-connection only")
    _check_wsgi_flags(p, args)

    import logging

    from .._exceptions import BindError, HandlerImportError, WorkerBootError

    handler_log = logging.StreamHandler(sys.stderr)
    handler_log.setFormatter(logging.Formatter(f"{prog}[%(process)d]: %(message)s"))
    logger = logging.getLogger("forkwell.server")
    logger.addHandler(handler_log)
    logger.setLevel(logging.WARNING if args.quiet else logging.INFO)
    logger.propagate = False

    # Like `python -m`: the handler's module may live in the current directory.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    binds = args.bind or ["127.0.0.1:8000"]
    graceful = 30.0 if args.graceful_timeout is None else args.graceful_timeout
    try:
        if per_conn:
            from .._servers._common import load_handler
            from .._servers._forking import ForkingServer

            server: ForkingServer | PreforkServer = ForkingServer(
                load_handler(args.handler),
                binds,
                max_children=args.max_children or 64,
                timeout=args.timeout or None,
                graceful_timeout=graceful,
            )
            what = "one child per connection"
        elif args.wsgi or _is_wsgi(args.handler):
            server = _wsgi_server(args, args.handler if args.wsgi else _preloaded(args), binds)
            count = server.target
            what = f"WSGI, pre-fork, {count} worker{'s' if count != 1 else ''}"
        elif _wsgi_flags(args):
            p.error(f"{_wsgi_flags(args)[0]} applies to WSGI apps, and {args.handler} is "
                    "not one (give --wsgi if it is)")
        else:
            from .._servers._prefork import PreforkServer

            workers = args.workers or os.cpu_count() or 1
            server = PreforkServer(
                args.handler,
                binds,
                workers=workers,
                reuse_port=args.reuse_port,
                max_requests=args.max_requests,
                max_requests_jitter=args.max_requests_jitter,
                timeout=30.0 if args.timeout is None else (args.timeout or None),
                graceful_timeout=graceful,
                max_boot_failures=args.max_boot_failures,
                log_file=args.log_file,
            )
            what = f"pre-fork, {workers} worker{'s' if workers != 1 else ''}"
    except (HandlerImportError, ValueError, ModuleNotFoundError) as exc:
        # ModuleNotFoundError: the WSGI extra (httptools) is not installed.
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    except BindError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2 if exc.errno == 22 else 1  # EINVAL: a malformed address

    addresses = ", ".join(server.addresses)
    print(f"{prog}: listening on {addresses} ({what}, pid {os.getpid()})", file=sys.stderr)
    sys.stderr.flush()
    try:
        server.serve_forever()
    except WorkerBootError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        # Ctrl-C before the server's own handlers were installed.
        return 130
    print(f"{prog}: stopped", file=sys.stderr)
    return 0
