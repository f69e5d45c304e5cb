"""One ``[program:x]`` of a supervisord.conf: its processes, as supervisord computes them.

The values are read in supervisord's order and with its types (``integer``,
``boolean``, ``byte_size``, ``list_of_exitcodes``...): the keys read before
the processes are made cannot name ``%(process_num)d``; ``environment``,
``directory``, the log files and ``command`` are expanded for each process,
with the program's own environment among the ``ENV_`` names.  A bad value
is a ``ValueError("KEY: what is wrong")``.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from ._common import Reading

_TRUE = ("yes", "true", "on", "1")
_FALSE = ("no", "false", "off", "0")
_SIZE_UNITS = {"kb": 1 << 10, "mb": 1 << 20, "gb": 1 << 30}
_RESTART = {"unexpected": "on-failure", **dict.fromkeys(_TRUE, "always"),
            **dict.fromkeys(_FALSE, "never")}  # fmt: skip
# What NONE, AUTO and the console files mean for a log file, in forkwell.
_LOG_NOTES = {
    "none": "supervisord keeps no log: forkwell still writes log_dir/NAME.0.STREAM.log",
    "auto": "",
    "syslog": "forkwell does not log to syslog: it writes log_dir/NAME.0.STREAM.log",
}


def expand(value: str, names: Mapping[str, Any], where: str) -> str:
    """supervisord's expansion: ``value % names``, its errors in supervisord's words."""
    try:
        return value % names
    except KeyError as exc:
        raise ValueError(
            f"format string {value!r} contains names ({exc}) which cannot be expanded; "
            f"available names: {', '.join(sorted(names))}"
        ) from None
    except (TypeError, ValueError) as exc:
        raise ValueError(f"format string {value!r} is badly formatted: {exc}") from None


def parse_environment(text: str, where: str, reading: Reading) -> dict[str, str]:
    """supervisord's ``KEY="value",KEY2=value2`` (shell-like quotes allow commas)."""
    lexer = shlex.shlex(text)
    lexer.wordchars += "/.+-():"
    try:
        tokens = list(lexer)
    except ValueError as exc:
        reading.error(where, f"cannot parse {text!r}: {exc}")
        return {}
    out: dict[str, str] = {}
    for i in range(0, len(tokens), 4):
        triple = tokens[i : i + 3]
        if len(triple) != 3 or triple[1] != "=" or (i + 3 < len(tokens) and tokens[i + 3] != ","):
            reading.error(where, f"unexpected end of key/value pairs in value {text!r} "
                          "(expected KEY=\"value\",KEY2=\"value2\")")  # fmt: skip
            return {}
        out[triple[0]] = triple[2].strip("'\"")
    return out


class Process(NamedTuple):
    """One process of a program, every value expanded and typed as supervisord has it."""

    name: str  # process_name, expanded
    group: str
    values: dict[str, Any]  # forkwell key -> value
    notes: dict[str, str]  # forkwell key -> what differs
    origins: dict[str, str]  # forkwell key -> supervisord key

    @property
    def namespec(self) -> str:
        """How supervisorctl names it: ``web`` alone in its group, else ``group:web``."""
        return self.name if self.name == self.group else f"{self.group}:{self.name}"

    def put(self, reading: Reading, section: str, program: str) -> None:
        prefix = f"programs.{program}"
        reading.origins[prefix] = f"[{section}]"
        reading.put(f"{prefix}.process_group", self.group, f"[{section}]")
        reading.put(f"{prefix}.instance_name", self.namespec.replace("{", "{{").replace("}", "}}"),
                    f"[{section}] process_name", "supervisorctl's name for it")  # fmt: skip
        for key, value in self.values.items():
            origin = f"[{section}] {self.origins.get(key, key)}"
            reading.put(f"{prefix}.{key}", value, origin, self.notes.get(key, ""))


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"not an integer: {text!r}") from None


def _boolean(text: str) -> bool:
    if text.lower() in _TRUE:
        return True
    if text.lower() in _FALSE:
        return False
    raise ValueError(f"not a valid boolean value: {text!r}")


def _byte_size(text: str) -> int:
    value = text.strip().lower()
    unit = _SIZE_UNITS.get(value[-2:], 1)
    try:
        return int(float(value[:-2] if unit > 1 else value) * unit)
    except ValueError:
        raise ValueError(f"not a valid byte size: {text!r}") from None


def _exitcodes(text: str) -> list[int]:
    try:
        codes = [int(c) for c in text.split(",")] if text else []
    except ValueError:
        raise ValueError(f"not a valid list of exit codes: {text!r}") from None
    if any(not 0 <= c <= 255 for c in codes):
        raise ValueError(f"not a valid list of exit codes: {text!r}")
    return codes


def _restart(text: str) -> str:
    try:
        return _RESTART[text.lower()]
    except KeyError:
        raise ValueError(f"invalid 'autorestart' value {text.lower()!r}") from None


def octal_umask(text: str) -> str:
    try:
        int(text, 8)
    except ValueError:
        raise ValueError(f"{text} can not be converted to an octal type") from None
    return text


class _Getter:
    """``get(key, default, type)``: the value expanded with ``names``, then typed."""

    def __init__(self, values: Mapping[str, str | None], names: dict[str, Any]) -> None:
        self.values = values
        self.names = names

    def __call__(self, key: str, default: str | None, kind: Callable[[str], Any] = str,
                 expanding: bool = True) -> Any:  # fmt: skip
        raw = self.values.get(key)
        text = default if raw is None else raw
        if text is None:
            return None
        try:
            return kind(expand(text, self.names, key) if expanding else text)
        except ValueError as exc:
            raise ValueError(f"{key}: {exc}") from None


def processes(section: str, values: Mapping[str, str | None], common: dict[str, Any],
              global_env: Mapping[str, str]) -> list[Process]:  # fmt: skip
    """Every process of the program, in supervisord's order of reading and typing."""
    get = _Getter(values, common)
    fixed: dict[str, Any] = {
        "priority": get("priority", "999", _integer),
        "autostart": get("autostart", "true", _boolean),
        "restart": get("autorestart", "unexpected", _restart),
        "min_uptime": get("startsecs", "1", _integer),
        "start_retries": get("startretries", "3", _integer) + 1,
        "stop_signal": get("stopsignal", "TERM"),
        "stop_timeout": get("stopwaitsecs", "10", _integer),
        "success_exit_codes": get("exitcodes", "0", _exitcodes),
        "redirect_stderr": get("redirect_stderr", "false", _boolean),
    }
    stopasgroup = get("stopasgroup", "false", _boolean)
    if stopasgroup and not get("killasgroup", str(stopasgroup), _boolean):
        raise ValueError("killasgroup: cannot set stopasgroup=true and killasgroup=false")
    numprocs = get("numprocs", "1", _integer)
    start = get("numprocs_start", "0", _integer)
    env_text = get("environment", "", expanding=False)
    for key, kind in (("user", str), ("umask", octal_umask)):
        value = get(key, None, kind)
        if value is not None:
            fixed[key] = value
    process_name = get("process_name", "%(program_name)s", expanding=False)
    if numprocs > 1 and "%(process_num)" not in process_name:
        raise ValueError("process_name: %(process_num) must be present within process_name "
                         "when numprocs > 1")
    if fixed["min_uptime"] < 0 or fixed["stop_timeout"] < 0 or fixed["start_retries"] < 1:
        raise ValueError("startsecs: startsecs, startretries and stopwaitsecs must be >= 0")
    found = []
    for num in range(start, start + numprocs):
        names = common  # supervisord extends this one dict as it goes: so do we
        names.update(process_num=num, numprocs=numprocs)
        env = _expanded_env(env_text, names, parse_environment)
        names.update({f"ENV_{k}": v for k, v in env.items()})
        found.append(_process(get, section, process_name, fixed, {**global_env, **env}))
    return found


def _expanded_env(
    text: str, names: Mapping[str, Any], parse: Callable[[str, str, Reading], dict[str, str]]
) -> dict[str, str]:
    try:
        expanded = expand(text, names, "environment")
    except ValueError as exc:
        raise ValueError(f"environment: {exc}") from None
    probe = Reading("")
    env = parse(expanded, "", probe)
    if probe.errors:
        raise ValueError("environment: " + probe.errors[0].split(": ", 2)[-1])
    return env


def _process(get: _Getter, section: str, process_name: str, fixed: Mapping[str, Any],
             env: Mapping[str, str]) -> Process:  # fmt: skip
    """One process: what is expanded per process, and the environment supervisord gives it."""
    try:
        name = expand(process_name, get.names, "process_name").strip()
    except ValueError as exc:
        raise ValueError(f"process_name: {exc}") from None
    for bad in " :/":
        if bad in name:
            raise ValueError(f"process_name: invalid name {name!r} because of character {bad!r}")
    group = str(get.names["group_name"])
    values: dict[str, Any] = dict(fixed)
    notes: dict[str, str] = {
        "min_uptime": "supervisord's startsecs: exiting sooner is a failed start",
        "start_retries": "startretries + 1: forkwell counts the first attempt too",
    }
    origins = {"restart": "autorestart", "min_uptime": "startsecs", "start_retries":
               "startretries", "stop_signal": "stopsignal", "stop_timeout": "stopwaitsecs",
               "success_exit_codes": "exitcodes"}  # fmt: skip
    command = get("command", None)
    if command is None:
        raise ValueError(f"command: program section {section} does not specify a command")
    values["command"] = command
    directory = get("directory", None)
    if directory is not None:
        values["directory"] = directory
    values["environment"] = {**env, "SUPERVISOR_ENABLED": "1", "SUPERVISOR_PROCESS_NAME": name,
                             "SUPERVISOR_GROUP_NAME": group}  # fmt: skip
    _logs(get, values, notes, origins)
    return Process(name, group, values, notes, origins)


def _logs(get: _Getter, values: dict[str, Any], notes: dict[str, str],
          origins: dict[str, str]) -> None:  # fmt: skip
    """The log files: sizes and backups mapped, paths noted (forkwell keeps its own)."""
    for stream in ("stdout", "stderr"):
        path = get(f"{stream}_logfile", "AUTO")
        note = _LOG_NOTES.get(path.lower(), f"supervisord writes {path}: forkwell writes "
                              "log_dir/NAME.0.STREAM.log (and, in the foreground, the console)")
        max_bytes = get(f"{stream}_logfile_maxbytes", "50MB", _byte_size)
        backups = get(f"{stream}_logfile_backups", "10", _integer)
        if stream == "stderr" and values["redirect_stderr"]:
            continue
        if note:
            notes.setdefault("log_max_bytes", note)
        if max_bytes == 0:
            notes["log_max_bytes"] = "supervisord's 0 (never rotate): forkwell rotates at 1TB"
            max_bytes = 1 << 40
        # forkwell has one size and one count per program: the stdout log's.
        values.setdefault("log_max_bytes", max_bytes)
        values.setdefault("log_backups", max(0, backups))
        origins.setdefault("log_max_bytes", f"{stream}_logfile_maxbytes")
        origins.setdefault("log_backups", f"{stream}_logfile_backups")
