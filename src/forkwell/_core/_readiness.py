"""Readiness specs: how a starter decides that what it started is up.

``parse_ready`` turns the text of ``--ready`` (CLI) or ``ready =`` (config)
into a :class:`ReadySpec`:

==================  ===========================================================
``exec``            the command was exec'd successfully
``notify``          the command sent ``READY=1`` to ``$NOTIFY_SOCKET``
``tcp:HOST:PORT``   the port accepts a connection (``tcp:PORT`` = 127.0.0.1,
                    ``tcp:[::1]:PORT`` for IPv6)
``delay:SECONDS``   still alive after that long (``delay:2``, ``delay:1.5s``,
                    ``delay:1m``)
``cmd:COMMAND``     the shell command exits 0 (it is retried until then)
==================  ===========================================================

Waiting is up to the caller (each starter has its own loop); this module
only parses and offers :func:`tcp_check`, one probe of a TCP port
(:mod:`._probe` adds HTTP and commands, for ``forkwell probe``).
"""

from __future__ import annotations

import time
from typing import Any, Literal, NamedTuple

ReadyKind = Literal["exec", "notify", "tcp", "delay", "cmd"]

_EXPECTED = "expected exec, notify, tcp:HOST:PORT, delay:SECONDS or cmd:COMMAND"


class ReadySpec(NamedTuple):
    """A parsed readiness condition; only the fields of its ``kind`` are set."""

    kind: ReadyKind
    host: str | None = None
    port: int | None = None
    seconds: float | None = None
    command: str | None = None

    def __str__(self) -> str:
        if self.kind == "tcp":
            host = f"[{self.host}]" if self.host and ":" in self.host else self.host
            return f"tcp:{host}:{self.port}"
        if self.kind == "delay":
            return f"delay:{self.seconds:g}"
        if self.kind == "cmd":
            return f"cmd:{self.command}"
        return self.kind


def parse_ready(spec: str) -> ReadySpec:
    """Parse a readiness spec; ``ValueError`` with a one-line message if malformed."""
    text = spec.strip()
    kind, sep, rest = text.partition(":")
    kind = kind.lower()
    if kind in ("exec", "notify"):
        if sep:
            raise ValueError(f"invalid readiness {spec!r}: {kind!r} takes no argument")
        return ReadySpec(kind)  # type: ignore[arg-type]
    if kind == "tcp" and sep:
        host, port = _parse_host_port(spec, rest)
        return ReadySpec("tcp", host=host, port=port)
    if kind == "delay" and sep:
        from ._duration import parse_duration  # here: `forkwell probe tcp:` needs none of it

        try:
            seconds = parse_duration(rest)
        except ValueError:
            raise ValueError(
                f"invalid readiness {spec!r}: expected delay:SECONDS, e.g. delay:2"
            ) from None
        return ReadySpec("delay", seconds=seconds)
    if kind == "cmd" and sep:
        if not rest.strip():
            raise ValueError(f"invalid readiness {spec!r}: expected cmd:COMMAND")
        return ReadySpec("cmd", command=rest.strip())
    raise ValueError(f"invalid readiness {spec!r}: {_EXPECTED}")


def _parse_host_port(spec: str, rest: str) -> tuple[str, int]:
    if rest.startswith("["):
        host, bracket, tail = rest[1:].partition("]")
        if not bracket or not tail.startswith(":"):
            raise ValueError(f"invalid readiness {spec!r}: expected tcp:[IPV6]:PORT")
        port_text = tail[1:]
    elif ":" in rest:
        host, _, port_text = rest.rpartition(":")
    else:
        host, port_text = "127.0.0.1", rest
    if not host:
        raise ValueError(f"invalid readiness {spec!r}: expected tcp:HOST:PORT (host is empty)")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"invalid readiness {spec!r}: expected tcp:HOST:PORT with PORT 1-65535")
    return host, int(port_text)


def tcp_accepts(host: str, port: int, timeout: float) -> bool:
    """One connect to ``host:port``: True if it is accepted within ``timeout``.

    Never raises for a refused, unreachable or unresolvable port: that is
    "not ready yet" (:func:`tcp_check` says which).
    """
    return tcp_check(host, port, timeout) is None


def tcp_check(host: str, port: int, timeout: float) -> str | None:
    """One connect to ``host:port``: None if accepted within ``timeout``, else why not.

    Each address ``host`` resolves to is tried (``localhost`` may be ``::1``
    then ``127.0.0.1``) within the one ``timeout``.
    """
    sock, why = connect(host, port, time.monotonic() + max(timeout, 0.0))
    if sock is None:
        return why
    sock.close()
    return None


def connect(host: str, port: int, deadline: float) -> tuple[Any, str]:
    """A connected ``_socket.socket`` to ``host:port`` by ``deadline``, or (None, why not).

    The C module, not ``socket.py``: its enums and selectors cost ~6 ms of the
    start-up of ``forkwell probe``, which runs every few seconds in every pod.
    """
    import _socket

    try:
        infos = _socket.getaddrinfo(host, port, 0, _socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        return None, f"cannot resolve {host}: {getattr(exc, 'strerror', None) or exc}"
    why = f"{host} has no address"
    for family, type_, proto, _name, address in infos:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            sock = _socket.socket(family, type_ | _socket.SOCK_CLOEXEC, proto)
        except OSError as exc:
            why = exc.strerror or str(exc)
            continue
        try:
            sock.settimeout(left)
            sock.connect(address)
        except TimeoutError:
            why = "no answer in time"
        except OSError as exc:
            why = (exc.strerror or str(exc)).lower()
        else:
            return sock, ""
        sock.close()
    return None, why
