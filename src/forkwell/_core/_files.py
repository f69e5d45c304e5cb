"""The end of a file: what error messages quote and what ``logs -n`` prints.

One reader for every caller (a failed start's log tail, ``forkwell daemon
start``'s report, ``forkwell logs``): it reads backwards from the end in
blocks, never the whole file, and counts a last line without ``\\n`` as a line.
"""

from __future__ import annotations

import os
from typing import BinaryIO

_BLOCK = 65536


def tail_bytes(
    f: BinaryIO, lines: int, max_bytes: int | None = None, *, block: int = _BLOCK
) -> bytes:
    """The last ``lines`` lines of binary file ``f``; leaves ``f`` at its end.

    ``max_bytes`` bounds what is read; a first line cut by that bound is
    dropped rather than shown in part.
    """
    end = f.seek(0, os.SEEK_END)
    if lines <= 0:
        return b""
    floor = 0 if max_bytes is None else max(0, end - max_bytes)
    pos = end
    data = b""
    while pos > floor and data.count(b"\n") <= lines:
        step = min(block, pos - floor)
        pos -= step
        f.seek(pos)
        data = f.read(step) + data
    f.seek(end)
    kept = data.splitlines(keepends=True)
    if pos > 0 and len(kept) > lines:
        kept = kept[-lines:]
    elif pos > 0 and kept:
        kept = kept[1:]  # cut by max_bytes: the first line is partial
    return b"".join(kept[-lines:])


def tail(path: str | os.PathLike[str], lines: int = 10, max_bytes: int = 16384) -> list[str]:
    """The last ``lines`` lines of a text file (at most ``max_bytes`` read); [] if missing."""
    try:
        with open(path, "rb") as f:
            data = tail_bytes(f, lines, max_bytes)
    except OSError:
        return []
    return data.decode("utf-8", "replace").splitlines()
