"""``forkwell export systemd``: a target and one template unit per program, or one unit.

The mapping, key by key, is :data:`MAPPING` (``docs/deploy.md``'s table is
tested against it).  Two choices matter most:

* ``KillMode=control-group``, never ``process`` (honcho's choice, which leaves
  a program's children running after a stop): a stop ends the whole tree, as
  ``forkwell stop`` does.
* Readiness systemd cannot see (``tcp:``, ``cmd:``, ``delay:``) becomes an
  ``ExecStartPost=`` that waits (``forkwell probe --wait``), so a dependent's
  ``After=`` still waits for real readiness, as ``depends_on`` does.

``--single`` writes one ``Type=notify`` unit running ``forkwell up`` itself,
as ``pm2 startup`` does: ``KillMode=mixed`` there, so the SIGTERM reaches
only ``forkwell up``, which stops the fleet in dependency order, and
systemd's final SIGKILL still reaches every process of the group.
"""

from __future__ import annotations

import math
import os
import re
import signal
from pathlib import Path

from .._config import ProgramConfig
from .._program import BACKOFF_FIRST
from ._common import Site, argv, object_name, seconds

#: systemd's first version with RestartSteps= and RestartMaxDelaySec=.
RESTART_STEPS_SINCE = 254

#: forkwell.toml key -> what the template unit says (docs/deploy.md's systemd column).
MAPPING: dict[str, str] = {
    "command": "ExecStart= (the executable's absolute path)",
    "directory": "WorkingDirectory=",
    "environment": "Environment=",
    "user": "User= (system units only)",
    "group": "Group= (system units only)",
    "umask": "UMask=",
    "numprocs": "instances @0..@N-1 of the template, wanted by the target",
    "autostart": "false: the target does not want its instances",
    "restart": "Restart= (always, on-failure, no)",
    "success_exit_codes": "SuccessExitStatus=",
    "ready": "Type=notify for notify; ExecStartPost=forkwell probe --wait for tcp:/cmd:, "
    "sleep for delay:",
    "ready_timeout": "TimeoutStartSec=",
    "depends_on": "Requires= and After= every instance of the dependency",
    "min_uptime": "not expressible: StartLimitIntervalSec= counts every start",
    "start_retries": "StartLimitBurst=",
    "backoff_max": "RestartSec= (the first delay), RestartSteps= and RestartMaxDelaySec= "
    "(systemd 254+)",
    "stop_signal": "KillSignal=",
    "stop_timeout": "TimeoutStopSec=",
    "redirect_stderr": "both streams go to the journal",
    "log_max_bytes": "the journal's own limits (journald.conf)",
    "log_backups": "the journal's own limits (journald.conf)",
    "priority": "not expressible: only depends_on orders units (After=)",
    "process_group": "not needed: systemctl takes globs ('PREFIX-web@*')",
    "instance_name": "FORKWELL_INSTANCE= (and name_variables), %i for {index}; {number} "
    "becomes %i too (systemd cannot add 1)",
    "port": "Environment=PORT= (one instance; PORT+I is not expressible for more)",
    "name_variables": "Environment= set to the instance's name",
    "env_file": "EnvironmentFile= (forkwell's environment still wins: it is also written "
    "as Environment=, which systemd lets EnvironmentFile= override, so a comment says so)",
    "env_file_optional": "EnvironmentFile=- (a missing file is skipped)",
    "liveness": "watchdog: WatchdogSec= and NotifyAccess=all; http/tcp/cmd: not expressible "
    "(systemd has no liveness probe; a comment names it)",
    "liveness_period": "not expressible (a comment, with liveness)",
    "liveness_timeout": "not expressible (a comment, with liveness)",
    "liveness_failures": "not expressible (a comment, with liveness)",
    "liveness_delay": "not expressible (a comment, with liveness)",
    "watchdog_sec": "WatchdogSec=",
    "essential": "not expressed: a comment (PropagatesStopTo= would also stop the target "
    "on a clean stop)",
    "log_timestamps": "the journal timestamps every line itself",
    "log_markers": "the journal records each start and exit itself",
}

# What systemd's unit-file parser takes as a bare word in an Exec line.
_PLAIN = re.compile(r"[A-Za-z0-9_@%+=:,./-]+")


def installed_version() -> int | None:
    """The version of the systemd on this machine, or None without one."""
    import subprocess

    try:
        out = subprocess.run(["systemctl", "--version"], capture_output=True, text=True,
                             timeout=5, check=False).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    found = re.match(r"systemd (\d+)", out)
    return int(found.group(1)) if found else None


def export(site: Site, *, user: bool = False, version: int | None = None) -> dict[str, str]:
    """File name -> text: ``PREFIX.target`` and ``PREFIX-PROGRAM@.service`` per program."""
    config = site.config
    wants = [f"{object_name(site, p.name)}@{i}.service"
             for p in config.programs.values() if p.autostart
             for i in range(p.numprocs)]  # fmt: skip
    files = {f"{site.prefix}.target": _target(site, wants, user)}
    for program in config.programs.values():
        name = f"{object_name(site, program.name)}@.service"
        files[name] = _template(site, program, user=user, version=version)
    return files


