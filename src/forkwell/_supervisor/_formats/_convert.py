"""``forkwell convert``: the forkwell.toml that runs exactly what the original file runs.

The data a format's reader made (the same that ``forkwell up`` validates)
is written out as TOML, each key commented where it was mapped with a
difference, and what was ignored listed at the top, so a user can move for
good.  Paths are written so they mean the same from where the new file is.
Reading the result back gives the same :class:`Config` as reading the
original (``tests/test_formats.py`` checks it for every fixture).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ._common import Imported

_PATH_KEYS = {"supervisor": ("socket", "log_dir", "state_file"), "programs": ("directory",)}
_DEFAULT_DIRS = {"socket": ".forkwell/forkwell.sock", "log_dir": ".forkwell/logs",
                 "state_file": ".forkwell/state.json", "directory": "."}  # fmt: skip


def render(imported: Imported, source: Path, fmt: str, output: Path | None) -> str:
    """The TOML text; ``output`` is where it will be written (None: stdout, the current dir)."""
    src_dir = source.absolute().parent
    out_dir = (output.absolute().parent if output is not None else Path.cwd()).resolve()
    lines = [
        f"# forkwell.toml made by `forkwell convert` from {source} ({fmt}).",
        "# Check it with `forkwell check -c FILE`; run it with `forkwell up -c FILE`.",
    ]
    if imported.ignored:
        lines += ["#", "# Not carried over (no forkwell meaning):"]
        lines += [f"#   {what}" for what in imported.ignored]
    supervisor = dict(imported.data.get("supervisor", {}))
    _move_paths(supervisor, _PATH_KEYS["supervisor"], src_dir.resolve(), out_dir)
    if supervisor:
        lines += ["", "[supervisor]", *_keys(supervisor, "supervisor", imported.notes)]
    for name, table in imported.data.get("programs", {}).items():
        program = dict(table)
        _move_paths(program, _PATH_KEYS["programs"], src_dir.resolve(), out_dir)
        env = program.pop("environment", None)
        lines += ["", f"[programs.{name}]", *_keys(program, f"programs.{name}", imported.notes)]
        if env:
            note = imported.notes.get(f"programs.{name}.environment")
            lines += ["", f"[programs.{name}.environment]" + (f"  # {note}" if note else "")]
            lines += [f"{_string(k)} = {_string(v)}" for k, v in env.items()]
    return "\n".join(lines) + "\n"


def _move_paths(table: dict[str, Any], keys: tuple[str, ...], src: Path, out: Path) -> None:
    """Paths relative to the original's directory, made to mean the same from ``out``."""
    if src == out:
        return
    for key in keys:
        value = table.get(key, _DEFAULT_DIRS[key])
        if not isinstance(value, str):
            continue
        where = (src / os.path.expanduser(value)).resolve()
        relative = os.path.relpath(where, out)
        table[key] = relative if not relative.startswith("..") else os.fspath(where)


def _keys(table: Mapping[str, Any], prefix: str, notes: Mapping[str, str]) -> list[str]:
    out = []
    first = ("command",) if "command" in table else ()
    for key in [*first, *(k for k in table if k not in first)]:
        value = table[key]
        note = notes.get(f"{prefix}.{key}")
        out.append(f"{key} = {_value(value)}" + (f"  # {note}" if note else ""))
    return out


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_string(k)} = {_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def _string(text: str) -> str:
    """A TOML basic string: JSON's escapes are TOML's, but for DEL, which TOML wants escaped."""
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")
