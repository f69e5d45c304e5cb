"""``forkwell ps|start|stop|restart|signal|logs|reload|scale|down|check``: talk to a supervisor.

Thin: parse, send one request over the control socket (:mod:`forkwell._supervisor._control`),
print.  Imports stay lean (no asyncio, tomllib or engine) because ``forkwell
ps`` is run by health checks and people in a hurry; only ``check`` loads the
config module.

Exit codes (also in ``docs/control.md``):
    0  done; ``ps``: every autostart instance is RUNNING (or a job that exited 0)
    1  the supervisor cannot be reached, or failed to answer
    2  bad usage, unknown program name, invalid config (``check``, ``reload``)
    3  an instance failed (FATAL, did not stop, could not be signalled);
       ``ps``: some autostart instance is not RUNNING
  130  interrupted (Ctrl-C)
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, NamedTuple, NoReturn

from .._core._files import tail_bytes
from .._core._proc import wait_gone
from .._core._status import exit_label
from .._exceptions import ControlRequestError, SupervisorUnreachableError
from .._supervisor._control._client import ControlClient
from .._supervisor._control._discovery import find_socket

if TYPE_CHECKING:
    import argparse

EXIT_OK = 0
EXIT_UNREACHABLE = 1
EXIT_USAGE = 2
EXIT_FAILED = 3
EXIT_INTERRUPTED = 130

# Error codes from the supervisor that mean "the user asked for something wrong".
_USAGE_CODES = frozenset({"unknown_name", "bad_request", "config"})

_DESCRIPTIONS = {
    "ps": "Show every supervised instance: state, pid, uptime, restarts, last exit, CPU %, RSS.\n"
    "Exit 0 when every autostart instance is RUNNING (or a job that exited 0), 3 otherwise:\n"
    "a health check.  STARTING does not count as up.",
    "start": "Start instances and wait until each is RUNNING (ready) or has failed.",
    "stop": "Stop instances (their whole process trees) and wait until each is STOPPED.",
    "restart": "Restart instances; each is stopped and started on its own, others are untouched.",
    "signal": "Send a signal to instances' main processes (their whole trees with --tree).",
    "logs": "Print the last lines of instances' logs (several: each line prefixed with its\n"
    "instance); -f keeps following them across rotations and truncation.",
    "reload": "Re-read the config: start added programs, stop removed ones, restart changed\n"
    "ones; unchanged ones keep running (same pid).  An invalid config changes nothing.",
    "scale": "Change a program's number of instances; existing instances are not restarted.",
    "down": "Stop everything in reverse dependency order; return once the supervisor exited.",
    "check": "Validate a config file without a running supervisor; list every error.",
}

_NAMES_HELP = "program (all its instances), program:N (one instance) or 'all'"
_EPILOG = (
    "The socket is --socket, else $FORKWELL_SOCKET, else [supervisor] socket of the config\n"
    "(-c, default ./forkwell.toml).  Exit: 0 ok, 1 supervisor unreachable, 2 bad usage or\n"
    "unknown name, 3 an instance failed or is not running.  See docs/control.md."
)


class _Usage(Exception):
    pass


class _Opt(NamedTuple):
    """One option or operand of a control command."""

    names: tuple[str, ...]  # spellings; () for an operand
    dest: str
    kind: str  # "flag", "str", "int", "float"; operands: nargs "?", "*", "+" or "1"
    default: Any
    metavar: str | None
    help: str


_CONFIG = _Opt(("-c", "--config"), "config", "str", None, "FILE",
               "the supervisor's config (default ./forkwell.toml)")  # fmt: skip
_SOCKET = _Opt(("--socket",), "socket", "str", None, "PATH",
               "the control socket (overrides the config)")  # fmt: skip
_NAMES = _Opt((), "names", "+", None, "NAME", _NAMES_HELP)
_NO_WAIT = _Opt(("--no-wait",), "no_wait", "flag", False, None,
                "return once the request is taken")  # fmt: skip

# Each command's options and operands: the one table both parsers read.
_SPECS: dict[str, tuple[_Opt, ...]] = {
    "ps": (_CONFIG, _SOCKET, _NAMES._replace(kind="*", help=_NAMES_HELP + " (default: all)"),
           _Opt(("--json",), "json", "flag", False, None, "print a JSON document instead")),
    "start": (_CONFIG, _SOCKET, _NAMES, _NO_WAIT),
    "stop": (_CONFIG, _SOCKET, _NAMES, _NO_WAIT),
    "restart": (_CONFIG, _SOCKET, _NAMES, _NO_WAIT),
    "signal": (_CONFIG, _SOCKET, _Opt((), "signal", "1", None, "SIG", "TERM, SIGTERM or 15"),
               _NAMES,
               _Opt(("--tree",), "tree", "flag", False, None, "signal each instance's whole tree")),
    "logs": (_CONFIG, _SOCKET, _NAMES,
             _Opt(("-n", "--lines"), "lines", "int", 10, "N", "default 10"),
             _Opt(("-f", "--follow"), "follow", "flag", False, None, "keep printing new lines"),
             _Opt(("--stderr",), "stderr", "flag", False, None,
                  "the stderr log instead of stdout")),
    "reload": (_CONFIG, _SOCKET),
    "scale": (_CONFIG, _SOCKET, _Opt((), "targets", "+", None, "NAME=N", "e.g. web=4")),
    "down": (_CONFIG, _SOCKET,
             _Opt(("--timeout",), "timeout", "float", 60.0, "SECONDS",
                  "how long to wait for the supervisor process to exit after stopping "
                  "(default 60)")),
    "check": (_CONFIG,),
}  # fmt: skip
_CONVERT: dict[str, Callable[[str], Any]] = {"str": str, "int": int, "float": float}


def _parse(command: str, argv: list[str]) -> SimpleNamespace | None:
    """The plain command lines people and health checks type, without argparse.

    argparse (with gettext, locale and the regexes it compiles per run) is
    ~5 ms of a ~40 ms ``forkwell ps``.  Anything this does not take as-is
    (help, ``--``, abbreviations, bundled flags, a bad value, a missing
    operand) returns None, and argparse parses it: the same result, or its
    help and error messages.
    """
    spec = _SPECS[command]
    options = {name: opt for opt in spec for name in opt.names}
    values: dict[str, Any] = {opt.dest: opt.default for opt in spec}
    operands: list[str] = []
    split = False  # an option came after operands: argparse's rules for more are subtle
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if not arg.startswith("-") or arg == "-":
            if split:
                return None
            operands.append(arg)
            continue
        split = bool(operands)
        name, eq, value = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        opt = options.get(name)
        if opt is None:
            return None
        if opt.kind == "flag":
            if eq:
                return None
            values[opt.dest] = True
            continue
        if not eq:
            if i >= len(argv) or argv[i].startswith("-"):
                return None
            value = argv[i]
            i += 1
        try:
            values[opt.dest] = _CONVERT[opt.kind](value)
        except ValueError:
            return None
    for opt in spec:
        if opt.names:
            continue
        if opt.kind == "1":
            if not operands:
                return None
            values[opt.dest] = operands.pop(0)
        elif opt.kind == "+" and not operands:
            return None
        else:
            values[opt.dest], operands = operands, []
    return None if operands else SimpleNamespace(**values)


def _parser(prog: str, command: str) -> argparse.ArgumentParser:
    """argparse, for ``--help`` and for what :func:`_parse` leaves to it."""
    import argparse

    class _Parser(argparse.ArgumentParser):
        def error(self, message: str) -> NoReturn:
            # One line, not argparse's usage dump: scripts grep stderr.
            raise _Usage(f"{message} (see '{self.prog} --help')")

    p = _Parser(
        prog=prog,
        description=_DESCRIPTIONS[command],
        epilog=_EPILOG if command != "check" else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for opt in _SPECS[command]:
        if not opt.names:
            nargs = None if opt.kind == "1" else opt.kind
            p.add_argument(opt.dest, nargs=nargs, metavar=opt.metavar, help=opt.help)
        elif opt.kind == "flag":
            p.add_argument(*opt.names, dest=opt.dest, action="store_true", help=opt.help)
        else:
            p.add_argument(
                *opt.names, dest=opt.dest, type=_CONVERT[opt.kind], default=opt.default,
                metavar=opt.metavar, help=opt.help,
            )  # fmt: skip
    return p


def main(argv: list[str], *, prog: str, command: str) -> int:
    try:
        ns: Any = _parse(command, argv)
        if ns is None:
            try:
                ns = _parser(prog, command).parse_args(argv)
            except SystemExit as exc:  # --help
                return exc.code if isinstance(exc.code, int) else EXIT_OK
        if command == "check":
            return _check(prog, ns)
        return _COMMANDS[command](prog, ns)
    except _Usage as exc:
        _err(prog, str(exc))
        return EXIT_USAGE
    except SupervisorUnreachableError as exc:
        _err(prog, str(exc))
        return EXIT_UNREACHABLE
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


def _err(prog: str, message: str) -> None:
    print(f"{prog}: {message}", file=sys.stderr)


def _silence_stdout() -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _connect(ns: argparse.Namespace) -> ControlClient:
    return ControlClient(find_socket(ns.socket, ns.config))


# -- ps -------------------------------------------------------------------


def _ps(prog: str, ns: argparse.Namespace) -> int:
    with _connect(ns) as client:
        result = client.request("ps", {"names": ns.names} if ns.names else None)
    rows: list[dict[str, Any]] = result.get("instances", [])
    healthy = bool(result.get("healthy"))
    if ns.json:
        import json

        doc = {"version": 1, **result}
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    else:
        _print_table(rows)
    return EXIT_OK if healthy else EXIT_FAILED


def _print_table(rows: list[dict[str, Any]]) -> None:
    header = ("NAME", "STATE", "PID", "UPTIME", "RESTARTS", "LAST-EXIT", "CPU%", "RSS")
    table = [header]
    for r in rows:
        table.append(
            (
                r["name"],
                r["state"],
                "-" if r["pid"] is None else str(r["pid"]),
                "-" if r["uptime"] is None else format_uptime(r["uptime"]),
                str(r["restarts"]),
                exit_label(r["last_exit"]),
                "-" if r["cpu_percent"] is None else f"{r['cpu_percent']:.1f}",
                "-" if r["rss_bytes"] is None else format_bytes(r["rss_bytes"]),
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    out = []
    for row in table:
        out.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    sys.stdout.write("\n".join(out) + "\n")


def format_uptime(seconds: float) -> str:
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def format_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "K", "M", "G"):
        if value < 1024 or unit == "G":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return f"{value:.1f}G"  # pragma: no cover


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


def _op(prog: str, ns: argparse.Namespace, command: str) -> int:
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


def _start(prog: str, ns: argparse.Namespace) -> int:
    return _op(prog, ns, "start")


def _stop(prog: str, ns: argparse.Namespace) -> int:
    return _op(prog, ns, "stop")


def _restart(prog: str, ns: argparse.Namespace) -> int:
    return _op(prog, ns, "restart")


def _signal(prog: str, ns: argparse.Namespace) -> int:
    from .._core._duration import parse_signal

    try:
        sig = parse_signal(ns.signal)
    except ValueError as exc:
        raise _Usage(str(exc)) from None
    with _connect(ns) as client:
        result = client.request("signal", {"names": ns.names, "signal": sig.name, "tree": ns.tree})
    return _report(prog, result.get("results", []), f"sent {sig.name}")


def _scale(prog: str, ns: argparse.Namespace) -> int:
    targets: list[tuple[str, int]] = []
    for target in ns.targets:
        name, eq, count = target.partition("=")
        if not eq or not name or not count.strip().isdigit():
            raise _Usage(f"expected NAME=N with N >= 0, got {target!r}")
        targets.append((name, int(count)))
    rc = EXIT_OK
    with _connect(ns) as client:
        for name, n in targets:
            result = client.request("scale", {"program": name, "n": n}, timeout=None)
            print(f"{name}: {n} instance{'s' if n != 1 else ''}")
            rc = max(rc, _report(prog, result.get("results", []), None))
    return rc


# -- reload / down ------------------------------------------------------------


def _reload(prog: str, ns: argparse.Namespace) -> int:
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
    unchanged = result.get("unchanged") or []
    print(f"unchanged: {len(unchanged)} program{'s' if len(unchanged) != 1 else ''}")
    if not changes:
        print("nothing to do")
    return EXIT_OK


def _down(prog: str, ns: argparse.Namespace) -> int:
    with _connect(ns) as client:
        result = client.request("down", timeout=None)
        pid = result.get("pid")
        # The supervisor closes the socket as it exits; then make sure the
        # process itself is gone, so `forkwell down && forkwell up` is safe.
        client.wait_closed(ns.timeout)
    if isinstance(pid, int) and not wait_gone(pid, ns.timeout):
        _err(prog, f"all stopped, but the supervisor (pid {pid}) has not exited")
        return EXIT_UNREACHABLE
    stopped = result.get("stopped") or []
    print(f"stopped {len(stopped)} instance{'s' if len(stopped) != 1 else ''}; supervisor exited")
    return EXIT_OK


# -- logs ---------------------------------------------------------------------


def _logs(prog: str, ns: argparse.Namespace) -> int:
    if ns.lines < 0:
        raise _Usage(f"-n must be >= 0, got {ns.lines}")
    stream = "stderr" if ns.stderr else "stdout"
    with _connect(ns) as client:
        result = client.request("logs", {"names": ns.names, "stream": stream})
    logs: list[dict[str, str]] = result.get("logs", [])
    # One instance: its bytes as they are.  Several: each line prefixed with
    # its instance, like the console of `forkwell up`.
    prefixed = len(logs) > 1
    width = max((len(entry["instance"]) for entry in logs), default=0)
    followers = []
    missing = []
    out = sys.stdout.buffer
    for entry in logs:
        prefix = f"{entry['instance']:<{width}} | ".encode() if prefixed else b""
        follower = LogFollower(entry["path"], prefix)
        if follower.file is None:
            missing.append(entry["instance"])
        else:
            tail = tail_bytes(follower.file, ns.lines)
            out.write(follower.add_prefix(tail, final=not ns.follow))
        followers.append(follower)
    out.flush()
    if missing and not ns.follow:
        _err(prog, f"no {stream} log yet for {', '.join(missing)}")
    if not ns.follow:
        for follower in followers:
            follower.close()
        return EXIT_OK
    follow(followers, out)
    return EXIT_OK  # pragma: no cover (follow returns only by an exception)


class LogFollower:
    """New bytes of one log file, across rotation and truncation.

    Rotation (rename + new file) shows as a new inode at ``path``: finish the
    old file, then read the new one from its start.  Truncation
    (copytruncate) shows as a size below our offset: start over at 0.
    """

    def __init__(self, path: str, prefix: bytes = b"") -> None:
        self.path = path
        self.prefix = prefix
        self._partial = b""
        self.file: Any = None
        self._ident: tuple[int, int] | None = None
        self._open()

    def _open(self) -> None:
        try:
            self.file = open(self.path, "rb")  # noqa: SIM115 (kept open while following)
        except FileNotFoundError:
            self.file, self._ident = None, None
        else:
            self._ident = _ident(os.fstat(self.file.fileno()))

    def read(self) -> bytes:
        """Whatever was appended since the last call (b"" if nothing); never blocks."""
        chunks = []
        while True:
            data = self.file.read(65536) if self.file is not None else b""
            if data:
                chunks.append(data)
                continue
            try:
                st = os.stat(self.path)
            except FileNotFoundError:
                break  # rotated away, the new file is not there yet
            if _ident(st) != self._ident:
                if self.file is not None:
                    chunks.append(self.file.read())  # written just before the rotation
                    self.file.close()
                self._open()
                if self.file is None:
                    break
                continue
            if self.file is not None and st.st_size < self.file.tell():
                self.file.seek(0)
                continue
            break
        return self.add_prefix(b"".join(chunks))

    def add_prefix(self, data: bytes, *, final: bool = False) -> bytes:
        """Prefix each complete line; keep a partial last line for later (unless ``final``)."""
        if not self.prefix:
            return data
        data = self._partial + data
        lines = data.split(b"\n")
        self._partial = b"" if final else lines.pop()
        if final and lines and lines[-1] == b"":
            lines.pop()
        return b"".join(self.prefix + line + b"\n" for line in lines)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


def follow(followers: list[LogFollower], out: Any, *, interval: float = 0.1) -> None:
    """Print what is appended to the followed logs, forever (until Ctrl-C).

    Polling keeps this portable and costs nothing measurable at 10 Hz.
    """
    import select

    while True:
        wrote = False
        for follower in followers:
            data = follower.read()
            if data:
                out.write(data)
                wrote = True
        if wrote:
            out.flush()
        else:
            select.select([], [], [], interval)


def _ident(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


# -- check --------------------------------------------------------------------


def _check(prog: str, ns: argparse.Namespace) -> int:
    from .._exceptions import ConfigError
    from .._supervisor._config import DEFAULT_FILE, load_config

    path = ns.config or DEFAULT_FILE
    try:
        config = load_config(path)
    except ConfigError as exc:
        n = len(exc.errors)
        _err(prog, f"{path}: {n} error{'s' if n != 1 else ''}")
        for line in exc.errors:
            print(f"  {line}", file=sys.stderr)
        return EXIT_USAGE
    programs = config.programs
    instances = sum(p.numprocs for p in programs.values())
    print(
        f"{path}: ok ({len(programs)} program{'s' if len(programs) != 1 else ''},"
        f" {instances} instance{'s' if instances != 1 else ''}; socket {config.supervisor.socket})"
    )
    return EXIT_OK


_COMMANDS = {
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
