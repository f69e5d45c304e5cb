"""process-compose.yaml, read with PyYAML's safe loader (the optional extra ``forkwell[yaml]``).

``processes.NAME`` becomes ``[programs.NAME]``: its command run by ``bash
-c`` (process-compose's default shell), ``working_dir``, ``environment``
(``K=V`` items, after the top-level ones), ``replicas``, ``disabled``,
``depends_on`` conditions, probes, ``availability`` and ``shutdown``.  What
has no forkwell meaning (the TUI, ``schedule``, ``watch``, ``namespace``...)
is reported once, by name; what maps with a difference says so in
``forkwell convert``'s output.
"""

from __future__ import annotations

import math
import re
import subprocess
from pathlib import Path
from typing import Any

from ..._exceptions import ConfigError
from ._common import Imported, Reading, read_text

INSTALL = "pip install 'forkwell[yaml]'"
SHELL = ["bash", "-c"]  # process-compose's default shell_command and shell_argument
TOP_KEYS = {"version", "processes", "environment", "env_cmds", "log_location"}
PROCESS_KEYS = {"command", "working_dir", "environment", "env_file", "replicas", "disabled",
                "depends_on", "readiness_probe", "liveness_probe", "availability", "shutdown",
                "ready_log_line", "log_location"}  # fmt: skip
_RESTART = {"no": "never", "on_failure": "on-failure", "always": "always",
            "exit_on_failure": "never"}  # fmt: skip
_CONDITIONS = ("process_started", "process_healthy", "process_completed",
               "process_completed_successfully", "process_log_ready")  # fmt: skip
ENV_CMD_TIMEOUT = 10.0


class _Bad(Exception):
    """A value of the wrong type; the message says what was expected, at which key."""


def load_yaml(text: str, label: str) -> Any:
    """The document, or a one-line ConfigError (PyYAML missing, or the YAML is invalid)."""
    try:
        import yaml
    except ImportError:
        raise ConfigError([f"{label}: reading a process-compose.yaml needs PyYAML: "
                           f"{INSTALL}"]) from None  # fmt: skip
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError([f"{label}: invalid YAML: {where}{exc.problem}"]) from None
    except (yaml.YAMLError, ValueError, RecursionError) as exc:
        one = " ".join(str(exc).split())
        raise ConfigError([f"{label}: invalid YAML: {one}"]) from None


def read(path: Path, label: str) -> Imported:
    """The process-compose.yaml at ``path`` as forkwell.toml data."""
    doc = load_yaml(read_text(path, label, "a process-compose.yaml"), label)
    reading = Reading(label)
    if not isinstance(doc, dict) or not isinstance(doc.get("processes"), dict):
        reading.error("processes", "required: a mapping of NAME to its command and settings")
        return reading.done()
    for key in doc:
        if key not in TOP_KEYS:
            reading.ignore(f"{key}: ignored (no forkwell equivalent)")
    try:
        env = _list_env(doc.get("environment"), "environment")
        env.update(_env_cmds(doc.get("env_cmds"), path.parent))
    except _Bad as exc:
        reading.error("", str(exc))
        env = {}
    if "log_location" in doc:
        reading.ignore("log_location: process-compose's own log; forkwell's is "
                       "log_dir/forkwell.log")
    for name, proc in doc["processes"].items():
        try:
            _process(reading, str(name), proc, env, path.parent)
        except _Bad as exc:
            reading.error("", str(exc))
    _log_ready_needs_a_line(reading, doc["processes"])
    return reading.done()


def _log_ready_needs_a_line(reading: Reading, processes: dict[Any, Any]) -> None:
    """``condition: process_log_ready`` waits for the dependency's ``ready_log_line``."""
    for name, proc in processes.items():
        deps = proc.get("depends_on") if isinstance(proc, dict) else None
        for dep, spec in (deps.items() if isinstance(deps, dict) else ()):
            other = processes.get(dep)
            if (isinstance(spec, dict) and spec.get("condition") == "process_log_ready"
                    and isinstance(other, dict) and "ready_log_line" not in other):
                reading.error(f"processes.{name}.depends_on.{dep}.condition",
                              f"process_log_ready needs processes.{dep}.ready_log_line")


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _Bad(f"{where}: expected a mapping, got {type(value).__name__}")
    return {str(k): v for k, v in value.items()}


