"""The control server: the supervisor's private Unix socket, served from its event loop.

The protocol is in :mod:`._protocol`, the commands in :mod:`._handlers`, the
client in :mod:`._client` and finding the socket in :mod:`._discovery`.  Why
each defence exists:

* The socket is created with mode 0600 (umask set around ``bind``, so there is
  no window where it is wider) in a directory only its owner can write, so
  nobody can replace it or race us to the path.
* ``SO_PEERCRED`` is checked on every connection, so a socket made reachable
  by mistake (a chmod, a bind mount) still only obeys the supervisor's own
  uid and root.  supervisord's XML-RPC taught us what an open socket costs
  (CVE-2017-11610).  There is no TCP listener at all.
* Every read has a size limit and a deadline and every write a deadline, all
  asynchronous: garbage, a half request, a 10 MB line or a client that never
  reads cost one connection, never the supervisor's loop.

It imports asyncio lazily: the engine imports it only once the loop runs.
"""

from __future__ import annotations

import _socket
import contextlib
import errno
import os
import stat
from typing import TYPE_CHECKING, Any

from ..._exceptions import ControlSocketError
from ._handlers import COMMANDS, Handlers, send
from ._protocol import (
    MAX_CONNECTIONS,
    MAX_REQUEST_BYTES,
    REQUEST_TIMEOUT,
    BadRequest,
    error_reply,
    parse_request,
)

if TYPE_CHECKING:
    import asyncio
    import socket
    from pathlib import Path

    from ._handlers import SupervisorLike

_PEERCRED = "3i"  # struct ucred: pid, uid, gid


def _prepare_directory(directory: str) -> None:
    """Create the socket's directory 0700, or check an existing one is private."""
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        st = os.stat(directory)
    except OSError as exc:
        raise ControlSocketError(
            exc.errno or 0, f"cannot create control socket directory {directory}: {exc.strerror}"
        ) from None
    if st.st_uid != os.geteuid():
        raise ControlSocketError(
            errno.EPERM,
            f"control socket directory {directory} belongs to uid {st.st_uid}, not to us"
            f" (uid {os.geteuid()}); use a directory of our own",
        )
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ControlSocketError(
            errno.EPERM,
            f"control socket directory {directory} is writable by other users"
            f" (mode {stat.S_IMODE(st.st_mode):04o}); use a private directory (chmod 700)",
        )


