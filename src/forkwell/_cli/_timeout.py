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

EXIT_TIMEDOUT = 124
EXIT_CANCELED = 125
EXIT_CANNOT_INVOKE = 126
EXIT_ENOENT = 127

FORWARDED = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
)


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

    from .._core import _sys, _tree
    from .._core._driver import _Driver
    from .._core._process import spawn
    from .._exceptions import CommandNotExecutableError, CommandNotFoundError, SpawnError

    stop_signal = int(opts["signal"])  # type: ignore[call-overload]
    kill_after = opts["kill_after"]
    verbose = bool(opts["verbose"])
    # Dedicated process: adopt orphans so they are reaped here, not left to init.
    own_subtree = _sys.set_subreaper() and _tree.HAVE_CHILDREN_FILE

    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    old_wakeup = signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    handled = (*FORWARDED, signal.SIGCHLD)
    if opts["foreground"]:
        # The command reads the terminal; stopping it must not stop us in the background.
        signal.signal(signal.SIGTTIN, signal.SIG_IGN)
        signal.signal(signal.SIGTTOU, signal.SIG_IGN)
    for sig in handled:
        # Handlers only make the wake-up fd readable; the loop does the work.
        signal.signal(sig, _noop)
    try:
        try:
            proc = spawn(
                cmd,
                new_process_group=not opts["foreground"],
                pdeathsig=signal.SIGKILL,
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

        if own_subtree and proc.tree is not None:
            # Every descendant stays below us: no need to read all of /proc.
            proc.tree.own_subtree = True
        name = os.path.basename(cmd[0])
        driver: _Driver

        def announce(sig: int) -> None:
            if verbose:
                print(f"{prog}: sending signal {signal.Signals(sig).name[3:]} to command {name!r}",
                      file=sys.stderr, flush=True)

        def on_wake(data: bytes) -> None:
            for signum in set(data):
                if signum not in FORWARDED or proc.returncode is not None:
                    continue
                if kill_after is not None:
                    # As GNU does: pass the signal on, and arm --kill-after.
                    driver.begin_termination(signum, kill_after, include_root=True)  # type: ignore[arg-type]
                elif opts["foreground"]:
                    proc.send_signal(signum)
                else:
                    proc.signal_tree(signum)

        driver = _Driver(
            proc,
            timeout=duration if duration > 0 else None,
            grace=kill_after if kill_after is not None else 0.0,  # type: ignore[arg-type]
            kill_after_deadline=kill_after is not None,
            leftover_grace=kill_after if kill_after is not None else 5.0,  # type: ignore[arg-type]
            stop_signal=stop_signal,
            wake_fd=wake_r,
            on_wake=on_wake,
            reap_all=True,
            on_timeout=announce,
        )
        try:
            driver.run()
        finally:
            proc.close()
    finally:
        signal.set_wakeup_fd(old_wakeup)
        os.close(wake_r)
        os.close(wake_w)

    rc = proc.returncode
    assert rc is not None
    status = rc if rc >= 0 else 128 - rc
    if driver.timed_out and not opts["preserve"]:
        if rc == -signal.SIGKILL:
            # GNU timeout signals its own group, so KILL kills it too: 137.
            return 128 + signal.SIGKILL
        return EXIT_TIMEDOUT
    return status


def _noop(signum: int, frame: object) -> None:
    pass
