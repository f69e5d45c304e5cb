"""What every format's reader hands over: TOML-shaped data, where each key came from, notices.

:class:`Imported` is the result of reading one file.  ``origins`` maps a
key path of the data (``programs.web.stop_signal``) to where the original
said it (``[program:web] stopsignal``), so an error :func:`parse_config`
finds names the user's own file and key; ``notes`` maps a key path to what
``forkwell convert`` writes beside it (a difference, or what was dropped);
``ignored`` lists, once each, what has no forkwell meaning.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

from ..._exceptions import ConfigError


class Imported(NamedTuple):
    """One file read in its own format, ready for ``parse_config``."""

    data: dict[str, Any]
    origins: dict[str, str]
    notes: dict[str, str]
    ignored: list[str]


class Reading:
    """The state of one reading: the data being built, and what to say about it."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.data: dict[str, Any] = {"supervisor": {}, "programs": {}}
        self.origins: dict[str, str] = {}
        self.notes: dict[str, str] = {}
        self.ignored: list[str] = []
        self.errors: list[str] = []

    def error(self, where: str, message: str) -> None:
        head = f"{self.label}: {where}" if where else self.label
        self.errors.append(f"{head}: {message}")

    def ignore(self, what: str) -> None:
        """``what`` has no forkwell meaning: said once, by name."""
        if what not in self.ignored:
            self.ignored.append(what)

    def program(self, name: str) -> dict[str, Any]:
        programs: dict[str, dict[str, Any]] = self.data["programs"]
        return programs.setdefault(name, {})

    def put(self, path: str, value: Any, origin: str, note: str = "") -> None:
        """Set ``path`` (``programs.web.command``) to ``value``, said at ``origin``."""
        table = self.data
        *parents, key = path.split(".", 2)  # program names have no '.'

        for part in parents:
            table = table.setdefault(part, {})
        table[key] = value
        self.origins[path] = origin
        if note:
            self.notes[path] = note

    def done(self) -> Imported:
        if self.errors:
            raise ConfigError(self.errors)
        return Imported(self.data, self.origins, self.notes, self.ignored)


def read_text(path: Path, label: str, what: str) -> str:
    """The file's text, or a ConfigError saying in one line why it cannot be read."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{label}: no such file"]) from None
    except IsADirectoryError:
        raise ConfigError([f"{label}: is a directory, expected {what}"]) from None
    except OSError as exc:
        raise ConfigError([f"{label}: cannot read: {exc.strerror}"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{label}: not UTF-8 text, expected {what}"]) from None
