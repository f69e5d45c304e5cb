"""How a process ended, decoded and said once for everyone.

forkwell speaks of an exit in one convention, ``subprocess``'s: a
*returncode* is the exit status (0-255), or ``-N`` when signal N ended the
process.  This module turns what the kernel reports into that convention and
that convention into words and shell statuses; nothing else in forkwell
decodes a wait status or names a signal by hand (no ``status >> 8``).  The
other cells of a process table (``forkwell ps``, the status page) are
written here too: uptime and memory, said the same way everywhere.

It imports only ``os`` and ``signal``, so :mod:`forkwell._exceptions` and the
leanest command may use it.
"""

from __future__ import annotations

import os
import signal


def signal_name(signum: int) -> str:
    """``SIGTERM`` for 15; ``signal 99`` for a number Python does not name."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def describe_exit(returncode: int) -> str:
    """``exited with status 3`` or ``was killed by SIGTERM``: a phrase after a name."""
    if returncode >= 0:
        return f"exited with status {returncode}"
    return f"was killed by {signal_name(-returncode)}"


def exit_label(returncode: int | None) -> str:
    """What a table shows in a LAST-EXIT column: ``3``, ``SIGKILL``, or ``-``."""
    if returncode is None:
        return "-"
    return str(returncode) if returncode >= 0 else signal_name(-returncode)


def format_uptime(seconds: float) -> str:
    """``5s``, ``5m12s``, ``2h03m``, ``2d01h``: two units at most."""
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def format_bytes(n: int) -> str:
    """``512B``, ``12.2M``: powers of 1024, as ``ps`` and ``top`` show memory."""
    value = float(n)
    for unit in ("B", "K", "M", "G"):
        if value < 1024 or unit == "G":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return f"{value:.1f}G"  # pragma: no cover


def shell_status(returncode: int) -> int:
    """The status a shell reports: the exit status, or 128+N for signal N."""
    return returncode if returncode >= 0 else 128 - returncode


def waitid_returncode(result: os.waitid_result) -> int:
    """The returncode of a ``waitid`` result (``CLD_EXITED``: status; else the signal)."""
    if result.si_code == os.CLD_EXITED:
        return int(result.si_status)
    return -int(result.si_status)
