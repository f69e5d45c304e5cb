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
    return reading.done()


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
        reading.ignore(f"{where}.env_file: not read yet (forkwell's env_file key is issue 15's)")
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
        if condition == "process_log_ready":
            raise _Bad(f"{where}.depends_on.{dep}.condition: process_log_ready needs "
                       "readiness by a log line (issue 15's ready = 'log:...'), not there yet")
        names.append(dep)
    if names:
        put("depends_on", names, "depends_on",
            "forkwell waits until each is ready (process_healthy), or exited 0 for a job")


def _probes(put: _Putter, spec: dict[str, Any], where: str, reading: Reading) -> None:
    probe = _mapping(spec.get("readiness_probe"), f"{where}.readiness_probe")
    if probe:
        at = f"{where}.readiness_probe"
        exec_ = _mapping(probe.get("exec"), f"{at}.exec")
        if "http_get" in probe:
            raise _Bad(f"{at}.http_get: readiness by HTTP is issue 15's ready = 'http://...', "
                       "not there yet")
        if "command" not in exec_:
            raise _Bad(f"{at}: expected exec.command or http_get")
        put("ready", "cmd:" + _text(exec_["command"], f"{at}.exec.command"),
            "readiness_probe.exec.command", "forkwell probes every 0.1 s until it succeeds")
        delay = _number(probe.get("initial_delay_seconds", 0), f"{at}.initial_delay_seconds")
        period = _number(probe.get("period_seconds", 10), f"{at}.period_seconds")
        failures = _number(probe.get("failure_threshold", 3), f"{at}.failure_threshold")
        put("ready_timeout", delay + period * failures, "readiness_probe",
            "initial_delay_seconds + period_seconds * failure_threshold")
    if "liveness_probe" in spec:
        reading.ignore(f"{where}.liveness_probe: not run yet (liveness is issue 15's)")
    if "ready_log_line" in spec:
        raise _Bad(f"{where}.ready_log_line: readiness by a log line is issue 15's "
                   "ready = 'log:...', not there yet")


def _availability(put: _Putter, spec: dict[str, Any], where: str) -> None:
    at = f"{where}.availability"
    if "restart" in spec:
        policy = spec["restart"]
        if policy not in _RESTART:
            raise _Bad(f"{at}.restart: expected no, on_failure, always or exit_on_failure, "
                       f"got {policy!r}")
        if policy == "exit_on_failure":
            raise _Bad(f"{at}.restart: exit_on_failure (stop everything when it fails) is "
                       "issue 15's exit_when, not there yet")
        put("restart", _RESTART[policy], "availability.restart")
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
        raise _Bad(f"{at}.exit_on_end: stopping everything when it ends is issue 15's "
                   "exit_when, not there yet")


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

