"""Which config file a supervisor command means, in which format, and reading it.

``-c FILE`` (its format from ``--format``, else its name), or the first of
``forkwell.toml``, ``Procfile``, ``process-compose.yaml``, ``supervisord.conf``
in the current directory, said in one line on stderr.  Shared by ``up``,
``check`` and ``convert``; imported only when one of them runs.
"""

from __future__ import annotations

import sys
from types import SimpleNamespace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .._supervisor._formats._load import Loaded
    from .._supervisor._formats._procfile import ProcfileOptions


def choose(prog: str, config: str | None, *, say: bool = True) -> str:
    """``config``, or the file found in the current directory (said on stderr)."""
    if config:
        return config
    from .._supervisor._formats._detect import SEARCH_ORDER, find_default

    found = find_default()
    if found is None:
        return SEARCH_ORDER[0]  # "no such file" then names the file we wanted most
    if say:
        print(f"{prog}: using ./{found} (no -c given)", file=sys.stderr)
    return found


def procfile_options(ns: SimpleNamespace) -> ProcfileOptions:
    """What a Procfile's options on the command line say (defaults where not given)."""
    from .._supervisor._formats._procfile import ProcfileOptions

    return ProcfileOptions(
        env_files=tuple(ns.env) if ns.env else None,
        formation=tuple(ns.formation),
        port=ns.port,
        timeout=ns.timeout,
        restart=ns.restart,
    )


def overrides(ns: SimpleNamespace) -> dict[str, str] | None:
    """The ``[supervisor]`` keys the command line sets over the file's (``forkwell up --http``)."""
    http = getattr(ns, "http", None)
    return None if http is None else {"http": http}


def load(prog: str, ns: SimpleNamespace, path: str) -> Loaded:
    """Read ``path`` as the command line says; raises ConfigError; reports what is ignored."""
    from .._supervisor._formats._load import load

    loaded = load(path, ns.format, procfile_options(ns), overrides(ns))
    for what in loaded.ignored:
        print(f"{prog}: {path}: {what}", file=sys.stderr)
    return loaded


def warn(prog: str, loaded: Loaded, path: str) -> None:
    """What would not work though the config is valid (:mod:`forkwell._supervisor._preflight`),
    one line each on stderr, in the words of the file's own format."""
    from .._supervisor._formats._load import in_own_words
    from .._supervisor._preflight import warnings

    lines = warnings(loaded.config, path, hint=_ADD_A_PROGRAM.get(loaded.format))
    for line in in_own_words(lines, path, loaded):
        print(f"{prog}: warning: {line}", file=sys.stderr)


# How each format declares a program, for the warning about a file without any.
_ADD_A_PROGRAM = {
    "procfile": "add a 'NAME: COMMAND' line",
    "supervisord": "add a [program:NAME] section",
    "process-compose": "add an entry under processes:",
}


def report(prog: str, errors: list[str]) -> int:
    """Every problem, one line each, then the count; exit status 2."""
    for line in errors:
        print(f"{prog}: {line}", file=sys.stderr)
    if len(errors) > 1:
        print(f"{prog}: {len(errors)} problems; nothing was started", file=sys.stderr)
    return 2
