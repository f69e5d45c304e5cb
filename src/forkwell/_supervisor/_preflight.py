"""What ``forkwell check`` and ``forkwell up`` warn about before anything starts.

A valid config can still be one that cannot work: a command that is not on
PATH (or not executable) would be started ``start_retries`` times with
backoff and end FATAL; a file without programs runs nothing.  Warnings, not
errors: the PATH of a later ``forkwell up`` may differ, and a program may be
installed meanwhile.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Mapping

from .._core._process import find_executable
from ._config import Config, ProgramConfig


def warnings(
    config: Config,
    label: str | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    hint: str | None = None,
) -> list[str]:
    """One line per problem, each naming the file (``label``) and the key, as errors do.

    ``hint`` says how the file's format declares a program (for a file without
    any); None: forkwell.toml's way.
    """
    label = os.fspath(config.path) if label is None else label
    if not config.programs:
        how = "add a [programs.NAME] table" if hint is None else hint
        return [f"{label}: no programs: nothing would run ({how})"]
    env = os.environ if environ is None else environ
    found = (command_problem(p, env) for p in config.programs.values())
    return [f"{label}: programs.{name}.command: {problem}"
            for name, problem in zip(config.programs, found, strict=True) if problem]  # fmt: skip


def command_problem(program: ProgramConfig, environ: Mapping[str, str]) -> str:
    """Why ``program``'s command cannot be executed as things are now ("" if it can)."""
    command = program.command[0]
    where = program.directory
    if "/" in command:
        path = os.path.normpath(os.path.join(where, command))
        try:
            os.stat(path)
        except OSError as exc:
            # EACCES: a directory on the way is closed to this user (a 0700 home).
            if exc.errno == errno.ENOENT:
                return f"{path} does not exist"
            return f"{path} cannot be reached: {exc.strerror}"
        return "" if _runnable(path) else f"{path} is not an executable file"
    search = program.environment.get("PATH", environ.get("PATH", os.defpath))
    # The child's cwd is the program's directory: relative entries are relative to it.
    absolute = os.pathsep.join(os.path.join(where, entry) for entry in search.split(os.pathsep))
    if find_executable(command, absolute):
        return ""
    there = [os.path.join(d, command) for d in absolute.split(os.pathsep)]
    unrunnable = next((p for p in there if os.path.exists(p)), None)
    if unrunnable is not None:
        return f"{command!r} is found on PATH as {unrunnable}, which is not an executable file"
    return f"{command!r} is not found on PATH ({search})"


def _runnable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)