def export_single(site: Site, *, user: bool = False) -> dict[str, str]:
    """One ``PREFIX.service`` that runs ``forkwell up`` for the whole fleet."""
    config = site.config
    up = [*site.forkwell, "up", "-c", os.fspath(site.config_file)]
    start = sum(p.ready_timeout for p in config.programs.values()) + 5
    lines = [
        _header(site),
        "[Unit]",
        f"Description=forkwell fleet {site.prefix} ({site.config_file})",
        "After=network.target",
        "",
        "[Service]",
        "# forkwell up sends READY=1 once its autostart programs are up.",
        "Type=notify",
        "NotifyAccess=main",
        f"ExecStart={_exec(up)}",
        "ExecReload=/bin/kill -HUP $MAINPID",
        f"WorkingDirectory={_path(site.root)}",
        "# SIGTERM to forkwell up alone: it stops the fleet dependents first;",
        "# systemd's SIGKILL after TimeoutStopSec= still reaches every process.",
        "KillMode=mixed",
        f"TimeoutStartSec={seconds(start)}",
        f"TimeoutStopSec={seconds(config.supervisor.shutdown_timeout) + 5}",
        "Restart=on-failure",
        "StandardOutput=journal",
        "StandardError=journal",
        "",
        "[Install]",
        f"WantedBy={_wanted_by(user)}",
    ]
    return {f"{site.prefix}.service": "\n".join(lines) + "\n"}


def _header(site: Site) -> str:
    return (f"# Written by 'forkwell export systemd' from {site.config_file}:\n"
            "# edit that file and export again rather than this one.")  # fmt: skip


def _wanted_by(user: bool) -> str:
    return "default.target" if user else "multi-user.target"


def _target(site: Site, wants: list[str], user: bool) -> str:
    lines = [
        _header(site),
        "[Unit]",
        f"Description=forkwell fleet {site.prefix} ({site.config_file})",
        *(f"Wants={w}" for w in wants),
        "",
        "[Install]",
        f"WantedBy={_wanted_by(user)}",
    ]
    return "\n".join(lines) + "\n"


def _template(site: Site, program: ProgramConfig, *, user: bool, version: int | None) -> str:
    me = object_name(site, program.name)
    lines = [
        _header(site),
        "[Unit]",
        f"Description=forkwell fleet {site.prefix}: {program.name}:%i",
        f"PartOf={site.prefix}.target",
        *_dependencies(site, program),
        *_start_limit(program),
        "",
        "[Service]",
        *_readiness(site, program),
        f"WorkingDirectory={_path(site.moved(program.directory))}",
        *_environment(site, program),
        *_identity(program, user),
        *_restart(program, version),
        "KillMode=control-group",
        f"KillSignal={signal.Signals(program.stop_signal).name}",
        f"TimeoutStopSec={_duration(program.stop_timeout)}",
        "StandardOutput=journal",
        "StandardError=journal",
        f"SyslogIdentifier={me}-%i",
        "",
        "[Install]",
        f"WantedBy={site.prefix}.target",
    ]
    return "\n".join(lines) + "\n"


def _dependencies(site: Site, program: ProgramConfig) -> list[str]:
    units = [f"{object_name(site, dep)}@{i}.service" for dep in program.depends_on
             for i in range(site.config.programs[dep].numprocs)]  # fmt: skip
    if not units:
        return []
    joined = " ".join(units)
    return [f"Requires={joined}", f"After={joined}"]


def _start_limit(program: ProgramConfig) -> list[str]:
    # forkwell gives up after start_retries failed starts in a row; systemd
    # after StartLimitBurst= starts within StartLimitIntervalSec=: the time
    # those starts take with their backoff delays, so a fast crash loop trips it.
    tries = range(1, program.start_retries + 1)
    spent = sum(_delay(program, k) + program.min_uptime for k in tries)
    return [f"StartLimitBurst={program.start_retries}",
            f"StartLimitIntervalSec={seconds(spent)}"]  # fmt: skip


def _delay(program: ProgramConfig, failures: int) -> float:
    return float(min(BACKOFF_FIRST * 2 ** (failures - 1), program.backoff_max))


def _readiness(site: Site, program: ProgramConfig) -> list[str]:
    ready = program.ready
    kind = "notify" if ready.kind == "notify" else "exec"
    lines = [f"Type={kind}"]
    watchdog = program.liveness is not None and program.liveness.kind == "watchdog"
    if kind == "notify" or watchdog:
        lines.append("NotifyAccess=all")  # as the supervisor: any process of the tree may
    if watchdog and program.watchdog_sec is not None:
        lines.append(f"WatchdogSec={_duration(program.watchdog_sec)}")
    lines.extend(_liveness_notes(program))
    lines.append(f"ExecStart={_exec(argv(site, program))}")
    timeout = program.ready_timeout
    if ready.kind == "log":
        lines.append(f"# ready {ready}: systemd cannot wait for a log line; it is up at exec")
    if ready.kind in ("tcp", "cmd", "http"):
        probe = [*site.forkwell, "probe", "--wait", "--timeout", f"{timeout:g}", str(ready)]
        lines.append(f"ExecStartPost={_exec(probe)}")
    elif ready.kind == "delay":
        sleep = argv(site, program._replace(command=("sleep", f"{ready.seconds:g}")))
        lines.append(f"ExecStartPost={_exec(sleep)}")
    # One second more than the probe's own deadline: its message names the cause.
    lines.append(f"TimeoutStartSec={seconds(timeout) + 1}")
    return lines


