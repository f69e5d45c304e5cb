"""What each URL answers, and who may ask: the web endpoint's application.

Every request passes the same gate, in this order (docs/web.md, "Security"):
the ``Host`` check on a loopback address (DNS rebinding), a wrong bearer
token (401, wherever it is sent), the token when reading needs one, then
the route.  Actions also need ``http_actions``, a request not sent by
another site, and the token: as a bearer header, or the page's session
plus its CSRF token.  No GET acts: an action's URL answers GET with 405.

The JSON comes from the control server's own handlers
(:class:`~forkwell._supervisor._control._handlers.Handlers`): ``/api/v1/programs``
is ``forkwell ps --json``'s document, and an action's answer is the
control protocol's ``results``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote

from ..._core._files import tail
from ..._exceptions import UnknownProgramError
from .._control._protocol import healthy_row as _healthy
from . import _metrics, _page
from ._auth import SESSION_SECONDS, cookie, cross_site, host_is_loopback
from ._http import Request, Response, StreamResponse

if TYPE_CHECKING:
    import asyncio
    from pathlib import Path
    from typing import Protocol

    from .._config import Config
    from .._control._handlers import Handlers, SupervisorLike
    from ._auth import Guard
    from ._http import Stream
    from ._live import Live

    class WebSupervisor(SupervisorLike, Protocol):
        """The part of ``Supervisor`` the web endpoint uses (beyond the control handlers')."""

        @property
        def config(self) -> Config: ...
        @property
        def socket_path(self) -> Path: ...
        @property
        def up(self) -> asyncio.Event: ...
        def background(self, coro: object) -> None: ...

    Handler = Callable[..., Awaitable[Response | StreamResponse]]

JSON = "application/json"
HTML = "text/html; charset=utf-8"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY = (
    ("x-content-type-options", "nosniff"),
    # Not "no-referrer": under it a browser sends "Origin: null" with the page's
    # own form POSTs, which cross_site() must refuse.  "same-origin" still
    # tells no other site anything (found by tests/test_web_browser.py).
    ("referrer-policy", "same-origin"),
    ("x-frame-options", "DENY"),
    ("cross-origin-resource-policy", "same-origin"),
    ("cache-control", "no-store"),
)
#: Answered without the token even where reading needs one: Kubernetes' probes
#: cannot carry a secret, and the login page and its assets must load.
OPEN = frozenset({"/healthz", "/readyz", "/login", "/static/forkwell.js", "/static/forkwell.css"})
MAX_LOG_LINES = 5000
_STATUS = {"unknown_name": 404, "bad_request": 400, "failed": 409, "config": 409}
_NAME = re.compile(r"[A-Za-z0-9_:-]{1,200}\Z")


def json_response(status: int, data: Any, headers: tuple[tuple[str, str], ...] = ()) -> Response:
    body = json.dumps(data, separators=(",", ":")).encode() + b"\n"
    return Response(status, body, JSON, SECURITY + headers)


def html_response(status: int, text: str, headers: tuple[tuple[str, str], ...] = ()) -> Response:
    return Response(status, text.encode(), HTML, (*SECURITY, ("content-security-policy", CSP),
                                                  *headers))  # fmt: skip


def _redirect(location: str, *headers: tuple[str, str]) -> Response:
    return Response(303, b"", "text/plain; charset=utf-8", (*SECURITY, ("location", location),
                                                           *headers))  # fmt: skip


def _form(req: Request) -> dict[str, str]:
    if not req.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        return {}
    return dict(parse_qsl(req.body.decode("utf-8", "replace"), max_num_fields=16))


def _flag(value: str | None, default: bool) -> bool:
    if value is None:
        return default
    return value.lower() not in ("0", "false", "no", "off")


class WebApp:
    """The routes of one web endpoint."""

    def __init__(  # noqa: PLR0913 (the parts it is made of, each named)
        self,
        sup: WebSupervisor,
        handlers: Handlers,
        live: Live,
        guard: Guard,
        *,
        check_host: bool,
        counters: Callable[[], Mapping[str, int]],
        start_time: float,
    ) -> None:
        self.sup = sup
        self.handlers = handlers
        self.live = live
        self.guard = guard
        self.check_host = check_host  # loopback TCP: Host must name a loopback host
        self.counters = counters
        self.start_time = start_time
        self.note: Callable[[str], None] = lambda text: None
        self._exact: dict[str, dict[str, Handler]] = {
            "/": {"GET": self.page},
            "/healthz": {"GET": self.healthz},
            "/readyz": {"GET": self.readyz},
            "/metrics": {"GET": self.metrics},
            "/api/v1/programs": {"GET": self.programs},
            "/api/v1/events": {"GET": self.events},
            "/login": {"GET": self.login_form, "POST": self.login},
            "/logout": {"POST": self.logout},
        }
        self._prefixed: list[tuple[str, dict[str, Handler]]] = [
            ("/api/v1/programs/", {"GET": self.program}),
            ("/api/v1/logs/", {"GET": self.follow}),
            ("/logs/", {"GET": self.log_view}),
            ("/static/", {"GET": self.asset}),
        ]

    async def __call__(self, req: Request) -> Response | StreamResponse:
        if self.check_host and not host_is_loopback(req.headers.get("host")):
            return self._error(req, 403, "forbidden_host",
                               f"Host {req.headers.get('host', '')!r} is not a loopback name; "
                               "use http://127.0.0.1:PORT/ or http://localhost:PORT/")  # fmt: skip
        authorization = req.headers.get("authorization")
        if authorization and not self.guard.bearer_ok(authorization):
            return self._unauthorized(req, "wrong token")
        who, session = self._who(req, authorization)
        if self.guard.read_needs_token and not who and req.path not in OPEN:
            return self._unauthorized(req, "this address needs the token, even to read")
        found = self._route(req.path)
        if found is None:
            return self._error(req, 404, "not_found", f"no such page: {req.path}")
        methods, args = found
        handler = methods.get("GET" if req.method == "HEAD" else req.method)
        if handler is None:
            allow = ", ".join(sorted({*methods, "HEAD"} if "GET" in methods else methods))
            return self._error(req, 405, "method_not_allowed",
                               f"{req.method} is not allowed here (only {allow})",
                               (("allow", allow),))  # fmt: skip
        return await handler(req, who, session, *args)

    def _who(self, req: Request, authorization: str | None) -> tuple[str, str]:
        """``("token", "")`` for a bearer, ``("session", value)`` for a logged-in page."""
        if authorization:
            return "token", ""
        value = cookie(req.headers, self.guard.cookie_name)
        if value and self.guard.session_ok(value):
            return "session", value
        return "", ""

    def _route(self, path: str) -> tuple[dict[str, Handler], tuple[str, ...]] | None:
        if path in self._exact:
            return self._exact[path], ()
        for prefix, methods in self._prefixed:
            if not path.startswith(prefix) or len(path) == len(prefix):
                continue
            rest = path[len(prefix) :]
            if prefix == "/api/v1/programs/" and "/" in rest:
                name, _, action = rest.partition("/")
                if action in _page.ACTIONS:
                    return {"POST": self.act}, (name, action)
                return None
            return None if "/" in rest else (methods, (rest,))
        return None

    # -- answers -------------------------------------------------------------

    def _error(
        self,
        req: Request,
        status: int,
        code: str,
        message: str,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> Response:
        if req.path.startswith("/api/") or req.path in ("/readyz", "/metrics"):
            return json_response(status, {"error": {"code": code, "message": message}}, headers)
        return Response(status, f"{message}\n".encode(), "text/plain; charset=utf-8",
                        SECURITY + headers)  # fmt: skip

    def _unauthorized(self, req: Request, why: str) -> Response:
        challenge = (("www-authenticate", 'Bearer realm="forkwell"'),)
        if req.method == "GET" and not req.path.startswith("/api/") and req.path != "/metrics":
            return html_response(401, _page.login_page(why), challenge)
        return self._error(req, 401, "unauthorized", f"{why}: send Authorization: Bearer TOKEN",
                           challenge)  # fmt: skip

    async def _ps(self, names: list[str] | None) -> dict[str, Any]:
        """``forkwell ps``'s result, from the control server's own handler."""
        return await self.handlers.ps({"names": names} if names else {}, None)

    # -- pages ---------------------------------------------------------------

    async def page(self, req: Request, who: str, session: str) -> Response:
        doc = await self._ps(None)
        auth = _page.Auth(
            actions=self.guard.actions,
            session=bool(session),
            csrf=self.guard.csrf_for(session) if session else "",
            login=self.guard.token is not None,
        )
        ring = self.live.ring
        events = [ring[i] for i in range(max(0, len(ring) - 20), len(ring))]
        view = _page.View(doc, self._programs(), events, self.live.seq, auth, _notice(req.query))
        return html_response(200, _page.status_page(view))

    def _programs(self) -> list[_page.Program]:
        config = self.sup.config
        return [
            _page.Program(name, n, config.programs[name].depends_on, tuple(config.dependents(name)))
            for n, name in enumerate(config.start_order(), 1)
        ]

    async def log_view(self, req: Request, who: str, session: str, name: str) -> Response:
        stream = req.query.get("stream", "stdout")
        if stream not in ("stdout", "stderr"):
            return self._error(req, 400, "bad_request", "stream must be stdout or stderr")
        try:
            n = max(1, min(MAX_LOG_LINES, int(req.query.get("n", "500"))))
        except ValueError:
            return self._error(req, 400, "bad_request", "n must be a number of lines")
        query = req.query.get("q", "")[:200]
        try:
            path = self.sup.log_path(name, stream)
        except UnknownProgramError as exc:
            return self._error(req, 404, "unknown_name", str(exc.args[0]))
        lines = tail(path, n, max_bytes=n * 1024)
        pattern = _page.search(query)
        found = [ln for ln in lines if pattern.search(ln)] if pattern else lines
        view = _page.LogView(name, stream, path, found, query, len(lines), n)
        return html_response(200, _page.log_page(view))

    async def login_form(self, req: Request, who: str, session: str) -> Response:
        if self.guard.token is None:
            return self._error(req, 404, "not_found", "there is no token to log in with")
        return html_response(200, _page.login_page("log in with the token"))

    async def login(self, req: Request, who: str, session: str) -> Response:
        if self.guard.token is None:
            return self._error(req, 404, "not_found", "there is no token to log in with")
        if cross_site(req.headers):
            return self._error(req, 403, "cross_site", "a login from another site is refused")
        value = self.guard.login(_form(req).get("token", ""))
        if value is None:
            self.note(f"http: failed login from {req.peer or 'the Unix socket'}")
            return html_response(401, _page.login_page("wrong token"))
        name = self.guard.cookie_name
        attrs = f"HttpOnly; SameSite=Strict; Path=/; Max-Age={SESSION_SECONDS}"
        return _redirect("/", ("set-cookie", f"{name}={value}; {attrs}"))

    async def logout(self, req: Request, who: str, session: str) -> Response:
        if not session or cross_site(req.headers) or not self.guard.csrf_ok(
            session, _form(req).get("csrf")
        ):
            return self._error(req, 403, "forbidden", "log out from the page itself")
        gone = f"{self.guard.cookie_name}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"
        return _redirect("/", ("set-cookie", gone))

    async def asset(self, req: Request, who: str, session: str, name: str) -> Response:
        found = _page.asset(name)
        if found is None:
            return self._error(req, 404, "not_found", f"no such file: {req.path}")
        body, kind = found
        return Response(200, body, kind, SECURITY)

    # -- the API -------------------------------------------------------------

    async def programs(self, req: Request, who: str, session: str) -> Response:
        doc = await self._ps(None)
        programs = [
            {"name": p.name, "order": p.order, "depends_on": list(p.depends_on),
             "needed_by": list(p.needed_by)}
            for p in self._programs()
        ]  # fmt: skip
        return json_response(200, {"version": 1, **doc, "programs": programs})

    async def program(self, req: Request, who: str, session: str, name: str) -> Response:
        try:
            doc = await self._ps([name])
        except UnknownProgramError as exc:
            return self._error(req, 404, "unknown_name", str(exc.args[0]))
        return json_response(200, {"version": 1, **doc})

    async def events(self, req: Request, who: str, session: str) -> StreamResponse:
        raw = req.headers.get("last-event-id") or req.query.get("since")
        since = int(raw) if raw and raw.isdigit() else None
        cells = _flag(req.query.get("cells"), False)
        stats = _flag(req.query.get("stats"), False)

        def start(stream: Stream) -> None:
            self.live.watch(stream, cells=cells, stats=stats, since=since)

        return StreamResponse(start, SECURITY)

    async def follow(
        self, req: Request, who: str, session: str, name: str
    ) -> Response | StreamResponse:
        stream_name = req.query.get("stream", "stdout")
        if stream_name not in ("stdout", "stderr"):
            return self._error(req, 400, "bad_request", "stream must be stdout or stderr")
        try:
            path = self.sup.log_path(name, stream_name)
            merged = stream_name == "stderr" and path == self.sup.log_path(name, "stdout")
        except UnknownProgramError as exc:
            return self._error(req, 404, "unknown_name", str(exc.args[0]))
        key = "stdout" if merged else stream_name  # redirect_stderr: one stream
        first = req.query.get("tail", "0")
        n = min(MAX_LOG_LINES, int(first)) if first.isdigit() else 0
        lines = tail(path, n, max_bytes=1 << 22) if n else []

        def start(stream: Stream) -> None:
            from ._live import sse

            if lines:
                stream.send(sse("output", {"text": "\n".join(lines) + "\n"}))
            self.live.follow(name, key, stream)

        return StreamResponse(start, SECURITY)

    async def healthz(self, req: Request, who: str, session: str) -> Response:
        return Response(200, b"ok\n", "text/plain; charset=utf-8", SECURITY)

    async def readyz(self, req: Request, who: str, session: str) -> Response:
        doc = await self._ps(None)
        waiting = [r["name"] for r in doc["instances"] if r["autostart"] and not _healthy(r)]
        starting = not self.sup.up.is_set()
        ready = not starting and not waiting
        body: dict[str, Any] = {
            "ready": ready,
            "starting": starting,
            "not_ready_count": len(waiting),
        }
        if who or not self.guard.read_needs_token:
            body["not_ready"] = waiting
        return json_response(200 if ready else 503, body)

    async def metrics(self, req: Request, who: str, session: str) -> Response:
        infos = self.sup.instances()
        ready = self.sup.up.is_set() and all(
            _healthy({"state": i.state, "last_exit": i.last_exit}) for i in infos if i.autostart
        )
        stats = _metrics.SupervisorStats(
            self.start_time, len(self.sup.config.programs), ready, self.live.seq, self.counters()
        )
        families = [
            *_metrics.instance_families(infos, self.live.failed_starts),
            *_metrics.supervisor_families(stats, len(infos)),
        ]
        return Response(200, _metrics.render(families), _metrics.CONTENT_TYPE, SECURITY)

    async def act(
        self, req: Request, who: str, session: str, name: str, action: str
    ) -> Response:
        form = _form(req)
        refused = self._refuse_action(req, who, session, form)
        if refused is not None:
            return refused
        browser = "text/html" in req.headers.get("accept", "")
        wait = _flag(req.query.get("wait", form.get("wait")), not browser)
        reply = await self.handlers.answer(action, {"names": [name], "wait": wait}, None)
        by = f"{'the token' if who == 'token' else 'a page session'} from {req.peer or 'unix'}"
        if not reply["ok"]:
            code, message = reply["error"]["code"], reply["error"]["message"]
            self.note(f"http: {action} {name} by {by} refused: {message}")
            return self._error(req, _STATUS.get(code, 500), code, message)
        results = reply["result"]["results"]
        ok = all(r["ok"] for r in results)
        self.note(f"http: {action} {name} by {by}: {'ok' if ok else 'failed'}")
        if browser:
            return _redirect(f"/?done={action}&name={quote(name, safe=':')}&ok={int(ok)}")
        return json_response(200, {"ok": ok, "results": results})

    def _refuse_action(
        self, req: Request, who: str, session: str, form: dict[str, str]
    ) -> Response | None:
        """Why this POST may not act (None: it may)."""
        if not self.guard.actions:
            why = "actions are off: set http_actions = true in [supervisor]"
            return self._error(req, 403, "actions_off", why)
        if cross_site(req.headers):
            return self._error(req, 403, "cross_site", "an action sent by another site is refused")
        if not who:
            return self._unauthorized(req, "actions need the token")
        csrf = req.headers.get("x-csrf-token") or form.get("csrf")
        if who == "session" and not self.guard.csrf_ok(session, csrf):
            return self._error(req, 403, "csrf", "missing or wrong CSRF token: act from the page")
        return None


def _notice(query: Mapping[str, str]) -> str:
    """The line a page shows after an action sent without JavaScript (fixed words only)."""
    action, name = query.get("done", ""), query.get("name", "")
    if action not in _page.ACTIONS or not _NAME.match(name):
        return ""
    if query.get("ok") == "1":
        return f"{action} {name}: requested"
    return f"{action} {name}: failed; see the events below"
