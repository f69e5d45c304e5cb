"""A log file that knows where lines begin: timestamps and the supervisor's markers.

:class:`LineLog` sits in front of a :class:`~forkwell._supervisor._logs.LogFile`:

* with ``timestamps``, every line the program writes starts with the time
  its first byte was read, RFC 3339 with milliseconds and the local offset
  (``2024-05-01T12:00:00.123+02:00 ``).  A line that arrives in pieces (a
  partial line, or one longer than a pipe read) gets one timestamp, at its
  start: no line is ever split by a timestamp, and nothing is buffered, so
  nothing is held back or lost.  The rotation below it still cuts at exactly
  ``log_max_bytes``, so the rotated files, put back together, are the
  program's output with a timestamp in front of each line;
* :meth:`LineLog.mark` writes the supervisor's own events into the file as
  lines of their own, ``--- forkwell: started pid 4242``: when the program
  is in the middle of a line, the marker waits for that line to end (or for
  the file to close), so it never lands inside the program's output; the
  marker of a process's exit ends the line that process left unfinished.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Protocol

    class LogFile(Protocol):
        """Where the lines go (:class:`~forkwell._supervisor._logs.LogFile` is one)."""

        def write(self, data: bytes) -> None: ...

MARKER = b"--- forkwell: "
_STAMP_LEN = len(b"2024-05-01T12:00:00.123+02:00 ")


def is_marker(line: str) -> bool:
    """Whether a line read back from a log file is one of :meth:`LineLog.mark`'s."""
    text = MARKER.decode()
    return line.startswith(text) or line.startswith(text, _STAMP_LEN)

_second: list[object] = [-1, b"", b""]  # the second last formatted, its text, its offset


def rfc3339(now: float | None = None) -> bytes:
    """``now`` (default: the current time) as ``YYYY-MM-DDTHH:MM:SS.mmm+HH:MM``."""
    if now is None:
        now = time.time()
    sec = int(now)
    if sec != _second[0]:  # strftime once a second, not once a line
        local = time.localtime(sec)
        offset = local.tm_gmtoff
        sign = "-" if offset < 0 else "+"
        offset = abs(offset)
        _second[:] = [
            sec,
            time.strftime("%Y-%m-%dT%H:%M:%S", local).encode(),
            f"{sign}{offset // 3600:02d}:{offset % 3600 // 60:02d}".encode(),
        ]
    return b"%s.%03d%s" % (_second[1], int((now - sec) * 1000), _second[2])


class LineLog:
    """Program output and markers into one log file, line by line."""

    def __init__(self, log: LogFile, *, timestamps: bool, markers: bool) -> None:
        self.log = log
        self.timestamps = timestamps
        self.markers = markers
        self.at_line_start = True
        self._pending: list[bytes] = []  # markers waiting for the current line to end

    def write(self, data: bytes) -> None:
        """Append the program's ``data`` (any chunk: partial lines, many lines)."""
        if self._pending:
            end = data.find(b"\n") + 1
            if not end:
                self._write(data)
                return
            self._write(data[:end])
            self._flush_pending()
            data = data[end:]
            if not data:
                return
        self._write(data)

    def _write(self, data: bytes) -> None:
        if self.timestamps:
            stamp = rfc3339() + b" "
            out = data.replace(b"\n", b"\n" + stamp)
            if self.at_line_start:
                out = stamp + out
            if data.endswith(b"\n"):
                out = out[: -len(stamp)]  # the next line is stamped when it begins
            self.log.write(out)
        else:
            self.log.write(data)
        self.at_line_start = data.endswith(b"\n")

    def mark(self, text: str, *, end_line: bool = False) -> None:
        """A line of the supervisor's own: ``--- forkwell: TEXT``, never inside a line.

        ``end_line``: the program's unfinished line is over (its process exited):
        end it here, as the console does, rather than wait for the next process's
        output to end it.
        """
        if not self.markers:
            return
        stamp = rfc3339() + b" " if self.timestamps else b""
        line = stamp + MARKER + text.encode(errors="replace") + b"\n"
        if end_line and not self.at_line_start:
            self.log.write(b"\n")
            self.at_line_start = True
            self._flush_pending()
        if self.at_line_start:
            self.log.write(line)
        else:
            self._pending.append(line)

    def _flush_pending(self) -> None:
        pending, self._pending = self._pending, []
        self.log.write(b"".join(pending))

    def close(self) -> None:
        """The last words: an unfinished line is ended so the waiting markers get out."""
        if self._pending:
            self.log.write(b"\n")
            self.at_line_start = True
            self._flush_pending()
