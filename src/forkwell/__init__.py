"""forkwell: the whole life of Unix processes.

Nothing forkwell starts is left running or unreaped when it should not be, and
every failure is reported to the person who asked.

The public names below are loaded lazily (PEP 562), so ``import forkwell`` and
every ``forkwell`` CLI command stay fast: a command pays only for what it uses.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> private module that defines it.  Keep sorted by module.
_EXPORTS: dict[str, str] = {
    "Config": "._supervisor._config",
    "ProgramConfig": "._supervisor._config",
    "load_config": "._supervisor._config",
    "ControlClient": "._supervisor._control._client",
    "socket_path": "._supervisor._control._discovery",
    "daemonize": "._daemon._daemonize",
    "ChildExit": "._core._reaper",
    "Reaper": "._core._reaper",
    "fork": "._core._reaper",
    "BindError": "._exceptions",
    "CommandFailedError": "._exceptions",
    "CommandNotExecutableError": "._exceptions",
    "CommandNotFoundError": "._exceptions",
    "CommandTimedOutError": "._exceptions",
    "ConfigError": "._exceptions",
    "ControlError": "._exceptions",
    "ControlRequestError": "._exceptions",
    "ControlSocketError": "._exceptions",
    "DaemonReadyTimeoutError": "._exceptions",
    "DaemonStartError": "._exceptions",
    "ForkwellError": "._exceptions",
    "HandlerImportError": "._exceptions",
    "LockTimeoutError": "._exceptions",
    "PidfileError": "._exceptions",
    "PidfileLockedError": "._exceptions",
    "SpawnError": "._exceptions",
    "SpawnResourceError": "._exceptions",
    "StateError": "._exceptions",
    "SupervisorUnreachableError": "._exceptions",
    "UnknownProgramError": "._exceptions",
    "WorkerBootError": "._exceptions",
    "WorkingDirectoryError": "._exceptions",
    "FileLock": "._daemon._lock",
    "notify_ready": "._core._notify",
    "notify_status": "._core._notify",
    "notify_stopping": "._core._notify",
    "Pidfile": "._daemon._pidfile",
    "PreforkServer": "._servers._prefork",
    "Process": "._core._process",
    "spawn": "._core._process",
    "ProgramState": "._supervisor._program",
    "RunResult": "._run",
    "run": "._run",
    "run_async": "._run",
    "ForkingServer": "._servers._forking",
    "serve_wsgi": "._servers._wsgiserver",
    "InstanceInfo": "._supervisor._engine",
    "OpResult": "._supervisor._engine",
    "ReloadReport": "._supervisor._fleet",
    "Supervisor": "._supervisor._engine",
}

__all__ = sorted([*_EXPORTS, "__version__"])  # noqa: PLE0605 (tests/test_exports.py checks it)

if TYPE_CHECKING:
    from ._core._notify import notify_ready as notify_ready
    from ._core._notify import notify_status as notify_status
    from ._core._notify import notify_stopping as notify_stopping
    from ._core._process import Process as Process
    from ._core._process import spawn as spawn
    from ._core._reaper import ChildExit as ChildExit
    from ._core._reaper import Reaper as Reaper
    from ._core._reaper import fork as fork
    from ._daemon._daemonize import daemonize as daemonize
    from ._daemon._lock import FileLock as FileLock
    from ._daemon._pidfile import Pidfile as Pidfile
    from ._exceptions import BindError as BindError
    from ._exceptions import CommandFailedError as CommandFailedError
    from ._exceptions import CommandNotExecutableError as CommandNotExecutableError
    from ._exceptions import CommandNotFoundError as CommandNotFoundError
    from ._exceptions import CommandTimedOutError as CommandTimedOutError
    from ._exceptions import ConfigError as ConfigError
    from ._exceptions import ControlError as ControlError
    from ._exceptions import ControlRequestError as ControlRequestError
    from ._exceptions import ControlSocketError as ControlSocketError
    from ._exceptions import DaemonReadyTimeoutError as DaemonReadyTimeoutError
    from ._exceptions import DaemonStartError as DaemonStartError
    from ._exceptions import ForkwellError as ForkwellError
    from ._exceptions import HandlerImportError as HandlerImportError
    from ._exceptions import LockTimeoutError as LockTimeoutError
    from ._exceptions import PidfileError as PidfileError
    from ._exceptions import PidfileLockedError as PidfileLockedError
    from ._exceptions import SpawnError as SpawnError
    from ._exceptions import SpawnResourceError as SpawnResourceError
    from ._exceptions import StateError as StateError
    from ._exceptions import SupervisorUnreachableError as SupervisorUnreachableError
    from ._exceptions import UnknownProgramError as UnknownProgramError
    from ._exceptions import WorkerBootError as WorkerBootError
    from ._exceptions import WorkingDirectoryError as WorkingDirectoryError
    from ._run import RunResult as RunResult
    from ._run import run as run
    from ._run import run_async as run_async
    from ._servers._forking import ForkingServer as ForkingServer
    from ._servers._prefork import PreforkServer as PreforkServer
    from ._servers._wsgiserver import serve_wsgi as serve_wsgi
    from ._supervisor._config import Config as Config
    from ._supervisor._config import ProgramConfig as ProgramConfig
    from ._supervisor._config import load_config as load_config
    from ._supervisor._control._client import ControlClient as ControlClient
    from ._supervisor._control._discovery import socket_path as socket_path
    from ._supervisor._engine import InstanceInfo as InstanceInfo
    from ._supervisor._engine import OpResult as OpResult
    from ._supervisor._engine import Supervisor as Supervisor
    from ._supervisor._fleet import ReloadReport as ReloadReport
    from ._supervisor._program import ProgramState as ProgramState


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'forkwell' has no attribute {name!r}")
    value = getattr(import_module(module, __name__), name)
    # Tracebacks and reprs say forkwell.X, not forkwell._module.X.
    if getattr(value, "__module__", "").startswith("forkwell._"):
        try:
            value.__module__ = "forkwell"
        except (AttributeError, TypeError):
            pass
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
