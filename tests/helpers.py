"""Small helpers shared by the tests: liveness from /proc, deadline-bound polling."""

from __future__ import annotations

import os
import select
import sys
import time
from collections.abc import Callable
from pathlib import Path

PY = sys.executable
IS_ROOT = os.geteuid() == 0


def proc_state(pid: int) -> str | None:
    """The state letter of ``pid`` from /proc (None if gone)."""
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    return data[data.rfind(b")") + 2 :].split()[0].decode()


def running(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    state = proc_state(pid)
    return state is not None and state not in ("Z", "X")


def wait_until(pred: Callable[[], object], timeout: float = 5.0, what: str = "condition") -> None:
    """Poll ``pred`` every few ms until true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        select.select([], [], [], 0.005)


def read_pids(path: Path, count: int, timeout: float = 5.0) -> list[int]:
    """Wait until ``path`` holds ``count`` pid lines (children write them when ready)."""

    def enough() -> bool:
        try:
            return len(path.read_text().split()) >= count
        except FileNotFoundError:
            return False

    wait_until(enough, timeout, f"{count} pids in {path}")
    return [int(x) for x in path.read_text().split()]
