"""Program output: size-rotated log files and the foreground console.

:class:`LogFile` appends bytes in the order they arrive and rotates *exactly*
at ``max_bytes``: a chunk that does not fit is split, the head finishes the
current file, the tail starts the next one.  Nothing is buffered in Python,
so no byte is lost or reordered across a rotation, and a crash of the
supervisor loses nothing already read from the pipe.  Rotation renames
``X.log`` to ``X.log.1`` (``.1`` -> ``.2`` ...), keeping ``backups`` files.

A log file deleted by hand (``rm`` to free space) is noticed at the next
write and re-created, instead of writing into an unlinked inode forever
(supervisord issue 240).

A write that fails (the disk full, a quota, ``RLIMIT_FSIZE``) never stops the
program or the supervisor: up to :data:`HOLD_BYTES` wait in memory and are
written first when writing works again, later output beyond that is
dropped and counted, and the log says how many bytes are missing where they
are missing.  ``report`` hears of the failure once and of the recovery once.

:class:`Output` is one instance's side: a pipe per stream for the
instance's whole life, copied to its log files as data arrives.

:class:`Console` prints each complete line as ``HH:MM:SS web:0  | line``,
one colour per program when the output is a terminal, like honcho and
foreman.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from .._core._status import describe_exit
from ._loglines import LineLog

if TYPE_CHECKING:
    from ._config import ProgramConfig
    from ._loop import Loop

_OPEN_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
_READ_SIZE = 262144
HOLD_BYTES = 1 << 20  # per log file, while it cannot be written


class LogFile:
    """An append-only log file rotated by size, that outlives a full disk."""

    def __init__(
        self, path: Path, max_bytes: int, backups: int, report: Callable[[str], None] | None = None
    ) -> None:
        self.path = path
        self.max_bytes = max(1, max_bytes)
        self.backups = max(0, backups)
        self._fd = -1
        self.size = 0
        self._report = report
        self._held = bytearray()  # not written yet: the file could not take it
        self.dropped = 0  # bytes lost since writing last failed
        self.failing: str | None = None  # why the last write failed
        self._open()

    def _open(self) -> None:
        try:
            self._fd = os.open(self.path, _OPEN_FLAGS, 0o644)
        except FileNotFoundError:  # the directory is made once, not checked per file
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, _OPEN_FLAGS, 0o644)
        self.size = os.fstat(self._fd).st_size

    def write(self, data: bytes) -> None:
        """Append ``data``, rotating whenever the file reaches ``max_bytes``."""
        if self.failing is None:
            try:
                self._append(memoryview(data))
                return
            except _WriteFailed as failed:
                self._fail(failed)
                data = data[failed.written :]
        room = HOLD_BYTES - len(self._held)
        self._held += data[:room]
        self.dropped += max(0, len(data) - room)
        self.flush()

    def flush(self) -> None:
        """Try again to write what a failed write left in memory."""
        if self.failing is None:
            return
        dropped = self.dropped
        try:
            # A copy: a live view would pin the bytearray's size.
            self._append(memoryview(bytes(self._held)))
            self._held.clear()
            if dropped:
                note = f"[forkwell: {dropped} bytes of output lost here: {self.failing}]\n"
                self._append(memoryview(note.encode()))
        except _WriteFailed as failed:
            del self._held[: failed.written]
            self.failing = failed.why
            return
        self.dropped, self.failing = 0, None
        if self._report is not None:
            lost = f"; {dropped} bytes were lost" if dropped else ""
            self._report(f"log {self.path}: writing again{lost}")

    def _fail(self, failed: _WriteFailed) -> None:
        self.failing = failed.why
        if self._report is not None:
            self._report(
                f"log {self.path}: cannot write ({failed.why}); the program keeps running, "
                f"up to {HOLD_BYTES >> 10} KiB of its output wait in memory"
            )

    def _append(self, view: memoryview) -> None:
        """Write all of ``view``; _WriteFailed says how much was written before a failure."""
        done = 0
        try:
            if self._fd < 0:
                self._open()
            elif os.fstat(self._fd).st_nlink == 0:
                # Deleted behind our back: start a new file rather than write to nothing.
                os.close(self._fd)
                self._fd = -1
                self._open()
            while done < len(view):
                room = self.max_bytes - self.size
                if room <= 0:
                    self.rotate()
                    room = self.max_bytes
                written = os.write(self._fd, view[done : done + room])
                done += written
                self.size += written
        except OSError as exc:
            raise _WriteFailed(done, exc.strerror or str(exc)) from None

    def rotate(self) -> None:
        """Close the current file, shift the backups, and start an empty file."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        name = str(self.path)
        if self.backups == 0:
            try:
                os.unlink(name)
            except FileNotFoundError:
                pass
        else:
            for i in range(self.backups - 1, 0, -1):
                try:
                    os.rename(f"{name}.{i}", f"{name}.{i + 1}")
                except FileNotFoundError:
                    pass
            try:
                os.rename(name, f"{name}.1")
            except FileNotFoundError:
                pass
        self._open()

    def close(self) -> None:
        self.flush()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class _WriteFailed(Exception):
    def __init__(self, written: int, why: str) -> None:
        self.written = written
        self.why = why


