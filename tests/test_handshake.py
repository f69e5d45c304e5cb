"""The start handshake between the daemon, the intermediate and the original: one grammar."""

from __future__ import annotations

import errno

import pytest

from forkwell._daemon._handshake import (
    MAX_CHARS,
    Decoder,
    Error,
    Failure,
    Kind,
    Message,
    Outcome,
    decode,
    encode,
)
from forkwell._exceptions import (
    CommandNotFoundError,
    DaemonStartError,
    PidfileError,
    PidfileLockedError,
)

ONE_OF_EACH = [
    Message(Kind.PID, number=4242),
    Message(Kind.STATUS, text="loading cache: 3 of 7"),
    Message(Kind.STATUS, text=""),
    Message(Kind.READY),
    Message(Kind.EXEC),
    Message(Kind.EOF),
    Message(Kind.EXIT, number=3),
    Message(Kind.EXIT, number=-15),
    *(
        Message(Kind.ERROR, error=Error(f, errno.ENOENT, 77, "chdir", f"{f.value}:\tno such"))
        for f in Failure
    ),
]


def test_the_examples_cover_every_kind_and_failure() -> None:
    assert {m.kind for m in ONE_OF_EACH} == set(Kind)
    assert {m.error.failure for m in ONE_OF_EACH if m.error} == set(Failure)


@pytest.mark.parametrize("message", ONE_OF_EACH, ids=lambda m: encode(m).decode().strip())
def test_every_message_survives_the_round_trip(message: Message) -> None:
    line = encode(message)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert decode(line[:-1]) == message


def test_the_wire_format_is_the_documented_one() -> None:
    error = Error(Failure.LOCKED, errno.EAGAIN, 4242, "pidfile", "pidfile /x is locked")
    assert (
        encode(Message(Kind.ERROR, error=error))
        == b"ERROR locked 11 4242 pidfile\tpidfile /x is locked\n"
    )
    assert encode(Message(Kind.PID, number=7)) == b"PID 7\n"
    assert encode(Message(Kind.READY)) == b"READY\n"


@pytest.mark.parametrize(
    "line",
    [
        b"",
        b"HELLO there",
        b"ready",  # kinds are upper case
        b"PID",
        b"PID abc",
        b"EXIT 3.5",
        b"READY now",  # a bare kind takes no argument
        b"ERROR step 2 0 chdir",  # no tab before the message
        b"ERROR step 2 chdir\tcannot",  # a field missing
        b"ERROR bogus 2 0 chdir\tcannot",  # not a Failure
        b"ERROR step two 0 chdir\tcannot",
    ],
)
def test_a_malformed_line_is_no_message(line: bytes) -> None:
    assert decode(line) is None


def test_the_decoder_skips_malformed_lines_and_joins_cut_ones() -> None:
    decoder = Decoder()
    assert decoder.feed(b"PID 12\nnonsense\nSTAT") == [Message(Kind.PID, number=12)]
    assert decoder.feed(b"US half") == []
    assert decoder.feed(b"way\nREADY\n") == [
        Message(Kind.STATUS, text="halfway"),
        Message(Kind.READY),
    ]


def test_a_message_longer_than_the_limit_is_cut_to_one_line() -> None:
    line = encode(Message(Kind.STATUS, text="x" * (3 * MAX_CHARS)))
    assert len(line) == MAX_CHARS + 1 and line.endswith(b"\n")
    assert decode(line[:-1]) == Message(Kind.STATUS, text="x" * (MAX_CHARS - len("STATUS ")))


def test_a_long_error_keeps_its_head() -> None:
    error = Error(Failure.EXCEPTION, 0, 0, "-", "ValueError: " + "y" * 5000)
    got = decode(encode(Message(Kind.ERROR, error=error))[:-1])
    assert got is not None and got.error is not None
    assert got.error._replace(message="") == error._replace(message="")
    assert got.error.message.startswith("ValueError: yyy")


