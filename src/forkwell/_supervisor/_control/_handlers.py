"""The control requests: one handler per command, each calling public ``Supervisor`` methods.

Each handler takes the request's ``args`` and, when the client asked for
progress, the connection's writer, and returns the ``result`` of the reply.
:meth:`Handlers.answer` turns what a handler raises into the protocol's
error codes, so a bad request or a bug costs one reply, never the supervisor.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from ..._exceptions import ConfigError, ForkwellError, UnknownProgramError
from .._snapshot import Snapshot
from ._protocol import (
    PROGRESS_INTERVAL,
    PROTOCOL_VERSION,
    WRITE_TIMEOUT,
    BadRequest,
    encode,
    error_reply,
    ok_reply,
)

if TYPE_CHECKING:
    # Only for the type checker: defining Protocols costs start-up time.
    import asyncio
    from collections.abc import Mapping
    from pathlib import Path
    from typing import Protocol

    from .._snapshot import InstanceLike, Usage

    # What the handlers need from the engine (forkwell._supervisor._engine.Supervisor).
    # Structural, so the protocol layer can be tested against a small double.

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
        @property
        def kept(self) -> list[str]: ...

    class SupervisorLike(Protocol):
        """The part of ``Supervisor`` the control handlers call, and nothing else."""

        @property
        def config_path(self) -> Path: ...
        def instances(self) -> Sequence[InstanceLike]: ...
        def resolve(self, names: Sequence[str]) -> list[str]: ...
        def usage(self, names: Sequence[str]) -> Mapping[str, Usage]: ...
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


async def send(writer: asyncio.StreamWriter, message: dict[str, Any]) -> None:
    """One message to a client, which must read it within WRITE_TIMEOUT."""
    import asyncio

    writer.write(encode(message))
    await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT)


class Handlers:
    """The commands of one supervisor's control socket at ``path``."""

    def __init__(self, supervisor: SupervisorLike, path: Path) -> None:
        self.supervisor = supervisor
        self.path = path
        self._snapshot = Snapshot()

    async def answer(
        self, cmd: str, args: dict[str, Any], writer: asyncio.StreamWriter | None
    ) -> dict[str, Any]:
        """The reply to a valid request: its result, or the error it met."""
        try:
            return ok_reply(await COMMANDS[cmd](self, args, writer))
        except BadRequest as exc:
            return exc.reply()
        except UnknownProgramError as exc:
            return error_reply("unknown_name", _one_line(exc))
        except ConfigError as exc:
            return _config_error(exc)
        except (ForkwellError, OSError, ValueError) as exc:
            return error_reply("failed", _one_line(exc))
        except Exception as exc:  # a bug must not take the supervisor down
            import logging

            logging.getLogger("forkwell.control").exception("control request %r failed", cmd)
            return error_reply("internal", f"internal error: {type(exc).__name__}: {exc}")

    # Each handler: (args, writer for progress or None) -> result dict.

    async def hello(self, args: dict[str, Any], w: Any) -> dict[str, Any]:
        return self._identity()

    def _identity(self) -> dict[str, Any]:
        return {
            "protocol": PROTOCOL_VERSION,
            "pid": os.getpid(),
            "uid": os.geteuid(),
            "config": os.fspath(self.supervisor.config_path),
            "socket": os.fspath(self.path),
        }

    async def ps(self, args: dict[str, Any], w: Any) -> dict[str, Any]:
        names = _names(args, required=False)
        return self._snapshot.document(self.supervisor, names, self._identity())

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
                    await send(writer, {"v": PROTOCOL_VERSION, "progress": states})
        results = await task
        return {"results": [_op_dict(r) for r in results]}

    async def start(self, args: dict[str, Any], w: Any) -> dict[str, Any]:
        return await self._run_op("start", args, w)

    async def stop(self, args: dict[str, Any], w: Any) -> dict[str, Any]:
        return await self._run_op("stop", args, w)

    async def restart(self, args: dict[str, Any], w: Any) -> dict[str, Any]:
        return await self._run_op("restart", args, w)

    async def signal(self, args: dict[str, Any], w: Any) -> dict[str, Any]:
        from ..._core._duration import parse_signal

        instances = self.supervisor.resolve(_names(args))
        raw = args.get("signal")
        if not isinstance(raw, (int, str)) or isinstance(raw, bool):
            raise BadRequest("'signal' must be a signal name or number")
        try:
            sig = parse_signal(raw)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        results = self.supervisor.send_signal(instances, int(sig), tree=_bool(args, "tree", False))
        return {"signal": sig.name, "results": [_op_dict(r) for r in results]}

    async def logs(self, args: dict[str, Any], w: Any) -> dict[str, Any]:
        names = _names(args) if "names" in args else None
        if names is None:
            # The single-name form of the first drafts of this protocol.
            name = args.get("name")
            if not isinstance(name, str) or not name:
                raise BadRequest("'names' must be a list of program or instance names")
            names = [name]
        stream = args.get("stream", "stdout")
        if stream not in ("stdout", "stderr"):
            raise BadRequest("'stream' must be 'stdout' or 'stderr'")
        logs = [
            {"instance": i, "path": os.fspath(self.supervisor.log_path(i, stream))}
            for i in self.supervisor.resolve(names)
        ]
        return {"stream": stream, "logs": logs}

    async def reload(self, args: dict[str, Any], w: Any) -> dict[str, Any]:
        report = await self.supervisor.reload()
        return {
            "added": list(report.added),
            "removed": list(report.removed),
            "changed": list(report.changed),
            "unchanged": list(report.unchanged),
            "scaled": list(report.scaled),
            "kept": list(report.kept),
        }

    async def scale(self, args: dict[str, Any], w: Any) -> dict[str, Any]:
        program = args.get("program")
        n = args.get("n")
        if not isinstance(program, str) or not program:
            raise BadRequest("'program' must be a program name")
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise BadRequest("'n' must be an integer >= 0")
        results = await self.supervisor.scale(program, n)
        return {"program": program, "n": n, "results": [_op_dict(r) for r in results]}

    async def down(self, args: dict[str, Any], w: Any) -> dict[str, Any]:
        stopped = [i.name for i in self.supervisor.instances() if i.pid is not None]
        await self.supervisor.shutdown()
        return {"pid": os.getpid(), "stopped": stopped}


