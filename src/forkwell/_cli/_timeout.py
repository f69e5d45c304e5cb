"""``forkwell timeout``: GNU coreutils ``timeout``, plus: nothing of the command outlives it."""

from __future__ import annotations

import os
import signal
import sys

from .._core._duration import parse_duration, parse_signal
from ._getopt import UsageError, split_options

USAGE = "usage: forkwell timeout [OPTION] DURATION COMMAND [ARG]..."

HELP = f"""{USAGE}

Start COMMAND, and kill it if still running after DURATION.  Unlike GNU timeout,
when forkwell timeout returns no descendant of COMMAND is still running, whether
COMMAND timed out or exited by itself: setsid'd and double-forked descendants are
found too, sent SIGNAL, then SIGKILL after the --kill-after duration (5 s without it).

options:
  -s, --signal=SIGNAL       signal to send on time out (default TERM); a name or number
  -k, --kill-after=DURATION also send KILL if COMMAND still runs this long after SIGNAL
  -p, --preserve-status     exit with COMMAND's status even when it timed out
  -f, --foreground          keep COMMAND in the foreground process group (it may read
                            the terminal); TTY signals then reach it directly
  -v, --verbose             say on stderr when a signal is sent on time out
  -h, --help                show this help

DURATION is a floating point number with an optional suffix: s (seconds, the
default), m (minutes), h (hours) or d (days).  0 disables the time limit.

Signals forkwell timeout receives (TERM, INT, HUP, QUIT, USR1, USR2) are passed on
to COMMAND.  If forkwell timeout is killed, COMMAND dies too (Linux PDEATHSIG).

exit status:
  124  COMMAND timed out (and --preserve-status was not given)
  125  forkwell timeout itself failed (bad arguments included)
  126  COMMAND was found but cannot be executed
  127  COMMAND was not found
  137  COMMAND (or its tree) had to be sent KILL (128+9)
  -    otherwise COMMAND's own exit status, or 128+N if it died of signal N
"""

EXIT_CANCELED = 125
EXIT_CANNOT_INVOKE = 126
EXIT_ENOENT = 127

_FLAGS = {
    "-p": "preserve", "--preserve-status": "preserve",
    "-f": "foreground", "--foreground": "foreground",
    "-v": "verbose", "--verbose": "verbose",
    "-h": "help", "--help": "help",
}  # fmt: skip
_VALUED = {"-s": "signal", "--signal": "signal", "-k": "kill_after", "--kill-after": "kill_after"}


def _parse(argv: list[str]) -> tuple[dict[str, object], float, list[str]]:
    """GNU-style: options first, then DURATION COMMAND...; stops at the first operand."""
    opts: dict[str, object] = {
        "signal": signal.SIGTERM,
        "kill_after": None,
        "preserve": False,
        "foreground": False,
        "verbose": False,
        "help": False,
    }
    pairs, rest = split_options(argv, flags=_FLAGS, valued=_VALUED)
    for key, value in pairs:
        if value is None:
            opts[key] = True
            continue
        try:
            opts[key] = parse_signal(value) if key == "signal" else parse_duration(value)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    if opts["help"]:
        raise SystemExit(0)
    if not rest:
        raise UsageError("missing operand")
    try:
        duration = parse_duration(rest[0])
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if len(rest) < 2:
        raise UsageError(f"missing operand after {rest[0]!r}")
    return opts, duration, rest[1:]


def main(argv: list[str], *, prog: str = "forkwell timeout", command: str = "timeout") -> int:
    try:
        opts, duration, cmd = _parse(argv)
    except SystemExit:
        print(HELP, end="")
        return 0
    except UsageError as exc:
        print(f"{prog}: {exc}\nTry '{prog} --help' for more information.", file=sys.stderr)
        return EXIT_CANCELED

    from .._exceptions import CommandNotExecutableError, CommandNotFoundError, SpawnError
    from .._timeout import run_timeout

    name = os.path.basename(cmd[0])

    def announce(sig: int) -> None:
        if opts["verbose"]:
            print(f"{prog}: sending signal {signal.Signals(sig).name[3:]} to command {name!r}",
                  file=sys.stderr, flush=True)

    kill_after = opts["kill_after"]
    try:
        result = run_timeout(
            cmd,
            duration,
            stop_signal=int(opts["signal"]),  # type: ignore[call-overload]
            kill_after=None if kill_after is None else float(kill_after),  # type: ignore[arg-type]
            foreground=bool(opts["foreground"]),
            on_timeout=announce,
        )
    except CommandNotFoundError as exc:
        print(f"{prog}: failed to run command {cmd[0]!r}: {os.strerror(exc.errno or 2)}",
              file=sys.stderr)
        return EXIT_ENOENT
    except CommandNotExecutableError as exc:
        print(f"{prog}: failed to run command {cmd[0]!r}: {os.strerror(exc.errno or 13)}",
              file=sys.stderr)
        return EXIT_CANNOT_INVOKE
    except SpawnError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return EXIT_CANCELED
    return result.exit_status(preserve=bool(opts["preserve"]))
