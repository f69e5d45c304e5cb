"""Readiness notification: systemd's ``sd_notify`` protocol, both ends.

Sender (used by daemons): :func:`notify`, :func:`notify_ready`,
:func:`notify_status`, :func:`notify_stopping`.  Each sends ``KEY=VALUE``
lines in one datagram to the unix socket named by ``$NOTIFY_SOCKET`` (a path,
or ``@name`` for an abstract socket), exactly as ``sd_notify(3)`` does, so the
same daemon works under systemd, ``start-stop-daemon --notify-await`` and
forkwell.  When :func:`forkwell.daemonize` was called with ``ready="notify"``,
``READY=1`` also tells the original process, which is waiting for it.

Receiver (used by ``forkwell daemon start --ready notify`` and the supervisor):
:class:`NotifyListener` binds a datagram socket in a private 0700 directory;
put ``.path`` in the child's ``NOTIFY_SOCKET``, watch ``.fileno()`` in a
selector, call ``.receive()`` when it is readable.

The listener sets ``SO_PASSCRED``, so the kernel attaches the sender's
credentials to every datagram; ``receive()`` reports them as the trusted
fields ``_PID``, ``_UID`` and ``_GID`` (named like journald's trusted fields,
which a sender cannot forge: anything a sender writes with a leading ``_`` is
dropped).
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import struct
from collections.abc import Callable, Mapping

ENV_VAR = "NOTIFY_SOCKET"

#: Largest datagram the listener accepts; longer ones are dropped whole
#: (systemd uses the same bound, PIPE_BUF, for its notify socket).
MAX_MESSAGE = 4096
#: Datagrams drained by one ``receive()`` call, so a flooding sender cannot
#: keep the caller's loop from doing anything else.
MAX_BATCH = 256

_KEY_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
_UCRED = struct.Struct("iII")  # struct ucred: pid_t pid; uid_t uid; gid_t gid

# Set by forkwell.daemonize(ready="notify") in the daemon: called with the
# fields of every notification so READY=1 reaches the original process too.
# A plain hook keeps this module free of imports from higher layers.
_local_hook: Callable[[Mapping[str, str]], bool] | None = None


def _set_local_hook(hook: Callable[[Mapping[str, str]], bool] | None) -> None:
    global _local_hook
    _local_hook = hook


def _encode(fields: Mapping[str, object]) -> bytes:
    lines = []
    for key, value in fields.items():
        if not key or not key[0].isalpha() or not set(key) <= _KEY_CHARS:
            raise ValueError(f"notify: invalid field name {key!r} (expected upper-case like READY)")
        text = str(int(value)) if isinstance(value, bool) else str(value)
        if "\n" in text:
            raise ValueError(f"notify: value of {key} must not contain a newline")
        lines.append(f"{key}={text}")
    if not lines:
        raise ValueError("notify: no fields given (e.g. notify(READY=1))")
    return ("\n".join(lines) + "\n").encode()


def _address(value: str) -> str | bytes:
    if value.startswith("@"):
        # Abstract namespace: a leading NUL instead of '@', as sd_notify does.
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    raise ValueError(f"notify: ${ENV_VAR}={value!r} is neither an absolute path nor @abstract")


def notify(**fields: object) -> bool:
    """Send ``KEY=VALUE`` fields to the service manager, e.g. ``notify(READY=1)``.

    Returns True when the notification went somewhere ($NOTIFY_SOCKET, or the
    original process of ``daemonize(ready="notify")``), False when nobody is
    listening for it (no ``$NOTIFY_SOCKET`` and no daemonize in effect), so a
    daemon can call it unconditionally.  A set but unusable ``$NOTIFY_SOCKET``
    raises ``OSError`` (``ValueError`` for a malformed one): a manager that
    waits for readiness would otherwise wait in vain.
    """
    data = _encode(fields)
    delivered = False
    hook = _local_hook
    if hook is not None:
        decoded = dict(line.split("=", 1) for line in data.decode().splitlines())
        delivered = hook(decoded)
    target = os.environ.get(ENV_VAR)
    if target:
        address = _address(target)
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            try:
                sock.sendto(data, address)
            except OSError as exc:
                raise OSError(
                    exc.errno, f"notify: cannot send to ${ENV_VAR}={target}: {exc.strerror}"
                ) from None
        delivered = True
    return delivered


def notify_ready(status: str | None = None) -> bool:
    """Tell the service manager (or the waiting original process) the daemon is ready.

    Sends ``READY=1`` (and ``STATUS=status`` when given) with ``MAINPID`` so a
    manager that started an intermediate process learns the daemon's real pid.
    """
    fields: dict[str, object] = {"READY": 1, "MAINPID": os.getpid()}
    if status is not None:
        fields["STATUS"] = status
    return notify(**fields)


def notify_status(text: str) -> bool:
    """Send a one-line human-readable status (``STATUS=text``)."""
    return notify(STATUS=text)


def notify_stopping() -> bool:
    """Tell the service manager the daemon is shutting down (``STOPPING=1``)."""
    return notify(STOPPING=1)


class NotifyListener:
    """The receiving end: a private ``SOCK_DGRAM`` unix socket for ``$NOTIFY_SOCKET``.

    ``NotifyListener()`` binds ``<tmp>/forkwell-notify-XXXX/notify`` in a fresh
    0700 directory: only its owner (and root) can send.  Arguments:

    * ``uid``: also let this user send (the directory is chowned to it), for
      a child that drops privileges to that user; needs root.
    * ``abstract=True``: bind an abstract socket ``@forkwell-notify-<random>``
      instead, reachable from a chroot; it has no file permissions, so any
      process in the network namespace that guesses the 128-bit name could
      send: check ``_PID`` in what you receive.

    Use as a context manager, or call :meth:`close` (removes socket and
    directory).
    """

    path: str

    def __init__(self, *, uid: int | None = None, abstract: bool = False) -> None:
        self._dir: str | None = None
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
            # Large enough for a burst of notifications before the owner reads.
            with contextlib.suppress(OSError):
                self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 256 * 1024)
            if abstract:
                name = "forkwell-notify-" + os.urandom(16).hex()
                self._sock.bind(b"\0" + name.encode())
                self.path = "@" + name
            else:
                import tempfile

                self._dir = tempfile.mkdtemp(prefix="forkwell-notify-")  # mode 0700
                self.path = os.path.join(self._dir, "notify")
                self._sock.bind(self.path)
                # The directory is the gate; the socket itself must be writable
                # by whoever may pass it (connect needs write permission).
                os.chmod(self.path, 0o666)
                if uid is not None:
                    os.chown(self._dir, uid, -1)
            self._sock.setblocking(False)
        except BaseException:
            self.close()
            raise

    def __repr__(self) -> str:
        state = "closed" if self._sock.fileno() < 0 else self.path
        return f"<forkwell.NotifyListener {state}>"

    def __enter__(self) -> NotifyListener:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def fileno(self) -> int:
        """The socket's fd: readable when a notification is waiting."""
        return self._sock.fileno()

    def environ(self) -> dict[str, str]:
        """``{"NOTIFY_SOCKET": path}``: merge into the child's environment."""
        return {ENV_VAR: self.path}

    def receive(self) -> list[dict[str, str]]:
        """Every notification waiting now (never blocks), oldest first.

        Each is a dict of the datagram's ``KEY=VALUE`` lines plus the trusted
        ``_PID``/``_UID``/``_GID`` of the sender.  Malformed lines, fields with a
        leading ``_`` and datagrams over :data:`MAX_MESSAGE` bytes are dropped.
        """
        out: list[dict[str, str]] = []
        cmsg_space = socket.CMSG_SPACE(_UCRED.size)
        for _ in range(MAX_BATCH):
            try:
                data, ancdata, flags, _addr = self._sock.recvmsg(MAX_MESSAGE + 1, cmsg_space)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                if exc.errno == errno.EBADF:
                    break
                raise
            if flags & socket.MSG_TRUNC or len(data) > MAX_MESSAGE:
                continue
            fields = _parse(data)
            for level, kind, payload in ancdata:
                if (
                    level == socket.SOL_SOCKET
                    and kind == socket.SCM_CREDENTIALS
                    and len(payload) >= _UCRED.size
                ):
                    pid, uid, gid = _UCRED.unpack_from(payload)
                    fields.update(_PID=str(pid), _UID=str(uid), _GID=str(gid))
            if fields:
                out.append(fields)
        return out

    def close(self) -> None:
        """Close the socket and remove it and its directory.  Idempotent."""
        self._sock.close()
        if self._dir is not None:
            # Normally only our socket is in there; with ``uid`` that user
            # could have added files, so fall back to removing the tree.
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            try:
                os.rmdir(self._dir)
            except OSError:
                import shutil

                shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


def _parse(data: bytes) -> dict[str, str]:
    fields: dict[str, str] = {}
    for raw in data.decode("utf-8", "replace").split("\n"):
        key, sep, value = raw.partition("=")
        if sep and key and not key.startswith("_"):
            fields[key] = value
    return fields
