"""The supervisor's control plane: a private Unix socket, its protocol, a client.

Protocol (version 1, documented for users in ``docs/control.md``): one JSON
object per line, UTF-8, over a ``SOCK_STREAM`` Unix socket.  A request is
``{"v": 1, "cmd": "ps", "args": {...}}``; the answer is
``{"v": 1, "ok": true, "result": {...}}`` or
``{"v": 1, "ok": false, "error": {"code": "...", "message": "..."}}``.  While a
``start``/``stop``/``restart`` asked with ``"progress": true`` runs, the server
also sends ``{"v": 1, "progress": {"web:0": "STARTING", ...}}`` lines.  A
connection may carry several requests, one after the other.

Why each defence exists:

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

The client half (:class:`ControlClient`, :func:`find_socket`) is synchronous
and imports neither asyncio, tomllib nor the engine: ``forkwell ps`` starts in
about the time of ``python -c pass``.  The server half imports asyncio lazily.
"""

from __future__ import annotations

import _socket  # the C module: the client needs no socket.py enums (~2 ms of start-up)
import contextlib
import errno
import json
import os
import stat
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ..._core import _proc, _sys
from ..._exceptions import ControlRequestError, ControlSocketError, SupervisorUnreachableError

if TYPE_CHECKING:
    import asyncio
    import socket
    from pathlib import Path
    from typing import Protocol

PROTOCOL_VERSION = 1
SOCKET_ENV = "FORKWELL_SOCKET"
DEFAULT_CONFIG = "forkwell.toml"
# The engine's default for [supervisor] socket (forkwell._supervisor._config.SUPERVISOR_KEYS).
DEFAULT_SOCKET_SETTING = ".forkwell/forkwell.sock"

# Requests are a few hundred bytes; this leaves room for thousands of names.
MAX_REQUEST_BYTES = 64 * 1024
# A client gets this long to send one complete request line (also the idle
# limit between requests on a kept-open connection).
REQUEST_TIMEOUT = 10.0
# A reply the client does not read within this long ends the connection.
WRITE_TIMEOUT = 10.0
# Beyond this many open connections new ones get a "busy" error and are closed,
# so a flood cannot exhaust the supervisor's file descriptors.
MAX_CONNECTIONS = 256
# How often a waiting start/stop/restart reports progress.
PROGRESS_INTERVAL = 0.2
_PEERCRED = "3i"  # struct ucred: pid, uid, gid

ERROR_CODES = (
    "bad_request",  # malformed JSON, unknown command, wrong argument types
    "too_large",  # request line above MAX_REQUEST_BYTES; the connection is closed
    "timeout",  # no complete request within REQUEST_TIMEOUT; closed
    "version",  # unsupported protocol version
    "forbidden",  # peer uid is neither the supervisor's nor root; closed
    "busy",  # too many connections; closed
    "unknown_name",  # a program/instance name that does not exist
    "config",  # reload: the new config is invalid (error.errors lists every problem)
    "failed",  # the supervisor could not do it (error.message says why)
    "internal",  # a bug in the supervisor; it keeps serving
)


# --------------------------------------------------------------------------
# What the server needs from the engine (forkwell._supervisor._engine.Supervisor).
# Structural, so the protocol layer can be tested against a small double.


