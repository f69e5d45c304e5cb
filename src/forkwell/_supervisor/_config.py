"""The supervisor's config file (TOML), strictly validated.

:func:`load_config` reads ``forkwell.toml`` and returns a :class:`Config`, or
raises :class:`~forkwell.ConfigError` listing *every* problem at once, each
naming the file, the key path and what was expected::

    forkwell.toml: programs.web.ready: expected 'exec', 'notify', 'tcp:HOST:PORT',
    'delay:SECONDS', 'cmd:COMMAND', an http:// or https:// URL, or 'log:REGEX',
    got 'tcp:x' (expected tcp:HOST:PORT with PORT 1-65535)

Environment files (``env_file``) are read here too, so a missing or
malformed one is a config error like any other, and a reload re-reads them.

Each key is described once in :data:`SUPERVISOR_KEYS` / :data:`PROGRAM_KEYS`
(type, default, meaning); validation and the reference table in
``docs/supervisor.md`` both come from there, so they cannot drift apart.
"""

from __future__ import annotations

import grp
import math
import os
import pwd
import re
import shlex
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, NamedTuple

from .._core._duration import parse_duration, parse_signal
from .._exceptions import ConfigError
from ._probespec import (
    LIVENESS_FORMS,
    LIVENESS_KINDS,
    READY_FORMS,
    READY_KINDS,
    ProbeSpec,
    parse_probe,
)
from ._web._address import HttpAddress

DEFAULT_FILE = "forkwell.toml"

RestartPolicy = Literal["always", "on-failure", "never"]

# Instance names are "<program>:<index>" and log files "<program>.<index>.stdout.log",
# so neither ':' nor '.' may appear in a program name.
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*\Z")
_RESERVED = frozenset({"all"})
# Printable ASCII, tabs and newlines, but no quote or backslash: then
# shlex.split(s) == s.split().
_PLAIN = re.compile(r"[\t\n\r !#-&(-\[\]-~]*")
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?i?B?)\s*\Z", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
ExitWhen = Literal["never", "any-exit", "all-exited"]
Essential = bool | Literal["on-failure"]
DEFAULT_INSTANCE_NAME = "{program}:{index}"
_INSTANCE_FIELDS = ("program", "index", "number", "process_group")


class SupervisorConfig(NamedTuple):
    """The ``[supervisor]`` table; relative paths are resolved against the file's directory."""

    socket: Path
    log_dir: Path
    state_file: Path
    shutdown_timeout: float
    http: HttpAddress | None
    http_actions: bool
    http_token_file: Path | None
    env_file: tuple[Path, ...] = ()
    env_file_optional: bool = False
    exit_when: ExitWhen = "never"
    log_timestamps: bool = False


class ProgramConfig(NamedTuple):
    """One ``[programs.NAME]`` table, validated and normalised."""

    name: str
    command: tuple[str, ...]
    directory: Path
    # What the program gets on top of the supervisor's own environment: the
    # variables of [supervisor] env_file, then of its own env_file, then `environment`.
    environment: Mapping[str, str]
    env_file: tuple[Path, ...]
    env_file_optional: bool
    user: str | None
    group: str | None
    umask: int | None
    numprocs: int
    autostart: bool
    restart: RestartPolicy
    success_exit_codes: frozenset[int]
    ready: ProbeSpec
    ready_timeout: float
    liveness: ProbeSpec | None
    liveness_period: float
    liveness_timeout: float
    liveness_failures: int
    liveness_delay: float
    watchdog_sec: float | None
    essential: Essential
    depends_on: tuple[str, ...]
    min_uptime: float
    start_retries: int
    backoff_max: float
    stop_signal: int
    stop_timeout: float
    redirect_stderr: bool
    log_max_bytes: int
    log_backups: int
    log_timestamps: bool
    log_markers: bool
    priority: int
    process_group: str | None
    instance_name: str
    port: int | None
    name_variables: tuple[str, ...]
    # The dependencies whose restarts restart this program too
    # (depends_on = [{ name = "db", restart = true }]).
    restart_with: tuple[str, ...] = ()

    def same_except_numprocs(self, other: ProgramConfig) -> bool:
        """True when only ``numprocs`` differs: a reload then scales in place."""
        return self._replace(numprocs=other.numprocs) == other

    def name_of(self, index: int) -> str:
        """Instance ``index``'s name: ``web:0``, or what ``instance_name`` makes of it."""
        if self.instance_name == DEFAULT_INSTANCE_NAME:
            return f"{self.name}:{index}"
        return self.instance_name.format(
            program=self.name,
            index=index,
            number=index + 1,
            process_group=self.process_group or self.name,
        )

    def instance_names(self) -> list[str]:
        return [self.name_of(i) for i in range(self.numprocs)]


