"""The web endpoint as a whole: made, started and closed by ``Supervisor.run``.

It is imported only when ``http`` is set, once the event loop runs (h11 and
the rest come with it).  It starts before the autostart programs, so the
page shows them starting, and closes after the last one stopped, so it shows
them stopping.  At start-up it says where it listens and who may do what.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from ..._exceptions import ForkwellError
from .._control._handlers import Handlers
from ._auth import COOKIE, Guard, read_token
from ._http import HttpServer, Limits
from ._live import Live
from ._page import cells
from ._routes import WebApp

if TYPE_CHECKING:
    from .._events import EventLog
    from ._routes import WebSupervisor


class WebServer:
    """The status page, API, metrics and health endpoints of one supervisor."""

    def __init__(
        self, sup: WebSupervisor, log: EventLog, limits: Limits | None = None
    ) -> None:
        settings = sup.config.supervisor
        address = settings.http
        assert address is not None
        self.address = address
        self.token_file = settings.http_token_file
        token = None
        if self.token_file is not None:
            try:
                token = read_token(self.token_file)
            except ValueError as exc:  # changed since the config was read
                raise ForkwellError(f"http_token_file: {exc}") from None
        self._log = log
        self.handlers = Handlers(sup, sup.socket_path)
        self.live = Live(asyncio.get_running_loop(), self._snapshot, cells, sup.background)
        self.guard = Guard(token, private=address.loopback, actions=settings.http_actions)
        self.app = WebApp(
            sup,
            self.handlers,
            self.live,
            self.guard,
            check_host=address.path is None and address.loopback,
            counters=self._counters,
            start_time=time.time(),
        )
        self.app.note = log.note
        self.http = HttpServer(self.app, address, limits, on_error=log.note)

    async def _snapshot(self, names: list[str] | None) -> dict[str, Any]:
        return await self.handlers.ps({"names": names} if names else {}, None)

    def _counters(self) -> dict[str, int]:
        http = self.http
        return {
            "connections": http.connections,
            "streams": http.streams,
            "requests": http.requests,
            "refused": http.refused,
            "rejected": http.rejected,
        }

    @property
    def url(self) -> str:
        return self.http.url

    async def start(self) -> None:
        """Listen, follow the event log (from its first event), and say so."""
        await self.http.start()
        if self.address.path is None:
            # Cookies are not kept apart by port: one name per supervisor on a host.
            self.guard.cookie_name = f"{COOKIE}_{self.http.port}"
        for event in self._log.events:  # what prestart() spawned before the loop ran
            self.live.transition(event)
        self._log.listeners.append(self.live.transition)
        self._log.output_listeners.append(self.live.output)
        self._log.note(self.banner())

    def banner(self) -> str:
        """Where it listens and who may do what, in one line."""
        token = f"the token in {self.token_file}"
        if not self.guard.private:
            reading = (
                f"not a loopback address, so every request needs {token} "
                "(Authorization: Bearer, or the page's login)"
            )
        else:
            reading = "read-only without a token (loopback)"
        acting = f"; start/stop/restart with {token}" if self.guard.actions else "; no actions"
        return f"http: serving {self.url}: {reading}{acting}"

    async def close(self) -> None:
        """Stop following the log and close every connection."""
        if self.live.transition in self._log.listeners:
            self._log.listeners.remove(self.live.transition)
            self._log.output_listeners.remove(self.live.output)
        self.live.close()
        await self.http.close()
