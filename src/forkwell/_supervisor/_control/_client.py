"""The control client: a synchronous connection to a running supervisor's socket.

Lean on purpose: it imports neither asyncio, tomllib nor the engine, so
``forkwell ps`` starts in about the time of ``python -c pass``
(``tests/test_layers.py`` holds ``forkwell._cli._ctl``'s start-up imports to it).
"""

from __future__ import annotations

import _socket  # the C module: the client needs no socket.py enums (~2 ms of start-up)
import errno
import json
import os
import time
from collections.abc import Callable
from typing import Any

from ..._core import _sys
from ..._exceptions import ControlRequestError, SupervisorUnreachableError
from ._protocol import encode, request, result_of


class ControlClient:
    """A synchronous connection to a running supervisor's control socket.

    ``request("ps")`` returns the reply's ``result``; a refusal raises
    :class:`forkwell.ControlRequestError` (``.code``, ``.errors``), a missing
    or unreachable supervisor :class:`forkwell.SupervisorUnreachableError`.
    """

    def __init__(self, path: str | os.PathLike[str], *, connect_timeout: float = 5.0) -> None:
        self.path = os.fspath(path)
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        sock.settimeout(connect_timeout)
        try:
            sock.connect(self.path)
        except OSError as exc:
            sock.close()
            raise SupervisorUnreachableError(
                exc.errno or 0, _unreachable_message(self.path, exc), self.path
            ) from None
        self._sock = sock
        self._buffer = b""

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._sock.close()

    def fileno(self) -> int:
        return self._sock.fileno()

    def request(
        self,
        cmd: str,
        args: dict[str, Any] | None = None,
        *,
        timeout: float | None = 30.0,
        on_progress: Callable[[dict[str, str]], None] | None = None,
    ) -> dict[str, Any]:
        """Send one request and return the ``result`` of its answer.

        ``timeout`` bounds the wait for the answer (None: wait as long as the
        supervisor works on it, e.g. a ``start`` waiting for readiness).
        ``on_progress`` receives instance states while start/stop/restart run.
        """
        message = request(cmd, args, on_progress is not None)
        try:
            self._sock.settimeout(timeout if timeout is not None else None)
            self._sock.sendall(encode(message))
        except OSError as exc:
            raise self._lost(exc) from None
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            reply = self._read_message(deadline)
            if "progress" in reply and "ok" not in reply:
                if on_progress is not None and isinstance(reply["progress"], dict):
                    on_progress(reply["progress"])
                continue
            return result_of(reply)

    def _lost(self, exc: OSError) -> SupervisorUnreachableError:
        return SupervisorUnreachableError(
            exc.errno or 0, f"lost the supervisor at {self.path}: {exc.strerror}", self.path
        )

    def _read_message(self, deadline: float | None) -> dict[str, Any]:
        while b"\n" not in self._buffer:
            self._receive(deadline)
        line, _, self._buffer = self._buffer.partition(b"\n")
        try:
            reply = json.loads(line)
        except ValueError:
            raise ControlRequestError(
                "protocol", f"the supervisor at {self.path} sent a malformed reply"
            ) from None
        if not isinstance(reply, dict):
            raise ControlRequestError("protocol", f"unexpected reply from {self.path}")
        return reply

    def _receive(self, deadline: float | None) -> None:
        """Add what the supervisor sent next to the buffer (nothing, on a timeout tick)."""
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ControlRequestError(
                    "timeout", f"the supervisor at {self.path} did not answer in time"
                )
            self._sock.settimeout(left)
        try:
            chunk = self._sock.recv(1 << 20)
        except TimeoutError:
            return
        except OSError as exc:
            raise self._lost(exc) from None
        if not chunk:
            raise SupervisorUnreachableError(
                errno.ECONNRESET,
                f"the supervisor at {self.path} closed the connection without answering",
                self.path,
            )
        self._buffer += chunk

    def wait_closed(self, timeout: float) -> bool:
        """Wait until the supervisor closes this connection; False on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if _sys.wait_ready([self._sock.fileno()], left):
                try:
                    if not self._sock.recv(65536):
                        return True
                except OSError:
                    return True


#: How long a control command waits for the socket of a supervisor that is starting.
STARTING_WAIT = 10.0


def connect(
    path: str, *, state_file: str | None = None, wait: float = STARTING_WAIT
) -> ControlClient:
    """A client for ``path``; while ``state_file`` says a supervisor is starting, wait for it.

    ``forkwell up`` spawns its first programs before its control socket
    exists, and records itself in the state file before either: a command
    sent meanwhile (``forkwell up & ... forkwell down``) waits up to ``wait``
    seconds for the socket instead of being told that nothing runs.
    """
    deadline = time.monotonic() + wait
    while True:
        try:
            return ControlClient(path)
        except SupervisorUnreachableError as exc:
            if exc.errno not in _NOBODY or state_file is None:
                raise
            from .._statefile import running_pid

            pid = running_pid(state_file)
            if pid is None:
                raise
            if time.monotonic() >= deadline:
                raise SupervisorUnreachableError(
                    errno.ETIMEDOUT,
                    f"cannot reach the supervisor at {path}: it is starting (pid {pid}) but its "
                    f"socket did not appear within {wait:g}s; try again",
                    path,
                ) from None
        time.sleep(0.02)  # a client's bounded wait for another process: nothing to wake it


# connect()'s errors that mean "nobody listens there".
_NOBODY = (errno.ENOENT, errno.ECONNREFUSED)


def not_running(exc: SupervisorUnreachableError) -> bool:
    """Whether ``exc`` says no supervisor runs at its socket (not: it could not be reached)."""
    return exc.errno in _NOBODY


def _unreachable_message(path: str, exc: OSError) -> str:
    where = f"cannot reach the supervisor at {path}"
    if exc.errno in _NOBODY:
        return f"{where}: no supervisor is running there (start it with 'forkwell up')"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"{where}: {_owner(path)}"
    if isinstance(exc, TimeoutError):
        return f"{where}: it did not accept the connection in time"
    return f"{where}: {exc.strerror or exc}"


def _owner(path: str) -> str:
    """Whose supervisor it is: the owner of the socket, or of its (owner-only) directory."""
    for place in (path, os.path.dirname(path)):
        try:
            uid = os.stat(place).st_uid
        except OSError:
            continue
        if uid == os.geteuid():
            break  # ours, yet refused: say so plainly
        import pwd

        try:
            user: str | None = pwd.getpwuid(uid).pw_name
        except KeyError:
            user = None
        who = f"user {user} (uid {uid})" if user else f"uid {uid}"
        only = "root" if uid == 0 else f"{user or f'uid {uid}'} or root"
        return f"permission denied: it is the supervisor of {who}; only {only} may control it"
    return "permission denied"