class Config(NamedTuple):
    """A whole config file: ``supervisor`` settings and ``programs`` in file order."""

    path: Path
    supervisor: SupervisorConfig
    programs: dict[str, ProgramConfig]

    def start_order(self) -> list[str]:
        """Program names with every dependency before its dependents.

        Otherwise by ``priority`` (lower first), then in file order.
        """
        done: list[str] = []
        seen: set[str] = set()

        def visit(name: str) -> None:
            if name in seen:
                return
            seen.add(name)
            for dep in self.programs[name].depends_on:
                visit(dep)
            done.append(name)

        by_priority = sorted(self.programs, key=lambda n: self.programs[n].priority)
        for name in by_priority:
            visit(name)
        return done

    def dependents(self, name: str) -> list[str]:
        """Programs that list ``name`` in their ``depends_on``."""
        return [p.name for p in self.programs.values() if name in p.depends_on]


# -- key descriptions ---------------------------------------------------------


class Key(NamedTuple):
    """One config key: how to check and convert it, its default, and what it means."""

    name: str
    kind: str  # what is expected, as said in error messages and the docs
    convert: Callable[[Any, _Context], Any]
    default: Any
    doc: str


class _Context:
    """What converters need: the file's directory (for relative paths)."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.paths: dict[str, Path] = {}
        # Environment files read so far (many programs share one): variables, or the error.
        self.env_files: dict[Path, dict[str, str] | str] = {}
        # What programs take from [supervisor]: its values, its env files' variables.
        self.sup: Mapping[str, Any] = {}
        self.shared_env: Mapping[str, str] = {}


class _Bad(Exception):
    """A converter's rejection; the message says what was expected."""


def _kind(value: Any) -> str:
    """What TOML type ``value`` is, as messages say it: "an integer"."""
    for kind, name in ((bool, "a boolean"), (dict, "a table"), (list, "an array"),
                       (float, "a float"), (int, "an integer"), (str, "a string")):
        if isinstance(value, kind):
            return name
    return "a date or time"  # fmt: skip


def _got(value: Any) -> str:
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, dict | list):
        return _kind(value)
    if isinstance(value, int | float):
        return f"{value!r} ({_kind(value)})"
    return repr(value)


_NUL = "a NUL byte (\\0), which no path, argument or environment value can hold"


def _str(value: Any, ctx: _Context) -> str:
    if not isinstance(value, str):
        raise _Bad(f"expected a string, got {_got(value)}")
    if "\0" in value:
        raise _Bad(f"got {_NUL}")
    return value


def _path(value: Any, ctx: _Context) -> Path:
    text = _str(value, ctx)
    if not text:
        raise _Bad("expected a path, got an empty string")
    # Resolving costs a few syscalls; 100 programs mostly share directory = ".".
    resolved = ctx.paths.get(text)
    if resolved is None:
        resolved = ctx.paths[text] = (ctx.base / os.path.expanduser(text)).resolve()
    return resolved


def _bool(value: Any, ctx: _Context) -> bool:
    if not isinstance(value, bool):
        raise _Bad(f"expected true or false, got {_got(value)}")
    return value


def _essential(value: Any, ctx: _Context) -> Essential:
    if value is True or value is False or value == "on-failure":
        return value  # type: ignore[no-any-return]
    raise _Bad(f"expected true, false or 'on-failure', got {_got(value)}")


def _int_at_least(low: int) -> Callable[[Any, _Context], int]:
    def convert(value: Any, ctx: _Context) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Bad(f"expected an integer >= {low}, got {_got(value)}")
        if value < low:
            raise _Bad(f"expected an integer >= {low}, got {value}")
        return value

    return convert


def _duration(value: Any, ctx: _Context) -> float:
    expected = "expected seconds (a number >= 0, or a string like '1.5s', '2m')"
    if isinstance(value, bool):
        raise _Bad(f"{expected}, got {_got(value)}")
    if isinstance(value, int | float):
        if value < 0 or math.isnan(value):
            raise _Bad(f"{expected}, got {value!r}")
        return float(value)
    if isinstance(value, str):
        try:
            return parse_duration(value)
        except ValueError:
            raise _Bad(f"{expected}, got {value!r}") from None
    raise _Bad(f"{expected}, got {_got(value)}")


