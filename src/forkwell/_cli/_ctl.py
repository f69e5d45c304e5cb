"""``forkwell ps|start|stop|restart|signal|logs|reload|scale|down|check``: talk to a supervisor.

Thin: parse, send one request over the control socket (:mod:`forkwell._supervisor._control`),
print.  Imports stay lean (no asyncio, tomllib or engine) because ``forkwell
ps`` is run by health checks and people in a hurry; only ``check`` loads the
config module.

Each command is declared once in :data:`DECLARED` (its options, operands and
exit statuses, as ``--help`` and ``docs/cli.md`` show them; also in
``docs/control.md``).
"""

from __future__ import annotations

import os
import sys
from types import SimpleNamespace
from typing import Any

from .._core._proc import wait_gone
from .._core._status import exit_label, format_bytes, format_uptime
from .._exceptions import ConfigError, ControlRequestError, SupervisorUnreachableError
from .._supervisor._control._client import ControlClient, connect, not_running
from .._supervisor._control._discovery import Target, find_target
from ._options import (
    CONFIG,
    DURATION,
    FORMAT,
    PROCFILE_OPTIONS,
    SIGNAL,
    SOCKET,
    Command,
    Kind,
    Operand,
    Option,
    UsageError,
    at_least,
)
from ._parser import parse_or_report as _parse_or_report

EXIT_OK = 0
EXIT_UNREACHABLE = 1
EXIT_USAGE = 2
EXIT_FAILED = 3
EXIT_INTERRUPTED = 130

# Error codes from the supervisor that mean "the user asked for something wrong".
_USAGE_CODES = frozenset({"unknown_name", "bad_request", "config"})
# Their request holds when no supervisor runs: nothing of the fleet runs then.
_STOPPING = frozenset({"stop", "down"})


def _target(text: str) -> tuple[str, int]:
    name, eq, count = text.partition("=")
    if not eq or not name or not count.strip().isdigit():
        raise UsageError(f"expected NAME=N with N >= 0, got {text!r}")
    return name, int(count)


_NAMES_HELP = ("program (all its instances), program:N (one instance), a group (GROUP or "
               "GROUP:*) or 'all'")
_NAMES = Operand("NAME", _NAMES_HELP, nargs="+", dest="names")
_NO_WAIT = Option(("--no-wait",), None, "return once the request is taken")
_EXITS = (
    ("0", "done"),
    ("1", "the supervisor cannot be reached, or failed to answer"),
    ("2", "bad usage, or an unknown program name"),
    ("3", "an instance failed (FATAL, did not stop, could not be signalled)"),
    ("130", "interrupted (Ctrl-C)"),
)
# Stopping what is not running succeeds (LSB's rule, which `daemon stop` follows too).
_STOP_EXITS = (("0", "done, or no supervisor is running (nothing of the fleet runs)"),
               *_EXITS[1:])  # fmt: skip
# argparse's words, which these commands have always used and scripts may grep.
_WORDS = {
    "unknown": "unrecognized arguments: {option}",
    "unknown_short": "unrecognized arguments: {option}",
    "extra": "unrecognized arguments: {operands}",
    "missing": "the following arguments are required: {metavar}",
}


def _control(name: str, description: str, *pieces: Option | Operand, **more: Any) -> Command:
    """A control command: -c and --socket, then its own options and operands."""
    options = tuple(p for p in pieces if isinstance(p, Option))
    operands = tuple(p for p in pieces if isinstance(p, Operand))
    more.setdefault("exits", _EXITS)
    more.setdefault("notes", "See docs/control.md.")
    return Command(name, description, options=(CONFIG, FORMAT, SOCKET, *options),
                   operands=operands, words=_WORDS, **more)  # fmt: skip


_OP_WORDS = {"start": ("Start instances and wait until each is RUNNING (ready) or has failed; "
                       "dependencies first, independent instances in parallel."),
             "stop": ("Stop instances (their whole process trees, dependents first) and wait "
                      "until each is STOPPED."),
             "restart": "Restart instances; each is stopped and started on its own, others are "
                        "untouched."}  # fmt: skip
