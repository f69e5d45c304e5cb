"""forkwell's exceptions, one hierarchy.

Each also subclasses the builtin that fits, so ``except OSError`` or
``except TimeoutError`` in existing code keeps working::

    ForkwellError
    ├── SpawnError (OSError)                    the command could not be started
    │   ├── CommandNotFoundError (FileNotFoundError)
    │   ├── CommandNotExecutableError (PermissionError)
    │   ├── WorkingDirectoryError               cwd missing or not a directory
    │   └── SpawnResourceError (BlockingIOError) EAGAIN: RLIMIT_NPROC, no memory
    ├── CommandFailedError                      run(check=True): non-zero exit
    │   └── CommandTimedOutError (TimeoutError)  run(check=True): deadline passed
    ├── StateError (RuntimeError)               an illegal state-machine transition
    ├── ConfigError (ValueError)                a supervisor config file is invalid (.errors)
    ├── UnknownProgramError (KeyError)          no such supervised program or instance
    ├── ControlError                            talking to a supervisor's control socket
    │   ├── SupervisorUnreachableError (ConnectionError) no supervisor answers there
    │   ├── ControlSocketError (OSError)        the control socket cannot be created
    │   └── ControlRequestError                 the supervisor refused a request (.code)
    ├── LockTimeoutError (TimeoutError)          FileLock: not acquired within the timeout
    ├── BindError (OSError)                      a server cannot listen on an address
    ├── HandlerImportError (ImportError)         a server's MODULE:HANDLER cannot be loaded
    ├── WorkerBootError (RuntimeError)           pre-fork workers failed to boot N times in a row
    ├── DaemonStartError (OSError)              daemonize/daemon start failed; .step names where
    │   └── DaemonReadyTimeoutError (TimeoutError)  not ready within the readiness timeout
    └── PidfileError (OSError)                  unsafe or unusable pidfile (symlink, bad directory)
        └── PidfileLockedError (BlockingIOError) another live process holds it; .pid says which
"""

from __future__ import annotations

import errno as _errno
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # a Protocol class costs start-up time, and only the type checker reads it
    from typing import Protocol
else:
    Protocol = object


class _Result(Protocol):
    """What the ``run(check=True)`` errors say of a result (a ``RunResult``).

    A protocol, not an import of ``forkwell._run``: the exceptions sit under
    every layer and import none of them.
    """

    @property
    def args(self) -> list[str]: ...
    @property
    def returncode(self) -> int: ...
    @property
    def duration(self) -> float: ...
    @property
    def stdout(self) -> Any: ...
    @property
    def stderr(self) -> Any: ...


class ForkwellError(Exception):
    """Base class of every error forkwell raises."""


class SpawnError(ForkwellError, OSError):
    """The command could not be started.  ``.command`` names it."""

    def __init__(self, errno: int, message: str, command: str, filename: str | None = None):
        OSError.__init__(self, errno, message, filename)
        self.command = command

    def __str__(self) -> str:
        return self.strerror or super().__str__()


class CommandNotFoundError(SpawnError, FileNotFoundError):
    """No such program (exit status 127 in the CLI)."""


class CommandNotExecutableError(SpawnError, PermissionError):
    """The program exists but cannot be executed (exit status 126 in the CLI)."""


class WorkingDirectoryError(SpawnError):
    """The working directory does not exist or is not a directory."""


class SpawnResourceError(SpawnError, BlockingIOError):
    """fork/spawn failed for lack of resources (EAGAIN: RLIMIT_NPROC, memory)."""


class CommandFailedError(ForkwellError):
    """``run(check=True)`` saw a non-zero exit status.  ``.result`` has the details."""

    def __init__(self, result: _Result) -> None:
        self.result = result
        super().__init__(self._describe())

    def _describe(self) -> str:
        from ._core._status import signal_name

        r = self.result
        if r.returncode < 0:
            return f"command {r.args[0]!r} died of {signal_name(-r.returncode)}"
        return f"command {r.args[0]!r} exited with status {r.returncode}"


class CommandTimedOutError(CommandFailedError, TimeoutError):
    """``run(check=True)``: the deadline passed and the tree was ended."""

    def _describe(self) -> str:
        r = self.result
        return (
            f"command {r.args[0]!r} timed out after {r.duration:.3f}s; "
            "its process tree was ended"
        )


class StateError(ForkwellError, RuntimeError):
    """An operation is not allowed in the object's current state."""


