"""``forkwell init``: parse the options, run :class:`forkwell._init.Init`, print errors.

Options end at the first operand: everything after belongs to the command
untouched (``forkwell init -v -- sh -c 'x' -v``).  Init's start-up time is
part of every container start.
"""

from __future__ import annotations

import sys
from types import SimpleNamespace

from ._options import DURATION, SIGNAL, Command, Default, Kind, Operand, Option, keyword_default
from ._parser import parse as _parse
from ._parser import parse_or_report as _parse_or_report

EXIT_USAGE = 2
EXIT_CANNOT_START = 125
EXIT_NOT_EXECUTABLE = 126
EXIT_NOT_FOUND = 127


def _grace() -> float:
    from .._init import Init

    return float(keyword_default(Init, "grace"))


def _exit_status(text: str) -> int:
    if not text.isdigit() or int(text) > 255:
        raise ValueError(f"{text!r} is not an exit status (0-255)")
    return int(text)


INIT = Command(
    "init",
    usage="[OPTIONS] [--] COMMAND [ARG]...",
    description="""\
Run COMMAND under a minimal init: forward signals to it, reap every zombie (its
own and every orphan adopted), and when it exits end whatever it left behind
(SIGTERM, --grace, SIGKILL) before exiting with its status.  Works as PID 1 of a
PID namespace (a container entrypoint) and elsewhere as a child subreaper.""",
    options=(
        Option(("-g", "--pgroup"), None, "forward signals to the command's whole process group"),
        Option(("--grace",), "DURATION",
               "after the command exits, time between SIGTERM and SIGKILL for what is left "
               "(default {default}; e.g. 10, 1.5s, 2m)", DURATION, Default(_grace)),
        Option(("-e", "--remap-exit"), "CODE",
               "exit 0 when the command's status is CODE (repeatable; CODE is 0-255, e.g. 143 "
               'for "died of SIGTERM")', Kind("exit status", _exit_status), repeat=True),
        Option(("-p", "--pdeathsig"), "SIG", "send SIG to the command if init itself dies "
               "(e.g. KILL)", SIGNAL),
        Option(("-v", "--verbose"), None, "log each reaped orphan and the end of the grace period"),
    ),
    operands=(Operand("COMMAND", "the command to run, and its arguments", nargs="+",
                      missing="no command given"),),
    notes="""\
Forwarded: every catchable signal but CHLD and those the caller left ignored;
SEGV BUS ILL FPE ABRT TRAP SYS and PIPE only when a process sent them (kill
-SEGV 1), never a fault of init's own.  A TERM, INT or QUIT received during
the grace period ends it at once.""",
    exits=(
        ("-", "the command's status, or 128+N if it died of signal N (0 if remapped by -e)"),
        ("2", "usage error"),
        ("125", "the command could not be started"),
        ("126", "command not executable"),
        ("127", "command not found"),
    ),
    examples=(
        "forkwell init -v -- sh -c 'sleep 30 & exit 3'   # exits 3; the sleep is ended",
        "# a container entrypoint:",
        'ENTRYPOINT ["forkwell", "init", "--grace", "10", "--"]',
        'CMD ["python", "-m", "myapp"]',
    ),
    permute=False,
)  # fmt: skip
DECLARED = {"init": INIT}


def parse(argv: list[str]) -> SimpleNamespace:
    """Options up to the first non-option (or ``--``); the rest is the command."""
    opts = _parse(INIT, argv)
    opts.remap_exit = set(opts.remap_exit)
    return opts


def main(argv: list[str], *, prog: str = "forkwell init", command: str = "init") -> int:
    def error(message: str) -> None:
        print(f"{prog}: {message}", file=sys.stderr, flush=True)

    opts = _parse_or_report(INIT, argv, prog)
    if isinstance(opts, int):
        return opts

    from .._exceptions import CommandNotExecutableError, CommandNotFoundError, SpawnError
    from .._init import Init

    init = Init(
        opts.command,
        pgroup=opts.pgroup,
        grace=opts.grace,
        remap_exit=opts.remap_exit,
        verbose=opts.verbose,
        pdeathsig=opts.pdeathsig,
        log=error,
    )
    try:
        return init.run()
    except CommandNotFoundError as exc:
        error(str(exc))
        return EXIT_NOT_FOUND
    except CommandNotExecutableError as exc:
        error(str(exc))
        return EXIT_NOT_EXECUTABLE
    except SpawnError as exc:
        error(str(exc))
        return EXIT_CANNOT_START
