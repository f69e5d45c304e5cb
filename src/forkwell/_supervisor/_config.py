"""The supervisor's config file (TOML), strictly validated.

:func:`load_config` reads ``forkwell.toml`` and returns a :class:`Config`, or
raises :class:`~forkwell.ConfigError` listing *every* problem at once, each
naming the file, the key path and what was expected::

    forkwell.toml: programs.web.ready: expected 'exec', 'notify', 'tcp:HOST:PORT',
    'delay:SECONDS' or 'cmd:COMMAND', got 'tcp:x'

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
from .._core._readiness import ReadySpec, parse_ready
from .._exceptions import ConfigError

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
DEFAULT_INSTANCE_NAME = "{program}:{index}"
_INSTANCE_FIELDS = ("program", "index", "number", "process_group")
_READY_FORMS = "'exec', 'notify', 'tcp:HOST:PORT', 'delay:SECONDS' or 'cmd:COMMAND'"


class SupervisorConfig(NamedTuple):
    """The ``[supervisor]`` table; relative paths are resolved against the file's directory."""

    socket: Path
    log_dir: Path
    state_file: Path
    shutdown_timeout: float


class ProgramConfig(NamedTuple):
    """One ``[programs.NAME]`` table, validated and normalised."""

    name: str
    command: tuple[str, ...]
    directory: Path
    environment: Mapping[str, str]
    user: str | None
    group: str | None
    umask: int | None
    numprocs: int
    autostart: bool
    restart: RestartPolicy
    success_exit_codes: frozenset[int]
    ready: ReadySpec
    ready_timeout: float
    depends_on: tuple[str, ...]
    min_uptime: float
    start_retries: int
    backoff_max: float
    stop_signal: int
    stop_timeout: float
    redirect_stderr: bool
    log_max_bytes: int
    log_backups: int
    priority: int
    process_group: str | None
    instance_name: str
    port: int | None
    name_variables: tuple[str, ...]

    def same_except_numprocs(self, other: ProgramConfig) -> bool:
        """True when only ``numprocs`` differs: a reload then scales in place."""
        return self._replace(numprocs=other.numprocs) == other

    def name_of(self, index: int) -> str:
        """Instance ``index``'s name: ``web:0``, or what ``instance_name`` makes of it."""
        if self.instance_name == DEFAULT_INSTANCE_NAME:
            return f"{self.name}:{index}"
        return self.instance_name.format(
            program=self.name, index=index, number=index + 1,
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


def _str(value: Any, ctx: _Context) -> str:
    if not isinstance(value, str):
        raise _Bad(f"expected a string, got {_got(value)}")
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
        raise _Bad(f"expected a table of strings like {{ PORT = \"8000\" }}, got {_got(value)}")
    bad = [k for k, v in value.items() if not isinstance(v, str)]
    if bad:
        key = bad[0]
        raise _Bad(
            f"expected a string value for {key!r} (quote it: {key} = \"{value[key]}\"), "
            f"got {_got(value[key])}"
        )
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


def _ready(value: Any, ctx: _Context) -> ReadySpec:
    if not isinstance(value, str):
        raise _Bad(f"expected {_READY_FORMS}, got {_got(value)}")
    try:
        return parse_ready(value)
    except ValueError as exc:
        detail = str(exc).partition(": ")[2]
        raise _Bad(f"expected {_READY_FORMS}, got {value!r} ({detail})") from None


def _names(value: Any, ctx: _Context) -> tuple[str, ...]:
    expected = "expected an array of program names like [\"db\"]"
    if not isinstance(value, list):
        raise _Bad(f"{expected}, got {_got(value)}")
    return tuple(dict.fromkeys(_strings(value, expected)))


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
    expected = "expected a name like '{program}.{number}' (fields: " + ", ".join(
        "{" + f + "}" for f in _INSTANCE_FIELDS) + ")"
    try:
        made = text.format(**fields)
    except (KeyError, IndexError, ValueError, AttributeError) as exc:
        raise _Bad(f"{expected}, got {text!r} ({type(exc).__name__}: {exc})") from None
    if not made or not made.isprintable() or " " in made or made == "all":
        raise _Bad(f"{expected}, got {text!r} (makes {made!r})")
    return text


def _variable_names(value: Any, ctx: _Context) -> tuple[str, ...]:
    expected = "expected an array of environment variable names like [\"PS\"]"
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
)  # fmt: skip

PROGRAM_KEYS: tuple[Key, ...] = (
    Key("command", "string or array", _command, None,
        "required; a string is split like a shell does (no shell runs), or give an argv array"),
    Key("directory", "path", _path, ".", "working directory (relative to the config file)"),
    Key("environment", "table", _environment, {},
        "extra environment variables (added to the supervisor's own)"),
    Key("user", "string", _user, None, "run as this user (needs root)"),
    Key("group", "string", _group, None, "run with this group (needs root)"),
    Key("umask", "octal string", _umask, None, "the umask, e.g. '022' (default: inherited)"),
    Key("numprocs", "integer", _int_at_least(0), 1,
        "instances NAME:0 .. NAME:N-1; each gets FORKWELL_INSTANCE=NAME:I and FORKWELL_INDEX=I"),
    Key("autostart", "boolean", _bool, True, "start it when `forkwell up` starts"),
    Key("restart", "string", _restart, "on-failure",
        "'always', 'on-failure' (exit code not in success_exit_codes, or a signal) or 'never'"),
    Key("success_exit_codes", "array", _exit_codes, [0], "exit codes that are not failures"),
    Key("ready", "string", _ready, "exec",
        "when it counts as RUNNING: 'exec', 'notify', 'tcp:HOST:PORT', 'delay:SECONDS', "
        "'cmd:SHELL COMMAND'"),
    Key("ready_timeout", "seconds", _duration, 30.0,
        "not ready within this long: a failed start (its tree is stopped)"),
    Key("depends_on", "array", _names, [],
        "start only after these programs are RUNNING (ready); stop before them"),
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


def parse_config(data: Mapping[str, Any], path: Path, label: str | None = None) -> Config:
    """Validate an already-parsed TOML document (``path`` anchors relative paths)."""
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
    sup = _apply(sup_table, _SUPERVISOR, "supervisor.", ctx, errors)
    programs_table = _table(data, "programs", "tables [programs.NAME]", errors)
    programs = _programs(programs_table, ctx, errors)
    # Dependencies are checked on every program, also those with other errors,
    # so one run of `forkwell check` shows everything.
    errors.extend(_dependency_errors(programs_table))
    errors.extend(_naming_errors(programs))
    if errors:
        raise ConfigError([f"{label}: {e}" for e in errors])
    return Config(path=path, supervisor=SupervisorConfig(**sup), programs=programs)


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
        values = _apply(table, _PROGRAM, f"programs.{name}.", ctx, errors)
        if len(errors) == before:
            programs[name] = ProgramConfig(name=name, **values)
    return programs


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
            errors.append(f"{key}: {prog.instance_name!r} names every instance alike; "
                          "with numprocs > 1 it needs {index} or {number}")
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
        raw = table.get("depends_on", []) if isinstance(table, dict) else []
        if isinstance(raw, list) and all(isinstance(n, str) for n in raw):
            deps[name] = tuple(dict.fromkeys(raw))
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


def load_config(path: str | os.PathLike[str] = DEFAULT_FILE) -> Config:
    """Read and validate a config file.

    Raises :class:`~forkwell.ConfigError` listing every problem found.
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
    return parse_config(data, file.absolute(), label)
