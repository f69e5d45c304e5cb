"""Parsing durations and signal names, shared by every CLI command and config."""

from __future__ import annotations

import math
import signal

_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
# "inf" and "infinity" are durations too (GNU timeout takes them: no limit in practice).
_INFINITY = ("inf", "infinity")


def parse_duration(text: str) -> float:
    """``"10"``, ``"1.5s"``, ``"2m"``, ``"1h"``, ``"0.5d"`` -> seconds (GNU timeout's syntax).

    Raises ``ValueError`` with a message fit for a one-line error.
    """
    raw = text.strip()
    unit = raw[-1:] if raw[-1:].isalpha() and not raw.lower().endswith(_INFINITY) else ""
    number = raw[: len(raw) - len(unit)]
    if unit not in _UNITS:
        raise ValueError(f"invalid time interval {text!r} (unit must be s, m, h or d)")
    try:
        value = float(number)
    except ValueError:
        raise ValueError(f"invalid time interval {text!r}") from None
    if math.isnan(value) or value < 0:
        raise ValueError(f"invalid time interval {text!r} (must be a number >= 0)")
    return value * _UNITS[unit]


def parse_signal(text: str | int) -> signal.Signals:
    """``"TERM"``, ``"SIGTERM"``, ``"term"`` or ``"15"`` -> ``signal.SIGTERM``."""
    if isinstance(text, int) or text.strip().isdigit():
        try:
            return signal.Signals(int(text))
        except ValueError:
            raise ValueError(f"invalid signal {text!r}") from None
    name = text.strip().upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    try:
        return signal.Signals[name]
    except KeyError:
        raise ValueError(f"invalid signal {text!r}") from None
