"""Procfile (+ ``.env``), read the way honcho and foreman read it.

* Each line matching ``^([A-Za-z0-9_-]+):\\s*(.+)$`` is an entry; every other
  line is ignored (their rule: a Procfile has no comment syntax).  A name
  given twice is an error naming both lines; a file with no entry is one too.
* Each command runs through ``sh -c``, so ``$PORT``, pipes and ``&&`` work.
* ``.env`` beside the Procfile (or ``-e FILE[,FILE]``) becomes
  ``[supervisor] env_file``: every process gets its variables, read by the
  supervisor's own dotenv parser, and ``forkwell reload`` reads them again.
* Instances: ``-m web=2,worker=3`` (foreman's, ``all=N`` included) or
  ``--concurrency`` (honcho's); one each otherwise, ``name=0`` leaves it out.
* ``PORT``: entry ``i`` (file order, from 0), instance ``n`` (from 0) gets
  ``base + 100*i + n``, the base being ``-p``, else ``PORT`` from ``.env``, else
  from the environment, else 5000: foreman's ``port_for``; honcho adds the
  same.  ``PS`` (foreman) and ``HONCHO_PROCESS_NAME`` (honcho) name the
  instance, ``web.1``.
* By default, as with foreman and honcho, no process is restarted and the first
  to exit stops all the others (``[supervisor] exit_when = "any-exit"``:
  ``forkwell up`` then exits with that process's status); ``--restart``
  gives forkwell's supervision instead.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

from ..._exceptions import ConfigError
from ._common import Imported, Reading, read_text

ENTRY = re.compile(r"^([A-Za-z0-9_-]+):\s*(.+)$")
DEFAULT_PORT = 5000
DEFAULT_TIMEOUT = 5.0  # foreman's and honcho's grace before SIGKILL
INSTANCE_NAME = "{program}.{number}"
NAME_VARIABLES = ["PS", "HONCHO_PROCESS_NAME"]


class ProcfileOptions(NamedTuple):
    """The command-line options foreman and honcho take, as ``forkwell up`` takes them."""

    env_files: tuple[str, ...] | None = None  # -e/--env; None: .env beside the Procfile
    formation: tuple[str, ...] = ()  # -m/--formation and --concurrency values, as typed
    port: int | None = None  # -p/--port
    timeout: float | None = None  # -t/--timeout
    restart: bool = False  # --restart: forkwell's supervision instead of first-exit-stops-all


def entries(text: str, label: str) -> dict[str, tuple[int, str]]:
    """``name -> (line number, command)`` in file order."""
    found: dict[str, tuple[int, str]] = {}
    errors = []
    for number, line in enumerate(text.splitlines(), 1):
        m = ENTRY.match(line)
        if m is None:
            continue
        name, command = m.groups()
        if name in found:
            errors.append(f"{label}: line {number}: duplicate entry {name!r} "
                          f"(first on line {found[name][0]})")  # fmt: skip
            continue
        found[name] = (number, command)
    if errors:
        raise ConfigError(errors)
    if not found:
        raise ConfigError([f"{label}: no entries (expected lines like 'web: python app.py')"])
    return found


def read(path: Path, label: str, options: ProcfileOptions | None = None,
         environ: Mapping[str, str] | None = None) -> Imported:  # fmt: skip
    """The Procfile at ``path`` as forkwell.toml data."""
    opts = options or ProcfileOptions()
    env = os.environ if environ is None else environ
    procs = entries(read_text(path, label, "a Procfile"), label)
    reading = Reading(label)
    files = _env_paths(path, opts.env_files, reading)
    dotenv = _env_values(files, reading)
    _supervisor_keys(reading, files, opts)
    counts = formation(opts.formation, list(procs), reading)
    base = _base_port(opts.port, dotenv, env, reading)
    timeout = DEFAULT_TIMEOUT if opts.timeout is None else opts.timeout
    for i, (name, (number, command)) in enumerate(procs.items()):
        at = f"line {number} ({name})"
        prefix = f"programs.{name}"
        reading.origins[prefix] = at
        reading.put(f"{prefix}.command", ["/bin/sh", "-c", command], at)
        reading.put(f"{prefix}.numprocs", counts.get(name, counts.get("all", 1)),
                    "--formation")  # fmt: skip
        if base is not None:
            reading.put(f"{prefix}.port", base + 100 * i, at,
                        f"PORT = {base} + 100 * {i} + instance, as foreman and honcho")  # fmt: skip
        reading.put(f"{prefix}.instance_name", INSTANCE_NAME, at, "web.1, web.2: their names")
        reading.put(f"{prefix}.name_variables", list(NAME_VARIABLES), at)
        reading.put(f"{prefix}.stop_timeout", timeout, "--timeout")
        if not opts.restart:
            reading.put(f"{prefix}.restart", "never", at,
                        "foreman and honcho never restart (forkwell up --restart does)")
            reading.put(f"{prefix}.min_uptime", 0, at)
    return reading.done()


def _supervisor_keys(reading: Reading, files: Sequence[Path], opts: ProcfileOptions) -> None:
    """The .env files as [supervisor] env_file, and foreman's first-exit-stops-all."""
    if files:
        origin = "the .env beside it" if opts.env_files is None else "--env"
        reading.put("supervisor.env_file", [os.fspath(f) for f in files], origin,
                    "every process gets these variables, read again on reload")  # fmt: skip
        if opts.env_files is None:
            reading.put("supervisor.env_file_optional", True, origin,
                        "a missing .env is no error, as with foreman and honcho")  # fmt: skip
    if not opts.restart:
        reading.put("supervisor.exit_when", "any-exit", "the Procfile",
                    "foreman and honcho stop all when one exits (forkwell up --restart does not)")