_PROGRESS = ("On a terminal, a progress line on stderr shows the instances' states until "
             "they are done.")

DECLARED = {
    "ps": _control(
        "ps",
        "Show every supervised instance: state, pid, uptime, restarts, last exit, CPU %, RSS.\n"
        "Its exit status makes it a health check; STARTING does not count as up.",
        Operand("NAME", _NAMES_HELP + " (default: all)", nargs="*", dest="names"),
        Option(("--json",), None, "print a JSON document instead"),
        exits=(
            ("0", "every autostart instance is RUNNING (or a job that exited 0)"),
            ("1", "the supervisor cannot be reached, or failed to answer"),
            ("2", "bad usage, or an unknown program name"),
            ("3", "some autostart instance is not RUNNING"),
        ),
        examples=("forkwell ps", "forkwell ps web --json", "forkwell ps >/dev/null || alert"),
    ),
    **{
        name: _control(name, f"{text}\n\n{_PROGRESS}", _NAMES, _NO_WAIT,
                       examples=(f"forkwell {name} web:1", f"forkwell {name} all --no-wait"),
                       exits=_STOP_EXITS if name == "stop" else _EXITS)
        for name, text in _OP_WORDS.items()
    },
    "signal": _control(
        "signal",
        "Send a signal to instances' main processes (their whole trees with --tree).",
        Operand("SIG", "TERM, SIGTERM or 15", kind=SIGNAL, dest="signal"),
        _NAMES,
        Option(("--tree",), None, "signal each instance's whole tree"),
        examples=("forkwell signal HUP web", "forkwell signal --tree TERM worker:0"),
    ),
    "logs": _control(
        "logs",
        "Print the last lines of instances' logs (several: each line prefixed with its\n"
        "instance); -f keeps following them across rotations and truncation.",
        _NAMES,
        Option(("-n", "--lines"), "N", "how many lines (default {default})",
               at_least(0), 10),
        Option(("-f", "--follow"), None, "keep printing new lines"),
        Option(("--stderr",), None, "the stderr log instead of stdout"),
        examples=("forkwell logs web:0 -n 50", "forkwell logs all -f"),
    ),
    "reload": _control(
        "reload",
        "Re-read the config: start added programs, stop removed ones, restart changed\n"
        "ones; unchanged ones keep running (same pid).  An invalid config changes nothing.\n\n"
        "A program's count set by 'forkwell scale' is kept until the file's numprocs\n"
        "changes (as 'kubectl apply' keeps a scaled count); reload names those it kept.",
        exits=(*_EXITS[:2], ("2", "bad usage, or an invalid config (every error is listed; "
                                  "nothing was changed)"), *_EXITS[3:]),
        examples=("forkwell reload",),
    ),
    "scale": _control(
        "scale",
        "Change a program's number of instances; existing instances are not restarted.",
        Operand("NAME=N", "e.g. web=4", nargs="+", kind=Kind("NAME=N", _target),
                dest="targets"),
        examples=("forkwell scale web=4 worker=2",),
    ),
    "down": _control(
        "down",
        "Stop everything in reverse dependency order; return once the supervisor exited.",
        Option(("--wait",), "DUR", "how long to wait for the supervisor process to exit "
               "after stopping (default {default})", DURATION, 60.0, aliases=("--timeout",)),
        exits=(_STOP_EXITS[0], ("1", "the supervisor cannot be reached, failed to answer, or "
                                     "did not exit within --wait"), *_EXITS[2:]),
        examples=("forkwell down && forkwell up --detach",),
    ),
    "check": Command(
        "check",
        "Validate a config file without a running supervisor; list every error.\n"
        "A Procfile is read with the options 'forkwell up' would be given.",
        options=(CONFIG, FORMAT, *PROCFILE_OPTIONS),
        notes="Also warns (on stderr, still exiting 0) about a command that is not on PATH "
              "or not executable, and about a file without programs.",
        exits=(("0", "the config is valid (prints its programs and socket)"),
               ("2", "bad usage, or an invalid config (every error is listed)")),
        examples=("forkwell check -c deploy/forkwell.toml", "forkwell check -c supervisord.conf"),
    ),
}  # fmt: skip


