"""Which format a config file is in, and which file to use when none is named.

Lean on purpose: the control commands (``forkwell ps``) ask it where the
socket is, so it imports nothing and reads no file.
"""

from __future__ import annotations

import os

PROCFILE = "procfile"
SUPERVISORD = "supervisord"
COMPOSE = "process-compose"
TOML = "toml"
FORMATS = (PROCFILE, SUPERVISORD, COMPOSE, TOML)

# Looked for in this order in the current directory when no -c is given.
SEARCH_ORDER = ("forkwell.toml", "Procfile", "process-compose.yaml", "supervisord.conf")

# By file name (the base name): Procfile, Procfile.*, *.procfile; supervisord.conf, *.conf,
# *.ini; process-compose.yaml/.yml, *.yaml, *.yml; *.toml and anything else: TOML.
# (Plain string tests: fnmatch would cost `forkwell ps` the re module.)
_SUFFIXES = {".procfile": PROCFILE, ".conf": SUPERVISORD, ".ini": SUPERVISORD,
             ".yaml": COMPOSE, ".yml": COMPOSE, ".toml": TOML}  # fmt: skip


def detect(path: str, forced: str | None = None) -> str:
    """The format of ``path``: ``forced`` (``--format``), else by its name; TOML otherwise."""
    if forced:
        return forced
    name = os.path.basename(path)
    suffix = os.path.splitext(name)[1]
    if suffix == ".toml":
        return TOML
    if name == "Procfile" or name.startswith("Procfile."):
        return PROCFILE
    return _SUFFIXES.get(suffix, TOML)


def find_default(directory: str = ".") -> str | None:
    """The first of :data:`SEARCH_ORDER` that exists in ``directory`` (None: none does)."""
    for name in SEARCH_ORDER:
        if os.path.isfile(os.path.join(directory, name)):
            return name
    return None


def parse_format(text: str) -> str:
    """``--format``'s value, or ValueError naming the choices."""
    value = text.strip().lower()
    if value not in FORMATS:
        raise ValueError(f"invalid format {text!r} (choose from {', '.join(FORMATS)})")
    return value