def claim_path(path: str, what: str = "control socket") -> None:
    """Remove a stale socket at ``path``; refuse if a supervisor answers there.

    ``what`` names the socket in errors (the web endpoint's Unix socket uses it too).
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ControlSocketError(exc.errno or 0, f"cannot use {path}: {exc.strerror}") from None
    if not stat.S_ISSOCK(st.st_mode):
        raise ControlSocketError(
            errno.EEXIST, f"cannot create {what} {path}: a non-socket file is in the way"
        )
    probe = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(path)
    except OSError:
        pass  # nobody listening: a leftover of a supervisor that died
    else:
        raise ControlSocketError(
            errno.EADDRINUSE,
            f"another supervisor is already listening on {path}"
            + (f" (see 'forkwell ps --socket {path}')" if what == "control socket" else ""),
        )
    finally:
        probe.close()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


class ControlServer:
    """Serves the control protocol for one ``Supervisor`` on a private Unix socket.

    ``Supervisor.run()`` creates it before starting programs and closes it on
    exit.  Handlers call only the public ``Supervisor`` methods.
    """

    def __init__(
        self,
        supervisor: SupervisorLike,
        path: Path,
        *,
        request_timeout: float = REQUEST_TIMEOUT,
        max_request_bytes: int = MAX_REQUEST_BYTES,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self.supervisor = supervisor
        self.path = path
        self.request_timeout = request_timeout
        self.max_request_bytes = max_request_bytes
        self.max_connections = max_connections
        self._server: asyncio.AbstractServer | None = None
        self._sock: socket.socket | None = None
        self._inode: tuple[int, int] | None = None
        # connection task -> True while it is executing a request
        self._connections: dict[asyncio.Task[None], bool] = {}
        self._handlers = Handlers(supervisor, path)
        self._closing = False

    async def start(self) -> None:
        """Create the 0600 socket in an owner-only directory and start serving."""
        import asyncio
        import socket

        path = os.fspath(self.path)
        _prepare_directory(os.path.dirname(path) or ".")
        claim_path(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # bind() creates the file with 0777 & ~umask: set the umask around it so
        # the socket is never, even for an instant, reachable by others.
        old_umask = os.umask(0o177)
        try:
            sock.bind(path)
        except OSError as exc:
            sock.close()
            raise ControlSocketError(
                exc.errno or 0, f"cannot create control socket {path}: {exc.strerror}"
            ) from None
        finally:
            os.umask(old_umask)
        try:
            os.chmod(path, 0o600)
            st = os.stat(path)
            self._inode = (st.st_dev, st.st_ino)
            sock.listen(128)
            sock.setblocking(False)
            self._server = await asyncio.start_unix_server(
                self._accept, sock=sock, limit=self.max_request_bytes
            )
        except BaseException:
            sock.close()
            self._unlink()
            raise
        self._sock = sock

    async def close(self) -> None:
        """Stop accepting, let requests being executed send their answer, remove the socket."""
        import asyncio

        self._closing = True
        if self._server is not None:
            self._server.close()
        self._unlink()
        idle = [task for task, busy in self._connections.items() if not busy]
        for task in idle:
            task.cancel()
        busy = [task for task, b in self._connections.items() if b]
        # `down` answers after Supervisor.shutdown() returned, which is also
        # when run() closes us: give such answers a moment to go out.
        if busy:
            await asyncio.wait(busy, timeout=2.0)
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.wait(list(self._connections), timeout=1.0)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
            self._server = None

    def _unlink(self) -> None:
        # Only remove the socket if it is ours: neither a supervisor whose
        # start() failed (another one is listening there) nor one whose path
        # was taken over since may delete another supervisor's socket.
        if self._inode is None:
            return
        path = os.fspath(self.path)
        try:
            st = os.lstat(path)
        except OSError:
            return
        if (st.st_dev, st.st_ino) == self._inode:
            with contextlib.suppress(OSError):
                os.unlink(path)
        self._inode = None

    # -- connections -------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        import asyncio

        task = asyncio.current_task()
        assert task is not None
        if self._closing or len(self._connections) >= self.max_connections:
            await self._send_and_close(writer, error_reply("busy", "too many control connections"))
            return
        self._connections[task] = False
        try:
            await self._serve(reader, writer, task)
        except (asyncio.CancelledError, ConnectionError, TimeoutError):
            pass
        finally:
            self._connections.pop(task, None)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    def _peer_allowed(self, writer: asyncio.StreamWriter) -> tuple[bool, int | None]:
        sock = writer.get_extra_info("socket")
        try:
            import struct

            raw = sock.getsockopt(
                _socket.SOL_SOCKET, _socket.SO_PEERCRED, struct.calcsize(_PEERCRED)
            )
        except (OSError, AttributeError):
            return False, None
        _pid, uid, _gid = struct.unpack(_PEERCRED, raw)
        return uid in (0, os.geteuid()), uid

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, task: asyncio.Task[None]
    ) -> None:
        import asyncio

        allowed, uid = self._peer_allowed(writer)
        if not allowed:
            await self._send_and_close(
                writer,
                error_reply(
                    "forbidden",
                    f"uid {uid} may not control this supervisor (only uid {os.geteuid()} and root)",
                ),
            )
            return
        while not self._closing:
            try:
                line = await asyncio.wait_for(reader.readuntil(b"\n"), self.request_timeout)
            except asyncio.IncompleteReadError as exc:
                if exc.partial.strip():
                    await send(writer, error_reply("bad_request", "incomplete request"))
                return
            except asyncio.LimitOverrunError:
                # The rest of the line is still coming: there is no way to
                # resynchronise, so answer and hang up.
                await self._send_and_close(
                    writer,
                    error_reply("too_large", f"request larger than {self.max_request_bytes} bytes"),
                )
                return
            except TimeoutError:
                await self._send_and_close(
                    writer,
                    error_reply("timeout", f"no complete request within {self.request_timeout:g}s"),
                )
                return
            self._connections[task] = True
            try:
                reply = await self._handle_line(line, writer)
            finally:
                self._connections[task] = False
            await send(writer, reply)

    async def _send_and_close(self, writer: asyncio.StreamWriter, message: dict[str, Any]) -> None:
        with contextlib.suppress(OSError, TimeoutError):
            await send(writer, message)
        writer.close()

    # -- requests ----------------------------------------------------------

    async def _handle_line(self, line: bytes, writer: asyncio.StreamWriter) -> dict[str, Any]:
        try:
            cmd, args, progress = parse_request(line, COMMANDS)
        except BadRequest as exc:
            return exc.reply()
        return await self._handlers.answer(cmd, args, writer if progress else None)