def main(argv: list[str], *, prog: str, command: str) -> int:
    ns = _parse_or_report(DECLARED[command], argv, prog)
    if isinstance(ns, int):
        return ns
    return _run(prog, command, ns)


def _run(prog: str, command: str, ns: SimpleNamespace) -> int:
    """Run the command; an error is one line on stderr (and the errors of a config, each)."""
    try:
        return _COMMANDS[command](prog, ns)
    except SupervisorUnreachableError as exc:
        return _unreachable(prog, command, ns, exc)
    except ConfigError as exc:
        _err(prog, "; ".join(exc.errors))
        return EXIT_USAGE
    except ControlRequestError as exc:
        _err(prog, exc.message)
        for line in exc.errors:
            print(f"  {line}", file=sys.stderr)
        return EXIT_USAGE if exc.code in _USAGE_CODES else EXIT_UNREACHABLE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # `forkwell logs -f web | head`: the reader left; not an error.
        _silence_stdout()
        return EXIT_OK


def _unreachable(
    prog: str, command: str, ns: SimpleNamespace, exc: SupervisorUnreachableError
) -> int:
    if not_running(exc) and command in _STOPPING:
        # Stopping what is not running succeeds, as LSB has `daemon stop` do.
        print(f"not running (no supervisor at {exc.filename})")
        return EXIT_OK
    _err(prog, _with_hint(str(exc), ns))
    return EXIT_UNREACHABLE


def _err(prog: str, message: str) -> None:
    print(f"{prog}: {message}", file=sys.stderr)


def _silence_stdout() -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _where(ns: SimpleNamespace) -> Target:
    return find_target(ns.socket, ns.config, fmt=ns.format)


def _connect(ns: SimpleNamespace) -> ControlClient:
    target = _where(ns)
    return connect(target.socket, state_file=target.state_file)


def _with_hint(message: str, ns: SimpleNamespace) -> str:
    """No config was named and there is none here: that is likely why nothing answers."""
    if ns.config or ns.socket or os.environ.get("FORKWELL_SOCKET") or _where(ns).config_exists:
        return message
    from .._supervisor._formats._detect import SEARCH_ORDER

    # Every file `forkwell up` would look for without -c.
    names = ", ".join(SEARCH_ORDER[:-1]) + " or " + SEARCH_ORDER[-1]
    return message.replace(
        "(start it with 'forkwell up')",
        f"(and there is no {names} in {os.getcwd()}: give -c FILE, or --socket PATH)",
    )


# -- ps -------------------------------------------------------------------


def _ps(prog: str, ns: SimpleNamespace) -> int:
    with _connect(ns) as client:
        result = client.request("ps", {"names": ns.names} if ns.names else None)
    rows: list[dict[str, Any]] = result.get("instances", [])
    healthy = bool(result.get("healthy"))
    if ns.json:
        import json

        # The supervisor's document as is, its "version" the schema's (docs/control.md);
        # a supervisor older than the field sent version 1.
        sys.stdout.write(json.dumps({"version": 1, **result}, indent=2) + "\n")
    else:
        _print_table(rows, result.get("time") or 0.0)
    return EXIT_OK if healthy else EXIT_FAILED


_BASE = ("NAME", "STATE", "PID", "UPTIME", "RESTARTS", "LAST-EXIT", "CPU%", "RSS")


