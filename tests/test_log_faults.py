"""A log that cannot be written: the disk full for real, and ``RLIMIT_FSIZE``.

The promise: the program keeps running, the supervisor neither crashes nor
spins, it says so once, and when writing works again the log goes on with a
line that says exactly how many bytes are missing where they are missing.
Each test rebuilds the program's whole output and checks the log against it
byte for byte.
"""

from __future__ import annotations

import contextlib
import os
import re
import resource
import select
import signal
import subprocess
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import IS_ROOT, PY, proc_state, read_pids, running, wait_until
from test_supervisor_cli import asleep_in_epoll, ctx_switches
from test_supervisor_harness import cmd

from forkwell._supervisor._logs import HOLD_BYTES

pytestmark = pytest.mark.timeout(90)

LINE = 100  # bytes per line the program writes
# Line n is its number and padding, so any stretch of the output can be
# rebuilt.  Ten lines a millisecond, about 1 MB/s, for 30 s at most: far
# more than a test needs, and the 1 MiB held in memory overflows in a second.
WRITER = (
    "import sys, time\n"
    "for n in range(0, 300000, 10):\n"
    f"    sys.stdout.write(''.join(f'{{i:08d}} ' + 'x' * {LINE - 10} + '\\n'"
    " for i in range(n, n + 10))); sys.stdout.flush()\n"
    "    time.sleep(0.001)\n"
)
MARKER = re.compile(rb"\[forkwell: (\d+) bytes of output lost here: ([^\]]+)\]\n")


def expected_stream(lines: int) -> bytes:
    return b"".join(f"{n:08d} ".encode() + b"x" * (LINE - 10) + b"\n" for n in range(lines))


class Foreground:
    """``forkwell up`` in the foreground, its console read by a thread."""

    def __init__(self, cfg: Path, preexec: Callable[[], None] | None = None) -> None:
        self.proc = subprocess.Popen(
            [PY, "-m", "forkwell", "up", "-c", str(cfg)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            preexec_fn=preexec,  # noqa: PLW1509 (setrlimit only; the reader thread starts after)
        )
        self.events: list[bytes] = []
        self.echoed = 0  # program lines shown on the console
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if b" forkwell | " in line:
                self.events.append(line)
            else:
                self.echoed += 1

    def wait_for(self, needle: bytes, timeout: float = 30.0) -> None:
        wait_until(lambda: any(needle in e for e in self.events), timeout, repr(needle))

    def wait_echoed(self, more: int) -> None:
        """Until the program has written ``more`` lines (the console shows each)."""
        target = self.echoed + more
        wait_until(lambda: self.echoed >= target, 30, f"{more} more lines")

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        _, err = self.proc.communicate(timeout=30)
        self._reader.join(10)
        assert b"Traceback" not in err, err.decode()
        return self.proc.returncode


def check_log(data: bytes, why: str) -> None:
    """``data`` is the program's stream with one marked gap, and nothing else."""
    found = list(MARKER.finditer(data))
    assert len(found) == 1, f"one gap marker expected, found {len(found)}"
    mark = found[0]
    assert mark.group(2).decode() == why
    lost = int(mark.group(1))
    assert lost > 0
    head, tail = data[: mark.start()], data[mark.end() :]
    total = len(head) + lost + len(tail)
    whole = expected_stream(total // LINE + 1)
    assert head == whole[: len(head)], "the bytes before the gap are the program's, in order"
    assert tail == whole[len(head) + lost : total], "after the gap: exactly `lost` bytes later"


def run_out_of_room(
    tmp_path: Path,
    log_dir: Path,
    why: bytes,
    make_room: Callable[[Path], None] | None,
    preexec: Callable[[], None] | None = None,
) -> tuple[bytes, Foreground]:
    """Run the writer until its log cannot be written, ``make_room``, and return the log.

    Without ``make_room``, the supervisor is stopped while writing still fails.
    """
    pidfile = tmp_path / "writer.pid"
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    cfg = tmp_path / "forkwell.toml"
    cfg.write_text(
        textwrap.dedent(f"""
        [supervisor]
        log_dir = "{log_dir}"
        [programs.writer]
        command = {cmd("sh", "-c", f"echo $$ > {pidfile}; exec {PY} {script}")}
        log_markers = false     # the program's bytes alone (markers: test_health_logs.py)
        """)
    )
    log = log_dir / "writer.0.stdout.log"
    sup = Foreground(cfg, preexec)
    try:
        pid = read_pids(pidfile, 1, timeout=20)[0]
        sup.wait_for(b"cannot write (" + why + b")")
        # Past what memory holds: from here on output is dropped and counted.
        sup.wait_echoed((HOLD_BYTES // LINE) * 2)
        quiet_while_stopped(sup.proc.pid, pid)
        if make_room is not None:
            make_room(log)
            sup.wait_for(b"writing again")
            grown = log.stat().st_size + 4 * LINE
            wait_until(lambda: log.stat().st_size > grown, 20, "output after the gap")
        assert running(pid), "the program kept running"
    finally:
        assert sup.stop() == 0
    troubles = [e for e in sup.events if b"cannot write" in e and b"writer" in e]
    assert len(troubles) == 1, troubles  # said once, not per chunk
    return log.read_bytes(), sup


def sigchld_pending(pid: int) -> bool:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("SigPnd:", "ShdPnd:")) and int(line.split()[1], 16) >> 16 & 1:
            return True
    return False


def quiet_while_stopped(supervisor: int, program: int) -> None:
    """With the program stopped, the supervisor of a failing log sleeps: no retry loop."""
    os.kill(program, signal.SIGSTOP)
    try:
        # The stop's SIGCHLD (CLD_STOPPED) wakes the supervisor once: count
        # from when it has been taken and the supervisor sleeps again.
        wait_until(lambda: proc_state(program) == "T", 10, "the program to stop")
        wait_until(
            lambda: not sigchld_pending(supervisor) and asleep_in_epoll(supervisor),
            10,
            "the supervisor to sleep",
        )
        before = ctx_switches(supervisor)
        select.select([], [], [], 0.5)  # the window being measured
        assert ctx_switches(supervisor) - before == 0
    finally:
        os.kill(program, signal.SIGCONT)


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


@pytest.mark.skipif(not IS_ROOT, reason="mounting a small tmpfs needs root")
def test_disk_full_holds_then_resumes_and_marks_the_gap(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "disk", "4m") as disk:
        filler = disk / "filler"
        # Fill it all, then give 48 KiB back.
        with contextlib.suppress(OSError), filler.open("wb") as f:
            while True:
                f.write(b"\0" * 4096)
                f.flush()
        os.truncate(filler, filler.stat().st_size - (48 << 10))
        data, _ = run_out_of_room(
            tmp_path, disk / "logs", b"No space left on device", lambda _log: filler.unlink()
        )
    check_log(data, "No space left on device")


def _limit_file_size() -> None:
    # Python ignores SIGXFSZ, so the supervisor's write fails with EFBIG.
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 10, resource.RLIM_INFINITY))


def test_file_size_limit_stops_the_log_not_the_program(tmp_path: Path) -> None:
    limit = 64 << 10
    data, sup = run_out_of_room(
        tmp_path, tmp_path / "logs", b"File too large", None, preexec=_limit_file_size
    )
    # Everything up to the limit, exactly; nothing after it (it could not be).
    assert data == expected_stream(limit // LINE + 1)[:limit]
    assert sup.proc.returncode == 0
