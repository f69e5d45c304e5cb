"""The start handshake: what the daemon and the intermediate tell the original.

Each message is one line, ``KIND`` or ``KIND ARGUMENT``, cut to
:data:`MAX_CHARS` characters (well under ``PIPE_BUF``, so one ``write`` is one
message) with any newline in it made a space.  The daemon (C2) writes on the
events pipe; the intermediate (C1) relays those bytes as they are and adds
its own lines on the status pipe that the original (P0) reads:

==========================================  ====  =================================
``PID 1234``                                C1    the daemon's pid (the first line)
``STATUS loading cache``                    C2    the daemon's last ``STATUS=``
``READY``                                   C2    set up (or ``READY=1``): success
``EXEC``                                    C2    about to ``execve`` the command
``EOF``                                     C1    the events pipe closed (after
                                                  ``EXEC``: the exec succeeded)
``EXIT -15``                                C1    the daemon ended: its returncode
``ERROR step 2 0 chdir<TAB>cannot ...``     both  a :class:`Failure`, errno, lock
                                                  holder (0: none), step, message
==========================================  ====  =================================

:func:`encode` and :class:`Decoder` are the only writer and reader of this
grammar; :class:`Outcome` is what the original makes of the messages.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from enum import Enum
from typing import NamedTuple

from .._core._status import describe_exit
from .._exceptions import (
    CommandNotExecutableError,
    CommandNotFoundError,
    DaemonStartError,
    ForkwellError,
    PidfileError,
    PidfileLockedError,
)

#: The longest line, in characters: a longer message is cut.
MAX_CHARS = 2000


class Kind(Enum):
    """The first word of a line."""

    PID = "PID"
    STATUS = "STATUS"
    READY = "READY"
    EXEC = "EXEC"
    EOF = "EOF"
    EXIT = "EXIT"
    ERROR = "ERROR"


class Failure(Enum):
    """Why a start failed: the first word of an ``ERROR``, or what the original concluded."""

    LOCKED = "locked"  # the pidfile is held: already running
    NOTFOUND = "notfound"  # the command does not exist
    NOTEXEC = "notexec"  # the command cannot be executed
    STEP = "step"  # a daemon(7) step failed
    EXCEPTION = "exception"  # the Python daemon raised before it was ready
    DIED = "died"  # the daemon ended before it was ready (original only)
    TIMEOUT = "timeout"  # not ready in time; stopped (original only)
    LOST = "lost"  # the intermediate process failed (original only)


#: What each exception the daemon can report becomes, first match wins.
_FAILURE_OF: tuple[tuple[type[BaseException] | tuple[type[BaseException], ...], Failure], ...] = (
    (PidfileLockedError, Failure.LOCKED),
    (CommandNotFoundError, Failure.NOTFOUND),
    (CommandNotExecutableError, Failure.NOTEXEC),
    ((DaemonStartError, PidfileError), Failure.STEP),
)


class Error(NamedTuple):
    """The argument of an ``ERROR`` line."""

    failure: Failure
    errno: int
    holder: int  # LOCKED: the pid holding the pidfile; 0: none or unknown
    step: str  # one word
    message: str

    @classmethod
    def of(cls, exc: BaseException, step: str = "") -> Error:
        """How the daemon reports ``exc``; ``step`` names the step when ``exc`` does not."""
        failure = next((f for t, f in _FAILURE_OF if isinstance(exc, t)), Failure.EXCEPTION)
        holder = (exc.pid or 0) if isinstance(exc, PidfileLockedError) else 0
        default = "pidfile" if isinstance(exc, PidfileError) else "-"
        step = step or getattr(exc, "step", "") or default
        code = exc.errno if isinstance(exc, OSError) and exc.errno else 0
        # forkwell's own errors are written to be read: their class name is noise.
        named = failure is Failure.EXCEPTION and not isinstance(exc, ForkwellError)
        message = f"{type(exc).__name__}: {exc}" if named else str(exc)
        return cls(failure, code, holder, step, message)


class Message(NamedTuple):
    kind: Kind
    number: int = 0  # PID: the daemon's pid; EXIT: its returncode (-N: signal N)
    text: str = ""  # STATUS
    error: Error | None = None  # ERROR


# -- the one encoder


def _no_argument(message: Message) -> str | None:
    return None


def _number(message: Message) -> str | None:
    return str(message.number)


def _text(message: Message) -> str | None:
    return message.text


def _error(message: Message) -> str | None:
    e = message.error
    assert e is not None
    return f"{e.failure.value} {e.errno} {e.holder} {e.step}\t{e.message}"


_FORMAT: dict[Kind, Callable[[Message], str | None]] = {
    Kind.PID: _number,
    Kind.STATUS: _text,
    Kind.READY: _no_argument,
    Kind.EXEC: _no_argument,
    Kind.EOF: _no_argument,
    Kind.EXIT: _number,
    Kind.ERROR: _error,
}


def encode(message: Message) -> bytes:
    """``message`` as one line (newline-terminated, at most MAX_CHARS characters before it)."""
    argument = _FORMAT[message.kind](message)
    line = message.kind.value if argument is None else f"{message.kind.value} {argument}"
    return (line.replace("\n", " ")[:MAX_CHARS] + "\n").encode(errors="replace")


def send(fd: int, message: Message) -> None:
    """Write ``message`` on ``fd``; a reader that is gone is not an error here."""
    write(fd, encode(message))


def write(fd: int, data: bytes) -> None:
    with contextlib.suppress(OSError):
        os.write(fd, data)


# -- the one decoder


def _parse_none(kind: Kind, argument: str | None) -> Message:
    if argument is not None:
        raise ValueError(f"{kind.value} takes no argument")
    return Message(kind)


def _parse_number(kind: Kind, argument: str | None) -> Message:
    return Message(kind, number=int(argument or ""))


def _parse_text(kind: Kind, argument: str | None) -> Message:
    return Message(kind, text=argument or "")


def _parse_error(kind: Kind, argument: str | None) -> Message:
    head, tab, text = (argument or "").partition("\t")
    if not tab:
        raise ValueError("ERROR without its message")
    failure, code, holder, step = head.split(" ")
    return Message(kind, error=Error(Failure(failure), int(code), int(holder), step, text))


_PARSE: dict[Kind, Callable[[Kind, str | None], Message]] = {
    Kind.PID: _parse_number,
    Kind.STATUS: _parse_text,
    Kind.READY: _parse_none,
    Kind.EXEC: _parse_none,
    Kind.EOF: _parse_none,
    Kind.EXIT: _parse_number,
    Kind.ERROR: _parse_error,
}


def decode(line: bytes) -> Message | None:
    """One line (without its newline) as a message; None if it is not one."""
    word, space, rest = line.decode(errors="replace").partition(" ")
    try:
        kind = Kind(word)
        return _PARSE[kind](kind, rest if space else None)
    except ValueError:
        return None


class Decoder:
    """Reads messages out of a stream of bytes that may cut lines anywhere."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> list[Message]:
        """The messages completed by ``data``; malformed lines are skipped."""
        *lines, self._buffer = (self._buffer + data).split(b"\n")
        return [m for m in map(decode, lines) if m is not None]


