"""What ``forkwell up`` takes of its process before the first spawn, and gives back at the end.

In this order, because each step guards the next: the event log (so every
step can say what it did), the state file (refuse to run twice, end what a
killed predecessor left), the watchdog (from here on the fleet dies with
us), the state file naming that watchdog, the fd limit, and the subreaper
flag (orphans of the programs come back to us).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from .._core import _sys, _tree
from . import _statefile
from ._watchdog import Keeper, Watchdog

if TYPE_CHECKING:
    from pathlib import Path

    from ._config import Config
    from ._events import EventLog
    from ._preloop import Loops
    from ._tracking import TreeEnder


class Session:
    """The supervisor's hold on its process: opened by ``prepare()``, closed by ``run()``.

    ``closed()`` says the supervisor is shutting down: a watchdog killed then
    is not replaced.
    """

    def __init__(
        self, token: str, loops: Loops, log: EventLog, trees: TreeEnder, closed: Callable[[], bool]
    ) -> None:
        self._token = token
        self._log = log
        self._trees = trees
        self.watchdog = Watchdog(token)
        self._keeper = Keeper(self.watchdog, loops, log.note, closed, self.new_watchdog)
        self.opened = False
        self._made_subreaper = False
        self._state_file: Path | None = None
        self._config_path: Path | None = None

    def open(self, config: Config, config_path: Path, instances: int, programs: int) -> list[int]:
        """Everything that must precede the first spawn; the pids of a predecessor it ended.

        Raises :class:`~forkwell.StateError` when another supervisor runs.
        """
        log_dir = config.supervisor.log_dir
        log_dir.mkdir(parents=True, exist_ok=True)
        self._log.open(log_dir / "forkwell.log")
        self._state_file, self._config_path = config.supervisor.state_file, config_path
        try:
            # Before touching anything process-wide: refuse to run twice.
            survivors = _statefile.take_over(self._state_file, config_path, self._log.note)
            self._log.note(
                f"forkwell up: pid {os.getpid()}, {instances} instances "
                f"of {programs} programs from {config_path}"
            )
            # Before anything is spawned: from here on the fleet dies with us.
            self._keeper.start()
            self.write_state()
        except BaseException:
            self._keeper.stop()
            self._log.close()
            raise
        _raise_fd_limit()
        was_subreaper = _sys.is_subreaper()
        self._made_subreaper = not was_subreaper and _sys.set_subreaper()
        # Every descendant then stays in our own subtree: scans walk it, not all of /proc.
        self._trees.own_subtree = _tree.HAVE_CHILDREN_FILE and (
            was_subreaper or self._made_subreaper
        )
        self.opened = True
        return survivors

    def write_state(self) -> None:
        """Record who we are, our cookie and our watchdog, for the next ``forkwell up``."""
        assert self._state_file is not None and self._config_path is not None
        _statefile.write(
            self._state_file,
            token=self._token,
            config_path=self._config_path,
            watchdog=self.watchdog.pid,
        )

    def new_watchdog(self) -> None:
        """The keeper replaced a killed watchdog: the state file names the new one."""
        with contextlib.suppress(OSError):
            self.write_state()

    def close(self) -> None:
        """The last program has stopped: give back everything :meth:`open` took."""
        self._trees.own_subtree = False
        self._keeper.stop()
        if self._made_subreaper:
            _sys.set_subreaper(False)
        if self._state_file is not None:
            _statefile.remove(self._state_file)
        self._log.note("forkwell up: all stopped, exiting")
        self._log.close()


def _raise_fd_limit() -> None:
    """Each instance holds ~7 fds (pidfd, 2 pipes, 2 log files): use the hard limit.

    supervisord's "Too many open files" around 200 programs (its issue 489)
    came from a soft limit of 1024.
    """
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
