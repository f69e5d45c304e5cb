"""Log files: exact size rotation, nothing lost or reordered, and the foreground console."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

from forkwell._core._files import tail
from forkwell._supervisor._logs import Console, LogFile


def pattern(size: int) -> bytes:
    """A known, non-repeating byte sequence (so a lost or swapped chunk shows)."""
    out = bytearray()
    n = 0
    while len(out) < size:
        out += hashlib.sha256(n.to_bytes(8, "big")).digest()
        n += 1
    return bytes(out[:size])


def reassemble(path: Path) -> bytes:
    backups = sorted(
        (p for p in path.parent.iterdir() if p.name.startswith(path.name + ".")),
        key=lambda p: int(p.name.rsplit(".", 1)[1]),
        reverse=True,
    )
    return b"".join(p.read_bytes() for p in [*backups, path])


def test_rotation_splits_exactly_and_loses_nothing(tmp_path: Path) -> None:
    path = tmp_path / "x.log"
    log = LogFile(path, max_bytes=1000, backups=50)
    data = pattern(23_456)
    # Chunks of awkward sizes, some larger than a whole file.
    at, sizes = 0, [1, 999, 1000, 2500, 7, 4096, 333]
    i = 0
    while at < len(data):
        n = sizes[i % len(sizes)]
        log.write(data[at : at + n])
        at += n
        i += 1
    log.close()
    files = sorted(tmp_path.iterdir())
    assert len(files) == 24
    assert all(p.stat().st_size == 1000 for p in files if p != path)
    assert path.stat().st_size == 456
    assert reassemble(path) == data


def test_backups_beyond_the_limit_are_dropped(tmp_path: Path) -> None:
    path = tmp_path / "x.log"
    log = LogFile(path, max_bytes=10, backups=2)
    log.write(b"0123456789abcdefghijABCDEFGHIJxyz")
    log.close()
    assert path.read_bytes() == b"xyz"
    assert (tmp_path / "x.log.1").read_bytes() == b"ABCDEFGHIJ"
    assert (tmp_path / "x.log.2").read_bytes() == b"abcdefghij"
    assert not (tmp_path / "x.log.3").exists()


def test_zero_backups_truncates(tmp_path: Path) -> None:
    path = tmp_path / "x.log"
    log = LogFile(path, max_bytes=4, backups=0)
    log.write(b"abcdefg")
    log.close()
    assert path.read_bytes() == b"efg" and os.listdir(tmp_path) == ["x.log"]


def test_appends_to_an_existing_file_and_counts_its_size(tmp_path: Path) -> None:
    path = tmp_path / "x.log"
    path.write_bytes(b"12345678")
    log = LogFile(path, max_bytes=10, backups=1)
    log.write(b"abcd")
    log.close()
    assert (tmp_path / "x.log.1").read_bytes() == b"12345678ab" and path.read_bytes() == b"cd"


def test_a_deleted_log_file_is_recreated(tmp_path: Path) -> None:
    path = tmp_path / "x.log"
    log = LogFile(path, max_bytes=1000, backups=1)
    log.write(b"before\n")
    path.unlink()
    log.write(b"after\n")
    log.close()
    assert path.read_bytes() == b"after\n"


def test_tail(tmp_path: Path) -> None:
    path = tmp_path / "x.log"
    path.write_text("".join(f"line {i}\n" for i in range(100)))
    assert tail(path, 3) == ["line 97", "line 98", "line 99"]
    assert tail(path, 2, max_bytes=20) == ["line 98", "line 99"]
    assert tail(tmp_path / "missing") == []


def test_console_prefixes_complete_lines_and_keeps_partial_ones() -> None:
    out = io.BytesIO()
    console = Console(out, colour=False)  # type: ignore[arg-type]
    console.set_names(["web:0", "worker:12"])
    console.output("web:0", "stdout", b"hello\npart", 0)
    console.output("web:0", "stdout", b"ial\n", 0)
    console.output("web:0", "stdout", b"no newline", 0)
    console.flush_partial("web:0")
    lines = out.getvalue().decode().splitlines()
    assert [line.split(" ", 1)[1] for line in lines] == [
        "web:0     | hello",
        "web:0     | partial",
        "web:0     | no newline",
    ]
    assert all(len(line.split(" ", 1)[0]) == 8 for line in lines)  # HH:MM:SS


def test_console_colours_on_request() -> None:
    out = io.BytesIO()
    console = Console(out, colour=True)  # type: ignore[arg-type]
    console.output("web:0", "stdout", b"x\n", 2)
    assert out.getvalue().startswith(b"\x1b[32m")
