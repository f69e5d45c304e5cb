"""A file lock that is a lock between forked processes too.

The trap it avoids: ``flock(2)`` (and ``F_OFD_SETLK``) locks belong to the
*open file description*, and ``fork()`` shares open file descriptions.  A
parent that opens a lock file, then forks workers that "take the lock" through
the inherited fd, has no lock at all: every worker's ``flock(fd, LOCK_EX)``
succeeds at once, because they all present the same description that already
holds it.  POSIX ``fcntl(F_SETLK)`` record locks have the opposite trap: they
belong to the *process* and vanish when it closes *any* fd of the file.

:class:`FileLock` opens the file anew for every acquisition, in the process
that acquires, and locks that private description with ``flock``.  So each
process (and each :class:`FileLock` object) gets its own lock, whatever was
inherited, and the lock is released by the kernel if the holder dies.
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import time
from types import TracebackType

from .._exceptions import LockTimeoutError, StateError


class FileLock:
    """An exclusive lock on ``path``, safe to create before ``fork()``.

    >>> lock = FileLock("/tmp/app.lock")
    >>> with lock:                        # or lock.acquire(timeout=2.0)
    ...     append_to_shared_file()

    ``timeout=None`` waits forever, ``0`` tries once; past it,
    :class:`~forkwell.LockTimeoutError` is raised.  Not re-entrant, and one
    object must not be shared between threads (give each thread its own).
    A copy inherited by a forked child is *not* held in the child, even if the
    parent held it when it forked.
    """

    def __init__(self, path: str | os.PathLike[str], *, timeout: float | None = None) -> None:
        self.path = os.fspath(path)
        self.timeout = timeout
        self._fd = -1
        self._owner = 0  # pid that holds the lock through self._fd

    def __repr__(self) -> str:
        return f"<forkwell.FileLock {self.path!r} {'held' if self.locked else 'free'}>"

    @property
    def locked(self) -> bool:
        """True if *this process* holds the lock through this object."""
        return self._fd >= 0 and self._owner == os.getpid()

    def acquire(self, timeout: float | None = -1.0) -> None:
        """Take the lock; ``timeout`` (seconds) defaults to the one given at creation."""
        if self.locked:
            raise StateError(f"lock {self.path!r} is already held by this process")
        self._forget_inherited()
        if timeout is not None and timeout < 0:
            timeout = self.timeout
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            self._lock(fd, timeout)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self._owner = os.getpid()

    def release(self) -> None:
        if not self.locked:
            raise StateError(f"lock {self.path!r} is not held by this process")
        fd, self._fd = self._fd, -1
        # Unlock explicitly: a child forked while we held it may still have
        # this fd open, and close() alone would leave the lock held by it.
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def _forget_inherited(self) -> None:
        # A copy of a held lock inherited through fork(): the fd is ours to
        # close, but unlocking it would release the *parent's* lock.
        if self._fd >= 0 and self._owner != os.getpid():
            os.close(self._fd)
            self._fd = -1

    def _lock(self, fd: int, timeout: float | None) -> None:
        if timeout is None:
            fcntl.flock(fd, fcntl.LOCK_EX)  # PEP 475: retried after signal handlers
            return
        deadline = time.monotonic() + timeout
        delay = 0.001
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LockTimeoutError(
                    errno.ETIMEDOUT,
                    f"could not lock {self.path!r} within {timeout:g}s (held by another process)",
                    self.path,
                )
            # flock has no timed wait; back off exponentially, capped so a
            # released lock is noticed within 50 ms.
            select.select([], [], [], min(delay, remaining))
            delay = min(delay * 2, 0.05)
