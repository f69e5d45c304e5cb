"""The ``http`` setting: where the web endpoint listens, and whether that is private.

``"127.0.0.1:9100"``, ``"[::1]:9100"``, ``"localhost:9100"``, ``"0.0.0.0:9100"``
or ``"unix:PATH"``.  A loopback address or a Unix socket is reachable from this
machine only, so reading needs no token there; anything else needs one
(:mod:`._auth`).  A host name other than ``localhost`` counts as not
loopback: what it resolves to may change.

Standard library only, and cheap to import: the config imports it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import NamedTuple

FORMS = "'HOST:PORT' (e.g. '127.0.0.1:9100', '[::1]:9100') or 'unix:PATH'"
EXTRA = "pip install 'forkwell[web]'"
_HOST_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?\Z")


class HttpAddress(NamedTuple):
    """Where the web endpoint listens: ``host`` and ``port``, or the Unix socket ``path``."""

    host: str | None
    port: int
    path: Path | None

    @property
    def loopback(self) -> bool:
        """Reachable from this machine only: a Unix socket, ``localhost`` or a loopback IP."""
        if self.path is not None:
            return True
        assert self.host is not None
        if self.host.lower() == "localhost":
            return True
        import ipaddress

        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False  # a host name: it may resolve to anything

    def url(self, port: int | None = None) -> str:
        """How a person reaches it (``port``: the one bound, when 0 was asked for)."""
        if self.path is not None:
            return f"unix:{self.path}"
        assert self.host is not None
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port if port is None else port}/"

    def __str__(self) -> str:
        return self.url()


def parse_http(text: str, base: Path) -> HttpAddress:
    """The address in ``text``; a relative Unix socket path is relative to ``base``.

    Raises ``ValueError`` saying what was expected.
    """
    if text.startswith("unix:"):
        path = text[5:]
        if not path:
            raise ValueError(f"expected {FORMS}, got {text!r} (no path after 'unix:')")
        return HttpAddress(None, 0, (base / os.path.expanduser(path)).absolute())
    host, colon, port = text.rpartition(":")
    if not colon or not host:
        raise ValueError(f"expected {FORMS}, got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if ":" not in host:
            raise ValueError(f"expected {FORMS}, got {text!r} (brackets are for IPv6 only)")
    elif ":" in host:
        raise ValueError(f"expected {FORMS}, got {text!r} (put an IPv6 address in brackets)")
    if not _valid_host(host):
        raise ValueError(f"expected {FORMS}, got {text!r} (invalid host {host!r})")
    if not port.isdigit() or int(port) > 65535:
        raise ValueError(f"expected {FORMS}, got {text!r} (the port must be 0-65535)")
    return HttpAddress(host, int(port), None)


def _valid_host(host: str) -> bool:
    if ":" in host:
        import ipaddress

        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return False
        return True
    return bool(_HOST_NAME.match(host))


def have_h11() -> bool:
    """Whether the web extra (h11, the HTTP parser) is installed."""
    import importlib.util

    return importlib.util.find_spec("h11") is not None
