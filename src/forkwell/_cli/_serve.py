"""``forkwell serve``: parse, build a ForkingServer or PreforkServer, report."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from ._options import DURATION, Command, Operand, Option, at_least, keyword_default
from ._options import show_seconds as _show_seconds
from ._parser import parse_or_report as _parse_or_report
from ._parser import report_usage as _report_usage

if TYPE_CHECKING:
    from .._servers._forking import ForkingServer
    from .._servers._prefork import PreforkServer


def _library(name: str, show: Callable[[Any], str] = str, *, modes: int = 2) -> Callable[[], str]:
    """A default of the servers (the first ``modes``), as the help shows it: one, or each's."""

    def load() -> str:
        from .._servers._forking import ForkingServer
        from .._servers._prefork import PreforkServer

        values = {}
        for label, cls in (("pre-fork", PreforkServer), ("per-connection", ForkingServer))[:modes]:
            try:
                values[label] = show(keyword_default(cls, name))
            except (KeyError, ValueError):
                continue  # a setting of one mode only
        if len(set(values.values())) == 1:
            return next(iter(values.values()))
        return ", ".join(f"{label} {value}" for label, value in values.items())

    return load


def _wsgi_default(name: str, show: Callable[[Any], str] = str) -> Callable[[], str]:
    """A default of forkwell.serve_wsgi, as the help shows it."""

    def load() -> str:
        from .._servers._wsgiserver import serve_wsgi

        return show(keyword_default(serve_wsgi, name))

    return load


def _trusted_default() -> str:
    from .._servers._forwarded import DEFAULT

    return DEFAULT


_POSITIVE = at_least(1)
_COUNT = at_least(0)

_WSGI_OPTIONS = (
    Option(("--wsgi",), None,
           "MODULE:HANDLER is a WSGI app (also detected: app(environ, start_response)); "
           "APP may be a factory call, create_app()"),
    Option(("--preload",), None,
           "WSGI: import the app once in the master, before forking (default: in each "
           "worker; HUP then re-imports all the code)"),
    Option(("--keep-alive",), "S",
           "WSGI: keep an idle connection S for its next request (default {keep_alive}; "
           "0: one request per connection)", DURATION),
    Option(("--worker-connections",), "N",
           "WSGI: at most N connections per worker (default {worker_connections})",
           _POSITIVE),
    Option(("--limit-request-line",), "N",
           "WSGI: longest request target (default {limit_request_line}; 0: none)",
           _COUNT),
    Option(("--limit-request-fields",), "N",
           "WSGI: most header fields (default {limit_request_fields})", _COUNT),
    Option(("--limit-request-field_size", "--limit-request-field-size"), "N",
           "WSGI: largest header field (default {limit_request_field_size})", _COUNT),
    Option(("--access-logfile", "--access-log"), "PATH",
           "WSGI: a line per response to PATH ('-': stdout)"),
    Option(("--access-logformat", "--access-log-format"), "FMT",
           "WSGI: the line, in gunicorn's %(h)s-style atoms"),
    Option(("--forwarded-allow-ips",), "IPS",
           "WSGI: proxies trusted for X-Forwarded-*/Forwarded (default "
           "{forwarded_allow_ips}; '*': all)"),
)  # fmt: skip
# Given without --wsgi, they make sense only if MODULE:HANDLER is a WSGI app.
_WSGI_ONLY = tuple(option for option in _WSGI_OPTIONS if option.long != "--wsgi")