def _text(value: Any, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise _Bad(f"{where}: expected a string, got {type(value).__name__}")
    return str(value)


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise _Bad(f"{where}: expected a number, got {value!r}")
    return float(value)


def _count(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _Bad(f"{where}: expected an integer >= 0, got {value!r}")
    return value


def _list_env(value: Any, where: str) -> dict[str, str]:
    """``["K=V", ...]`` (process-compose's form; a mapping is taken too)."""
    if value is None:
        return {}
    if isinstance(value, dict):
        return {str(k): _text(v, f"{where}.{k}") for k, v in value.items()}
    if not isinstance(value, list):
        raise _Bad(f"{where}: expected a list of 'KEY=value' strings, got {value!r}")
    out: dict[str, str] = {}
    for item in value:
        key, eq, val = _text(item, where).partition("=")
        if not eq or not key:
            raise _Bad(f"{where}: expected 'KEY=value', got {item!r}")
        out[key] = val
    return out


def _env_files(value: Any, where: str, base: Path) -> list[str]:
    """``env_file``: one path or a list, relative to the file's directory; absolute here."""
    items = value if isinstance(value, list) else [value]
    return [str(base.absolute() / _text(item, where)) for item in items]


def _env_cmds(value: Any, directory: Path) -> dict[str, str]:
    """``env_cmds``: each command's output, as process-compose sets it (run once, at load)."""
    out: dict[str, str] = {}
    for key, command in _mapping(value, "env_cmds").items():
        text = _text(command, f"env_cmds.{key}")
        try:
            done = subprocess.run(
                [*SHELL, text], capture_output=True, text=True, cwd=directory,
                timeout=ENV_CMD_TIMEOUT, stdin=subprocess.DEVNULL, check=False,
            )  # fmt: skip
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise _Bad(f"env_cmds.{key}: {text!r} failed: {exc}") from None
        if done.returncode != 0:
            raise _Bad(f"env_cmds.{key}: {text!r} exited with status {done.returncode}")
        out[key] = done.stdout.strip()
    return out


def _process(reading: Reading, name: str, proc: Any, env: dict[str, str], base: Path) -> None:
    where = f"processes.{name}"
    spec = _mapping(proc, where)
    prefix = f"programs.{name}"
    reading.origins[prefix] = where
    for key in spec:
        if key not in PROCESS_KEYS:
            reading.ignore(f"{where}.{key}: ignored (no forkwell equivalent)")
    if "command" not in spec:
        raise _Bad(f"{where}.command: required (the command to run)")
    put = _Putter(reading, prefix, where)
    put("command", [*SHELL, _text(spec["command"], f"{where}.command")], "command",
        "process-compose runs it with its shell, bash -c")
    if "working_dir" in spec:
        put("directory", _text(spec["working_dir"], f"{where}.working_dir"), "working_dir")
    own = _list_env(spec.get("environment"), f"{where}.environment")
    if env or own:
        put("environment", {**env, **own}, "environment")
    if "env_file" in spec:
        put("env_file", _env_files(spec["env_file"], f"{where}.env_file", base), "env_file",
            "read by forkwell's dotenv parser, again on reload; before environment")
    if "replicas" in spec:
        put("numprocs", _count(spec["replicas"], f"{where}.replicas"), "replicas")
    if "disabled" in spec:
        put("autostart", not bool(spec["disabled"]), "disabled")
    _depends(put, spec.get("depends_on"), where)
    _probes(put, spec, where, reading)
    _availability(put, _mapping(spec.get("availability"), f"{where}.availability"), where)
    _shutdown(put, _mapping(spec.get("shutdown"), f"{where}.shutdown"), where, reading)
    if "log_location" in spec:
        reading.ignore(f"{where}.log_location: forkwell writes log_dir/{name}.I.stdout.log")


class _Putter:
    """``put(forkwell key, value, process-compose key, note)`` for one process."""

    def __init__(self, reading: Reading, prefix: str, where: str) -> None:
        self.reading = reading
        self.prefix = prefix
        self.where = where

    def __call__(self, key: str, value: Any, origin: str, note: str = "") -> None:
        self.reading.put(f"{self.prefix}.{key}", value, f"{self.where}.{origin}", note)


def _depends(put: _Putter, value: Any, where: str) -> None:
    deps = _mapping(value, f"{where}.depends_on")
    names = []
    for dep, spec in deps.items():
        condition = _mapping(spec, f"{where}.depends_on.{dep}").get("condition",
                                                                    "process_started")
        if condition not in _CONDITIONS:
            raise _Bad(f"{where}.depends_on.{dep}.condition: expected one of "
                       f"{', '.join(_CONDITIONS)}, got {condition!r}")  # fmt: skip
        names.append(dep)
    if names:
        put("depends_on", names, "depends_on",
            "forkwell waits until each is ready (process_healthy), or exited 0 for a job")


def _probes(put: _Putter, spec: dict[str, Any], where: str, reading: Reading) -> None:
    """``readiness_probe`` or ``ready_log_line`` as ``ready``; ``liveness_probe``: ``liveness``."""
    ready = _mapping(spec.get("readiness_probe"), f"{where}.readiness_probe")
    if ready and "ready_log_line" in spec:
        raise _Bad(f"{where}.ready_log_line: cannot be used with readiness_probe "
                   "(process-compose refuses both too)")  # fmt: skip
    if ready:
        delay, period, _, failures = _put_probe(put, "ready", ready, f"{where}.readiness_probe",
                                                reading)  # fmt: skip
        put("ready_timeout", delay + period * failures, "readiness_probe",
            "initial_delay_seconds + period_seconds * failure_threshold")
    if "ready_log_line" in spec:
        line = _text(spec["ready_log_line"], f"{where}.ready_log_line")
        put("ready", "log:" + re.escape(line), "ready_log_line",
            "ready at the first output line containing it")
    live = _mapping(spec.get("liveness_probe"), f"{where}.liveness_probe")
    if live:
        at = f"{where}.liveness_probe"
        delay, period, timeout, failures = _put_probe(put, "liveness", live, at, reading)
        put("liveness_delay", delay, "liveness_probe.initial_delay_seconds")
        put("liveness_period", period, "liveness_probe.period_seconds")
        put("liveness_timeout", timeout, "liveness_probe.timeout_seconds")
        put("liveness_failures", int(failures), "liveness_probe.failure_threshold")


_HTTP_NOTE = "; any 200-399 answer counts (process-compose: 200 only)"
_PROBE_NOTES = {"ready": "forkwell probes every 0.1 s until it succeeds",
                "liveness": "failure_threshold failures in a row restart it"}  # fmt: skip


def _put_probe(put: _Putter, key: str, spec: dict[str, Any], at: str,
               reading: Reading) -> tuple[float, float, float, float]:  # fmt: skip
    """``ready``/``liveness`` from a probe; its timing, process-compose's defaults applied."""
    kind, probe = _probe(spec, at, reading)
    put(key, probe, f"{at.rpartition('.')[2]}.{kind}",
        _PROBE_NOTES[key] + _HTTP_NOTE * (kind == "http_get"))
    return _timing(spec, at)
_PROBE_KEYS = {"exec", "http_get", "initial_delay_seconds", "period_seconds", "timeout_seconds",
               "failure_threshold", "success_threshold"}  # fmt: skip


def _probe(probe: dict[str, Any], at: str, reading: Reading) -> tuple[str, str]:
    """``exec.command`` as 'cmd:...', ``http_get`` as its URL; what forkwell cannot do, said."""
    for key in probe:
        if key not in _PROBE_KEYS:
            reading.ignore(f"{at}.{key}: ignored (no forkwell equivalent)")
    if probe.get("success_threshold", 1) not in (0, 1):
        reading.ignore(f"{at}.success_threshold: forkwell counts one success")
    if "http_get" in probe:
        return "http_get", _url(_mapping(probe["http_get"], f"{at}.http_get"), f"{at}.http_get",
                                reading)  # fmt: skip
    exec_ = _mapping(probe.get("exec"), f"{at}.exec")
    if "command" not in exec_:
        raise _Bad(f"{at}: expected exec.command or http_get")
    if "working_dir" in exec_:
        reading.ignore(f"{at}.exec.working_dir: the probe runs in the program's directory")
    return "exec", "cmd:" + _text(exec_["command"], f"{at}.exec.command")


def _url(http: dict[str, Any], at: str, reading: Reading) -> str:
    """The URL process-compose builds: scheme://host[:port]path, with its defaults."""
    host = _text(http.get("host") or "127.0.0.1", f"{at}.host").strip() or "127.0.0.1"
    scheme = _text(http.get("scheme") or "http", f"{at}.scheme").strip().lower() or "http"
    path = _text(http.get("path") or "/", f"{at}.path").strip() or "/"
    if scheme not in ("http", "https"):
        raise _Bad(f"{at}.scheme: expected http or https, got {scheme!r}")
    port = str(http.get("port", "")).strip()
    if port and not (port.isdigit() and 1 <= int(port) <= 65535):
        raise _Bad(f"{at}.port: expected a port number 1-65535, got {http['port']!r}")
    for key in http:
        if key not in ("host", "scheme", "path", "port"):
            reading.ignore(f"{at}.{key}: not sent/checked (forkwell's probe is a plain GET)")
    return f"{scheme}://{host}{':' + port if port else ''}{path}"


def _timing(probe: dict[str, Any], at: str) -> tuple[float, float, float, float]:
    """initial_delay, period, timeout, failure_threshold with process-compose's defaults
    (below 1 means the default: 0, 10, 1, 3 s)."""
    def get(key: str, default: float, low: float = 1) -> float:
        value = _number(probe.get(key, default), f"{at}.{key}")
        return value if value >= low else default

    return (get("initial_delay_seconds", 0, 0), get("period_seconds", 10),
            get("timeout_seconds", 1), get("failure_threshold", 3))  # fmt: skip


def _availability(put: _Putter, spec: dict[str, Any], where: str) -> None:
    at = f"{where}.availability"
    policy = spec.get("restart", "no")  # process-compose's default: run once
    if policy not in _RESTART:
        raise _Bad(f"{at}.restart: expected no, on_failure, always or exit_on_failure, "
                   f"got {policy!r}")
    put("restart", _RESTART[policy], "availability.restart",
        "" if "restart" in spec else "process-compose's default, restart: no")
    if _RESTART[policy] == "never":
        put("min_uptime", 0, "availability.restart",
            "run once: a quick exit is an exit, not a failed start to retry")
    if policy == "exit_on_failure":
        put("essential", "on-failure", "availability.restart",
            "a failed exit stops everything; forkwell up exits with its status")
    if "backoff_seconds" in spec:
        put("backoff_max", _number(spec["backoff_seconds"], f"{at}.backoff_seconds"),
            "availability.backoff_seconds",
            "process-compose waits this long each time; forkwell backs off from 0.1 s up to it")
    if "max_restarts" in spec:
        count = _count(spec["max_restarts"], f"{at}.max_restarts")
        if count:
            put("start_retries", count + 1, "availability.max_restarts",
                "forkwell counts failed starts in a row, and the first attempt")
    if spec.get("exit_on_end"):
        put("essential", True, "availability.exit_on_end",
            "its end (not restarted) stops everything; forkwell up exits with its status")


def _shutdown(put: _Putter, spec: dict[str, Any], where: str, reading: Reading) -> None:
    at = f"{where}.shutdown"
    if "signal" in spec:
        put("stop_signal", spec["signal"], "shutdown.signal", "sent to the whole tree")
    if "timeout_seconds" in spec:
        put("stop_timeout", _number(spec["timeout_seconds"], f"{at}.timeout_seconds"),
            "shutdown.timeout_seconds")
    if "command" in spec:
        reading.ignore(f"{at}.command: not run (forkwell sends shutdown.signal to the tree)")
    for key in spec:
        if key not in ("signal", "timeout_seconds", "command"):
            reading.ignore(f"{at}.{key}: ignored")