def _print_table(rows: list[dict[str, Any]], now: float) -> None:
    """The columns every fleet has, then READY / LIVENESS / PROBE-FAILURE where some row has one."""
    extra = [
        ("READY", any(r.get("ready_probe", "exec") != "exec" for r in rows), _ready_cell),
        ("LIVENESS", any(r.get("liveness_probe") for r in rows), _liveness_cell),
        ("PROBE-FAILURE", any(r.get("last_probe_failure") for r in rows), _failure_cell),
    ]
    shown = [(title, cell) for title, wanted, cell in extra if wanted]
    table = [(*_BASE, *(title for title, _ in shown))]
    for r in rows:
        last = exit_label(r["last_exit"])
        if r["last_exit"] is not None and r.get("last_exit_at"):
            last += f" ({format_uptime(max(0.0, now - r['last_exit_at']))} ago)"
        table.append(
            (
                r["name"],
                r["state"],
                "-" if r["pid"] is None else str(r["pid"]),
                "-" if r["uptime"] is None else format_uptime(r["uptime"]),
                str(r["restarts"]),
                last,
                "-" if r["cpu_percent"] is None else f"{r['cpu_percent']:.1f}",
                "-" if r["rss_bytes"] is None else format_bytes(r["rss_bytes"]),
                *(cell(r, now) for _, cell in shown),
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    widths[-1] = 0  # the last column is not padded (a probe failure can be long)
    out = ["  ".join(map(str.ljust, row, widths)).rstrip() for row in table]
    sys.stdout.write("\n".join(out) + "\n")


def _ready_cell(r: dict[str, Any], now: float) -> str:
    return str(r.get("readiness") or "-")


def _liveness_cell(r: dict[str, Any], now: float) -> str:
    state = r.get("liveness")
    if state is None:
        return "-"
    return f"failing x{r.get('liveness_failures', 0)}" if state == "failing" else str(state)


def _failure_cell(r: dict[str, Any], now: float) -> str:
    text = r.get("last_probe_failure")
    if not text:
        return "-"
    at = r.get("last_probe_failure_at")
    return f"{format_uptime(max(0.0, now - at))} ago: {text}" if at else str(text)


# -- start / stop / restart / signal / scale --------------------------------


class _Progress:
    """One self-overwriting status line on a terminal; nothing otherwise."""

    def __init__(self, prog: str) -> None:
        self.prog = prog
        self.shown = False

    def __call__(self, states: dict[str, str]) -> None:
        counts: dict[str, int] = {}
        for state in states.values():
            counts[state] = counts.get(state, 0) + 1
        summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
        if len(states) <= 4:
            summary = ", ".join(f"{name} {state}" for name, state in states.items())
        line = f"{self.prog}: {summary}"
        try:
            width = os.get_terminal_size(sys.stderr.fileno()).columns
        except OSError:
            width = 0
        width = width or 80  # a terminal that does not know its size says 0
        sys.stderr.write("\r\x1b[K" + line[: max(10, width - 1)])
        sys.stderr.flush()
        self.shown = True

    def clear(self) -> None:
        if self.shown:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()


_DONE_WORDS = {"start": "started", "stop": "stopped", "restart": "restarted"}


def _op(prog: str, ns: SimpleNamespace, command: str) -> int:
    wait = not ns.no_wait
    progress = _Progress(prog) if wait and sys.stderr.isatty() else None
    with _connect(ns) as client:
        try:
            result = client.request(
                command, {"names": ns.names, "wait": wait}, timeout=None, on_progress=progress
            )
        finally:
            if progress is not None:
                progress.clear()
    done = _DONE_WORDS[command] if wait else f"{command} requested"
    return _report(prog, result.get("results", []), done)


_STATE_WORDS = {"RUNNING": "started", "STARTING": "starting", "STOPPED": "stopped"}


def _report(prog: str, results: list[dict[str, Any]], done: str | None) -> int:
    """Print one line per instance; failures on stderr with exit status and log tail."""
    failed = 0
    for r in results:
        if r.get("ok"):
            word = done or _STATE_WORDS.get(r["state"], "ok")
            print(f"{r['instance']}: {word} ({r['state']})")
            continue
        failed += 1
        message = r.get("message") or f"{r['instance']} is {r['state']}"
        _err(prog, message)
        if r.get("last_exit") is not None:
            print(f"  last exit: {exit_label(r['last_exit'])}", file=sys.stderr)
        tail = r.get("log_tail") or []
        if tail:
            print("  last log lines:", file=sys.stderr)
            for line in tail:
                print(f"  | {line.rstrip()}", file=sys.stderr)
    return EXIT_FAILED if failed else EXIT_OK


def _start(prog: str, ns: SimpleNamespace) -> int:
    return _op(prog, ns, "start")


def _stop(prog: str, ns: SimpleNamespace) -> int:
    return _op(prog, ns, "stop")


def _restart(prog: str, ns: SimpleNamespace) -> int:
    return _op(prog, ns, "restart")


def _signal(prog: str, ns: SimpleNamespace) -> int:
    with _connect(ns) as client:
        result = client.request("signal", {"names": ns.names, "signal": ns.signal.name,
                                           "tree": ns.tree})  # fmt: skip
    return _report(prog, result.get("results", []), f"sent {ns.signal.name}")


def _scale(prog: str, ns: SimpleNamespace) -> int:
    rc = EXIT_OK
    with _connect(ns) as client:
        for name, n in ns.targets:
            result = client.request("scale", {"program": name, "n": n}, timeout=None)
            print(f"{name}: {n} instance{'s' if n != 1 else ''}")
            rc = max(rc, _report(prog, result.get("results", []), None))
    return rc


# -- reload / down ------------------------------------------------------------


def _reload(prog: str, ns: SimpleNamespace) -> int:
    with _connect(ns) as client:
        result = client.request("reload", timeout=None)
    changes = 0
    for key, word in (
        ("added", "added"),
        ("removed", "removed"),
        ("changed", "restarted (changed)"),
        ("scaled", "scaled"),
    ):
        names = result.get(key) or []
        if names:
            changes += len(names)
            print(f"{word}: {', '.join(names)}")
    kept = result.get("kept") or []
    if kept:
        print(f"kept their 'forkwell scale' count (the file's numprocs did not change): "
              f"{', '.join(kept)}")  # fmt: skip
    unchanged = result.get("unchanged") or []
    print(f"unchanged: {len(unchanged)} program{'s' if len(unchanged) != 1 else ''}")
    if not changes:
        print("nothing to do")
    return EXIT_OK


def _down(prog: str, ns: SimpleNamespace) -> int:
    with _connect(ns) as client:
        result = client.request("down", timeout=None)
        pid = result.get("pid")
        # The supervisor closes the socket as it exits; then make sure the
        # process itself is gone, so `forkwell down && forkwell up` is safe.
        client.wait_closed(ns.wait)
    if isinstance(pid, int) and not wait_gone(pid, ns.wait):
        _err(prog, f"all stopped, but the supervisor (pid {pid}) has not exited")
        return EXIT_UNREACHABLE
    stopped = result.get("stopped") or []
    print(f"stopped {len(stopped)} instance{'s' if len(stopped) != 1 else ''}; supervisor exited")
    return EXIT_OK


# -- logs ---------------------------------------------------------------------


def _logs(prog: str, ns: SimpleNamespace) -> int:
    from ._logs import print_logs

    stream = "stderr" if ns.stderr else "stdout"
    with _connect(ns) as client:
        result = client.request("logs", {"names": ns.names, "stream": stream})
    return print_logs(prog, result.get("logs", []), ns)


# -- check --------------------------------------------------------------------


def _check(prog: str, ns: SimpleNamespace) -> int:
    from .._exceptions import ConfigError
    from . import _fleetfile

    path = _fleetfile.choose(prog, ns.config)
    try:
        loaded = _fleetfile.load(prog, ns, path)
    except ConfigError as exc:
        n = len(exc.errors)
        _err(prog, f"{path}: {n} error{'s' if n != 1 else ''}")
        for line in exc.errors:
            print(f"  {line}", file=sys.stderr)
        return EXIT_USAGE
    config = loaded.config
    _fleetfile.warn(prog, loaded, path)
    programs = config.programs
    instances = sum(p.numprocs for p in programs.values())
    print(
        f"{path}: ok ({'' if loaded.format == 'toml' else loaded.format + '; '}"
        f"{len(programs)} program{'s' if len(programs) != 1 else ''},"
        f" {instances} instance{'s' if instances != 1 else ''}; socket {config.supervisor.socket})"
    )
    return EXIT_OK


_COMMANDS = {
    "check": _check,
    "ps": _ps,
    "start": _start,
    "stop": _stop,
    "restart": _restart,
    "signal": _signal,
    "logs": _logs,
    "reload": _reload,
    "scale": _scale,
    "down": _down,
}
