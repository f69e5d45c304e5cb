"""Who may read and who may act: the bearer token, the page's session, CSRF, Host and Origin.

The model (docs/web.md, "Security"):

* Reading needs nothing on a loopback address or a Unix socket, and the
  token everywhere else.  Acting (start, stop, restart) needs
  ``http_actions = true`` *and* the token, always.
* The token is the content of ``http_token_file``, a file only its owner may
  read (checked when the config is read and again at start-up), compared in
  constant time (:func:`hmac.compare_digest`).  Scripts send it as
  ``Authorization: Bearer TOKEN``.
* A browser logs in once with the token (a form POST) and gets a session
  cookie: ``HttpOnly`` (no script reads it), ``SameSite=Strict`` (no other
  site's page sends it), signed with a key made at start-up (a restart logs
  everyone out) and valid for 12 hours.  The page's forms also carry a CSRF
  token derived from that key, checked on every POST made with the cookie.
* A POST whose ``Origin`` (or ``Sec-Fetch-Site``) says another site sent it
  is refused whatever it carries; no GET ever acts.
* On a loopback address, the ``Host`` header must name a loopback host: a
  page of another site that re-binds its DNS name to 127.0.0.1 (DNS
  rebinding) cannot read the status through the visitor's browser.

Standard library only: the config checks the token file with :func:`read_token`.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
import time
from pathlib import Path

from ._address import HttpAddress

MIN_TOKEN = 16  # characters: shorter ones are guessable
SESSION_SECONDS = 12 * 3600
COOKIE = "forkwell_session"


def read_token(path: Path) -> str:
    """The token in ``path``; ``ValueError`` saying what is wrong with the file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"{path} is not a regular file")
        if st.st_uid != os.geteuid():
            raise ValueError(
                f"{path} belongs to uid {st.st_uid}, not to us (uid {os.geteuid()}); "
                "use a file of our own"
            )
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o077:
            raise ValueError(
                f"{path} may be read by other users (mode {mode:04o}); chmod 600 {path}"
            )
        raw = os.read(fd, 4097)
    finally:
        os.close(fd)
    token = raw.decode("utf-8", "replace").strip()
    if len(raw) > 4096 or not token.isprintable() or " " in token:
        raise ValueError(f"{path} must hold one token: a single line of printable characters")
    if len(token) < MIN_TOKEN:
        raise ValueError(
            f"the token in {path} is too short ({len(token)} characters, at least {MIN_TOKEN});"
            f" make one with: head -c 32 /dev/urandom | base64 > {path}"
        )
    return token


class Guard:
    """The checks of one web endpoint: made at start-up with the token (or none)."""

    def __init__(
        self, token: str | None, *, private: bool, actions: bool, cookie_name: str = COOKIE
    ) -> None:
        self.token = token
        # Cookies are not kept apart by port: two supervisors on one host need two names.
        self.cookie_name = cookie_name
        self.private = private  # loopback or Unix socket: reading needs no token
        self.actions = actions
        self._key = os.urandom(32)  # signs sessions and CSRF tokens of this run only

    @property
    def read_needs_token(self) -> bool:
        return not self.private

    def bearer_ok(self, authorization: str | None) -> bool:
        """``Authorization: Bearer TOKEN`` with the right token (constant-time compare)."""
        if self.token is None or not authorization:
            return False
        scheme, _, given = authorization.partition(" ")
        return scheme.lower() == "bearer" and self.token_ok(given)

    def token_ok(self, given: str) -> bool:
        """``given`` is the token: compared in constant time, whatever its length."""
        return self.token is not None and hmac.compare_digest(
            given.strip().encode(), self.token.encode()
        )

    def login(self, given: str) -> str | None:
        """A session cookie's value for the right token, else None."""
        if not self.token_ok(given):
            return None
        expires = int(time.time()) + SESSION_SECONDS
        return f"{expires}.{self._sign(f'session:{expires}')}"

    def session_ok(self, value: str | None) -> bool:
        if not value or self.token is None:
            return False
        expires, _, mac = value.partition(".")
        if not expires.isdigit() or int(expires) < time.time():
            return False
        return hmac.compare_digest(mac.encode(), self._sign(f"session:{expires}").encode())

    def csrf_for(self, session: str) -> str:
        """The CSRF token the page's forms carry, tied to the session it was served to."""
        return self._sign(f"csrf:{session}")

    def csrf_ok(self, session: str, given: str | None) -> bool:
        return bool(given) and hmac.compare_digest(
            (given or "").encode(), self.csrf_for(session).encode()
        )

    def _sign(self, text: str) -> str:
        return hmac.new(self._key, text.encode(), hashlib.sha256).hexdigest()


def host_is_loopback(host: str | None) -> bool:
    """The ``Host`` header names a loopback host (any port): no DNS rebinding."""
    if not host:
        return False
    name = host.lower()
    name = name[1:].partition("]")[0] if name.startswith("[") else name.partition(":")[0]
    return HttpAddress(name, 0, None).loopback


def cross_site(headers: dict[str, str]) -> bool:
    """A request a page of another origin made the browser send (refused for every POST)."""
    site = headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return True
    origin = headers.get("origin")
    if origin is None:
        return False  # not from a browser form or fetch of another site
    if origin == "null":
        return True  # a sandboxed or file: page
    return origin.partition("://")[2].rstrip("/").lower() != headers.get("host", "").lower()


def cookie(headers: dict[str, str], name: str) -> str | None:
    """One cookie's value from the ``Cookie`` header."""
    for part in headers.get("cookie", "").split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return None