def _env_paths(path: Path, env_files: Sequence[str] | None, reading: Reading) -> list[Path]:
    """The .env files, absolute (``-e`` names are relative to the current directory, as honcho).

    The default ``.env`` beside the Procfile counts only if it exists; a missing
    ``-e`` file is an error, said here in the words of the option.
    """
    if env_files is None:
        default = path.absolute().parent / ".env"
        return [default] if default.exists() else []
    found = []
    for name in (n.strip() for value in env_files for n in value.split(",")):
        if not name:
            continue
        file = Path(name).absolute()
        if not file.exists():
            reading.error("", f"--env {name}: no such file")
        else:
            found.append(file)
    return found


def _env_values(files: Sequence[Path], reading: Reading) -> dict[str, str]:
    """The variables of ``files``, later ones winning (for PORT: validate() reads them again)."""
    from .._dotenv import parse_dotenv

    values: dict[str, str] = {}
    for file in files:
        try:
            values.update(parse_dotenv(file.read_text(encoding="utf-8"), os.fspath(file)))
        except ConfigError as exc:
            reading.errors.extend(exc.errors)
        except (OSError, UnicodeDecodeError) as exc:
            reading.error("", f"--env {file}: cannot read: {getattr(exc, 'strerror', exc)}")
    return values


def formation(values: Sequence[str], names: Sequence[str], reading: Reading) -> dict[str, int]:
    """``web=2,worker=3`` (and ``all=N``) from every -m/--concurrency given, later ones winning."""
    counts: dict[str, int] = {}
    for value in values:
        for item in value.split(","):
            name, eq, count = item.strip().partition("=")
            if not eq or not count.strip().isdigit():
                reading.error("", f"--formation: expected NAME=N with N >= 0, got {item!r}")
            elif name != "all" and name not in names:
                reading.error("", f"--formation: no entry {name!r} in the Procfile "
                              f"(entries: {', '.join(names)})")  # fmt: skip
            else:
                counts[name] = int(count)
    return counts


def _base_port(port: int | None, dotenv: Mapping[str, str], environ: Mapping[str, str],
               reading: Reading) -> int | None:  # fmt: skip
    """-p, else PORT from .env, else from the environment, else 5000 (foreman's order)."""
    if port is not None:
        return port
    for where, env in ((".env", dotenv), ("the environment", environ)):
        text = env.get("PORT")
        if text is None:
            continue
        if not text.strip().isdigit() or not 1 <= int(text) <= 65535:
            reading.error("", f"PORT from {where}: expected a port number, got {text!r}")
            return None
        return int(text)
    return DEFAULT_PORT