SERVE = Command(
    "serve",
    description="""\
Serve a socketserver request handler (or a callable handler(sock, address))
from pre-forked workers (default) or one forked child per connection; or a
WSGI application (--wsgi, or any callable app(environ, start_response)) over
HTTP/1.1 from pre-forked workers, with gunicorn's option names (WSGI needs
the extra: pip install 'forkwell[wsgi]').""",
    options=(
        Option(("-w", "--workers"), "N", "pre-fork N workers (default: the number of CPUs)",
               _POSITIVE),
        Option(("--per-connection",), None,
               "fork one child per connection instead of pre-forking"),
        Option(("-b", "--bind"), "ADDR",
               "HOST:PORT, [IPV6]:PORT or unix:PATH; repeatable (default {bind})", repeat=True),
        Option(("--max-requests",), "N",
               "pre-fork: replace a worker after N connections (default {max_requests}; 0: never)",
               _COUNT),
        Option(("--max-requests-jitter",), "N",
               "pre-fork: add 0..N at random to --max-requests, per worker (default {jitter})",
               _COUNT),
        Option(("--timeout",), "S",
               "pre-fork: kill and replace a worker silent for S (default {timeout}); "
               "per-connection: kill a child after S (default: no limit); 0: no limit",
               DURATION),
        Option(("--graceful-timeout",), "S",
               "on TERM/reload, let connections finish for S, then kill (default {graceful})",
               DURATION),
        Option(("--max-children",), "N",
               "per-connection: at most N children; more connections wait (default "
               "{max_children})", _POSITIVE),
        Option(("--reuse-port",), None,
               "pre-fork: one SO_REUSEPORT socket per worker instead of a shared one"),
        Option(("--max-boot-failures",), "N",
               "pre-fork: halt after N workers in a row fail to boot (default {boot_failures})",
               _POSITIVE),
        Option(("--log-file",), "PATH",
               "pre-fork: append stdout/stderr to PATH, reopened on USR1"),
        Option(("-q", "--quiet"), None, "log warnings and errors only"),
        *_WSGI_OPTIONS,
    ),
    operands=(Operand("MODULE:HANDLER", "e.g. http.server:SimpleHTTPRequestHandler, or a "
                      "WSGI app: myproject.wsgi:application", dest="handler"),),
    notes="""\
Signals (pre-fork): HUP reload (re-imports MODULE), TTIN/TTOU one worker
more/less, TERM graceful stop, INT/QUIT fast stop, USR1 reopen --log-file.
Per-connection: TERM graceful stop, INT/QUIT fast stop.""",
    exits=(
        ("0", "stopped by a signal"),
        ("1", "cannot listen (address in use, permission)"),
        ("2", "bad usage (options, bind address, MODULE:HANDLER, the WSGI extra missing)"),
        ("3", "workers failed to boot --max-boot-failures times in a row"),
    ),
    examples=(
        "forkwell serve http.server:SimpleHTTPRequestHandler --bind 127.0.0.1:8000 --workers 4",
        "forkwell serve --per-connection --bind unix:/tmp/echo.sock myapp:handle",
        "forkwell serve myproject.wsgi:application --wsgi --workers 4",
    ),
    facts={
        "bind": _library("bind"),
        "max_requests": _library("max_requests"),
        "jitter": _library("max_requests_jitter"),
        "timeout": _library("timeout", _show_seconds, modes=1),
        "graceful": _library("graceful_timeout", _show_seconds),
        "max_children": _library("max_children"),
        "boot_failures": _library("max_boot_failures"),
        "keep_alive": _wsgi_default("keep_alive", _show_seconds),
        **{name: _wsgi_default(name) for name in ("worker_connections", "limit_request_line",
                                                  "limit_request_fields",
                                                  "limit_request_field_size")},
        "forwarded_allow_ips": _trusted_default,
    },
)  # fmt: skip
DECLARED = {"serve": SERVE}

# Options of one mode: (attribute, spelling); given with the other mode, a usage error.
_PREFORK_ONLY = (("workers", "--workers"), ("max_requests", "--max-requests"),
                 ("max_requests_jitter", "--max-requests-jitter"), ("reuse_port", "--reuse-port"),
                 ("log_file", "--log-file"))  # fmt: skip


def main(argv: list[str], *, prog: str, command: str) -> int:
    args = _parse_or_report(SERVE, argv, prog)
    if isinstance(args, int):
        return args
    mixed = _mixed_modes(args)
    if mixed:
        return _report_usage(SERVE, prog, mixed)
    _log_to_stderr(prog, args.quiet)
    # Like `python -m`: the handler's module may live in the current directory.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    built = _server(prog, args)
    if isinstance(built, int):
        return built
    return _serve(prog, *built)


def _mixed_modes(args: SimpleNamespace) -> str:
    """What is wrong with asking for both modes at once ("" if nothing)."""
    if args.per_connection:
        for key, flag in _PREFORK_ONLY:
            if getattr(args, key):
                return f"{flag} applies to pre-fork workers, not --per-connection"
        wsgi = ["--wsgi"] if args.wsgi else _wsgi_given(args)
        if wsgi:
            return f"{wsgi[0]} applies to WSGI apps, served by pre-forked workers, not " \
                   "--per-connection"
    elif args.max_children is not None:
        return "--max-children applies to --per-connection only"
    return ""