def _size(value: Any, ctx: _Context) -> int:
    expected = "expected a size in bytes >= 1 (an integer, or a string like '50MB', '512KiB')"
    if isinstance(value, bool):
        raise _Bad(f"{expected}, got {_got(value)}")
    if isinstance(value, int):
        if value < 1:
            raise _Bad(f"{expected}, got {value}")
        return value
    if isinstance(value, str):
        m = _SIZE.match(value)
        if m:
            unit = m.group(2).upper().rstrip("B").rstrip("I")
            if unit in _SIZE_UNITS:
                size = int(float(m.group(1)) * _SIZE_UNITS[unit])
                if size >= 1:
                    return size
        raise _Bad(f"{expected}, got {value!r}")
    raise _Bad(f"{expected}, got {_got(value)}")


def _signal(value: Any, ctx: _Context) -> int:
    expected = "expected a signal name or number like 'TERM', 'SIGINT' or 15"
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise _Bad(f"{expected}, got {_got(value)}")
    try:
        return int(parse_signal(value))
    except ValueError:
        raise _Bad(f"{expected}, got {value!r}") from None


def _command(value: Any, ctx: _Context) -> tuple[str, ...]:
    expected = "expected a command string or a non-empty array of strings"
    if isinstance(value, str):
        try:
            # Without quotes or escapes, shell-like splitting is plain splitting
            # (and shlex is ~10x slower, per program).
            argv = value.split() if _PLAIN.fullmatch(value) else shlex.split(value)
        except ValueError as exc:
            raise _Bad(f"{expected}, got {value!r} ({exc})") from None
    elif isinstance(value, list):
        argv = _strings(value, expected)
    else:
        raise _Bad(f"{expected}, got {_got(value)}")
    if not argv or not argv[0]:
        raise _Bad(f"{expected}, got an empty command")
    if any("\0" in a for a in argv):
        raise _Bad(f"{expected}, got {_NUL}")
    return tuple(argv)


def _strings(value: list[Any], expected: str) -> list[str]:
    """An array of strings; else which element is not one (and how to write a number)."""
    for i, item in enumerate(value):
        if not isinstance(item, str):
            number = isinstance(item, int | float) and not isinstance(item, bool)
            quote = f': quote it, "{item}"' if number else ""
            raise _Bad(f"{expected}; element {i} is {_kind(item)}{quote}")
    return list(value)


def _environment(value: Any, ctx: _Context) -> dict[str, str]:
    if not isinstance(value, dict):
        raise _Bad(f'expected a table of strings like {{ PORT = "8000" }}, got {_got(value)}')
    bad = [k for k, v in value.items() if not isinstance(v, str)]
    if bad:
        key = bad[0]
        raise _Bad(
            f'expected a string value for {key!r} (quote it: {key} = "{value[key]}"), '
            f"got {_got(value[key])}"
        )
    if any("\0" in v for v in value.values()):
        raise _Bad(f"expected environment values, got {_NUL}")
    names = [k for k in value if not k or "=" in k or "\0" in k]
    if names:
        raise _Bad(f"expected environment variable names, got {names[0]!r}")
    return dict(value)


def _user(value: Any, ctx: _Context) -> str:
    name = _str(value, ctx)
    try:
        if name.isdigit():
            pwd.getpwuid(int(name))
        else:
            pwd.getpwnam(name)
    except KeyError:
        raise _Bad(f"expected an existing user, got {name!r} (no such user)") from None
    return name


def _group(value: Any, ctx: _Context) -> str:
    name = _str(value, ctx)
    try:
        if name.isdigit():
            grp.getgrgid(int(name))
        else:
            grp.getgrnam(name)
    except KeyError:
        raise _Bad(f"expected an existing group, got {name!r} (no such group)") from None
    return name


def _umask(value: Any, ctx: _Context) -> int:
    expected = "expected an octal string like '022' or '0o027'"
    if isinstance(value, str):
        text = value.strip().lower().removeprefix("0o")
        if text and all(c in "01234567" for c in text) and int(text, 8) <= 0o777:
            return int(text, 8)
        raise _Bad(f"{expected}, got {value!r}")
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 0o777:
        return value
    raise _Bad(f"{expected}, got {_got(value)}")


def _restart(value: Any, ctx: _Context) -> str:
    if value not in ("always", "on-failure", "never"):
        raise _Bad(f"expected 'always', 'on-failure' or 'never', got {_got(value)}")
    return str(value)


def _exit_codes(value: Any, ctx: _Context) -> frozenset[int]:
    expected = "expected an array of exit codes 0-255 like [0, 2]"
    if not isinstance(value, list) or not all(
        isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255 for c in value
    ):
        raise _Bad(f"{expected}, got {_got(value)}")
    return frozenset(value)


