"""The ``forkwell`` command: a thin dispatcher.

Each command is declared once, in its own module (``_timeout``, ``_ctl``...:
its options, operands, help and exit statuses, see :mod:`._options`), imported
only when that command runs, so ``forkwell --help`` and ``forkwell timeout``
do not pay for the supervisor or the servers.  Its one-line summary is here,
in :data:`COMMANDS`, the table ``forkwell --help`` and ``docs/cli.md`` list.
Command modules parse and print; the work is done by the library.
"""

from __future__ import annotations

import os
import sys

# name -> (module, one-line summary).  Order is the order of `forkwell --help`.
COMMANDS: dict[str, tuple[str, str]] = {
    "timeout": ("._timeout", "run a command with a time limit; end its whole tree"),
    "daemon": ("._daemon", "start|stop|status|restart a daemon with a pidfile"),
    "init": ("._init", "run a command as PID 1 / subreaper: forward signals, reap all"),
    "serve": ("._serve", "serve a request handler from forked or pre-forked workers"),
    "up": ("._up", "run the supervisor for a forkwell.toml, Procfile, supervisord.conf..."),
    "check": ("._ctl", "validate a supervisor config file"),
    "convert": ("._convert", "write the forkwell.toml of a Procfile, supervisord.conf..."),
    "ps": ("._ctl", "show the supervised programs"),
    "start": ("._ctl", "start supervised programs and wait until ready"),
    "stop": ("._ctl", "stop supervised programs and wait until stopped"),
    "restart": ("._ctl", "restart supervised programs"),
    "signal": ("._ctl", "send a signal to supervised programs"),
    "logs": ("._ctl", "print or follow a program's log"),
    "reload": ("._ctl", "re-read the config and apply only what changed"),
    "scale": ("._ctl", "change a program's number of instances"),
    "down": ("._ctl", "stop every program and the supervisor"),
    "probe": ("._probe", "exit 0 if a URL, port, command or the supervisor is up"),
    "export": ("._export", "write systemd units or Kubernetes manifests for a fleet"),
}

USAGE = "usage: forkwell [--version] [--help] COMMAND [ARGS...]"
DESCRIPTION = (
    "The whole life of Unix processes: deadlines, daemons, reaping, servers, supervision."
)


def overview() -> str:
    """The same layout as every command's help (forkwell._cli._help), without importing it."""
    width = max(len(n) for n in COMMANDS)
    return "\n".join([
        USAGE, "", DESCRIPTION, "", "commands:",
        *(f"  {name:<{width}}  {summary}" for name, (_, summary) in COMMANDS.items()),
        "", "options:",
        "  -h, --help     show this help and exit",
        "      --version  show forkwell's version and exit",
        "", "Run 'forkwell COMMAND --help' for a command's options and exit statuses.",
        "", "exit status:",
        "  0  --help or --version",
        "  2  no COMMAND, or an unknown one",
        "  -  otherwise the COMMAND's own (see 'forkwell COMMAND --help')",
        "", "examples:",
        "  forkwell up -c examples/demo.toml --exit-after 10",
        "  forkwell timeout 5 make test",
        "  forkwell ps --help",
    ])  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help", "help"):
        print(overview())
        return 0 if args else 2
    if args[0] == "--version":
        from .. import __version__

        print(f"forkwell {__version__}")
        return 0
    entry = COMMANDS.get(args[0])
    if entry is None:
        print(f"forkwell: unknown command {args[0]!r} (see 'forkwell --help')", file=sys.stderr)
        return 2
    from importlib import import_module

    try:
        module = import_module(entry[0], __name__)
    except ModuleNotFoundError as exc:
        if exc.name != entry[0]:
            raise
        print(f"forkwell: command {args[0]!r} is not available yet", file=sys.stderr)
        return 2
    rc: int = module.main(args[1:], prog=f"forkwell {args[0]}", command=args[0])
    if argv is None and entry[0] in _EXIT_NOW:
        _exit_now(rc)
    return rc


# Commands that leave nothing to finalize once main() returned: the control
# commands and probes (health checks run them every few seconds), and `up`,
# whose fleet is stopped and whose files are closed (a container's PID 1
# should be gone as soon as its programs are: ~0.15 s of teardown otherwise).
_EXIT_NOW = frozenset({"._ctl", "._probe", "._up"})


def _exit_now(rc: int) -> None:  # never returns (typing.NoReturn would cost an import)
    """Leave without the interpreter's teardown: ~5 ms of a ~35 ms ``forkwell ps``.

    Only for the commands of :data:`_EXIT_NOW`, run as the ``forkwell``
    process itself: they leave nothing to finalize (no atexit handlers, no
    children, no files but stdout and stderr, flushed here).
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass  # the reader left (`forkwell ps | head -1`): not our failure
    os._exit(rc)
