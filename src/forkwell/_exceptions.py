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
    └── UnknownProgramError (KeyError)          no such supervised program or instance
"""

from __future__ import annotations

import errno as _errno
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._run import RunResult


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

    def __init__(self, result: RunResult) -> None:
        self.result = result
        super().__init__(self._describe())

    def _describe(self) -> str:
        r = self.result
        if r.returncode < 0:
            import signal

            try:
                name = signal.Signals(-r.returncode).name
            except ValueError:
                name = f"signal {-r.returncode}"
            return f"command {r.args[0]!r} died of {name}"
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
    filename = exc.filename if isinstance(exc.filename, str) else None
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
