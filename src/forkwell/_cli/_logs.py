"""``forkwell logs``: print instances' log tails, and follow them across rotation and truncation.

The control command asks the supervisor where the logs are; this reads them
itself (no bytes through the control socket), so following costs the
supervisor nothing.
"""

from __future__ import annotations

import os
import sys
from types import SimpleNamespace
from typing import Any

from .._core._files import tail_bytes


def print_logs(prog: str, logs: list[dict[str, str]], args: SimpleNamespace) -> int:
    """Print the last ``args.lines`` of each log; with ``args.follow``, then what is appended."""
    # One instance: its bytes as they are.  Several: each line prefixed with
    # its instance, like the console of `forkwell up`.
    prefixed = len(logs) > 1
    width = max((len(entry["instance"]) for entry in logs), default=0)
    followers = []
    missing = []
    out = sys.stdout.buffer
    for entry in logs:
        prefix = f"{entry['instance']:<{width}} | ".encode() if prefixed else b""
        follower = LogFollower(entry["path"], prefix)
        if follower.file is None:
            missing.append(entry["instance"])
        else:
            tail = tail_bytes(follower.file, args.lines)
            out.write(follower.add_prefix(tail, final=not args.follow))
        followers.append(follower)
    out.flush()
    if not args.follow:
        if missing:
            stream = "stderr" if args.stderr else "stdout"
            print(f"{prog}: no {stream} log yet for {', '.join(missing)}", file=sys.stderr)
        for follower in followers:
            follower.close()
        return 0
    follow(followers, out)
    return 0  # pragma: no cover (follow returns only by an exception)


class LogFollower:
    """New bytes of one log file, across rotation and truncation.

    Rotation (rename + new file) shows as a new inode at ``path``: finish the
    old file, then read the new one from its start.  Truncation
    (copytruncate) shows as a size below our offset: start over at 0.
    """

    def __init__(self, path: str, prefix: bytes = b"") -> None:
        self.path = path
        self.prefix = prefix
        self._partial = b""
        self.file: Any = None
        self._ident: tuple[int, int] | None = None
        self._open()

    def _open(self) -> None:
        try:
            self.file = open(self.path, "rb")  # noqa: SIM115 (kept open while following)
        except FileNotFoundError:
            self.file, self._ident = None, None
        else:
            self._ident = _ident(os.fstat(self.file.fileno()))

    def read(self) -> bytes:
        """Whatever was appended since the last call (b"" if nothing); never blocks."""
        chunks = []
        while True:
            data = self.file.read(65536) if self.file is not None else b""
            if data:
                chunks.append(data)
                continue
            try:
                st = os.stat(self.path)
            except FileNotFoundError:
                break  # rotated away, the new file is not there yet
            if _ident(st) != self._ident:
                if self.file is not None:
                    chunks.append(self.file.read())  # written just before the rotation
                    self.file.close()
                self._open()
                if self.file is None:
                    break
                continue
            if self.file is not None and st.st_size < self.file.tell():
                self.file.seek(0)
                continue
            break
        return self.add_prefix(b"".join(chunks))

    def add_prefix(self, data: bytes, *, final: bool = False) -> bytes:
        """Prefix each complete line; keep a partial last line for later (unless ``final``)."""
        if not self.prefix:
            return data
        data = self._partial + data
        lines = data.split(b"\n")
        self._partial = b"" if final else lines.pop()
        if final and lines and lines[-1] == b"":
            lines.pop()
        return b"".join(self.prefix + line + b"\n" for line in lines)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


def follow(followers: list[LogFollower], out: Any, *, interval: float = 0.1) -> None:
    """Print what is appended to the followed logs, forever (until Ctrl-C).

    Polling keeps this portable and costs nothing measurable at 10 Hz.
    """
    import select

    while True:
        wrote = False
        for follower in followers:
            data = follower.read()
            if data:
                out.write(data)
                wrote = True
        if wrote:
            out.flush()
        else:
            select.select([], [], [], interval)


def _ident(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino
