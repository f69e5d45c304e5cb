"""supervisord.conf, read the way supervisord reads it.

* INI (the standard library's parser, set as supervisord sets it): ``;`` and
  ``#`` comments, inline ones after whitespace, indented continuation lines.
* Expansions (Python %-formats, ``%%`` a literal ``%``): ``here`` (the
  directory of the file that defined the section), ``program_name``,
  ``group_name``, ``host_node_name``, ``process_num``, ``numprocs``,
  ``ENV_X`` (the environment, then ``[supervisord] environment``, then the
  program's own); an unknown name is an error in supervisord's words.
* ``[include] files``: globs relative to the including file, sorted, not
  recursive.
* Each process (``numprocs`` of them per ``[program:x]``) becomes a forkwell
  program of one instance named as supervisord names it (``web``, ``g:web``,
  ``web:web_01``), in its group, so ``forkwell stop g:*`` works as
  supervisorctl's.  Keys with no forkwell meaning are reported once, by name.

Where the two differ by design (whole trees, backoff, ``startsecs``), see
docs/formats.md.
"""

from __future__ import annotations

import ast
import configparser
import glob
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..._exceptions import ConfigError
from ._common import Imported, Reading, read_text
from ._supervisord_program import Process, expand, octal_umask, parse_environment, processes

TRUTHY = ("yes", "true", "on", "1")
FALSY = ("no", "false", "off", "0")
_NAME_CHARS = re.compile(r"[^A-Za-z0-9_-]")

# [program:x] keys: how each is mapped (None: accepted, nothing to do).
PROGRAM_KEYS = frozenset({
    "command", "process_name", "numprocs", "numprocs_start", "directory", "umask", "priority",
    "autostart", "startsecs", "startretries", "autorestart", "exitcodes", "stopsignal",
    "stopwaitsecs", "stopasgroup", "killasgroup", "user", "redirect_stderr", "environment",
    "stdout_logfile", "stdout_logfile_maxbytes", "stdout_logfile_backups",
    "stderr_logfile", "stderr_logfile_maxbytes", "stderr_logfile_backups",
})  # fmt: skip
# Keys supervisord knows, that have no forkwell meaning: reported as ignored.
UNMAPPED_PROGRAM_KEYS = frozenset({
    "stdout_capture_maxbytes", "stdout_events_enabled", "stdout_syslog",
    "stderr_capture_maxbytes", "stderr_events_enabled", "stderr_syslog", "serverurl",
})  # fmt: skip
SUPERVISORD_KEYS = {
    "childlogdir": "log_dir: every instance's log files go there",
    "environment": "added to every program's environment",
    "nodaemon": "forkwell up stays in the foreground unless given --detach",
    "logfile": "forkwell writes its own log to log_dir/forkwell.log",
}
# Sections whose keys all have no forkwell meaning, and why.
IGNORED_SECTIONS = {
    "inet_http_server": "forkwell's control socket is a Unix socket; its web page and API are "
                        "[supervisor] http, e.g. forkwell up --http 127.0.0.1:9001",
    "supervisorctl": "forkwell's control commands find the socket themselves",
    "rpcinterface": "forkwell's control protocol is its own",
}


class _Sections:
    """The parsed INI: sections with their values, and the file each section came from."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.parser = configparser.RawConfigParser(
            inline_comment_prefixes=(";", "#"), strict=False, interpolation=None
        )
        self.files: dict[str, str] = {}

    def read(self, path: Path, label: str) -> None:
        text = read_text(path, label, "a supervisord.conf")
        before = set(self.parser.sections())
        try:
            self.parser.read_string(text, source=label)
        except configparser.MissingSectionHeaderError as exc:
            raise ConfigError([f"{label}: line {exc.lineno}: expected a [section] header first, "
                               f"got {exc.line.strip()!r}"]) from None  # fmt: skip
        except configparser.ParsingError as exc:
            line, bad = exc.errors[0]
            try:  # the line, as repr() shows it (Python 3.11 and 3.12)
                bad = ast.literal_eval(bad)
            except (ValueError, SyntaxError):
                pass
            raise ConfigError([f"{label}: line {line}: cannot parse {str(bad).strip()!r} "
                               "(expected 'key = value')"]) from None  # fmt: skip
        except configparser.Error as exc:
            raise ConfigError([f"{label}: {exc.message.splitlines()[0]}"]) from None
        here = os.path.dirname(os.path.abspath(path))
        for section in self.parser.sections():
            if section not in before:
                self.files[section] = label
            for key, value in self.parser.items(section):
                if "%(here)s" in value:  # supervisord's expand_here, file by file
                    self.parser.set(section, key, value.replace("%(here)s", here))

    def get(self, section: str, key: str) -> str | None:
        return self.parser.get(section, key, fallback=None)

    def keys(self, section: str) -> list[str]:
        return list(self.parser[section])

    def sections(self) -> list[str]:
        return self.parser.sections()


def read(path: Path, label: str, environ: Mapping[str, str] | None = None) -> Imported:
    """The supervisord.conf at ``path`` (and what it includes) as forkwell.toml data."""
    ini = _Sections(label)
    ini.read(path, label)
    reading = Reading(label)
    env = {f"ENV_{k}": v for k, v in (os.environ if environ is None else environ).items()}
    base = {"here": os.path.dirname(os.path.abspath(path)), "host_node_name": os.uname().nodename}
    _includes(ini, path, {**base, **env}, reading)
    global_env = _supervisord(ini, {**base, **env}, reading)
    env.update({f"ENV_{k}": v for k, v in global_env.items()})
    groups = _groups(ini, reading)
    for section in _in_supervisords_order(ini, groups):
        kind, _, name = section.partition(":")
        if kind == "program":
            names = {**base, **env}
            _program(ini, section, groups.get(name, (name, None)), (names, global_env), reading)
        elif kind == "fcgi-program":
            reading.error(f"[{section}]", "forkwell does not open FastCGI sockets for its "
                          "programs; run it as a [program:x] that opens its own socket")
        elif kind == "eventlistener":
            reading.ignore(f"[{section}]: not run: forkwell has no event listener protocol "
                           "(its events are in log_dir/forkwell.log; for superlance's httpok "
                           "or a crash watcher, see liveness and essential)")
        elif kind not in ("supervisord", "include", "group", "unix_http_server"):
            why = IGNORED_SECTIONS.get(kind, "forkwell does not know this section")
            reading.ignore(f"[{section}]: ignored ({why})")
    if not reading.data["programs"] and not reading.errors:
        reading.error("", "no [program:x] section")
    umask = reading.data["supervisor"].pop("umask", None)
    for name, table in reading.data["programs"].items():
        if umask is not None and "umask" not in table:
            reading.put(f"programs.{name}.umask", umask, "[supervisord] umask",
                        "supervisord's own umask, which its programs inherit")
    return reading.done()


def _default_umask(value: str, reading: Reading) -> None:
    """``[supervisord] umask``: kept aside until the programs are read (they inherit it)."""
    try:
        reading.data["supervisor"]["umask"] = octal_umask(value)
    except ValueError as exc:
        reading.error("[supervisord] umask", str(exc))



def _in_supervisords_order(
    ini: _Sections, groups: Mapping[str, tuple[str, str | None]]
) -> list[str]:
    """Sections with ``[program:x]`` as supervisord orders them: by group priority and name,
    then by program priority and name (a value that is no integer sorts as 999: its error
    is reported where it is read)."""

    def number(text: str | None) -> int:
        try:
            return int(text or "999")
        except ValueError:
            return 999

    def key(section: str) -> tuple[int, str, int, str]:
        name = section.partition(":")[2]
        group, group_priority = groups.get(name, (name, None))
        priority = number(ini.get(section, "priority"))
        own = number(group_priority) if group != name else priority
        return (own, group, priority, name)

    programs = [s for s in ini.sections() if s.startswith("program:")]
    return sorted(programs, key=key) + [s for s in ini.sections() if s not in programs]


def _includes(ini: _Sections, path: Path, names: Mapping[str, Any], reading: Reading) -> None:
    """``[include] files``: every glob relative to the including file, sorted, once."""
    files = ini.get("include", "files")
    if files is None:
        if "include" in ini.sections():
            reading.error("[include]", "has no files setting")
        return
    try:
        patterns = expand(files, names, "include.files").split()
    except ValueError as exc:
        reading.error("[include] files", str(exc))
        return
    base = os.path.dirname(os.path.abspath(path))
    for pattern in patterns:
        matches = sorted(glob.glob(os.path.join(base, pattern)))
        if not matches:
            reading.ignore(f"[include] files: no file matches {pattern!r}")
        for match in matches:
            ini.read(Path(match), match)


def _supervisord(ini: _Sections, names: Mapping[str, Any], reading: Reading) -> dict[str, str]:
    """``[supervisord]`` and ``[unix_http_server]``: what they say to forkwell's [supervisor]."""
    out: dict[str, str] = {}
    for section in ("supervisord", "unix_http_server"):
        if section not in ini.sections():
            continue
        for key in ini.keys(section):
            value = _value(ini, section, key, names, reading)
            if value is None:
                continue
            if section == "unix_http_server":
                _socket_key(key, value, reading)
            elif key == "childlogdir":
                reading.put("supervisor.log_dir", value, f"[{section}] childlogdir")
            elif key == "environment":
                out = parse_environment(value, f"[{section}] environment", reading)
            elif key == "umask":
                _default_umask(value, reading)
            elif key == "nodaemon" and value.strip().lower() in TRUTHY:
                pass  # what forkwell up does anyway: nothing to say
            else:
                reading.ignore(f"[{section}] {key}: {SUPERVISORD_KEYS.get(key, 'ignored')}")
    return out


def _socket_key(key: str, value: str, reading: Reading) -> None:
    if key == "file":
        reading.put("supervisor.socket", value, "[unix_http_server] file",
                    "supervisord's socket path; forkwell's protocol is its own")
    else:
        reading.ignore(f"[unix_http_server] {key}: ignored (the socket is 0600, "
                       "checked with SO_PEERCRED)")


def _groups(ini: _Sections, reading: Reading) -> dict[str, tuple[str, str | None]]:
    """Program name -> (its group, the [group:g] priority) for every ``[group:g] programs``."""
    found: dict[str, tuple[str, str | None]] = {}
    sections = set(ini.sections())
    for section in ini.sections():
        kind, _, group = section.partition(":")
        if kind != "group":
            continue
        for key in ini.keys(section):
            if key not in ("programs", "priority"):
                reading.ignore(f"[{section}] {key}: ignored")
        programs = [p.strip() for p in (ini.get(section, "programs") or "").split(",") if p.strip()]
        if not programs:
            reading.error(f"[{section}] programs", "required (the programs of the group)")
        for program in programs:
            if f"program:{program}" not in sections:
                reading.error(f"[{section}] programs",
                              f"names unknown program {program} (as supervisord says it: "
                              f"'[{section}] names unknown program or fcgi-program {program}')")
            elif program in found:
                reading.error(f"[{section}] programs", f"{program} is also in group "
                              f"{found[program][0]}; forkwell runs each program once")
            else:
                found[program] = (group, ini.get(section, "priority"))
    return found


def _value(ini: _Sections, section: str, key: str, names: Mapping[str, Any],
           reading: Reading) -> str | None:  # fmt: skip
    raw = ini.get(section, key)
    if raw is None:
        return None
    try:
        return expand(raw, names, f"{section}.{key}")
    except ValueError as exc:
        reading.error(f"[{section}] {key}", str(exc))
        return None



def _program(ini: _Sections, section: str, group: tuple[str, str | None],
             env: tuple[dict[str, Any], Mapping[str, str]], reading: Reading) -> None:  # fmt: skip
    """Every process of ``[program:name]``: one forkwell program of one instance each.

    ``env``: the expansions so far, and ``[supervisord] environment``.
    """
    name = section.partition(":")[2]
    names, global_env = env
    for key in ini.keys(section):
        if key in UNMAPPED_PROGRAM_KEYS:
            reading.ignore(f"[{section}] {key}: ignored (no forkwell equivalent)")
        elif key in ("stopasgroup", "killasgroup"):
            reading.ignore(f"[{section}] {key}: accepted; forkwell always stops the whole tree")
        elif key not in PROGRAM_KEYS:
            reading.ignore(f"[{section}] {key}: ignored (supervisord does not know it either)")
    values = {key: ini.get(section, key) for key in ini.keys(section)}
    group_name, group_priority = group
    common = {**names, "program_name": name, "group_name": group_name}
    try:
        found: list[Process] = processes(section, values, common, global_env)
    except ValueError as exc:
        where, _, message = str(exc).partition(": ")
        reading.error(f"[{section}] {where}", message)
        return
    if group_priority is not None:
        reading.ignore(f"[group:{group_name}] priority: forkwell orders by each program's "
                       "priority")
    for process in found:
        process.put(reading, section, _unique(reading, process.name))


def _unique(reading: Reading, process_name: str) -> str:
    """A forkwell program name for a process: its own, made valid and unique."""
    name = _NAME_CHARS.sub("-", process_name).lstrip("-") or "program"
    taken = reading.data["programs"]
    candidate, n = name, 2
    while candidate in taken or candidate == "all":
        candidate, n = f"{name}-{n}", n + 1
    return candidate