class Output:
    """An instance's stdout and stderr: pipes that outlive its processes, and its log files.

    One pipe for the instance's whole life keeps its output in order even
    when a dying process's last words and its replacement's first ones
    overlap; the supervisor keeps the write end, so it never sees EOF and
    needs no per-process bookkeeping.  ``echo`` also gets every chunk (the
    console).
    """

    def __init__(
        self, echo: Callable[[str, bytes], None], report: Callable[[str], None] | None = None
    ) -> None:
        self._echo = echo
        self._report = report
        self._pipes: dict[str, tuple[int, int]] = {}  # stream -> (read fd, write fd)
        self.logs: dict[str, LogFile] = {}
        self._lines: dict[str, LineLog] = {}
        # Each chunk read, for a log:REGEX readiness probe while one waits.
        self.watch: Callable[[bytes], None] | None = None
        self._exit_marked = 0  # the pid whose exit marker was written last

    def open(self, paths: Mapping[str, Path], cfg: ProgramConfig, loop: Loop) -> None:
        """A pipe and a log file for each stream of ``paths`` (once: they stay open).

        ``cfg``'s ``log_*`` settings say how the files are rotated and written.
        """
        if self._pipes:
            return
        try:
            for stream, path in paths.items():
                r, w = os.pipe2(os.O_CLOEXEC)
                os.set_blocking(r, False)
                self._pipes[stream] = (r, w)
                log = LogFile(path, cfg.log_max_bytes, cfg.log_backups, self._report)
                self.logs[stream] = log
                self._lines[stream] = LineLog(
                    log, timestamps=cfg.log_timestamps, markers=cfg.log_markers
                )
                loop.add_reader(r, self._readable, stream, r)
        except BaseException:
            self.close(loop)
            raise

    def write_ends(self) -> tuple[int, int]:
        """The fds a process gets as stdout and stderr (the same one, when merged).

        What is still in the pipes is written first: it was written before this process.
        """
        self.drain()
        out = self._pipes["stdout"][1]
        return out, self._pipes["stderr"][1] if "stderr" in self._pipes else out

    def _readable(self, stream: str, fd: int) -> None:
        try:
            data = os.read(fd, _READ_SIZE)
        except BlockingIOError:
            return
        if data:
            self._copy(stream, data)

    def _copy(self, stream: str, data: bytes) -> None:
        self._lines[stream].write(data)
        self._echo(stream, data)
        if self.watch is not None:
            self.watch(data)

    def mark(self, text: str, *, drain: bool = False) -> None:
        """Record a supervisor event in each log file (when markers are on).

        ``drain``: first write what is in the pipes (an exit: the process's last
        words come before the news of its end), and end the line it left
        unfinished (with markers on only: else the bytes are the program's).  A
        spawn does not drain: :meth:`write_ends` did, just before the process was
        started.
        """
        if drain:
            self.drain()
        for lines in self._lines.values():
            lines.mark(text, end_line=drain)

    def exited(self, pid: int, returncode: int | None, uptime: float) -> None:
        """The marker of a process's end (once per process, however its end was seen)."""
        if returncode is not None and pid != self._exit_marked:
            self._exit_marked = pid
            self.mark(f"pid {pid} {describe_exit(returncode)} after {uptime:.1f}s", drain=True)

    def drain(self) -> None:
        """Write whatever is still in the pipes (the process has exited)."""
        for stream, (r, _) in self._pipes.items():
            while True:
                try:
                    data = os.read(r, _READ_SIZE)
                except BlockingIOError:
                    break
                if not data:
                    break
                self._copy(stream, data)

    def close(self, loop: Loop) -> None:
        self.drain()
        for r, w in self._pipes.values():
            loop.remove_reader(r)
            os.close(r)
            os.close(w)
        self._pipes.clear()
        for lines in self._lines.values():
            lines.close()
        self._lines.clear()
        for log in self.logs.values():
            log.close()
        self.logs.clear()


_COLOURS = ("36", "33", "32", "35", "34", "31", "96", "93", "92", "95", "94", "91")


class Console:
    """Prints program output and supervisor events to a stream, line by line."""

    def __init__(self, stream: BinaryIO, *, colour: bool | None = None) -> None:
        self.stream = stream
        if colour is None:
            colour = _isatty(stream) and os.environ.get("NO_COLOR") is None
        self.colour = colour
        self.width = 8
        self._partial: dict[tuple[str, str], bytes] = {}

    def set_names(self, names: Iterable[str]) -> None:
        self.width = max([8, *(len(n) for n in names)])

    def _prefix(self, who: str, colour_index: int) -> bytes:
        stamp = time.strftime("%H:%M:%S")
        text = f"{stamp} {who:<{self.width}} | "
        if self.colour:
            text = f"\x1b[{_COLOURS[colour_index % len(_COLOURS)]}m{text}\x1b[0m"
        return text.encode()

    def output(self, who: str, stream: str, data: bytes, colour_index: int) -> None:
        """Print the complete lines in ``data``; keep a trailing partial line for later."""
        key = (who, stream)
        data = self._partial.pop(key, b"") + data
        lines = data.split(b"\n")
        rest = lines.pop()
        if len(rest) > 65536:  # a program that never ends its line: show it anyway
            lines.append(rest)
            rest = b""
        if rest:
            self._partial[key] = rest
        if lines:
            prefix = self._prefix(who, colour_index)
            self._write(b"".join(prefix + line + b"\n" for line in lines))

    def flush_partial(self, who: str) -> None:
        """Print what is left of an instance's unfinished lines (it stopped)."""
        for stream in ("stdout", "stderr"):
            rest = self._partial.pop((who, stream), b"")
            if rest:
                self._write(self._prefix(who, 0) + rest + b"\n")

    def event(self, text: str) -> None:
        prefix = self._prefix("forkwell", -1 if not self.colour else 11)
        if self.colour:
            text = f"\x1b[1m{text}\x1b[0m"
        self._write(prefix + text.encode() + b"\n")

    def _write(self, data: bytes) -> None:
        try:
            self.stream.write(data)
            self.stream.flush()
        except (BrokenPipeError, ValueError):
            # The terminal went away (ssh dropped): keep supervising, stop echoing.
            self.stream = open(os.devnull, "wb")  # noqa: SIM115


def _isatty(stream: BinaryIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
