"""The WSGI server's access log: one line per response, in gunicorn's format and atoms.

``access_log_format`` is a ``%``-format over gunicorn's atoms; the default
is gunicorn's (the common log format plus referrer and user agent, i.e.
"combined"):

====================  =================================================
``h``                 remote address (``-`` for a Unix-socket peer)
``l``, ``u``          ``-``, and ``REMOTE_USER`` or ``-``
``t``                 ``[10/Oct/2000:13:55:36 +0000]``
``r``, ``m``, ``U``   request line, method, path without the query
``q``, ``H``          query string, protocol
``s``, ``B``, ``b``   status, body bytes, body bytes or ``-`` when none
``f``, ``a``          referrer, user agent
``T``, ``M``, ``D``   duration in seconds, milliseconds, microseconds
``L``                 duration in decimal seconds
``p``                 worker pid
``{name}i``           a request header, ``{name}o`` a response header,
``{name}e``           an ``environ`` key
====================  =================================================

Atoms are computed only when the format asks for them.  Lines go through
the ``forkwell.access`` logger to a file (reopened on SIGUSR1 like every
``logging.FileHandler``) or, for ``"-"``, to stdout.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._wsgi import Response

DEFAULT_FORMAT = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'


def _request_line(env: dict[str, Any]) -> str:
    return f"{env['REQUEST_METHOD']} {env['RAW_URI']} {env['SERVER_PROTOCOL']}"


_ENV_ATOMS: dict[str, Callable[[dict[str, Any]], str]] = {
    "h": lambda env: env.get("REMOTE_ADDR") or "-",
    "l": lambda env: "-",
    "u": lambda env: env.get("REMOTE_USER") or "-",
    "r": _request_line,
    "m": lambda env: env["REQUEST_METHOD"],
    "U": lambda env: env["PATH_INFO"],
    "q": lambda env: env["QUERY_STRING"],
    "H": lambda env: env["SERVER_PROTOCOL"],
    "f": lambda env: env.get("HTTP_REFERER", "-"),
    "a": lambda env: env.get("HTTP_USER_AGENT", "-"),
}


class _Atoms(dict[str, str]):
    """The atoms of one response, each computed the first time the format asks."""

    def __init__(self, env: dict[str, Any], response: Response, duration: float) -> None:
        super().__init__()
        self.env = env
        self.response = response
        self.duration = duration

    def __missing__(self, key: str) -> str:
        value = self._atom(key)
        self[key] = value
        return value

    def _atom(self, key: str) -> str:  # noqa: PLR0911 (one return per kind of atom)
        env, response, duration = self.env, self.response, self.duration
        if key in _ENV_ATOMS:
            return _ENV_ATOMS[key](env)
        if key == "s":
            return str(response.code)
        if key in ("B", "b"):
            return "-" if key == "b" and not response.sent else str(response.sent)
        if key in ("T", "M", "D", "L"):
            scale = {"T": 1, "M": 1000, "D": 1000000}.get(key)
            return f"{duration:.6f}" if scale is None else str(int(duration * scale))
        if key == "t":
            return time.strftime("[%d/%b/%Y:%H:%M:%S %z]")
        if key == "p":
            return f"<{os.getpid()}>"
        if key.startswith("{") and len(key) > 3 and key[-2] == "}":
            return self._named(key[1:-2], key[-1])
        return "-"

    def _named(self, name: str, kind: str) -> str:
        if kind == "i":
            return str(self.env.get("HTTP_" + name.upper().replace("-", "_"), "-"))
        if kind == "e":
            return str(self.env.get(name, "-"))
        if kind == "o":
            wanted = name.lower() + ":"
            for line in self.response.lines:
                if line[: len(wanted)].lower() == wanted:
                    return line[len(wanted) :].strip()
        return "-"


class AccessLog:
    """Where access lines go and how they look."""

    def __init__(self, target: str, fmt: str = DEFAULT_FORMAT) -> None:
        try:
            fmt % _Probe()
        except (TypeError, ValueError, KeyError) as exc:
            raise ValueError(f"bad access_log_format {fmt!r}: {exc}") from None
        self.fmt = fmt
        self.logger = logging.getLogger("forkwell.access")
        self.logger.propagate = False
        self.logger.setLevel(logging.INFO)
        handler: logging.Handler
        if target == "-":
            handler = logging.StreamHandler(sys.stdout)
        else:
            handler = logging.FileHandler(target)
        handler.setFormatter(logging.Formatter("%(message)s"))
        for old in list(self.logger.handlers):  # one server's log at a time
            self.logger.removeHandler(old)
            old.close()
        self.logger.addHandler(handler)

    def write(self, env: dict[str, Any], response: Response, duration: float) -> None:
        try:
            line = self.fmt % _Atoms(env, response, duration)
        except Exception:
            self.logger.exception("cannot format the access log line")
            return
        self.logger.info(line)


class _Probe(dict[str, str]):
    """Formats once at start-up with every atom ``-``: a broken format fails there."""

    def __missing__(self, key: str) -> str:
        return "-"
