"""The one guard of every state machine in forkwell.

Each machine is an ``Enum`` and one transition table, ``{state: frozenset of
states it may go to}`` (the supervisor's instances, the run loop, ``init``,
the servers and their workers).  Moving along the table goes through
:func:`check`, so an illegal move is always the same error, a
:class:`~forkwell.StateError` with a sentence a person can read, never an
``AssertionError`` or a silently corrupt state.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import TypeVar

from .._exceptions import StateError

E = TypeVar("E", bound=enum.Enum)


def check(table: Mapping[E, frozenset[E]], old: E, new: E, who: str, hint: str = "") -> E:
    """Return ``new`` if the table allows ``old -> new``; else raise ``StateError``.

    The message reads ``{who} cannot go from {old} to {new}{hint}``, with
    the states' values (``"web:0 cannot go from STOPPED to RUNNING"``).
    """
    if new not in table[old]:
        raise StateError(f"{who} cannot go from {old.value} to {new.value}{hint}")
    return new
