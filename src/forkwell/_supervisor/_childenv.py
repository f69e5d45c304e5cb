"""What every program is spawned with: its environment, /dev/null as stdin, its executable."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

from .._core import _process, _tree

if TYPE_CHECKING:
    from ._preloop import Loops
    from ._program import Instance


class ChildEnv:
    """The per-spawn set-up the supervisor shares between its instances."""

    def __init__(self, cookie: str, loops: Loops) -> None:
        self._cookie = cookie
        self._loops = loops
        # The environment programs inherit, taken when run() starts (copying
        # os.environ for each spawn was a tenth of the cost of starting one).
        self._base: dict[str, str] | None = None
        self._devnull = -1
        self._executables: dict[tuple[str, str], str | None] = {}

    def snapshot(self) -> dict[str, str]:
        """Take the supervisor's environment as it is now, for every spawn to come."""
        env = dict(os.environ)
        # Our own notify socket (systemd, --detach) is not the programs' to use.
        env.pop("NOTIFY_SOCKET", None)
        self._base = env
        return env

    def for_instance(self, inst: Instance) -> dict[str, str]:
        env = (self.snapshot() if self._base is None else self._base).copy()
        cfg = inst.config
        env.update(cfg.environment)
        if cfg.port is not None:  # foreman's and honcho's PORT: base + instance
            env["PORT"] = str(cfg.port + inst.index)
        for name in cfg.name_variables:
            env[name] = inst.name
        env[_tree.COOKIE_VAR] = self._cookie
        env["FORKWELL_INSTANCE"] = inst.name
        env["FORKWELL_INDEX"] = str(inst.index)
        # forkwell.daemonize(detach="auto") then stays in the foreground: a
        # supervised program that daemonizes would otherwise look like a crash.
        env["FORKWELL_SUPERVISED"] = "1"
        return env

    def devnull(self) -> int:
        """One /dev/null fd for every program's stdin (Popen would open one per spawn)."""
        if self._devnull < 0:
            self._devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        return self._devnull

    def find_executable(self, command: str, env: Mapping[str, str]) -> str | None:
        """Look each command up once per batch of starts (``start all``, autostart).

        The lookups are forgotten as soon as the loop moves on, so a program
        installed meanwhile is found exactly as exec would find it.
        """
        key = (command, env.get("PATH") or os.defpath)
        if key not in self._executables:
            if not self._executables:
                self._loops.loop.call_soon(self._executables.clear)
            self._executables[key] = _process.find_executable(*key)
        return self._executables[key]

    def close(self) -> None:
        if self._devnull >= 0:
            os.close(self._devnull)
            self._devnull = -1
