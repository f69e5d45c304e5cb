"""The WSGI server: a WSGI application served by the pre-fork pool, ``forkwell.serve_wsgi()``.

It is a :class:`~forkwell.PreforkServer` whose handler is a
:class:`WSGIService`: the master, its workers, heartbeats, ``max_requests``,
HUP reload and TTIN/TTOU are the pre-fork server's; what the service adds is
the application (loaded in each worker, or in the master with ``preload``),
the HTTP settings (gunicorn's names) and a
:class:`~forkwell._servers._httpconn.Connection` per accepted socket.

Only this path imports the HTTP parser (``httptools``, the optional extra
``forkwell[wsgi]``); without it, building a server fails with one line
naming ``pip install 'forkwell[wsgi]'``.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._exceptions import HandlerImportError
from ._common import Binds, ConnectionService, Lifeline, Session, import_object, reimport
from ._forwarded import TrustedProxies

if TYPE_CHECKING:
    import socket

    from ._prefork import PreforkServer
    from ._wsgi import Response

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

# gunicorn's bounds for its limits (0 = no limit where gunicorn allows it).
_LIMITS = {
    "limit_request_line": (0, 8190),
    "limit_request_fields": (0, 32768),
    "limit_request_field_size": (0, 1 << 20),
}
# Client I/O is bounded even when workers are not (timeout=None).
_IO_TIMEOUT_WITHOUT_TIMEOUT = 30.0


@dataclass(frozen=True)
class WSGISettings:
    """Everything ``serve_wsgi`` takes besides the app and the addresses (gunicorn's names)."""

    workers: int = 2
    preload: bool = False
    timeout: float | None = 30.0
    graceful_timeout: float = 30.0
    keep_alive: float = 2.0
    worker_connections: int = 1000
    limit_request_line: int = 4094
    limit_request_fields: int = 100
    limit_request_field_size: int = 8190
    max_requests: int = 0
    max_requests_jitter: int = 0
    access_log: str | None = None
    access_log_format: str | None = None
    forwarded_allow_ips: str | None = None
    script_name: str = ""
    reuse_port: bool = False
    backlog: int = 2048
    max_boot_failures: int = 3
    worker_init: Callable[[], object] | None = None
    log_file: str | None = None


def split_spec(spec: str) -> tuple[str, str]:
    """``"pkg.mod:app"`` -> (``"pkg.mod"``, ``"app"``); a bare module means ``:application``."""
    module, sep, attr = spec.partition(":")
    if not module or (sep and not attr):
        raise HandlerImportError(f"bad application {spec!r} (expected MODULE:APP)")
    return module, attr or "application"


def load_app(spec: str) -> WSGIApp:
    """Import ``"MODULE:APP"`` (``APP``: a name, or ``factory()``); it must be callable."""
    module_name, attr = split_spec(spec)
    call = attr.endswith("()")
    obj = import_object(module_name, attr.removesuffix("()"))
    if call:
        try:
            obj = obj()
        except Exception as exc:
            raise HandlerImportError(
                f"{spec}: the factory raised {type(exc).__name__}: {exc}", name=module_name
            ) from exc
    if not callable(obj):
        raise HandlerImportError(f"{spec} is not a WSGI application (not callable)")
    app: WSGIApp = obj
    return app


def looks_like_wsgi(obj: object) -> bool:
    """Whether ``obj`` is called as ``app(environ, start_response)`` (by its parameters' names).

    A ``handler(sock, address)`` callable names its parameters otherwise;
    Flask, Django, Werkzeug, Bottle and plain functions all say
    ``environ, start_response``.
    """
    if isinstance(obj, type) or not callable(obj):
        return False
    import inspect

    try:
        params = list(inspect.signature(obj).parameters)
    except (TypeError, ValueError):
        return False
    return params[:2] == ["environ", "start_response"] or params[1:2] == ["start_response"]


class WSGIService(ConnectionService):
    """A WSGI application and the HTTP settings it is served with, one per server."""

    def __init__(self, app: WSGIApp | str, settings: WSGISettings) -> None:
        from . import _httpconn  # the parser: fails here, in one line, without the extra

        self._connection = _httpconn.Connection
        for name, (low, high) in _LIMITS.items():
            value = getattr(settings, name)
            if not low <= value <= high:
                raise ValueError(f"{name} must be between {low} and {high}, got {value}")
        if settings.keep_alive < 0:
            raise ValueError("keep_alive must be >= 0")
        if settings.worker_connections < 1:
            raise ValueError("worker_connections must be >= 1")
        self.max_sessions = settings.worker_connections
        self.settings = settings
        self.limit_request_line = settings.limit_request_line
        self.limit_request_fields = settings.limit_request_fields
        self.limit_request_field_size = settings.limit_request_field_size
        self.keep_alive = settings.keep_alive
        self.io_timeout = settings.timeout or _IO_TIMEOUT_WITHOUT_TIMEOUT
        self.script_name = settings.script_name.rstrip("/")
        self.proxies = TrustedProxies(settings.forwarded_allow_ips)
        self._access: Any = None
        if settings.access_log is not None:
            from ._accesslog import DEFAULT_FORMAT, AccessLog

            self._access = AccessLog(
                settings.access_log, settings.access_log_format or DEFAULT_FORMAT
            )
        self.spec = app if isinstance(app, str) else None
        self.app: WSGIApp | None = None
        if not isinstance(app, str):
            if not callable(app):
                raise TypeError(f"{app!r} is not a WSGI application (not callable)")
            self.app = app
        elif settings.preload:
            self.app = load_app(app)
        else:
            _check_findable(app)

    def boot(self) -> None:
        if self.app is None:
            assert self.spec is not None
            self.app = load_app(self.spec)

    def reload(self) -> None:
        """HUP with ``preload``: re-import the app's module in the master (new workers fork it)."""
        if self.spec is None or not self.settings.preload:
            return  # not imported here: each new worker imports the code afresh
        reimport(split_spec(self.spec)[0])
        self.app = load_app(self.spec)

    def open(self, conn: socket.socket, address: Any, life: Lifeline) -> Session:
        if self.app is None:  # served outside a pre-fork worker (ForkingServer)
            self.boot()
        connection: Session = self._connection(self, conn, address, life)
        return connection

    def log_access(self, environ: dict[str, Any], response: Response, duration: float) -> None:
        if self._access is not None:
            self._access.write(environ, response, duration)


def _check_findable(spec: str) -> None:
    """Without preload the master never imports the app; a misspelt module still fails here."""
    top = split_spec(spec)[0].partition(".")[0]
    try:
        found = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        found = None
    if found is None:
        raise HandlerImportError(
            f"cannot import {top!r}: ModuleNotFoundError: No module named {top!r}", name=top
        )


def wsgi_server(app: WSGIApp | str, bind: Binds, settings: WSGISettings) -> PreforkServer:
    """A pre-fork server for ``app``, bound and ready for ``serve_forever()``."""
    from ._prefork import PreforkServer

    service = WSGIService(app, settings)
    return PreforkServer(
        service,
        bind,
        workers=settings.workers,
        reuse_port=settings.reuse_port,
        max_requests=settings.max_requests,
        max_requests_jitter=settings.max_requests_jitter,
        timeout=settings.timeout,
        graceful_timeout=settings.graceful_timeout,
        max_boot_failures=settings.max_boot_failures,
        backlog=settings.backlog,
        worker_init=settings.worker_init,
        log_file=settings.log_file,
    )


def serve_wsgi(  # noqa: PLR0913 (gunicorn's settings, by their names)
    app: WSGIApp | str,
    bind: Binds = "127.0.0.1:8000",
    *,
    workers: int = 2,
    preload: bool = False,
    timeout: float | None = 30.0,
    graceful_timeout: float = 30.0,
    keep_alive: float = 2.0,
    worker_connections: int = 1000,
    limit_request_line: int = 4094,
    limit_request_fields: int = 100,
    limit_request_field_size: int = 8190,
    max_requests: int = 0,
    max_requests_jitter: int = 0,
    access_log: str | None = None,
    access_log_format: str | None = None,
    forwarded_allow_ips: str | None = None,
    script_name: str = "",
    reuse_port: bool = False,
    backlog: int = 2048,
    max_boot_failures: int = 3,
    worker_init: Callable[[], object] | None = None,
    log_file: str | None = None,
) -> None:
    """Serve a WSGI application from ``workers`` pre-forked workers until stopped.

    ``app``: the application, or ``"MODULE:APP"`` (``APP`` may be a factory
    call, ``create_app()``), imported in each worker, or once in the master
    with ``preload=True``.  The keywords are gunicorn's settings of the same
    names (docs/servers.md).  Returns once every worker is reaped; raises
    ``BindError``, ``HandlerImportError``, ``WorkerBootError``, or
    ``ModuleNotFoundError`` naming ``pip install 'forkwell[wsgi]'``.
    """
    settings = WSGISettings(
        workers=workers,
        preload=preload,
        timeout=timeout,
        graceful_timeout=graceful_timeout,
        keep_alive=keep_alive,
        worker_connections=worker_connections,
        limit_request_line=limit_request_line,
        limit_request_fields=limit_request_fields,
        limit_request_field_size=limit_request_field_size,
        max_requests=max_requests,
        max_requests_jitter=max_requests_jitter,
        access_log=access_log,
        access_log_format=access_log_format,
        forwarded_allow_ips=forwarded_allow_ips,
        script_name=script_name,
        reuse_port=reuse_port,
        backlog=backlog,
        max_boot_failures=max_boot_failures,
        worker_init=worker_init,
        log_file=log_file,
    )
    wsgi_server(app, bind, settings).serve_forever()
