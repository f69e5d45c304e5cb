"""Reading ``/proc``: the one parser of ``/proc/PID/stat``, and what is built on it.

Everything in forkwell that asks the kernel about a process it does not hold
a handle to (tree scans, ``ps``, ``daemon status``, ``init``'s leftovers,
the state file) reads it here, so the format is parsed once: the command
name may hold spaces and parentheses, so the fields are split after the
*last* ``)``.  Kept lean (``os``, ``time`` and the platform layer): the
control client imports it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import NamedTuple

from . import _clock, _sys

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


class ProcStat(NamedTuple):
    """The fields of ``/proc/PID/stat`` forkwell uses (see proc(5))."""

    pid: int
    ppid: int
    pgid: int
    sid: int
    state: str  # R, S, D, T, Z, X...
    starttime: int  # clock ticks after boot: with the pid, the process's identity
    threads: int = 1
    cpu_ticks: int = 0  # utime + stime, in clock ticks
    rss_bytes: int = 0
    child_ticks: int = 0  # cutime + cstime: the children it has waited for

    @property
    def alive(self) -> bool:
        """Neither a zombie nor dead: it still runs (or sleeps, or is stopped)."""
        return self.state not in ("Z", "X")


def read_small(path: str) -> bytes | None:
    """A /proc file, read with few syscalls (open() takes twice as many); None if gone.

    ``ps`` of 1,000 instances reads 2,000 of them: on a VM, where a syscall
    costs microseconds, the saving is most of the time ``ps`` spends.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        data = chunk = os.read(fd, 65536)
        # /proc hands a file out a page (4 KiB) of whole records per read: a children
        # list of 1,000 pids takes two reads.  A read that returned under half a page
        # was the last one when records are short (a pid, a line of maps; a stat file
        # is one record and comes whole), so the usual small file costs one read.
        while len(chunk) > 2048:
            chunk = os.read(fd, 65536)
            data += chunk
        return data
    except OSError:
        return None
    finally:
        os.close(fd)


def read_stat(pid: int) -> ProcStat | None:
    """Parse ``/proc/PID/stat``; None if the process is gone (or unreadable)."""
    data = read_small(f"/proc/{pid}/stat")
    if data is None:
        return None
    rest = data[data.rfind(b")") + 2 :].split()
    try:
        return ProcStat(
            pid=pid,
            state=rest[0].decode(),
            ppid=int(rest[1]),
            pgid=int(rest[2]),
            sid=int(rest[3]),
            starttime=int(rest[19]),
            threads=int(rest[17]),
            cpu_ticks=int(rest[11]) + int(rest[12]),
            rss_bytes=int(rest[21]) * PAGE_SIZE,
            child_ticks=int(rest[13]) + int(rest[14]),
        )
    except (IndexError, ValueError):
        return None


def iter_pids() -> Iterator[int]:
    """Every pid in ``/proc`` (processes, not threads)."""
    for entry in os.scandir("/proc"):
        name = entry.name
        if name.isdigit():
            yield int(name)


def live_processes(exclude_self: bool = True) -> dict[int, ProcStat]:
    """Every live (non-zombie) process on the machine, by pid."""
    me = os.getpid() if exclude_self else -1
    out: dict[int, ProcStat] = {}
    for pid in iter_pids():
        if pid == me:
            continue
        info = read_stat(pid)
        if info is not None and info.alive:
            out[pid] = info
    return out


def boot_ticks() -> int:
    """Now, in the unit of ``starttime`` (clock ticks since boot)."""
    return int(time.clock_gettime(time.CLOCK_BOOTTIME) * CLK_TCK) if _sys.IS_LINUX else 0


def uptime(pid: int) -> float | None:
    """Seconds since ``pid`` started, or None if it is gone."""
    info = read_stat(pid)
    if info is None:
        return None
    return max(boot_ticks() - info.starttime, 0) / CLK_TCK


def name(pid: int) -> str | None:
    """The base name of ``pid``'s ``argv[0]``, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv0 = f.read().split(b"\0")[0]
    except OSError:
        return None
    return os.path.basename(argv0.decode(errors="replace")) or None


def pin(info: ProcStat) -> int | None:
    """A pidfd for the process ``info`` describes, or None if that process is gone.

    The start time is read again once the pidfd is open: if it differs, the
    pid was recycled between the scan and ``pidfd_open``, and the new process
    must not be signalled in the old one's place.
    """
    fd = _sys.pidfd_open(info.pid)
    if fd is None:
        return None
    again = read_stat(info.pid)
    if again is None or again.starttime != info.starttime:
        os.close(fd)
        return None
    return fd


def wait_gone(pid: int, timeout: float, *, pidfd: int | None = None) -> bool:
    """Wait until process ``pid`` (not necessarily our child) has exited; False on timeout.

    A zombie counts as gone: it runs nothing any more.  By pidfd where the
    kernel has them (``pidfd``, when the caller holds one already), else by
    polling ``/proc`` every 20 ms.
    """
    deadline = _clock.monotonic() + timeout
    fd = pidfd if pidfd is not None else _sys.pidfd_open(pid)
    if fd is None and pidfd is None and read_stat(pid) is None:
        return True
    try:
        while True:
            left = max(0.0, deadline - _clock.monotonic())
            if fd is not None:
                if _sys.wait_ready([fd], left):
                    return True
            else:
                info = read_stat(pid)
                if info is None or not info.alive:
                    return True
                _sys.wait_ready([], min(0.02, left))
            if left <= 0:
                return False
    finally:
        if fd is not None and pidfd is None:
            os.close(fd)