if TYPE_CHECKING:
    # Only for the type checker: defining Protocols costs start-up time.

    class _InstanceInfo(Protocol):
        @property
        def name(self) -> str: ...
        @property
        def program(self) -> str: ...
        @property
        def index(self) -> int: ...
        @property
        def state(self) -> str: ...
        @property
        def pid(self) -> int | None: ...
        @property
        def started_at(self) -> float | None: ...
        @property
        def ready_at(self) -> float | None: ...
        @property
        def restarts(self) -> int: ...
        @property
        def last_exit(self) -> int | None: ...
        @property
        def autostart(self) -> bool: ...

    class _OpResult(Protocol):
        @property
        def instance(self) -> str: ...
        @property
        def ok(self) -> bool: ...
        @property
        def state(self) -> str: ...
        @property
        def message(self) -> str: ...
        @property
        def last_exit(self) -> int | None: ...
        @property
        def log_tail(self) -> list[str]: ...

    class _ReloadReport(Protocol):
        @property
        def added(self) -> list[str]: ...
        @property
        def removed(self) -> list[str]: ...
        @property
        def changed(self) -> list[str]: ...
        @property
        def unchanged(self) -> list[str]: ...
        @property
        def scaled(self) -> list[str]: ...

    class SupervisorLike(Protocol):
        """The part of ``Supervisor`` the control handlers call, and nothing else."""

        @property
        def config_path(self) -> Path: ...
        def instances(self) -> Sequence[_InstanceInfo]: ...
        def resolve(self, names: Sequence[str]) -> list[str]: ...
        def log_path(self, instance: str, stream: Any) -> Path: ...
        async def start(
            self, instances: list[str], *, wait: bool = True
        ) -> Sequence[_OpResult]: ...
        async def stop(self, instances: list[str], *, wait: bool = True) -> Sequence[_OpResult]: ...
        async def restart(
            self, instances: list[str], *, wait: bool = True
        ) -> Sequence[_OpResult]: ...
        def send_signal(
            self, instances: list[str], sig: int, *, tree: bool = False
        ) -> Sequence[_OpResult]: ...
        async def reload(self) -> _ReloadReport: ...
        async def scale(self, program: str, n: int) -> Sequence[_OpResult]: ...
        async def shutdown(self) -> None: ...


# --------------------------------------------------------------------------
# Framing, shared by both halves.


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":"), allow_nan=False).encode() + b"\n"


def error_reply(code: str, message: str, **extra: Any) -> dict[str, Any]:
    error = {"code": code, "message": message, **extra}
    return {"v": PROTOCOL_VERSION, "ok": False, "error": error}


def ok_reply(result: dict[str, Any]) -> dict[str, Any]:
    return {"v": PROTOCOL_VERSION, "ok": True, "result": result}


class _BadRequest(Exception):
    def __init__(self, message: str, code: str = "bad_request") -> None:
        super().__init__(message)
        self.code = code


# --------------------------------------------------------------------------
# /proc sampling for `ps`.

class _CpuMeter:
    """CPU % since the previous ``ps`` (if recent), else since the process started.

    Sampling only when asked keeps an idle supervisor from ever waking up.
    """

    RECENT = 60.0

    def __init__(self) -> None:
        self._last: dict[int, tuple[float, int]] = {}

    def sample(self, pid: int, started_at: float | None) -> tuple[float | None, int | None]:
        info = _proc.read_stat(pid)
        if info is None:
            self._last.pop(pid, None)
            return None, None
        ticks, rss = info.cpu_ticks, info.rss_bytes
        now_mono, now_wall = time.monotonic(), time.time()
        cpu: float | None = None
        prev = self._last.get(pid)
        if prev is not None and 0.05 < now_mono - prev[0] < self.RECENT and ticks >= prev[1]:
            cpu = (ticks - prev[1]) / _proc.CLK_TCK / (now_mono - prev[0]) * 100.0
        elif started_at is not None and now_wall - started_at > 0.05:
            cpu = ticks / _proc.CLK_TCK / (now_wall - started_at) * 100.0
        self._last[pid] = (now_mono, ticks)
        return (None if cpu is None else round(cpu, 1)), rss

    def forget_except(self, pids: set[int]) -> None:
        for pid in [p for p in self._last if p not in pids]:
            del self._last[pid]


# --------------------------------------------------------------------------
# The server.


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


