"""What a program's ``ready`` and ``liveness`` settings say, parsed once at config load.

The core's :func:`~forkwell._core._readiness.parse_ready` knows the forms
every starter shares (``exec``, ``notify``, ``tcp:``, ``delay:``, ``cmd:``);
the supervisor adds the ones that need its event loop:

====================  =====================================================
``http://HOST:PORT/P`` a GET answers 200-399 (Kubernetes' ``httpGet``); also
                       ``https://`` (the certificate is not verified, as the
                       kubelet does not)
``log:REGEX``          a line of the program's output matches (readiness)
``watchdog``           the program keeps sending ``WATCHDOG=1`` (liveness)
====================  =====================================================

A :class:`ProbeSpec` prints back as the text it was parsed from (normalised).
"""

from __future__ import annotations

import re
from typing import Literal, NamedTuple

from .._core._probe import split_url
from .._core._readiness import ReadySpec, parse_ready

ProbeKind = Literal["exec", "notify", "tcp", "delay", "cmd", "http", "log", "watchdog"]

READY_KINDS: frozenset[str] = frozenset({"exec", "notify", "tcp", "delay", "cmd", "http", "log"})
LIVENESS_KINDS: frozenset[str] = frozenset({"tcp", "cmd", "http", "watchdog"})

READY_FORMS = (
    "'exec', 'notify', 'tcp:HOST:PORT', 'delay:SECONDS', 'cmd:COMMAND', "
    "an http:// or https:// URL, or 'log:REGEX'"
)
LIVENESS_FORMS = "an http:// or https:// URL, 'tcp:HOST:PORT', 'cmd:COMMAND' or 'watchdog'"


class ProbeSpec(NamedTuple):
    """A parsed probe; only the fields of its ``kind`` are set."""

    kind: ProbeKind
    host: str | None = None  # tcp, http
    port: int | None = None  # tcp, http
    seconds: float | None = None  # delay
    command: str | None = None  # cmd
    url: str | None = None  # http: the URL as written
    target: str | None = None  # http: the request target, "/health?full=1"
    tls: bool = False  # http: https://
    pattern: str | None = None  # log

    def __str__(self) -> str:
        if self.kind == "http":
            return str(self.url)
        if self.kind == "log":
            return f"log:{self.pattern}"
        if self.kind == "watchdog":
            return self.kind
        # The kinds the core parses: written back as the core writes them.
        return str(ReadySpec(self.kind, self.host, self.port, self.seconds, self.command))

    @property
    def authority(self) -> str:
        """``HOST:PORT`` as the ``Host`` header carries it."""
        host = f"[{self.host}]" if self.host and ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_probe(text: str, kinds: frozenset[str]) -> ProbeSpec:
    """Parse a probe among ``kinds``; ``ValueError`` with a one-line reason otherwise."""
    stripped = text.strip()
    head = stripped.partition(":")[0].lower()
    if head in ("http", "https") and "http" in kinds:
        return _http(stripped)
    if head == "log" and "log" in kinds:
        return _log(stripped[4:])
    if stripped.lower() == "watchdog" and "watchdog" in kinds:
        return ProbeSpec("watchdog")
    try:
        spec = parse_ready(text)
    except ValueError as exc:
        raise ValueError(str(exc).partition(": ")[2] or str(exc)) from None
    if spec.kind not in kinds:
        raise ValueError(f"{spec.kind!r} is not a probe here")
    return ProbeSpec(spec.kind, spec.host, spec.port, spec.seconds, spec.command)


def _http(url: str) -> ProbeSpec:
    host, port, target, tls = split_url(url)
    return ProbeSpec("http", host=host, port=port, url=url, target=target, tls=tls)


def _log(pattern: str) -> ProbeSpec:
    if not pattern:
        raise ValueError("expected log:REGEX, e.g. log:listening on")
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"invalid regular expression: {exc}") from None
    return ProbeSpec("log", pattern=pattern)
