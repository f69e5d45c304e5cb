"""What a daemon is to become, validated in the caller before anything forks.

A mistake found here (an unknown user, an empty path) raises in the process
that asked, with nothing started; what only the daemon can find out (a
directory it cannot enter) is a step's failure (:mod:`._steps`).
"""

from __future__ import annotations

import errno
import os
from typing import TYPE_CHECKING, Any, NamedTuple

from .._exceptions import DaemonStartError

if TYPE_CHECKING:
    import pwd

StrPath = str | os.PathLike[str]


class Identity(NamedTuple):
    """A resolved user/group to switch to."""

    uid: int
    gid: int
    name: str | None  # passwd name, for initgroups; None: no supplementary groups
    home: str | None = None
    shell: str | None = None


class Config(NamedTuple):
    pidfile: str | None
    workdir: str
    umask: int
    stdin: str
    stdout: str
    stderr: str
    identity: Identity | None
    chroot: str | None
    keep_fds: frozenset[int]
    # python: the interpreter keeps running (SIGINT/SIGPIPE as Python sets them).
    python: bool = True


def resolve_identity(user: str | int | None, group: str | int | None) -> Identity | None:
    """Look up ``user``/``group`` (names or numbers); ``DaemonStartError`` if unknown."""
    if user is None and group is None:
        return None
    entry = None if user is None else _passwd(user)
    gid = None if group is None else _group_id(group)
    if entry is not None:
        return Identity(
            entry.pw_uid,
            entry.pw_gid if gid is None else gid,
            entry.pw_name,
            entry.pw_dir,
            entry.pw_shell,
        )
    if user is not None:
        if gid is None:
            raise DaemonStartError(
                errno.EINVAL,
                f"user {user} has no passwd entry: give a group too",
                "drop-privileges",
            )
        return Identity(int(user), gid, None)
    assert gid is not None
    return Identity(os.geteuid(), gid, None)


def _passwd(user: str | int) -> pwd.struct_passwd | None:
    """The passwd entry of ``user``; None for a uid without one (a name must exist)."""
    import pwd

    try:
        return pwd.getpwuid(int(user)) if str(user).isdigit() else pwd.getpwnam(str(user))
    except KeyError:
        if str(user).isdigit():
            return None
        raise DaemonStartError(errno.EINVAL, f"unknown user {user!r}", "drop-privileges") from None


def _group_id(group: str | int) -> int:
    import grp

    try:
        return int(group) if str(group).isdigit() else grp.getgrnam(str(group)).gr_gid
    except KeyError:
        raise DaemonStartError(
            errno.EINVAL, f"unknown group {group!r}", "drop-privileges"
        ) from None


def absolute(path: StrPath | None, what: str) -> str | None:
    """``path`` made absolute now (the daemon resolves nothing against a moved cwd)."""
    if path is None:
        return None
    text = os.fspath(path)
    if not text:
        raise ValueError(f"{what} must not be empty")
    return os.path.abspath(text)


def workdir_path(workdir: StrPath, chroot: StrPath | None) -> str:
    """Absolute, so the daemon's chdir does not depend on when it runs."""
    text = os.fspath(workdir)
    if not text:
        raise ValueError("workdir must not be empty")
    # Inside a chroot a relative directory is taken from its root.
    return os.path.join("/", text) if chroot is not None else os.path.abspath(text)


def fd_of(obj: int | Any) -> int:
    """A ``keep_fds`` item: an fd, or an object with ``fileno()`` (a log handler's stream)."""
    if isinstance(obj, int):
        return obj
    fileno = getattr(obj, "fileno", None)
    if fileno is None:
        raise TypeError(f"keep_fds: {obj!r} is neither an fd nor has fileno()")
    return int(fileno())