_Handler = Callable[[Handlers, dict[str, Any], Any], Awaitable[dict[str, Any]]]
COMMANDS: dict[str, _Handler] = {
    "hello": Handlers.hello,
    "ps": Handlers.ps,
    "start": Handlers.start,
    "stop": Handlers.stop,
    "restart": Handlers.restart,
    "signal": Handlers.signal,
    "logs": Handlers.logs,
    "reload": Handlers.reload,
    "scale": Handlers.scale,
    "down": Handlers.down,
}


def _config_error(exc: ConfigError) -> dict[str, Any]:
    errors = [str(e) for e in exc.errors] or [_one_line(exc)]
    n = len(errors)
    return error_reply(
        "config",
        f"{n} error{'s' if n != 1 else ''} in the config; nothing was changed",
        errors=errors,
    )


def _one_line(exc: BaseException) -> str:
    # KeyError subclasses repr their argument in str(): use the message itself.
    text = str(exc.args[0]) if len(exc.args) == 1 and isinstance(exc.args[0], str) else str(exc)
    return text.splitlines()[0] if text else type(exc).__name__


def _names(args: dict[str, Any], *, required: bool = True) -> list[str]:
    names = args.get("names", [])
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise BadRequest("'names' must be a list of program or instance names")
    if required and not names:
        raise BadRequest("no names given (use a program, program:N or 'all')")
    return names


def _bool(args: dict[str, Any], key: str, default: bool) -> bool:
    value = args.get(key, default)
    if not isinstance(value, bool):
        raise BadRequest(f"{key!r} must be true or false")
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