# -- what the original makes of them


class Outcome:
    """What the original process learnt about a start."""

    def __init__(self) -> None:
        self.ok = False
        self.pid: int | None = None
        self.failure: Failure | None = None
        self.errno = 0
        self.step = ""
        self.message = ""
        self.exit_status: int | None = None  # subprocess-style: -N for signal N
        self.holder: int | None = None
        self.status = ""  # the last STATUS the daemon sent
        self.execed = False
        self.eof = False

    def record(self, message: Message) -> None:
        _RECORD[message.kind](self, message)

    def describe(self, timeout: float | None) -> str:
        """One line saying why the start failed."""
        if self.failure is None:
            return _lost(self, timeout)
        return _DESCRIBE[self.failure](self, timeout)


def _on_pid(o: Outcome, m: Message) -> None:
    o.pid = m.number


def _on_status(o: Outcome, m: Message) -> None:
    o.status = m.text


def _on_ready(o: Outcome, m: Message) -> None:
    o.ok = True


def _on_exec(o: Outcome, m: Message) -> None:
    o.execed = True


def _on_eof(o: Outcome, m: Message) -> None:
    o.eof = True


def _on_exit(o: Outcome, m: Message) -> None:
    o.exit_status = m.number
    if o.failure is None:
        o.failure = Failure.DIED


def _on_error(o: Outcome, m: Message) -> None:
    e = m.error
    assert e is not None
    o.failure, o.errno, o.step, o.message = e.failure, e.errno, e.step, e.message
    o.holder = e.holder or None


_RECORD: dict[Kind, Callable[[Outcome, Message], None]] = {
    Kind.PID: _on_pid,
    Kind.STATUS: _on_status,
    Kind.READY: _on_ready,
    Kind.EXEC: _on_exec,
    Kind.EOF: _on_eof,
    Kind.EXIT: _on_exit,
    Kind.ERROR: _on_error,
}


def _locked(o: Outcome, timeout: float | None) -> str:
    who = f"pid {o.holder}" if o.holder else "another process"
    return f"already running: pidfile is locked by {who}"


def _raised(o: Outcome, timeout: float | None) -> str:
    died = f" (it {describe_exit(o.exit_status)})" if o.exit_status is not None else ""
    return f"daemon failed before it was ready: {o.message}{died}"


def _at_step(o: Outcome, timeout: float | None) -> str:
    return f"daemon failed at step {o.step}: {o.message}"


def _timed_out(o: Outcome, timeout: float | None) -> str:
    last = f" (last status: {o.status})" if o.status else ""
    return f"daemon not ready after {timeout:g}s{last}; it was stopped"


def _died(o: Outcome, timeout: float | None) -> str:
    if o.exit_status is None:
        return _lost(o, timeout)
    return f"daemon {describe_exit(o.exit_status)} before it was ready"


def _lost(o: Outcome, timeout: float | None) -> str:
    return "daemon start failed: the intermediate process died unexpectedly"


_DESCRIBE: dict[Failure, Callable[[Outcome, float | None], str]] = {
    Failure.LOCKED: _locked,
    Failure.NOTFOUND: _at_step,
    Failure.NOTEXEC: _at_step,
    Failure.STEP: _at_step,
    Failure.EXCEPTION: _raised,
    Failure.DIED: _died,
    Failure.TIMEOUT: _timed_out,
    Failure.LOST: _lost,
}
