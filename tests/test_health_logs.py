"""Log files that carry time and events: RFC 3339 timestamps per line, spawn/exit markers.

The big test pushes 100 MB of lines of every shape (short, long, longer than
a pipe read, written in pieces) through a real ``forkwell up`` into 1 MB
files, then puts the rotated files back together: with the timestamps and
markers taken off, it is the program's output byte for byte, and every line
has exactly one timestamp, at its start.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from helpers import PY
from test_supervisor_cli import up, write_config
from test_supervisor_harness import cmd, py

from forkwell._supervisor._loglines import LineLog, rfc3339

pytestmark = pytest.mark.timeout(120)

STAMP = rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d "

# Lines of every shape, deterministically: what the program writes and what the test expects.
# Every 997th line is 300 KB (several pipe reads); every 13th is written in two pieces.
# The last line ends the output: at least ``total`` bytes.
GENERATOR = """
import hashlib
def lines(total):
    base = b"".join(hashlib.sha256(bytes([i])).hexdigest().encode() for i in range(256))
    base = base * 24  # 393 KB of hex, no newline
    i = done = 0
    while done < total:
        size = 300_000 if i % 997 == 0 else (i * 7919) % 1500
        off = (i * 104729) % 60_000
        line = base[off:off + size] + b"\\n"
        yield line, i % 13 == 0
        done += len(line)
        i += 1
"""


class _Sink:
    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes) -> None:
        self.data += data


def test_rfc3339_has_milliseconds_and_the_local_offset() -> None:
    when = 1_700_000_000.25
    text = rfc3339(when).decode()
    assert re.fullmatch(STAMP.decode().strip(), text)
    local = time.localtime(when)
    assert text.startswith(time.strftime("%Y-%m-%dT%H:%M:%S", local) + ".250")
    off = local.tm_gmtoff
    assert text.endswith(f"{'-' if off < 0 else '+'}{abs(off) // 3600:02d}:{abs(off) % 3600 // 60:02d}")


def test_a_line_in_pieces_gets_one_stamp_and_markers_wait_for_its_end() -> None:
    sink = _Sink()
    log = LineLog(sink, timestamps=True, markers=True)
    log.write(b"par")
    log.mark("started pid 1")  # mid-line: waits
    log.write(b"tial\nwhole\nnext ")
    log.write(b"piece\n")
    log.mark("pid 1 exited with status 0 after 0.1s")  # at a line start: at once
    log.write(b"unfinished")
    log.mark("late")
    log.close()  # the file closes: the line is ended, the marker gets out
    lines = bytes(sink.data).split(b"\n")
    assert lines[-1] == b""
    bodies = [re.sub(b"^" + STAMP, b"", ln) for ln in lines[:-1]]
    assert all(re.match(STAMP, ln) for ln in lines[:-1])
    assert bodies == [
        b"partial",
        b"--- forkwell: started pid 1",
        b"whole",
        b"next piece",
        b"--- forkwell: pid 1 exited with status 0 after 0.1s",
        b"unfinished",
        b"--- forkwell: late",
    ]


def test_without_timestamps_the_bytes_are_the_programs() -> None:
    sink = _Sink()
    log = LineLog(sink, timestamps=False, markers=False)
    for chunk in (b"a", b"b\nc", b"\n\n", b"d"):
        log.write(chunk)
    log.mark("ignored")
    log.close()
    assert bytes(sink.data) == b"ab\nc\n\nd"


def test_100_mb_with_timestamps_across_rotations_loses_nothing(tmp_path: Path) -> None:
    total = 100 << 20
    writer = GENERATOR + f"""
import sys
out = sys.stdout.buffer
for line, split in lines({total}):
    if split:
        out.write(line[: len(line) // 2])
        out.flush()
        out.write(line[len(line) // 2 :])
    else:
        out.write(line)
out.flush()
"""
    path = write_config(
        tmp_path,
        f"""
        [programs.firehose]
        command = {cmd(PY, "-c", writer)}
        restart = "never"
        min_uptime = 0
        log_max_bytes = "1MB"
        log_backups = 500
        log_timestamps = true
        """,
    )
    # The run ends by itself once the program has exited: exit_when = "all-exited".
    path.write_text(path.read_text().replace("[supervisor]\n", '[supervisor]\nexit_when = "all-exited"\n', 1))
    proc = up(path, "--quiet")
    _, err = proc.communicate(timeout=100)
    assert proc.returncode == 0, err
    logs = tmp_path / ".forkwell" / "logs"
    rotated = sorted(
        logs.glob("firehose.0.stdout.log.*"), key=lambda p: int(p.suffix[1:]), reverse=True
    )
    assert len(rotated) > 100  # 100 MB and the stamps, through 1 MB files
    assert all(p.stat().st_size == 1 << 20 for p in rotated)  # cut at exactly log_max_bytes
    data = b"".join(p.read_bytes() for p in rotated) + (logs / "firehose.0.stdout.log").read_bytes()

    lines = data.split(b"\n")
    assert lines.pop() == b""
    stamp = re.compile(STAMP)
    program = bytearray()
    markers = []
    previous = b""
    for line in lines:
        m = stamp.match(line)
        assert m is not None, line[:80]
        assert m.group() >= previous  # in order (same offset all along)
        previous = m.group()
        body = line[m.end() :]
        if body.startswith(b"--- forkwell: "):
            markers.append(body.decode())
        else:
            program += body + b"\n"
    assert markers[0].startswith("--- forkwell: started pid ")
    assert re.fullmatch(r"--- forkwell: pid \d+ exited with status 0 after [\d.]+s", markers[1])
    assert len(markers) == 2

    space: dict[str, object] = {}
    exec(GENERATOR, space)  # the same generator the program ran
    expected = b"".join(line for line, _ in space["lines"](total))  # type: ignore[operator]
    assert len(program) == len(expected) >= total
    assert program == expected


def test_the_program_log_records_spawns_and_exits(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    program = py(
        f"""
        import pathlib, sys
        p = pathlib.Path({str(runs)!r})
        n = int(p.read_text()) + 1 if p.exists() else 1
        p.write_text(str(n))
        sys.stdout.write(f"run {{n}} without a newline")
        sys.exit(1 if n == 1 else 0)
        """
    )
    path = write_config(
        tmp_path,
        f"""
        [programs.job]
        command = {program}
        min_uptime = 0
        """,
    )
    path.write_text(path.read_text().replace("[supervisor]\n", '[supervisor]\nexit_when = "all-exited"\n', 1))
    proc = up(path, "--quiet")
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    text = (tmp_path / ".forkwell" / "logs" / "job.0.stdout.log").read_text()
    pattern = (
        r"--- forkwell: started pid (\d+)\n"
        r"run 1 without a newline\n"
        r"--- forkwell: pid \1 exited with status 1 after [\d.]+s\n"
        r"--- forkwell: started pid (\d+)\n"
        r"run 2 without a newline\n"
        r"--- forkwell: pid \2 exited with status 0 after [\d.]+s\n"
    )
    assert re.fullmatch(pattern, text), text