def spawn_error(exc: OSError, command: str, cwd: str | None) -> SpawnError:
    """Translate an ``OSError`` from spawning into the matching ``SpawnError``."""
    err = exc.errno or 0
    raw = exc.filename
    filename = os.fsdecode(raw) if isinstance(raw, str | bytes | os.PathLike) else None
    if cwd is not None and filename is not None and filename == str(cwd):
        why = "does not exist" if err == _errno.ENOENT else (exc.strerror or "unusable").lower()
        return WorkingDirectoryError(
            err, f"cannot start {command!r}: working directory {cwd!r} {why}", command, filename
        )
    if err == _errno.ENOENT:
        return CommandNotFoundError(err, f"command not found: {command!r}", command, command)
    if err in (_errno.EACCES, _errno.EPERM, _errno.ENOEXEC, _errno.EISDIR):
        return CommandNotExecutableError(
            err, f"command not executable: {command!r} ({exc.strerror})", command, command
        )
    if err in (_errno.EAGAIN, _errno.ENOMEM):
        return SpawnResourceError(
            err,
            f"cannot start {command!r}: {exc.strerror} (process limit or memory exhausted)",
            command,
        )
    return SpawnError(err, f"cannot start {command!r}: {exc.strerror or exc}", command, filename)


class ConfigError(ForkwellError, ValueError):
    """A supervisor config file is invalid.  ``.errors`` lists every problem, one line each.

    Each line names the file, the key path and what was expected, e.g.
    ``forkwell.toml: programs.web.stop_signal: expected a signal name ..., got 'TREM'``.
    """

    def __init__(self, errors: list[str]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(self.errors))

    def __str__(self) -> str:
        return "\n".join(self.errors)


class UnknownProgramError(ForkwellError, KeyError):
    """A name given to the supervisor matches no program or instance."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        # KeyError would quote the message; this is a sentence, not a key.
        return self.message


class ControlError(ForkwellError):
    """Talking to a supervisor over its control socket failed."""


class SupervisorUnreachableError(ControlError, ConnectionError):
    """No supervisor answers on the control socket (``.filename`` is its path)."""

    def __init__(self, errno: int, message: str, path: str) -> None:
        ConnectionError.__init__(self, errno, message, path)

    def __str__(self) -> str:
        return self.strerror or super().__str__()


class ControlSocketError(ControlError, OSError):
    """The supervisor cannot create its control socket (path taken, directory unsafe)."""

    def __init__(self, errno: int, message: str) -> None:
        OSError.__init__(self, errno, message)

    def __str__(self) -> str:
        return self.strerror or super().__str__()


class ControlRequestError(ControlError):
    """The supervisor answered a request with an error.

    ``.code`` is the protocol's error code (``unknown_name``, ``config``,
    ``bad_request``... see ``docs/control.md``); ``.errors`` lists every
    problem for ``config``.
    """

    def __init__(self, code: str, message: str, *, errors: list[str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.errors = list(errors or [])

    def __str__(self) -> str:
        return self.message


class LockTimeoutError(ForkwellError, TimeoutError):
    """``FileLock.acquire``: another process held the lock past the timeout (``.filename``)."""


class BindError(ForkwellError, OSError):
    """A server cannot listen: malformed address, address in use, no permission."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()


class HandlerImportError(ForkwellError, ImportError):
    """``"MODULE:HANDLER"`` cannot be imported, or is not a handler class or callable."""


class WorkerBootError(ForkwellError, RuntimeError):
    """Pre-fork workers failed during boot too many times in a row; the master halted."""


class DaemonStartError(ForkwellError, OSError):
    """The daemon did not come up.

    ``.step`` names the daemon(7) step that failed (``chdir``, ``pidfile``,
    ``drop-privileges``, ``ready``...); ``.exit_status`` is how the daemon ended
    when it died during start-up (``-N`` for signal N), else None.
    """

    def __init__(
        self,
        errno: int,
        message: str,
        step: str = "",
        filename: str | None = None,
        *,
        exit_status: int | None = None,
    ):
        OSError.__init__(self, errno, message, filename)
        self.step = step
        self.exit_status = exit_status

    def __str__(self) -> str:
        return self.strerror or super().__str__()


class DaemonReadyTimeoutError(DaemonStartError, TimeoutError):
    """The daemon did not report readiness in time; it was stopped."""


class PidfileError(ForkwellError, OSError):
    """The pidfile cannot be used safely (symlink, not a regular file, unsafe directory)."""

    def __init__(self, errno: int, message: str, filename: str | None = None):
        OSError.__init__(self, errno, message, filename)

    def __str__(self) -> str:
        return self.strerror or super().__str__()


class PidfileLockedError(PidfileError, BlockingIOError):
    """Another live process holds the pidfile's lock.  ``.pid`` is that process (or None)."""

    def __init__(self, path: str, pid: int | None):
        who = f"pid {pid}" if pid is not None else "another process"
        super().__init__(_errno.EAGAIN, f"pidfile {path} is locked by {who}", path)
        self.pid = pid