def _claim_path(path: str) -> None:
    """Remove a stale socket at ``path``; refuse if a supervisor answers there."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ControlSocketError(exc.errno or 0, f"cannot use {path}: {exc.strerror}") from None
    if not stat.S_ISSOCK(st.st_mode):
        raise ControlSocketError(
            errno.EEXIST, f"cannot create control socket {path}: a non-socket file is in the way"
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
            f" (see 'forkwell ps --socket {path}')",
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
        self._cpu = _CpuMeter()
        self._closing = False

    async def start(self) -> None:
        """Create the 0600 socket in an owner-only directory and start serving."""
        import asyncio
        import socket

        path = os.fspath(self.path)
        _prepare_directory(os.path.dirname(path) or ".")
        _claim_path(path)
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
                    await self._send(writer, error_reply("bad_request", "incomplete request"))
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
            await self._send(writer, reply)

    async def _send(self, writer: asyncio.StreamWriter, message: dict[str, Any]) -> None:
        import asyncio

        writer.write(encode(message))
        await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT)

    async def _send_and_close(self, writer: asyncio.StreamWriter, message: dict[str, Any]) -> None:
        with contextlib.suppress(OSError, TimeoutError):
            await self._send(writer, message)
        writer.close()

    # -- requests ----------------------------------------------------------

    async def _handle_line(self, line: bytes, writer: asyncio.StreamWriter) -> dict[str, Any]:
        from ..._exceptions import ConfigError, ForkwellError, UnknownProgramError

        try:
            request = json.loads(line)
        except (ValueError, UnicodeDecodeError):
            return error_reply("bad_request", "request is not valid JSON")
        if not isinstance(request, dict):
            return error_reply("bad_request", "request must be a JSON object")
        version = request.get("v")
        if version != PROTOCOL_VERSION:
            return error_reply(
                "version",
                f"unsupported protocol version {version!r} (this supervisor speaks"
                f" {PROTOCOL_VERSION})",
                supported=[PROTOCOL_VERSION],
            )
        cmd = request.get("cmd")
        args = request.get("args", {})
        if not isinstance(args, dict):
            return error_reply("bad_request", "'args' must be a JSON object")
        handler = _HANDLERS.get(cmd) if isinstance(cmd, str) else None
        if handler is None:
            return error_reply(
                "bad_request", f"unknown command {cmd!r} (known: {', '.join(sorted(_HANDLERS))})"
            )
        progress = request.get("progress") is True
        try:
            return ok_reply(await handler(self, args, writer if progress else None))
        except _BadRequest as exc:
            return error_reply(exc.code, str(exc))
        except UnknownProgramError as exc:
            return error_reply("unknown_name", _one_line(exc))
        except ConfigError as exc:
            errors = [str(e) for e in exc.errors] or [_one_line(exc)]
            n = len(errors)
            return error_reply(
                "config",
                f"{n} error{'s' if n != 1 else ''} in the config; nothing was changed",
                errors=errors,
            )
        except (ForkwellError, OSError, ValueError) as exc:
            return error_reply("failed", _one_line(exc))
        except Exception as exc:  # a bug must not take the supervisor down
            import logging

            logging.getLogger("forkwell.control").exception("control request %r failed", cmd)
            return error_reply("internal", f"internal error: {type(exc).__name__}: {exc}")

    # Each handler: (server, args, writer for progress or None) -> result dict.

    async def _cmd_hello(self, args: dict[str, Any], w: Any) -> dict[str, Any]:
        return self._identity()

    def _identity(self) -> dict[str, Any]:
        return {
            "protocol": PROTOCOL_VERSION,
            "pid": os.getpid(),
            "uid": os.geteuid(),
            "config": os.fspath(self.supervisor.config_path),
            "socket": os.fspath(self.path),
        }

    async def _cmd_ps(self, args: dict[str, Any], w: Any) -> dict[str, Any]:
        names = _names(args, required=False)
        infos = list(self.supervisor.instances())
        if names:
            wanted = set(self.supervisor.resolve(names))
            infos = [i for i in infos if i.name in wanted]
        now = time.time()
        rows = []
        for info in infos:
            cpu, rss = (None, None)
            if info.pid is not None:
                cpu, rss = self._cpu.sample(info.pid, info.started_at)
            rows.append(
                {
                    "name": info.name,
                    "program": info.program,
                    "index": info.index,
                    "state": info.state,
                    "pid": info.pid,
                    "started_at": info.started_at,
                    "ready_at": info.ready_at,
                    "uptime": (
                        None
                        if info.started_at is None or info.pid is None
                        else round(max(0.0, now - info.started_at), 3)
                    ),
                    "restarts": info.restarts,
                    "last_exit": info.last_exit,
                    "autostart": info.autostart,
                    "cpu_percent": cpu,
                    "rss_bytes": rss,
                }
            )
        if not names:
            self._cpu.forget_except({i.pid for i in infos if i.pid is not None})
        healthy = all(_healthy(r) for r in rows if r["autostart"])
        return {"supervisor": self._identity(), "time": now, "healthy": healthy, "instances": rows}

    async def _run_op(
        self, op: str, args: dict[str, Any], writer: asyncio.StreamWriter | None
    ) -> dict[str, Any]:
        import asyncio

        instances = self.supervisor.resolve(_names(args))
        wait = _bool(args, "wait", True)
        method = getattr(self.supervisor, op)
        task = asyncio.ensure_future(method(instances, wait=wait))
        if writer is not None and wait:
            wanted = set(instances)
            last: dict[str, str] = {}
            while True:
                done, _ = await asyncio.wait([task], timeout=PROGRESS_INTERVAL)
                if done:
                    break
                states = {i.name: i.state for i in self.supervisor.instances() if i.name in wanted}
                if states != last:
                    last = states
                    await self._send(writer, {"v": PROTOCOL_VERSION, "progress": states})
        results = await task
        return {"results": [_op_dict(r) for r in results]}

    async def _cmd_start(self, args: dict[str, Any], w: Any) -> dict[str, Any]:
        return await self._run_op("start", args, w)

    async def _cmd_stop(self, args: dict[str, Any], w: Any) -> dict[str, Any]:
        return await self._run_op("stop", args, w)

    async def _cmd_restart(self, args: dict[str, Any], w: Any) -> dict[str, Any]:
        return await self._run_op("restart", args, w)

    async def _cmd_signal(self, args: dict[str, Any], w: Any) -> dict[str, Any]:
        from ..._core._duration import parse_signal

        instances = self.supervisor.resolve(_names(args))
        raw = args.get("signal")
        if not isinstance(raw, (int, str)) or isinstance(raw, bool):
            raise _BadRequest("'signal' must be a signal name or number")
        try:
            sig = parse_signal(raw)
        except ValueError as exc:
            raise _BadRequest(str(exc)) from None
        results = self.supervisor.send_signal(instances, int(sig), tree=_bool(args, "tree", False))
        return {"signal": sig.name, "results": [_op_dict(r) for r in results]}

    async def _cmd_logs(self, args: dict[str, Any], w: Any) -> dict[str, Any]:
        names = _names(args) if "names" in args else None
        if names is None:
            # The single-name form of the first drafts of this protocol.
            name = args.get("name")
            if not isinstance(name, str) or not name:
                raise _BadRequest("'names' must be a list of program or instance names")
            names = [name]
        stream = args.get("stream", "stdout")
        if stream not in ("stdout", "stderr"):
            raise _BadRequest("'stream' must be 'stdout' or 'stderr'")
        logs = [
            {"instance": i, "path": os.fspath(self.supervisor.log_path(i, stream))}
            for i in self.supervisor.resolve(names)
        ]
        return {"stream": stream, "logs": logs}

    async def _cmd_reload(self, args: dict[str, Any], w: Any) -> dict[str, Any]:
        report = await self.supervisor.reload()
        return {
            "added": list(report.added),
            "removed": list(report.removed),
            "changed": list(report.changed),
            "unchanged": list(report.unchanged),
            "scaled": list(report.scaled),
        }

    async def _cmd_scale(self, args: dict[str, Any], w: Any) -> dict[str, Any]:
        program = args.get("program")
        n = args.get("n")
        if not isinstance(program, str) or not program:
            raise _BadRequest("'program' must be a program name")
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise _BadRequest("'n' must be an integer >= 0")
        results = await self.supervisor.scale(program, n)
        return {"program": program, "n": n, "results": [_op_dict(r) for r in results]}

    async def _cmd_down(self, args: dict[str, Any], w: Any) -> dict[str, Any]:
        stopped = [i.name for i in self.supervisor.instances() if i.pid is not None]
        await self.supervisor.shutdown()
        return {"pid": os.getpid(), "stopped": stopped}


def _healthy(row: dict[str, Any]) -> bool:
    """RUNNING, or a one-shot job that finished with status 0 and stays finished.

    EXITED is only ever a resting state when the restart policy says "do not
    restart", so EXITED with 0 is a job done, not an outage.  Anything else
    (STARTING, BACKOFF, FATAL, STOPPED, a failed exit) is not healthy: unlike
    supervisorctl (issue 1488), "still starting" does not count as up.
    """
    state, last_exit = row["state"], row["last_exit"]
    return bool(state == "RUNNING" or (state == "EXITED" and last_exit == 0))


def _one_line(exc: BaseException) -> str:
    # KeyError subclasses repr their argument in str(): use the message itself.
    text = str(exc.args[0]) if len(exc.args) == 1 and isinstance(exc.args[0], str) else str(exc)
    return text.splitlines()[0] if text else type(exc).__name__


def _names(args: dict[str, Any], *, required: bool = True) -> list[str]:
    names = args.get("names", [])
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise _BadRequest("'names' must be a list of program or instance names")
    if required and not names:
        raise _BadRequest("no names given (use a program, program:N or 'all')")
    return names


def _bool(args: dict[str, Any], key: str, default: bool) -> bool:
    value = args.get(key, default)
    if not isinstance(value, bool):
        raise _BadRequest(f"{key!r} must be true or false")
    return value


def _op_dict(r: _OpResult) -> dict[str, Any]:
    return {
        "instance": r.instance,
        "ok": r.ok,
        "state": r.state,
        "message": r.message,
        "last_exit": r.last_exit,
        "log_tail": list(r.log_tail),
    }


_Handler = Callable[[ControlServer, dict[str, Any], Any], Any]
_HANDLERS: dict[str, _Handler] = {
    "hello": ControlServer._cmd_hello,
    "ps": ControlServer._cmd_ps,
    "start": ControlServer._cmd_start,
    "stop": ControlServer._cmd_stop,
    "restart": ControlServer._cmd_restart,
    "signal": ControlServer._cmd_signal,
    "logs": ControlServer._cmd_logs,
    "reload": ControlServer._cmd_reload,
    "scale": ControlServer._cmd_scale,
    "down": ControlServer._cmd_down,
}


# --------------------------------------------------------------------------
# The client: synchronous and lean.


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
        message: dict[str, Any] = {"v": PROTOCOL_VERSION, "cmd": cmd, "args": args or {}}
        if on_progress is not None:
            message["progress"] = True
        try:
            self._sock.settimeout(timeout if timeout is not None else None)
            self._sock.sendall(encode(message))
        except OSError as exc:
            raise SupervisorUnreachableError(
                exc.errno or 0, f"lost the supervisor at {self.path}: {exc.strerror}", self.path
            ) from None
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            reply = self._read_message(deadline)
            if "progress" in reply and "ok" not in reply:
                if on_progress is not None and isinstance(reply["progress"], dict):
                    on_progress(reply["progress"])
                continue
            return _unwrap(reply)

    def _read_message(self, deadline: float | None) -> dict[str, Any]:
        while b"\n" not in self._buffer:
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
                continue
            except OSError as exc:
                raise SupervisorUnreachableError(
                    exc.errno or 0, f"lost the supervisor at {self.path}: {exc.strerror}", self.path
                ) from None
            if not chunk:
                raise SupervisorUnreachableError(
                    errno.ECONNRESET,
                    f"the supervisor at {self.path} closed the connection without answering",
                    self.path,
                )
            self._buffer += chunk
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


def _unwrap(reply: dict[str, Any]) -> dict[str, Any]:
    if reply.get("v") != PROTOCOL_VERSION:
        raise ControlRequestError(
            "version", f"the supervisor speaks protocol {reply.get('v')!r}, we speak 1"
        )
    if reply.get("ok") is True:
        result = reply.get("result")
        return result if isinstance(result, dict) else {}
    error = reply.get("error")
    if not isinstance(error, dict):
        raise ControlRequestError("protocol", "the supervisor sent an error without details")
    errors = error.get("errors")
    raise ControlRequestError(
        str(error.get("code", "failed")),
        str(error.get("message", "request failed")),
        errors=[str(e) for e in errors] if isinstance(errors, list) else [],
    )


def _unreachable_message(path: str, exc: OSError) -> str:
    if exc.errno in (errno.ENOENT, errno.ECONNREFUSED):
        why = "no supervisor is running there"
    elif exc.errno in (errno.EACCES, errno.EPERM):
        why = "permission denied: it belongs to another user"
    elif isinstance(exc, TimeoutError):
        why = "it did not accept the connection in time"
    else:
        why = exc.strerror or str(exc)
    return f"cannot reach the supervisor at {path}: {why} (start it with 'forkwell up')"


# --------------------------------------------------------------------------
# Finding the socket without loading the engine.


def find_socket(
    socket_opt: str | None, config_opt: str | None, env: dict[str, str] | None = None
) -> str:
    """The control socket's path: ``--socket``, then ``$FORKWELL_SOCKET``, then the config.

    The config's ``[supervisor] socket`` is read with a small scanner so the
    CLI does not pay for tomllib and the engine; anything the scanner is not
    sure about falls back to the real config loader.
    """
    environ = os.environ if env is None else env
    if socket_opt:
        return os.path.abspath(socket_opt)
    if environ.get(SOCKET_ENV):
        return os.path.abspath(environ[SOCKET_ENV])
    config = os.path.abspath(config_opt or DEFAULT_CONFIG)
    try:
        with open(config, "rb") as f:
            text = f.read().decode()
    except (OSError, UnicodeDecodeError):
        # No readable config: the default place is still the best guess, and
        # the "cannot reach" message names it.
        return resolve_socket_setting(None, config)
    try:
        found = scan_socket_setting(text)
    except _Unsure:
        found = _socket_setting_from_toml(text)
    return resolve_socket_setting(found, config)


class _Unsure(Exception):
    """The scanner met TOML it cannot read with certainty."""


def scan_socket_setting(text: str) -> str | None:
    """``[supervisor] socket = "..."`` from TOML text, None if unset.

    Raises ``_Unsure`` on anything but plain tables and one-line basic or
    literal strings without escapes.
    """
    table: str | None = None
    value: str | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            if line.startswith("[["):
                table = "[[array]]"
                continue
            end = line.find("]")
            if end < 0:
                raise _Unsure
            table = line[1:end].strip().strip('"').strip("'")
            if table.startswith(("supervisor.", "supervisor ")):
                raise _Unsure
            continue
        if table is None and line.startswith("supervisor"):
            raise _Unsure  # dotted keys or an inline table at the top level
        if table != "supervisor":
            continue
        key, eq, rest = line.partition("=")
        key = key.strip().strip('"').strip("'")
        if not eq:
            raise _Unsure
        if key != "socket":
            continue
        rest = rest.strip()
        if len(rest) < 2 or rest[0] not in "\"'":
            raise _Unsure
        quote = rest[0]
        end = rest.find(quote, 1)
        if end < 0 or rest.startswith(quote * 3):
            raise _Unsure
        literal = rest[1:end]
        if quote == '"' and "\\" in literal:
            raise _Unsure
        tail = rest[end + 1 :].strip()
        if tail and not tail.startswith("#"):
            raise _Unsure
        value = literal
    return value


def resolve_socket_setting(value: str | None, config_path: str) -> str:
    """Where the engine puts the socket for a ``[supervisor] socket`` setting (None: unset).

    Mirrors ``forkwell._supervisor._config``: relative to the config file's directory, ``~``
    expanded, symlinks resolved; ``tests/test_control.py`` checks they agree.
    """
    base = os.path.realpath(os.path.dirname(config_path) or ".")
    setting = DEFAULT_SOCKET_SETTING if value is None else value
    return os.path.realpath(os.path.join(base, os.path.expanduser(setting)))


def _socket_setting_from_toml(text: str) -> str | None:
    """Slow path for configs the scanner is unsure about: a real TOML parse.

    Only the one setting is read, without validating the rest, so a config
    broken after ``forkwell up`` (and refused by ``reload``) still finds the
    running supervisor.
    """
    import tomllib

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return None
    table = data.get("supervisor")
    value = table.get("socket") if isinstance(table, dict) else None
    return value if isinstance(value, str) and value else None