def _liveness_notes(program: ProgramConfig) -> list[str]:
    notes = []
    live = program.liveness
    if live is not None and live.kind != "watchdog":
        every = f"every {program.liveness_period:g}s, {program.liveness_failures} failures"
        notes.append(f"# liveness {live} ({every}): systemd has no liveness probe")
    if program.essential:
        notes.append(
            f"# essential{' = on-failure' if program.essential == 'on-failure' else ''}: "
            "forkwell up stops the fleet when this ends; systemd restarts it "
            "alone (PropagatesStopTo= would also stop on a clean stop)"
        )
    return notes


def _environment(site: Site, program: ProgramConfig) -> list[str]:
    # What the supervisor gives each instance, %i being the instance's index.
    env = {k: _specifiers(v) for k, v in program.environment.items()}
    notes = []
    dash = "-" if program.env_file_optional else ""
    for path in program.env_file:
        notes.append(f"EnvironmentFile={dash}{_path(site.moved(path))}")
    if program.env_file and program.environment:
        notes.append("# systemd lets EnvironmentFile= override Environment=; forkwell lets "
                     "environment override env_file: keep the names apart")  # fmt: skip
    if program.port is not None:
        env["PORT"] = str(program.port)
        if program.numprocs > 1:
            notes.append(f"# port {program.port}: every instance gets PORT={program.port}; "
                         "systemd cannot add the instance's index")  # fmt: skip
    name = _instance_name(program)
    for var in program.name_variables:
        env[var] = name
    env |= {"FORKWELL_INSTANCE": name, "FORKWELL_INDEX": "%i"}
    return notes + [f"Environment={_quote(f'{k}={v}')}" for k, v in env.items()]


def _instance_name(program: ProgramConfig) -> str:
    """The instance's name, %i standing for its index.

    ``{number}`` (the index + 1) becomes %i too: systemd cannot add 1.
    """
    group = program.process_group or program.name
    return _specifiers(program.instance_name).format(
        program=program.name, index="%i", number="%i", process_group=group
    )


def _identity(program: ProgramConfig, user: bool) -> list[str]:
    lines = []
    for key, value in (("User", program.user), ("Group", program.group)):
        if value is None:
            continue
        if user:
            lines.append(f"# {key}={value}: a user unit runs as its user; not expressible")
        else:
            lines.append(f"{key}={value}")
    if program.umask is not None:
        lines.append(f"UMask={program.umask:04o}")
    return lines


def _restart(program: ProgramConfig, version: int | None) -> list[str]:
    policy = {"always": "always", "on-failure": "on-failure", "never": "no"}[program.restart]
    lines = [f"Restart={policy}"]
    codes = sorted(program.success_exit_codes - {0})
    if codes:
        lines.append(f"SuccessExitStatus={' '.join(map(str, codes))}")
    if 0 not in program.success_exit_codes:
        lines.append("# success_exit_codes without 0: systemd always counts 0 as success")
    lines.append(f"RestartSec={_duration(BACKOFF_FIRST)}")
    if program.backoff_max > BACKOFF_FIRST:
        steps = math.ceil(math.log2(program.backoff_max / BACKOFF_FIRST))
        spelled = [f"RestartSteps={steps}",
                   f"RestartMaxDelaySec={_duration(program.backoff_max)}"]  # fmt: skip
        if version is not None and version >= RESTART_STEPS_SINCE:
            lines.extend(spelled)
        else:
            shown = "unknown" if version is None else str(version)
            lines.append(f"# {' '.join(spelled)}: systemd {RESTART_STEPS_SINCE}+ (here {shown})")
    return lines


def _duration(value: float) -> str:
    """Seconds as systemd reads them: ``100ms``, ``10s``, ``1.5s``."""
    if value < 1:
        return f"{round(value * 1000)}ms"
    return f"{value:g}s"


def _path(path: Path) -> str:
    return _specifiers(os.fspath(path))


def _specifiers(text: str) -> str:
    return text.replace("%", "%%")


def _exec(words: list[str]) -> str:
    """An Exec line: each word kept whole (quoted), no specifier or $VARIABLE expanded."""
    return " ".join(_word(w) for w in words)


def _word(word: str) -> str:
    escaped = _specifiers(word).replace("$", "$$")
    if word == ";":
        return "\\;"  # a lone semicolon separates commands
    if _PLAIN.fullmatch(escaped) and escaped:
        return escaped
    return _quote(escaped)


def _quote(text: str) -> str:
    out = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
    return f'"{out}"'
