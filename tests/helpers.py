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
_PUBLIC: list[Path] = []


def public_sources() -> Path:
    """A directory any user can import forkwell from: a world-readable copy of the package.

    Tests that drop to another user (``nobody``) must not depend on where the
    checkout lives: a clone in a 0700 directory (``mktemp -d``, a private
    home) is unreadable to that user.  Made once per session, removed at exit.
    """
    if not _PUBLIC:
        import atexit
        import shutil
        import tempfile

        import forkwell

        top = Path(tempfile.mkdtemp(prefix="forkwell-public-"))
        atexit.register(shutil.rmtree, top, ignore_errors=True)
        shutil.copytree(Path(forkwell.__file__).parent, top / "forkwell",
                        ignore=shutil.ignore_patterns("__pycache__"))
        for path in [top, *top.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        _PUBLIC.append(top)
    return _PUBLIC[0]


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
