"""``forkwell init``: parse the options, run :class:`forkwell._init.Init`, print errors.

Options are parsed by hand, not argparse: everything after the first non-option
belongs to the command untouched (``forkwell init -v -- sh -c 'x' -v``), and
init's start-up time is part of every container start.
"""

from __future__ import annotations

import sys

from ._getopt import UsageError, split_options

HELP = """\
usage: forkwell init [OPTIONS] [--] COMMAND [ARG]...

Run COMMAND under a minimal init: forward signals to it, reap every zombie (its
own and every orphan adopted), and when it exits end whatever it left behind
(SIGTERM, --grace, SIGKILL) before exiting with its status.  Works as PID 1 of a
PID namespace (a container entrypoint) and elsewhere as a child subreaper.

options:
  -g, --pgroup           forward signals to the command's whole process group
      --grace DURATION   after the command exits, time between SIGTERM and
                         SIGKILL for what is left (default 5s; e.g. 10, 1.5s, 2m)
  -e, --remap-exit CODE  exit 0 when the command's status is CODE (repeatable;
                         CODE is 0-255, e.g. 143 for "died of SIGTERM")
  -p, --pdeathsig SIG    send SIG to the command if init itself dies (e.g. KILL)
  -v, --verbose          log each reaped orphan and the end of the grace period
  -h, --help             show this help

Forwarded: every catchable signal but CHLD, PIPE and the synchronous ones
(SEGV BUS ILL FPE ABRT TRAP SYS).  A TERM, INT or QUIT received during the
grace period ends it at once.

exit status:
  the command's status, or 128+N if it died of signal N (0 if remapped by -e)
  2    usage error                 125  the command could not be started
  126  command not executable      127  command not found

example (a container entrypoint):
  ENTRYPOINT ["forkwell", "init", "--grace", "10", "--"]
  CMD ["python", "-m", "myapp"]"""

EXIT_USAGE = 2
EXIT_CANNOT_START = 125
EXIT_NOT_EXECUTABLE = 126
EXIT_NOT_FOUND = 127


class _Options:
    def __init__(self) -> None:
        self.pgroup = False
        self.grace = 5.0
        self.remap_exit: set[int] = set()
        self.verbose = False
        self.pdeathsig: int | None = None
        self.help = False
        self.command: list[str] = []


_FLAGS = {
    "-g": "--pgroup", "--pgroup": "--pgroup",
    "-v": "--verbose", "--verbose": "--verbose",
    "-h": "--help", "--help": "--help",
}  # fmt: skip
_VALUED = {
    "-e": "--remap-exit", "--remap-exit": "--remap-exit",
    "-p": "--pdeathsig", "--pdeathsig": "--pdeathsig",
    "--grace": "--grace",
}  # fmt: skip


def _apply(opts: _Options, name: str, value: str | None) -> None:
    from .._core._duration import parse_duration, parse_signal

    if name == "--pgroup":
        opts.pgroup = True
    elif name == "--verbose":
        opts.verbose = True
    elif name == "--help":
        opts.help = True
    elif name == "--grace":
        assert value is not None
        try:
            opts.grace = parse_duration(value)
        except ValueError as exc:
            raise UsageError(f"--grace: {exc}") from None
    elif name == "--remap-exit":
        assert value is not None
        if not value.isdigit() or int(value) > 255:
            raise UsageError(f"--remap-exit: {value!r} is not an exit status (0-255)")
        opts.remap_exit.add(int(value))
    elif name == "--pdeathsig":
        assert value is not None
        try:
            opts.pdeathsig = int(parse_signal(value))
        except ValueError as exc:
            raise UsageError(f"--pdeathsig: {exc}") from None


def parse(argv: list[str]) -> _Options:
    """Options up to the first non-option (or ``--``); the rest is the command."""
    opts = _Options()
    pairs, opts.command = split_options(argv, flags=_FLAGS, valued=_VALUED)
    for name, value in pairs:
        _apply(opts, name, value)
    return opts


def main(argv: list[str], *, prog: str = "forkwell init", command: str = "init") -> int:
    def error(message: str) -> None:
        print(f"{prog}: {message}", file=sys.stderr, flush=True)

    try:
        opts = parse(argv)
    except UsageError as exc:
        error(f"{exc} (see '{prog} --help')")
        return EXIT_USAGE
    if opts.help:
        print(HELP)
        return 0
    if not opts.command:
        error(f"no command given (usage: {prog} [OPTIONS] [--] COMMAND [ARG]...)")
        return EXIT_USAGE

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
