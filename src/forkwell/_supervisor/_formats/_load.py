"""The one entry point: read a config file in any of the four formats into a :class:`Config`.

The format is ``--format``'s, else the file name's (:mod:`._detect`).
Whatever the format, the data goes through the same
:func:`~forkwell._supervisor._config.parse_config`; its errors are then said
in the words of the original file (``[program:web] stopsignal``,
``line 3 (web)``) rather than in forkwell.toml's key paths.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from ..._exceptions import ConfigError
from .._config import Config, load_config, parse_config
from ._common import Imported
from ._detect import COMPOSE, PROCFILE, SUPERVISORD, TOML, detect
from ._procfile import ProcfileOptions


class Loaded(NamedTuple):
    """A config, the format it was read in, and what of it forkwell ignores (said once each)."""

    config: Config
    format: str
    ignored: list[str]
    # What the format's reader made of it (None: TOML), to say later findings in its words.
    imported: Imported | None = None


def read(path: str | os.PathLike[str], fmt: str | None = None,
         procfile: ProcfileOptions | None = None) -> tuple[str, Imported | None]:  # fmt: skip
    """The format of ``path`` and, unless it is TOML, what its reader made of it."""
    label = os.fspath(path)
    kind = detect(label, fmt)
    file = Path(path)
    if kind == TOML:
        return kind, None
    if kind == PROCFILE:
        from . import _procfile

        return kind, _procfile.read(file, label, procfile)
    if kind == SUPERVISORD:
        from . import _supervisord

        return kind, _supervisord.read(file, label)
    assert kind == COMPOSE
    from . import _compose

    return kind, _compose.read(file, label)


def load(path: str | os.PathLike[str], fmt: str | None = None,
         procfile: ProcfileOptions | None = None,
         supervisor: Mapping[str, Any] | None = None) -> Loaded:  # fmt: skip
    """Read and validate ``path``; raises ConfigError listing every problem (nothing started).

    ``supervisor``: ``[supervisor]`` keys the command line overrides (``forkwell up --http``).
    """
    kind, imported = read(path, fmt, procfile)
    if imported is None:
        return Loaded(load_config(path, supervisor=supervisor), kind, [])
    config = validate(imported, Path(path), os.fspath(path), supervisor)
    return Loaded(config, kind, imported.ignored, imported)


def validate(imported: Imported, path: Path, label: str,
             supervisor: Mapping[str, Any] | None = None) -> Config:  # fmt: skip
    """``parse_config`` on imported data, its errors said the way the original file says it."""
    try:
        return parse_config(imported.data, path.absolute(), label, supervisor=supervisor)
    except ConfigError as exc:
        raise ConfigError([_in_own_words(e, label, imported) for e in exc.errors]) from None


def in_own_words(lines: list[str], label: str, loaded: Loaded) -> list[str]:
    """``LABEL: programs.web.command: ...`` lines (warnings) as the file's own format says them."""
    imported = loaded.imported
    if imported is None:
        return lines
    return [_in_own_words(line, label, imported) for line in lines]


def _in_own_words(error: str, label: str, imported: Imported) -> str:
    """``LABEL: programs.web.stop_signal: ...`` as ``LABEL: [program:web] stopsignal: ...``."""
    head = f"{label}: "
    if not error.startswith(head):
        return error
    where, sep, message = error[len(head) :].partition(": ")
    if not sep:
        return error
    origins = imported.origins
    if where in origins:
        return f"{head}{origins[where]}: {message}"
    parent, dot, key = where.rpartition(".")
    if dot and parent in origins:
        return f"{head}{origins[parent]}: {key}: {message}"
    return error
