"""Sessions: what "the whole daemon" means, for a stop and for a failed start.

The intermediate process is a session leader and the daemon its child, so
everything the daemon forks (workers, a shell's background jobs) stays in
that session unless it calls ``setsid`` itself.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time

from .._core import _proc, _sys


def session_members(sid: int) -> list[_proc.ProcStat]:
    """Live processes in session ``sid`` (from /proc), excluding this process."""
    return [info for info in _proc.live_processes().values() if info.sid == sid]


def _still_members(sid: int) -> bool:
    try:
        return bool(session_members(sid))
    except OSError:
        return True  # unknown: keep waiting (SIGKILL follows at the deadline)


def process_session(pid: int) -> int | None:
    info = _proc.read_stat(pid)
    return None if info is None else info.sid


def signal_session(sid: int, sig: int) -> bool:
    """Send ``sig`` to every member of session ``sid``; False if it had none.

    When /proc cannot be read (EMFILE), the leader's process group gets it:
    unknown is not "none".
    """
    try:
        members = session_members(sid)
    except OSError:
        with contextlib.suppress(OSError):
            os.killpg(sid, sig)
        return True
    for info in members:
        # Pinned: a member that exited since the scan leaves a pid that may
        # already name someone else.
        try:
            fd = _proc.pin(info)
        except OSError:  # no fd for a pidfd: by pid, as without pidfds
            fd = None
        if fd is not None or not _sys.HAVE_PIDFD or _proc.running(info.pid):
            with contextlib.suppress(OSError):
                _sys.send_signal(info.pid, fd, sig)
        if fd is not None:
            os.close(fd)
    return bool(members)


def end_session(sid: int, sig: int, timeout: float) -> bool:
    """``sig`` to the session, up to ``timeout`` for it to empty, then SIGKILL.

    True if SIGKILL was needed.
    """
    if not signal_session(sid, sig):
        return False
    deadline = time.monotonic() + timeout
    while _still_members(sid) and time.monotonic() < deadline:
        _sys.wait_ready([], 0.02)
    return signal_session(sid, signal.SIGKILL)
