"""Which peers may say who the client is: ``forwarded_allow_ips`` and the headers it unlocks.

A reverse proxy in front of the server knows the client's address and
whether it came over TLS; the server only sees the proxy.  The proxy says so
in ``Forwarded`` (RFC 7239) or ``X-Forwarded-For`` / ``X-Forwarded-Proto``,
but anyone can send those headers, so they are believed only from a peer in
``forwarded_allow_ips`` (gunicorn's setting and default: ``127.0.0.1,::1``,
or the ``FORWARDED_ALLOW_IPS`` environment variable; ``*`` trusts every
peer; networks in CIDR form).  Unix-socket peers have no address and are
trusted, as in gunicorn: the socket file's permissions decide who connects.

From a trusted peer, ``REMOTE_ADDR`` becomes the client: walking the hops
from the nearest one back, the first address that is not itself a trusted
proxy.  ``wsgi.url_scheme`` becomes the nearest hop's ``proto``.  The headers
stay in ``environ`` as they came.
"""

from __future__ import annotations

import ipaddress
import os
from typing import Any

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT = "127.0.0.1,::1"


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped  # a v4 client of a [::] listener
    return ip


def _node(text: str) -> str | None:
    """An RFC 7239 node (``"[2001:db8::1]:80"``, ``192.0.2.1:80``, ``192.0.2.1``) -> its address."""
    text = text.strip().strip('"')
    if text.startswith("["):
        text = text[1 : text.find("]")]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    ip = _ip(text)
    return None if ip is None else str(ip)


class TrustedProxies:
    """``forwarded_allow_ips``: ``"*"``, or addresses and networks separated by commas."""

    def __init__(self, spec: str | None = None) -> None:
        if spec is None:
            spec = os.environ.get("FORWARDED_ALLOW_IPS", DEFAULT)
        items = [item.strip() for item in spec.split(",") if item.strip()]
        self.everyone = "*" in items
        self.networks: list[_Network] = []
        for item in items:
            if item == "*":
                continue
            try:
                self.networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                raise ValueError(f"bad forwarded_allow_ips entry {item!r}") from None

    def trusts(self, address: str) -> bool:
        """Whether the peer ``address`` (``""`` for a Unix socket) may set forwarding headers."""
        if self.everyone or not address:
            return True
        ip = _ip(address)
        return ip is not None and any(ip in net for net in self.networks)

    def apply(self, environ: dict[str, Any]) -> None:
        """Rewrite ``REMOTE_ADDR`` and ``wsgi.url_scheme`` from a trusted peer's headers."""
        forwarded = environ.get("HTTP_FORWARDED")
        if forwarded is not None:
            hops = [_pairs(element) for element in forwarded.split(",")]
            client = self._client([hop.get("for", "") for hop in hops])
            proto = hops[-1].get("proto") if hops else None
        else:
            xff = environ.get("HTTP_X_FORWARDED_FOR")
            client = self._client(xff.split(",")) if xff else None
            xfp = environ.get("HTTP_X_FORWARDED_PROTO")
            proto = xfp.rpartition(",")[2] if xfp else None
        if client is not None:
            environ["REMOTE_ADDR"] = client
            environ.pop("REMOTE_PORT", None)  # the proxy's port, not the client's
        if proto is not None:
            proto = proto.strip().strip('"').lower()
            if proto in ("http", "https"):
                environ["wsgi.url_scheme"] = proto

    def _client(self, hops: list[str]) -> str | None:
        address = None
        for hop in reversed(hops):
            address = _node(hop)
            if address is None:  # "unknown", "_hidden", garbage: stop believing
                return None
            if not self.trusts(address):
                return address
        return address


def _pairs(element: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in element.split(";"):
        key, sep, value = pair.partition("=")
        if sep:
            out[key.strip().lower()] = value.strip()
    return out
