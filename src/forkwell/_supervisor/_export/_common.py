"""What every exporter needs: where the fleet lives, its commands, the ``forkwell`` it calls.

A unit or a manifest is read on another machine (or in an image), so every
path in it is absolute and moved from the config file's directory to
``root`` (where the fleet will live there), and every command is resolved
as the supervisor would resolve it when it starts the program.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import NamedTuple

from ..._core._process import find_executable
from ..._exceptions import ConfigError
from .._config import Config, ProgramConfig

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


class Site(NamedTuple):
    """Where the exported fleet will live, and how its units call ``forkwell`` back."""

    config: Config
    prefix: str  # units and objects are named PREFIX-PROGRAM
    root: Path  # the config file's directory, as the target machine sees it
    forkwell: tuple[str, ...]  # the forkwell command there, e.g. ("/usr/local/bin/forkwell",)

    def moved(self, path: Path) -> Path:
        """``path`` (absolute, on this machine) as the target sees it: under ``root``."""
        here = self.config.path.parent.resolve()  # as the config resolves its paths
        try:
            return self.root / path.resolve().relative_to(here)
        except ValueError:
            return path  # outside the fleet's directory: it stays where it is

    @property
    def config_file(self) -> Path:
        return self.root / self.config.path.name


def default_prefix(config: Config) -> str:
    """``demo`` for ``demo.toml``; the directory's name for ``forkwell.toml``."""
    path = config.path
    stem = path.stem if path.stem != "forkwell" else path.resolve().parent.name
    name = re.sub(r"[^a-z0-9]+", "-", stem.lower()).strip("-")[:40].strip("-")
    return name or "forkwell"


def check_prefix(prefix: str) -> str:
    """``prefix`` if it can name units and Kubernetes objects, else ``ValueError``."""
    if not re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?", prefix):
        raise ValueError(
            f"invalid prefix {prefix!r}: expected lowercase letters, digits and '-' "
            "(at most 40, not starting or ending with '-'), as Kubernetes names need"
        )
    return prefix


def object_name(site: Site, program: str) -> str:
    """``PREFIX-PROGRAM``, spelt as Kubernetes and systemd both accept it."""
    return f"{site.prefix}-{_UNSAFE.sub('-', program.replace('_', '-')).strip('-').lower()}"


def argv(site: Site, program: ProgramConfig, *, resolve: bool = True) -> list[str]:
    """The program's command, its executable found as exec would find it from here.

    ``resolve=False`` (an image: its files are not here) keeps the name as
    written.  A command that is nowhere on PATH is a :class:`ConfigError`,
    as it would be when ``forkwell up`` starts it.
    """
    first, *rest = program.command
    if not resolve:
        return [first, *rest]
    if "/" in first:
        path = program.directory / first
        return [os.fspath(site.moved(Path(os.path.normpath(path)))), *rest]
    search = program.environment.get("PATH") or os.environ.get("PATH") or os.defpath
    found = find_executable(first, search)
    if found is None:
        where = f"{site.config.path}: programs.{program.name}.command"
        raise ConfigError([f"{where}: {first!r} is not on PATH ({search}); give its absolute path"])
    return [found, *rest]


def seconds(value: float) -> int:
    """A duration as the whole seconds engines take, never less than asked (nor 0)."""
    return max(1, math.ceil(value))


def shutdown_seconds(config: Config) -> float:
    """How long ``forkwell up`` may take to stop the fleet: dependents first, then each chain.

    The longest dependency chain of ``stop_timeout`` (a program stops only
    once its dependents have), bounded by ``shutdown_timeout``, after which
    everything left is killed.
    """
    memo: dict[str, float] = {}

    def chain(name: str) -> float:
        if name not in memo:
            after = [chain(d) for d in config.dependents(name)]
            memo[name] = config.programs[name].stop_timeout + max(after, default=0.0)
        return memo[name]

    longest = max((chain(n) for n in config.programs), default=0.0)
    return min(longest, config.supervisor.shutdown_timeout)
