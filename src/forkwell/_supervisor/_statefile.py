"""The state file: who runs the fleet, so the next ``forkwell up`` can end a dead one's.

A SIGKILLed supervisor's watchdog ends its programs; should both be killed at
once, the state file still holds the supervisor's cookie, and the next
``forkwell up`` ends every process carrying it before it starts anything.
The pid and its start time also tell that a supervisor for this state file
is still running, and ``forkwell up`` then refuses to run twice.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .._core import _proc, _tree
from .._exceptions import StateError


def take_over(path: Path, config_path: Path, note: Callable[[str], None]) -> list[int]:
    """Refuse to run twice; end what a killed predecessor (and its watchdog) left.

    Returns the pids it ended.
    """
    old = _read(path)
    pid = old.get("pid")
    # Our own pid too: another Supervisor of this process runs (a test).
    if _alive(old):
        raise StateError(already_running(config_path, pid))
    token = old.get("token")
    if not isinstance(token, str) or not token:
        return []
    survivors = _tree.Tree(token, -1)
    members = sorted(survivors.members(include_root=False))
    if members:
        note(
            f"ending {len(members)} process(es) left by a killed supervisor "
            f"(pid {pid}): {members}"
        )
        # Blocking is fine: nothing else is served before this is done.
        _tree.terminate_tree(survivors, signal.SIGTERM, 5.0, include_root=False)
    survivors.close()
    return members


def already_running(config_path: Path | str, pid: object) -> str:
    """What ``forkwell up`` says when a supervisor runs for this state file already."""
    return (f"another forkwell up is running for {config_path} (pid {pid}); "
            f"stop it with 'forkwell down' first")  # fmt: skip


def running_pid(path: Path | str) -> int | None:
    """The pid of the supervisor the state file names, if it still runs (starting or up)."""
    state = _read(Path(path))
    return state["pid"] if _alive(state) else None


def _read(path: Path) -> dict[str, Any]:
    with contextlib.suppress(OSError, ValueError):
        state = json.loads(path.read_text())
        if isinstance(state, dict):
            return state
    return {}


def _alive(state: dict[str, Any]) -> bool:
    """The state's pid runs, and is the process that wrote it (its start time)."""
    pid = state.get("pid")
    if not isinstance(pid, int):
        return False
    info = _proc.read_stat(pid)
    return info is not None and info.alive and info.starttime == state.get("starttime")


def write(path: Path, *, token: str, config_path: Path, watchdog: int | None) -> None:
    """Record who we are, our cookie and our watchdog, for the next ``forkwell up``."""
    me = _proc.read_stat(os.getpid())
    state = {
        "pid": os.getpid(),
        "starttime": None if me is None else me.starttime,
        "token": token,
        "config": str(config_path),
        "watchdog": watchdog,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(state, f)
    os.replace(tmp, path)


def remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()