def _probe(kinds: frozenset[str], forms: str) -> Callable[[Any, _Context], ProbeSpec]:
    def convert(value: Any, ctx: _Context) -> ProbeSpec:
        if not isinstance(value, str):
            raise _Bad(f"expected {forms}, got {_got(value)}")
        try:
            return parse_probe(value, kinds)
        except ValueError as exc:
            raise _Bad(f"expected {forms}, got {value!r} ({exc})") from None

    return convert


def _positive_duration(value: Any, ctx: _Context) -> float:
    seconds = _duration(value, ctx)
    if seconds <= 0:
        raise _Bad(f"expected seconds > 0 (a number, or a string like '10s'), got {value!r}")
    return seconds


def _paths(value: Any, ctx: _Context) -> tuple[Path, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _Bad(f'expected a path or an array of paths like [".env"], got {_got(value)}')
    return tuple(_path(v, ctx) for v in value)


def _exit_when(value: Any, ctx: _Context) -> str:
    if value not in ("never", "any-exit", "all-exited"):
        raise _Bad(f"expected 'never', 'any-exit' or 'all-exited', got {_got(value)}")
    return str(value)


def _names(value: Any, ctx: _Context) -> tuple[tuple[str, bool], ...]:
    """``depends_on``: names, or tables ``{ name = "db", restart = true }``; (name, restart)."""
    expected = 'expected an array of program names like ["db"] or { name = "db", restart = true }'
    if not isinstance(value, list):
        raise _Bad(f"{expected}, got {_got(value)}")
    out: dict[str, bool] = {}
    for i, item in enumerate(value):
        if isinstance(item, str):
            out.setdefault(item, False)
            continue
        if not isinstance(item, dict):
            raise _Bad(f"{expected}; element {i} is {_kind(item)}")
        if not isinstance(item.get("name"), str):
            raise _Bad(f'{expected}; element {i} is a table without name = "PROGRAM"')
        unknown = [k for k in item if k not in ("name", "restart")]
        if unknown:
            raise _Bad(f"unknown key {unknown[0]!r} in a depends_on table; expected name, restart")
        restart = item.get("restart", False)
        if not isinstance(restart, bool):
            raise _Bad(f"expected restart = true or false, got {_got(restart)}")
        out[item["name"]] = out.get(item["name"], False) or restart
    return tuple(out.items())


def dependency_names(raw: Any) -> tuple[str, ...] | None:
    """The program names a raw ``depends_on`` value lists (None if it is malformed)."""
    if not isinstance(raw, list):
        return None
    names = [n if isinstance(n, str) else n.get("name") if isinstance(n, dict) else None
             for n in raw]  # fmt: skip
    if not all(isinstance(n, str) for n in names):
        return None
    return tuple(dict.fromkeys(n for n in names if isinstance(n, str)))


def _http(value: Any, ctx: _Context) -> HttpAddress:
    from ._web._address import EXTRA, FORMS, have_h11, parse_http

    if not isinstance(value, str):
        raise _Bad(f"expected {FORMS}, got {_got(value)}")
    try:
        address = parse_http(value, ctx.base)
    except ValueError as exc:
        raise _Bad(str(exc)) from None
    if not have_h11():
        raise _Bad(f"the web endpoint needs the web extra: {EXTRA} (h11 is not installed)")
    return address


def _token_file(value: Any, ctx: _Context) -> Path:
    from ._web._auth import read_token

    path = _path(value, ctx)
    try:
        read_token(path)
    except ValueError as exc:
        raise _Bad(str(exc)) from None
    return path


def _int(value: Any, ctx: _Context) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Bad(f"expected an integer, got {_got(value)}")
    return value


def _port(value: Any, ctx: _Context) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise _Bad(f"expected a port number 1-65535, got {_got(value)}")
    return value


def _group_name(value: Any, ctx: _Context) -> str:
    name = _str(value, ctx)
    if not name or not name.isprintable() or any(c in name for c in " :*"):
        raise _Bad(f"expected a group name without spaces, ':' or '*', got {name!r}")
    return name


def _instance_name(value: Any, ctx: _Context) -> str:
    text = _str(value, ctx)
    fields = {"program": "p", "index": 0, "number": 1, "process_group": "g"}
    expected = (
        "expected a name like '{program}.{number}' (fields: "
        + ", ".join("{" + f + "}" for f in _INSTANCE_FIELDS)
        + ")"
    )
    try:
        made = text.format(**fields)
    except (KeyError, IndexError, ValueError, AttributeError) as exc:
        raise _Bad(f"{expected}, got {text!r} ({type(exc).__name__}: {exc})") from None
    if not made or not made.isprintable() or " " in made or made == "all":
        raise _Bad(f"{expected}, got {text!r} (makes {made!r})")
    return text


def _variable_names(value: Any, ctx: _Context) -> tuple[str, ...]:
    expected = 'expected an array of environment variable names like ["PS"]'
    if not isinstance(value, list) or not all(
        isinstance(n, str) and n and "=" not in n and "\0" not in n for n in value
    ):
        raise _Bad(f"{expected}, got {_got(value)}")
    return tuple(dict.fromkeys(value))


SUPERVISOR_KEYS: tuple[Key, ...] = (
    Key("socket", "path", _path, ".forkwell/forkwell.sock",
        "the control socket (`forkwell ps`, `stop`...); created 0600 in an owner-only dir"),
    Key("log_dir", "path", _path, ".forkwell/logs",
        "where each instance's `NAME.I.stdout.log` / `.stderr.log` go"),
    Key("state_file", "path", _path, ".forkwell/state.json",
        "records what is running, so the next `forkwell up` ends survivors of a killed one"),
    Key("shutdown_timeout", "seconds", _duration, 30.0,
        "how long `forkwell down` / SIGTERM may take before everything left is SIGKILLed"),
    Key("env_file", "path or array", _paths, [],
        "environment files every program gets (before its own env_file and environment)"),
    Key("env_file_optional", "boolean", _bool, False,
        "a missing [supervisor] env_file is skipped instead of being an error"),
    Key("exit_when", "string", _exit_when, "never",
        "'any-exit': the first instance to exit stops all; 'all-exited': stop once all "
        "exited; 'never'"),
    Key("log_timestamps", "boolean", _bool, False,
        "the default of every program's log_timestamps"),
    Key("http", "address", _http, None,
        "serve the status page, API, /metrics and health here: 'HOST:PORT' or 'unix:PATH' "
        "(off by default; needs pip install 'forkwell[web]')"),
    Key("http_actions", "boolean", _bool, False,
        "let the web endpoint start, stop and restart programs (with the token only)"),
    Key("http_token_file", "path", _token_file, None,
        "a file only its owner may read, holding the bearer token that actions (and reading, "
        "when http is not loopback) need"),
)  # fmt: skip

PROGRAM_KEYS: tuple[Key, ...] = (
    Key("command", "string or array", _command, None,
        "required; a string is split like a shell does (no shell runs), or give an argv array"),
    Key("directory", "path", _path, ".", "working directory (relative to the config file)"),
    Key("environment", "table", _environment, {},
        "extra environment variables (added to the supervisor's own, after env_file's)"),
    Key("env_file", "path or array", _paths, [],
        "environment files (dotenv: KEY=value, quotes, export, comments); later ones win"),
    Key("env_file_optional", "boolean", _bool, False,
        "a missing env_file is skipped instead of being an error"),
    Key("user", "string", _user, None, "run as this user (needs root)"),
    Key("group", "string", _group, None, "run with this group (needs root)"),
    Key("umask", "octal string", _umask, None, "the umask, e.g. '022' (default: inherited)"),
    Key("numprocs", "integer", _int_at_least(0), 1,
        "instances NAME:0 .. NAME:N-1; each gets FORKWELL_INSTANCE=NAME:I and FORKWELL_INDEX=I"),
    Key("autostart", "boolean", _bool, True, "start it when `forkwell up` starts"),
    Key("restart", "string", _restart, "on-failure",
        "'always', 'on-failure' (exit code not in success_exit_codes, or a signal) or 'never'"),
    Key("success_exit_codes", "array", _exit_codes, [0], "exit codes that are not failures"),
    Key("ready", "string", _probe(READY_KINDS, READY_FORMS), "exec",
        "when it counts as RUNNING: 'exec', 'notify', 'tcp:HOST:PORT', 'delay:SECONDS', "
        "'cmd:SHELL COMMAND', an http(s):// URL answering 200-399, 'log:REGEX'"),
    Key("ready_timeout", "seconds", _duration, 30.0,
        "not ready within this long: a failed start (its tree is stopped)"),
    Key("liveness", "string", _probe(LIVENESS_KINDS, LIVENESS_FORMS), None,
        "probed while RUNNING; liveness_failures failures in a row restart it: an http(s):// "
        "URL, 'tcp:HOST:PORT', 'cmd:SHELL COMMAND' or 'watchdog'"),
    Key("liveness_period", "seconds", _positive_duration, 10.0, "how often to probe"),
    Key("liveness_timeout", "seconds", _positive_duration, 1.0,
        "a probe not answered within this long failed"),
    Key("liveness_failures", "integer", _int_at_least(1), 3,
        "failures in a row that restart the instance"),
    Key("liveness_delay", "seconds", _duration, 0.0,
        "after RUNNING, wait this long before the first probe"),
    Key("watchdog_sec", "seconds", _positive_duration, None,
        "with liveness = 'watchdog': restart when no WATCHDOG=1 came for this long"),
    Key("essential", "boolean or string", _essential, False,
        "when it is FATAL or exited for good, stop everything and exit with its status; "
        "'on-failure': only when that exit is a failure (process-compose's exit_on_failure)"),
    Key("depends_on", "array", _names, [],
        "start only after these programs are RUNNING (ready); stop before them; "
        "{ name = \"db\", restart = true } also restarts it when db restarts"),
    Key("min_uptime", "seconds", _duration, 1.0,
        "exiting sooner than this after the start (or before ready) is a failed start"),
    Key("start_retries", "integer", _int_at_least(1), 5,
        "consecutive failed starts before the instance is FATAL"),
    Key("backoff_max", "seconds", _duration, 30.0,
        "failed starts back off 0.1 s, 0.2 s, 0.4 s ... capped here"),
    Key("stop_signal", "signal", _signal, "TERM", "sent to the whole tree to stop it"),
    Key("stop_timeout", "seconds", _duration, 10.0,
        "then SIGKILL to whatever is left of the tree"),
    Key("redirect_stderr", "boolean", _bool, False, "send stderr to the stdout log"),
    Key("log_max_bytes", "size", _size, "50MB", "rotate a log file when it reaches this size"),
    Key("log_backups", "integer", _int_at_least(0), 5,
        "rotated files kept (NAME.0.stdout.log.1 is the newest)"),
    Key("log_timestamps", "boolean", _bool, None,
        "start each line of its log files with an RFC 3339 time (default: [supervisor]'s)"),
    Key("log_markers", "boolean", _bool, True,
        "write '--- forkwell: started pid N' / 'exited ...' lines into its log files"),
    Key("priority", "integer", _int, 999,
        "lower starts first and stops last (supervisord's); dependencies still come first"),
    Key("process_group", "string", _group_name, None,
        "supervisord's group: the control commands take GROUP and GROUP:* for all its programs"),
    Key("instance_name", "string", _instance_name, DEFAULT_INSTANCE_NAME,
        "how instances are named: '{program}', '{index}' (from 0), '{number}' (from 1), "
        "'{process_group}'; e.g. '{program}.{number}' for honcho's web.1"),
    Key("port", "integer", _port, None,
        "instance I gets PORT=port+I in its environment (foreman's and honcho's PORT)"),
    Key("name_variables", "array", _variable_names, [],
        "environment variables set to the instance's name, e.g. [\"PS\"] (foreman)"),
)  # fmt: skip

_SUPERVISOR = {k.name: k for k in SUPERVISOR_KEYS}
_PROGRAM = {k.name: k for k in PROGRAM_KEYS}


def _closest(name: str, choices: Mapping[str, Any]) -> str:
    import difflib

    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _apply(
    table: Mapping[str, Any],
    keys: Mapping[str, Key],
    prefix: str,
    ctx: _Context,
    errors: list[str],
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in table.items():
        key = keys.get(name)
        if key is None:
            hint = _closest(name, keys) or f"; expected one of {', '.join(keys)}"
            errors.append(f"{prefix}{name}: unknown key{hint}")
            continue
        try:
            out[name] = key.convert(value, ctx)
        except _Bad as exc:
            errors.append(f"{prefix}{name}: {exc}")
    for key in keys.values():
        if key.name in out or key.name in table:
            continue
        if key.default is None:
            if key.name == "command":
                errors.append(f"{prefix}command: required key missing (the program to run)")
            else:
                out[key.name] = None
            continue
        out[key.name] = key.convert(key.default, ctx)
    return out


def parse_config(
    data: Mapping[str, Any],
    path: Path,
    label: str | None = None,
    *,
    supervisor: Mapping[str, Any] | None = None,
) -> Config:
    """Validate an already-parsed TOML document (``path`` anchors relative paths).

    ``supervisor``: ``[supervisor]`` keys given on the command line (``--http``),
    which win over the file's; their relative paths are relative to the
    working directory, and their errors name the option.
    """
    label = os.fspath(path) if label is None else label
    ctx = _Context(path.parent.resolve() if str(path.parent) else Path.cwd())
    errors: list[str] = []
    for name in data:
        if name not in ("supervisor", "programs"):
            errors.append(
                f"{name}: unknown table{_closest(name, {'supervisor': 0, 'programs': 0})}; "
                "expected [supervisor] or [programs.NAME]"
            )
    sup_table = _table(data, "supervisor", "a table ([supervisor])", errors)
    sup = ctx.sup = _apply(sup_table, _SUPERVISOR, "supervisor.", ctx, errors)
    if supervisor:
        given = {k: _SUPERVISOR[k] for k in supervisor}
        sup.update(_apply(supervisor, given, "--", _Context(Path.cwd()), errors))
    given_as = "--http" if supervisor and "http" in supervisor else ""
    errors.extend(_web_errors(sup, given_as))
    ctx.shared_env = _env_files(sup, "supervisor.", ctx, errors)
    programs_table = _table(data, "programs", "tables [programs.NAME]", errors)
    programs = _programs(programs_table, ctx, errors)
    # Dependencies are checked on every program, also those with other errors,
    # so one run of `forkwell check` shows everything.
    errors.extend(_dependency_errors(programs_table))
    errors.extend(_naming_errors(programs))
    if errors:
        raise ConfigError([f"{label}: {e}" for e in errors])
    return Config(path=path, supervisor=SupervisorConfig(**sup), programs=programs)


def _web_errors(sup: Mapping[str, Any], given_as: str = "") -> list[str]:
    """What the web endpoint's settings ask that cannot be safe (``given_as``: an option)."""
    http, token_file = sup.get("http"), sup.get("http_token_file")
    if http is None or token_file is not None:
        return []
    if sup.get("http_actions"):
        return [
            "supervisor.http_actions: needs http_token_file (actions are only taken with "
            "its bearer token)"
        ]
    if not http.loopback:
        return [
            f"{given_as or 'supervisor.http'}: {http} is not a loopback address, so every "
            "request must carry a token: set http_token_file, or listen on 127.0.0.1:PORT or "
            "unix:PATH"
        ]
    return []


def _table(data: Mapping[str, Any], name: str, expected: str, errors: list[str]) -> dict[str, Any]:
    """The top-level table ``name`` ({} if absent, or not a table: an error then)."""
    table = data.get(name, {})
    if not isinstance(table, dict):
        errors.append(f"{name}: expected {expected}, got {_got(table)}")
        return {}
    return table


def _programs(
    tables: Mapping[str, Any], ctx: _Context, errors: list[str]
) -> dict[str, ProgramConfig]:
    """Each valid ``[programs.NAME]`` table, validated; what is wrong goes to ``errors``."""
    programs: dict[str, ProgramConfig] = {}
    for name, table in tables.items():
        if not _NAME.match(name) or name in _RESERVED:
            errors.append(
                f"programs.{name}: invalid program name {name!r}; expected letters, digits, "
                "'_' and '-' (not starting with '-'), and not 'all'"
            )
            continue
        if not isinstance(table, dict):
            errors.append(f"programs.{name}: expected a table [programs.{name}], got {_got(table)}")
            continue
        before = len(errors)
        prefix = f"programs.{name}."
        values = _apply(table, _PROGRAM, prefix, ctx, errors)
        if len(errors) == before:
            _finish(values, prefix, ctx, errors)
        if len(errors) == before:
            programs[name] = ProgramConfig(name=name, **values)
    return programs


def _finish(values: dict[str, Any], prefix: str, ctx: _Context, errors: list[str]) -> None:
    """What one program's keys mean together: defaults from [supervisor], env files, checks."""
    deps = values.pop("depends_on")
    values["depends_on"] = tuple(name for name, _ in deps)
    values["restart_with"] = tuple(name for name, restart in deps if restart)
    if values["log_timestamps"] is None:
        values["log_timestamps"] = bool(ctx.sup.get("log_timestamps", False))
    watchdog = values["liveness"] is not None and values["liveness"].kind == "watchdog"
    if watchdog and values["watchdog_sec"] is None:
        errors.append(f"{prefix}watchdog_sec: required with liveness = 'watchdog' (e.g. 30)")
    elif values["watchdog_sec"] is not None and not watchdog:
        errors.append(f"{prefix}watchdog_sec: only used with liveness = 'watchdog'")
    from_files = _env_files(values, prefix, ctx, errors)
    values["environment"] = {**ctx.shared_env, **from_files, **values["environment"]}


def _env_files(
    values: Mapping[str, Any], prefix: str, ctx: _Context, errors: list[str]
) -> dict[str, str]:
    """The variables of a table's ``env_file`` list, later files winning; errors named."""
    from ._dotenv import parse_dotenv

    out: dict[str, str] = {}
    for path in values.get("env_file", ()):
        got = ctx.env_files.get(path)
        if got is None:
            try:
                got = parse_dotenv(path.read_text(encoding="utf-8"), os.fspath(path))
            except FileNotFoundError:
                got = _MISSING
            except ConfigError as exc:
                got = exc.errors[0]
            except UnicodeDecodeError:
                got = f"{path}: not UTF-8 text"
            except OSError as exc:
                got = f"{path}: cannot read: {exc.strerror or exc}"
            ctx.env_files[path] = got
        if got is _MISSING:
            if not values.get("env_file_optional"):
                errors.append(
                    f"{prefix}env_file: {path}: no such file "
                    "(set env_file_optional = true if it may be missing)"
                )
        elif isinstance(got, str):
            errors.append(f"{prefix}env_file: {got}")
        else:
            out.update(got)
    return out


_MISSING = "\0 missing"  # ctx.env_files' mark of a file that does not exist


def _naming_errors(programs: Mapping[str, ProgramConfig]) -> list[str]:
    """Instance names that repeat, or that a program's or group's name would shadow."""
    errors: list[str] = []
    groups = {p.process_group: p.name for p in programs.values() if p.process_group is not None}
    for name, member in groups.items():
        if name in programs and programs[name].process_group != name:
            errors.append(f"programs.{member}.process_group: {name!r} is also a program's name")
    owners: dict[str, str] = {}
    for prog in programs.values():
        key = f"programs.{prog.name}.instance_name"
        if prog.numprocs > 1 and not re.search(r"\{(index|number)[}:!]", prog.instance_name):
            errors.append(
                f"{key}: {prog.instance_name!r} names every instance alike; "
                "with numprocs > 1 it needs {index} or {number}"
            )
            continue
        for inst in prog.instance_names():
            other = owners.setdefault(inst, prog.name)
            shadowed = inst in programs and inst != prog.name
            shadowed |= inst in groups and inst != prog.process_group
            if other != prog.name or shadowed:
                owner = f"program {other}" if other != prog.name else "a program or group"
                errors.append(f"{key}: instance name {inst!r} is also the name of {owner}")
                break
    return errors


def _dependency_errors(tables: Mapping[str, Any]) -> list[str]:
    """Every ``depends_on`` naming itself, an unknown program, or closing a cycle."""
    deps: dict[str, tuple[str, ...]] = {}
    for name, table in tables.items():
        names = dependency_names(table.get("depends_on", []) if isinstance(table, dict) else [])
        if names is not None:
            deps[name] = names
    errors: list[str] = []
    for name, names in deps.items():
        for dep in names:
            if dep == name:
                errors.append(f"programs.{name}.depends_on: a program cannot depend on itself")
            elif dep not in tables:
                others = ", ".join(n for n in tables if n != name) or "(none)"
                errors.append(
                    f"programs.{name}.depends_on: unknown program {dep!r}"
                    f"{_closest(dep, tables)}; expected one of {others}"
                )
    return errors + _cycles(deps)


def _cycles(deps: Mapping[str, tuple[str, ...]]) -> list[str]:
    """One error per dependency cycle, naming it like ``a -> b -> a``."""
    errors: list[str] = []
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []
    reported: set[frozenset[str]] = set()

    def visit(name: str) -> None:
        state[name] = 1
        path.append(name)
        for dep in deps[name]:
            if dep not in deps or dep == name:
                continue
            if state.get(dep) == 1:
                cycle = [*path[path.index(dep) :], dep]
                key = frozenset(cycle)
                if key not in reported:
                    reported.add(key)
                    errors.append(
                        f"programs.{dep}.depends_on: dependency cycle {' -> '.join(cycle)}"
                    )
            elif dep not in state:
                visit(dep)
        path.pop()
        state[name] = 2

    for name in deps:
        if name not in state:
            visit(name)
    return errors


def load_config(
    path: str | os.PathLike[str] = DEFAULT_FILE, *, supervisor: Mapping[str, Any] | None = None
) -> Config:
    """Read and validate a config file.

    ``supervisor``: ``[supervisor]`` keys that override the file's, as
    ``forkwell up --http`` gives them.  Raises :class:`~forkwell.ConfigError`
    listing every problem found.
    """
    label = os.fspath(path)
    file = Path(path)
    try:
        with open(file, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError([f"{label}: no such file"]) from None
    except IsADirectoryError:
        raise ConfigError([f"{label}: is a directory, expected a TOML file"]) from None
    except OSError as exc:
        raise ConfigError([f"{label}: cannot read: {exc.strerror}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{label}: invalid TOML: {exc}"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{label}: invalid TOML: not UTF-8 text"]) from None
    return parse_config(data, file.absolute(), label, supervisor=supervisor)