def test_newlines_in_a_message_cannot_make_a_second_one() -> None:
    decoder = Decoder()
    sneaky = Message(Kind.STATUS, text="fine\nREADY\nEXIT 0")
    assert decoder.feed(encode(sneaky)) == [Message(Kind.STATUS, text="fine READY EXIT 0")]
    error = Error(Failure.STEP, 2, 0, "chdir", "line one\nline two")
    (got,) = decoder.feed(encode(Message(Kind.ERROR, error=error)))
    assert got.error == error._replace(message="line one line two")


@pytest.mark.parametrize(
    ("exc", "step", "expected"),
    [
        (
            PidfileLockedError("/run/a.pid", 99),
            "",
            Error(
                Failure.LOCKED,
                errno.EAGAIN,
                99,
                "pidfile",
                "pidfile /run/a.pid is locked by pid 99",
            ),
        ),
        (
            PidfileError(errno.ELOOP, "refusing pidfile /x: it is a symlink", "/x"),
            "",
            Error(Failure.STEP, errno.ELOOP, 0, "pidfile", "refusing pidfile /x: it is a symlink"),
        ),
        (
            DaemonStartError(errno.ENOENT, "cannot change directory to /nope: gone", "chdir"),
            "",
            Error(Failure.STEP, errno.ENOENT, 0, "chdir", "cannot change directory to /nope: gone"),
        ),
        (
            CommandNotFoundError(errno.ENOENT, "command not found: 'x'", "x"),
            "exec",
            Error(Failure.NOTFOUND, errno.ENOENT, 0, "exec", "command not found: 'x'"),
        ),
        (
            ValueError("bad port"),
            "",
            Error(Failure.EXCEPTION, 0, 0, "-", "ValueError: bad port"),
        ),
    ],
)
def test_what_the_daemon_reports_for_an_exception(
    exc: BaseException, step: str, expected: Error
) -> None:
    assert Error.of(exc, step) == expected


def _outcome(*lines: bytes) -> Outcome:
    outcome = Outcome()
    for message in Decoder().feed(b"".join(line + b"\n" for line in lines)):
        outcome.record(message)
    return outcome


@pytest.mark.parametrize(
    ("lines", "timeout", "says"),
    [
        (
            [b"PID 5", b"ERROR locked 11 77 pidfile\tx"],
            None,
            "already running: pidfile is locked by pid 77",
        ),
        (
            [b"PID 5", b"ERROR locked 11 0 pidfile\tx"],
            None,
            "already running: pidfile is locked by another process",
        ),
        (
            [b"PID 5", b"ERROR exception 0 0 -\tValueError: bad", b"EXIT 1"],
            None,
            "daemon failed before it was ready: ValueError: bad (it exited with status 1)",
        ),
        (
            [b"PID 5", b"ERROR step 2 0 chdir\tcannot cd", b"EXIT 1"],
            None,
            "daemon failed at step chdir: cannot cd",
        ),
        ([b"PID 5", b"EXIT -15"], None, "daemon was killed by SIGTERM before it was ready"),
        (
            [b"PID 5", b"STATUS warming up"],
            1.5,
            "daemon not ready after 1.5s (last status: warming up); it was stopped",
        ),
        ([], None, "daemon start failed: the intermediate process died unexpectedly"),
    ],
)
def test_the_outcome_says_why_a_start_failed(
    lines: list[bytes], timeout: float | None, says: str
) -> None:
    outcome = _outcome(*lines)
    if timeout is not None:
        outcome.failure = Failure.TIMEOUT  # what the original concludes at its deadline
    assert not outcome.ok
    assert outcome.describe(timeout) == says


def test_the_outcome_of_a_good_start() -> None:
    outcome = _outcome(b"PID 5", b"STATUS up", b"EXEC", b"EOF", b"READY")
    assert (outcome.ok, outcome.pid, outcome.status, outcome.execed, outcome.eof) == (
        True,
        5,
        "up",
        True,
        True,
    )
    assert outcome.failure is None