def _wsgi_given(args: SimpleNamespace) -> list[str]:
    """The WSGI options on the command line, by their names."""
    return [option.long for option in _WSGI_ONLY if getattr(args, option.key) not in (None, False)]


def _log_to_stderr(prog: str, quiet: bool) -> None:
    import logging

    handler_log = logging.StreamHandler(sys.stderr)
    handler_log.setFormatter(logging.Formatter(f"{prog}[%(process)d]: %(message)s"))
    logger = logging.getLogger("forkwell.server")
    logger.addHandler(handler_log)
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    logger.propagate = False


def _given(args: SimpleNamespace, *keys: str) -> dict[str, Any]:
    """The settings given on the command line; the others keep the library's defaults."""
    settings = {key: getattr(args, key) for key in keys if getattr(args, key) is not None}
    if "timeout" in settings:
        settings["timeout"] = settings["timeout"] or None  # 0: no limit
    if args.bind:
        settings["bind"] = args.bind
    return settings


def _server(prog: str, args: SimpleNamespace) -> tuple[ForkingServer | PreforkServer, str] | int:
    """The listening server and its mode in words, or the exit status once the reason is printed."""
    from .._exceptions import BindError, HandlerImportError

    try:
        if args.per_connection:
            from .._servers._common import load_handler
            from .._servers._forking import ForkingServer

            settings = _given(args, "max_children", "timeout", "graceful_timeout")
            return ForkingServer(load_handler(args.handler), **settings), "one child per connection"
        if args.wsgi or _is_wsgi(args.handler):
            return _wsgi_server(args)
        if _wsgi_given(args):
            return _report_usage(SERVE, prog, f"{_wsgi_given(args)[0]} applies to WSGI apps, and "
                                 f"{args.handler} is not one (give --wsgi if it is)")
        from .._servers._prefork import PreforkServer

        settings = _given(args, "max_requests", "max_requests_jitter", "timeout",
                          "graceful_timeout", "max_boot_failures", "log_file")  # fmt: skip
        workers = args.workers or os.cpu_count() or 1
        server = PreforkServer(args.handler, workers=workers, reuse_port=args.reuse_port,
                               **settings)  # fmt: skip
        return server, f"pre-fork, {workers} worker{'s' if workers != 1 else ''}"
    except (HandlerImportError, ValueError, ModuleNotFoundError) as exc:
        # ModuleNotFoundError: the WSGI extra (httptools) is not installed.
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    except BindError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2 if exc.errno == 22 else 1  # EINVAL: a malformed address


def _is_wsgi(spec: str) -> bool:
    """Without --wsgi: whether the handler is a WSGI app (imported here to look at it)."""
    from .._servers._common import load_handler
    from .._servers._wsgiserver import looks_like_wsgi

    return looks_like_wsgi(load_handler(spec))


def _wsgi_server(args: SimpleNamespace) -> tuple[PreforkServer, str]:
    """The WSGI server the options ask for; ``forkwell serve`` defaults to a worker per CPU.

    Detected (no --wsgi), the app was imported in the master to look at it:
    it is preloaded, as --preload would have it (and HUP re-imports it there).
    """
    from .._servers._wsgiserver import WSGISettings, serve_wsgi, wsgi_server

    settings = _given(args, "max_requests", "max_requests_jitter", "timeout", "graceful_timeout",
                      "max_boot_failures", "log_file", *(o.key for o in _WSGI_ONLY))  # fmt: skip
    bind = settings.pop("bind", None) or keyword_default(serve_wsgi, "bind")
    workers = args.workers or os.cpu_count() or 1
    settings.update(workers=workers, reuse_port=args.reuse_port,
                    preload=args.preload or not args.wsgi)  # fmt: skip
    server = wsgi_server(args.handler, bind, WSGISettings(**settings))
    return server, f"WSGI, pre-fork, {workers} worker{'s' if workers != 1 else ''}"


def _serve(prog: str, server: ForkingServer | PreforkServer, what: str) -> int:
    from .._exceptions import WorkerBootError

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
