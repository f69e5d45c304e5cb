"""``forkwell timeout``: GNU coreutils ``timeout``, plus: nothing of the command outlives it."""

from __future__ import annotations

import os
import signal
import sys

from ._options import DURATION, SIGNAL_OR_ZERO, Command, Default, Operand, Option, keyword_default
from ._parser import parse_or_report as _parse_or_report

EXIT_CANCELED = 125
EXIT_CANNOT_INVOKE = 126
EXIT_ENOENT = 127


def _stop_signal() -> int:
    from .._timeout import run_timeout

    return int(keyword_default(run_timeout, "stop_signal"))


def _leftover_grace() -> str:
    from .._timeout import LEFTOVER_GRACE

    return f"{LEFTOVER_GRACE:g} s"


def _forwarded() -> str:
    from .._timeout import FORWARDED

    return ", ".join(sig.name.removeprefix("SIG") for sig in FORWARDED)


TIMEOUT = Command(
    "timeout",
    usage="[OPTION]... DURATION COMMAND [ARG]...",
    description="""\
Start COMMAND, and kill it if still running after DURATION.  Unlike GNU timeout,
when forkwell timeout returns no descendant of COMMAND is still running, whether
COMMAND timed out or exited by itself: setsid'd and double-forked descendants are
found too, sent SIGNAL, then SIGKILL after the --kill-after duration ({leftover}
without it).""",
    options=(
        Option(("-s", "--signal"), "SIGNAL",
               "signal to send on time out (default {default}); a name or number; 0 (EXIT)"
               " sends none, leaving the killing to -k", SIGNAL_OR_ZERO, Default(_stop_signal)),
        Option(("-k", "--kill-after"), "DURATION",
               "also send KILL if COMMAND still runs this long after SIGNAL", DURATION),
        Option(("-p", "--preserve-status"), None,
               "exit with COMMAND's status even when it timed out", dest="preserve"),
        Option(("-f", "--foreground"), None,
               "keep COMMAND in the foreground process group (it may read the terminal); "
               "TTY signals then reach it directly"),
        Option(("-v", "--verbose"), None, "say on stderr when a signal is sent on time out"),
    ),
    operands=(
        Operand("DURATION", "a floating point number with an optional suffix: s (seconds, "
                "the default), m (minutes), h (hours) or d (days); 0 disables the time limit",
                kind=DURATION, missing="missing operand"),
        Operand("COMMAND", "the command to run, and its arguments (options after DURATION "
                "are COMMAND's)", nargs="+", missing="missing operand after {last!r}"),
    ),
    notes="""\
Signals forkwell timeout receives ({forwarded}) are passed on
to COMMAND.  If forkwell timeout is killed, COMMAND dies too (Linux PDEATHSIG).""",
    exits=(
        ("124", "COMMAND timed out (and --preserve-status was not given)"),
        ("125", "forkwell timeout itself failed (bad arguments included)"),
        ("126", "COMMAND was found but cannot be executed"),
        ("127", "COMMAND was not found"),
        ("137", "COMMAND (or its tree) had to be sent KILL (128+9)"),
        ("-", "otherwise COMMAND's own exit status, or 128+N if it died of signal N"),
    ),
    examples=(
        "forkwell timeout 2 sh -c 'setsid sleep 100 & exec sleep 100'   # 124; no sleep is left",
        "forkwell timeout -s INT -k 5 1m ./long-job",
    ),
    permute=False,
    usage_exit=EXIT_CANCELED,
    hint="\nTry '{prog} --help' for more information.",  # GNU's words, which scripts know
    facts={"leftover": _leftover_grace, "forwarded": _forwarded},
)  # fmt: skip
DECLARED = {"timeout": TIMEOUT}


def main(argv: list[str], *, prog: str = "forkwell timeout", command: str = "timeout") -> int:
    args = _parse_or_report(TIMEOUT, argv, prog)
    if isinstance(args, int):
        return args

    from .._exceptions import CommandNotExecutableError, CommandNotFoundError, SpawnError
    from .._timeout import run_timeout

    name = os.path.basename(args.command[0])

    def announce(sig: int) -> None:
        if not args.verbose or sys.stderr is None:  # None: started with fd 2 closed
            return
        what = "EXIT" if sig == 0 else signal.Signals(sig).name[3:]
        try:
            print(f"{prog}: sending signal {what} to command {name!r}", file=sys.stderr, flush=True)
        except (OSError, ValueError):
            pass  # a closed or broken stderr must not cost the caller the timeout status

    try:
        result = run_timeout(
            args.command,
            args.duration,
            stop_signal=args.signal,
            kill_after=args.kill_after,
            foreground=args.foreground,
            on_timeout=announce,
        )
    except CommandNotFoundError as exc:
        return _failed(prog, args.command[0], exc.errno or 2, EXIT_ENOENT)
    except CommandNotExecutableError as exc:
        return _failed(prog, args.command[0], exc.errno or 13, EXIT_CANNOT_INVOKE)
    except SpawnError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return EXIT_CANCELED
    return result.exit_status(preserve=args.preserve)


def _failed(prog: str, command: str, errno: int, status: int) -> int:
    print(f"{prog}: failed to run command {command!r}: {os.strerror(errno)}", file=sys.stderr)
    return status
