"""A pidfile that cannot lie: the kernel's lock, not the file's content, says who runs.

A :class:`Pidfile` is created without races and holds a POSIX ``fcntl`` write
lock for the owner's whole life.  The lock is the truth:

* a pidfile whose lock is held names a live process, and ``F_GETLK`` tells
  which one (the kernel's answer, so a recycled pid cannot fool it);
* a pidfile whose lock is not held is *stale*, whatever pid it contains.

Why POSIX (``fcntl``) locks and not ``flock``: ``F_GETLK`` reports the holder's
pid, and the lock survives ``exec``, so ``forkwell daemon start`` can take it
in the process that then becomes the command (the pidfile names the command's
real pid, and the command holds the lock).  Their trap: a process loses its
lock when it closes *any* descriptor of the file, so this module never opens a
pidfile that its own process holds (it answers from memory instead), and code
in the daemon must not open and close its own pidfile either.

Creation: ``open(O_CREAT | O_NOFOLLOW)`` without ``O_TRUNC``, lock, check that
the path still names the locked inode (a previous owner may have unlinked it
meanwhile), and only then truncate and write ``"PID\\n"``.  Symlinks are refused;
in a world-writable directory that the caller does not own (``/tmp`` for a
normal user), the file must belong to the caller, so another user cannot plant
a pidfile for us.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import struct
from enum import Enum
from typing import NamedTuple

from .._exceptions import PidfileError, PidfileLockedError, StateError

StrPath = str | os.PathLike[str]

# struct flock on Linux (x86_64, aarch64): short l_type, l_whence; off_t l_start,
# l_len; pid_t l_pid; padded to 32 bytes.
_FLOCK = struct.Struct("hhqqi4x")

# (st_dev, st_ino) -> the Pidfile this process holds: consulted before opening
# a pidfile, because closing any fd of a locked file drops our POSIX lock.
_held: dict[tuple[int, int], Pidfile] = {}


class PidfileState(Enum):
    """What a pidfile says, in LSB terms."""

    RUNNING = "running"  # the lock is held: ``pid`` is the holder
    STALE = "stale"  # the file exists, nobody holds its lock (LSB: dead, pidfile exists)
    ABSENT = "absent"  # no pidfile, or an empty one left by a clean exit
    UNKNOWN = "unknown"  # cannot tell: no permission, symlink, not a regular file


class PidfileStatus(NamedTuple):
    """Answer of :meth:`Pidfile.probe`."""

    state: PidfileState
    #: RUNNING: the lock holder; STALE: the pid written in the file, if any.
    pid: int | None = None
    #: UNKNOWN: why the pidfile could not be read.
    reason: str = ""
    #: UNKNOWN: the errno behind ``reason`` (EACCES: no permission).
    errno: int = 0


class Pidfile:
    """A locked pidfile: ``with forkwell.Pidfile("/run/app.pid"): ...``.

    :meth:`acquire` raises :class:`forkwell.PidfileLockedError` (``.pid`` is the
    holder) when another process holds it, and :class:`forkwell.PidfileError`
    when the path is unsafe.  :meth:`release` (or leaving the ``with`` block)
    removes the file and drops the lock; in a forked child, which does not
    own the parent's lock, it does nothing.
    """

    path: str

    def __init__(self, path: StrPath) -> None:
        self.path = os.path.abspath(os.fspath(path))
        self._fd: int | None = None
        self._owner: int | None = None
        self._key: tuple[int, int] | None = None

    def __repr__(self) -> str:
        state = f"held by {self._owner}" if self._fd is not None else "not held"
        return f"<forkwell.Pidfile {self.path!r} {state}>"

    def __enter__(self) -> Pidfile:
        return self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    @property
    def locked(self) -> bool:
        """True while this process holds the lock."""
        return self._fd is not None and self._owner == os.getpid()

    def fileno(self) -> int:
        """The locked descriptor (close-on-exec unless :meth:`keep_across_exec`)."""
        if self._fd is None:
            raise StateError(f"pidfile {self.path} is not acquired")
        return self._fd

    def acquire(self, pid: int | None = None) -> Pidfile:
        """Create (or take over a stale) pidfile, lock it, write ``pid`` (default: ours)."""
        if self._fd is not None:
            raise StateError(f"pidfile {self.path} is already acquired")
        me = os.getpid()
        try:
            current = os.stat(self.path, follow_symlinks=False)
        except OSError:
            current = None
        if current is not None and (current.st_dev, current.st_ino) in _held:
            raise PidfileLockedError(self.path, me)
        must_own = _unsafe_directory(self.path)
        for _ in range(100):
            fd = _open(self.path, os.O_RDWR | os.O_CREAT)
            try:
                key = self._lock(fd, must_own)
                if key is not None:
                    os.ftruncate(fd, 0)
                    os.pwrite(fd, f"{me if pid is None else pid}\n".encode(), 0)
            except BaseException:
                os.close(fd)
                raise
            if key is None:
                os.close(fd)
                continue
            self._fd, self._owner, self._key = fd, me, key
            _held[key] = self
            return self
        raise PidfileError(errno.EAGAIN, f"pidfile {self.path} keeps changing under us", self.path)

    def _lock(self, fd: int, must_own: bool) -> tuple[int, int] | None:
        """Lock ``fd``; its (dev, inode), or None to start again."""
        st = os.fstat(fd)
        _check_file(self.path, st, must_own)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise PidfileError(
                    exc.errno or 0, f"cannot lock pidfile {self.path}: {exc.strerror}", self.path
                ) from None
            held, holder = _lock_holder(fd)
            if not held:
                return None  # released between our attempt and the query
            raise PidfileLockedError(self.path, holder) from None
        # The previous owner may have unlinked the file between our open and
        # our lock: then we hold an orphan inode and must start again.
        try:
            now = os.stat(self.path, follow_symlinks=False)
        except FileNotFoundError:
            return None
        if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
            return None
        return (st.st_dev, st.st_ino)

    def write(self, pid: int) -> None:
        """Replace the pid in the file (the lock stays with this process)."""
        fd = self.fileno()
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{pid}\n".encode(), 0)

    def keep_across_exec(self) -> None:
        """Let the lock survive ``exec`` (the fd stays open in the new program)."""
        os.set_inheritable(self.fileno(), True)

    def release(self) -> None:
        """Remove the pidfile and drop the lock.  Idempotent; a no-op in a forked child."""
        fd, owner, key = self._fd, self._owner, self._key
        self._fd = self._owner = self._key = None
        if key is not None:
            _held.pop(key, None)
        if fd is None:
            return
        if owner != os.getpid():
            # A forked child: the lock is the parent's.  Closing our copy of the
            # descriptor does not touch a lock owned by another process.
            os.close(fd)
            return
        unlinked = False
        try:
            now = os.stat(self.path, follow_symlinks=False)
            if (now.st_dev, now.st_ino) == key:
                os.unlink(self.path)
                unlinked = True
        except OSError:
            pass
        try:
            if not unlinked:
                # Privileges were dropped after the file was made in a
                # directory we can no longer write (or even search): leave our
                # inode empty, which probe() reads as "not running".
                os.ftruncate(fd, 0)
        except OSError:
            pass
        finally:
            os.close(fd)

    @classmethod
    def probe(cls, path: StrPath) -> PidfileStatus:
        """Who holds ``path``, without taking it: see :class:`PidfileState`."""
        path = os.path.abspath(os.fspath(path))
        try:
            st = os.stat(path, follow_symlinks=False)
        except OSError as exc:
            return _cannot("stat", path, exc)
        mine = _held.get((st.st_dev, st.st_ino))
        if mine is not None and mine.locked:
            return PidfileStatus(PidfileState.RUNNING, os.getpid())
        refused = _not_a_pidfile(path, st)
        if refused is not None:
            return refused
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY)
        except OSError as exc:
            return _cannot("open", path, exc)
        try:
            return _status_of(fd)
        except OSError as exc:
            return _cannot("read", path, exc)
        finally:
            os.close(fd)

    @classmethod
    def holder(cls, path: StrPath) -> int | None:
        """The pid holding ``path``'s lock, or None when nobody does."""
        status = cls.probe(path)
        return status.pid if status.state is PidfileState.RUNNING else None

    @classmethod
    def remove_stale(cls, path: StrPath, expect_pid: int | None = None) -> bool:
        """Remove ``path`` if nobody holds it (and it names ``expect_pid``, if given).

        Race-free: the file is locked while it is checked and unlinked, so a
        pidfile another process has just taken is never removed.
        """
        path = os.path.abspath(os.fspath(path))
        try:
            st = os.stat(path, follow_symlinks=False)
            if (st.st_dev, st.st_ino) in _held or not stat.S_ISREG(st.st_mode):
                return False
            fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY)
        except OSError:
            return False
        try:
            return _unlink_if_stale(fd, path, expect_pid)
        except OSError:
            return False
        finally:
            os.close(fd)


def _cannot(verb: str, path: str, exc: OSError) -> PidfileStatus:
    """What ``probe`` answers when ``verb`` failed: ABSENT if the file is gone, else UNKNOWN."""
    if isinstance(exc, FileNotFoundError):
        return PidfileStatus(PidfileState.ABSENT)
    return PidfileStatus(
        PidfileState.UNKNOWN, reason=f"cannot {verb} {path}: {exc.strerror}", errno=exc.errno or 0
    )


def _not_a_pidfile(path: str, st: os.stat_result) -> PidfileStatus | None:
    """UNKNOWN for a symlink or a special file (never opened), else None."""
    if stat.S_ISLNK(st.st_mode):
        return PidfileStatus(PidfileState.UNKNOWN, reason=f"{path} is a symlink", errno=errno.ELOOP)
    if not stat.S_ISREG(st.st_mode):
        return PidfileStatus(
            PidfileState.UNKNOWN, reason=f"{path} is not a regular file", errno=errno.EINVAL
        )
    return None


def _status_of(fd: int) -> PidfileStatus:
    """RUNNING if ``fd``'s lock is held, else what its content says."""
    held, holder = _lock_holder(fd)
    if held:
        return PidfileStatus(PidfileState.RUNNING, holder)
    content = os.pread(fd, 64, 0)
    if not content.strip():
        return PidfileStatus(PidfileState.ABSENT)  # emptied by an owner that could not unlink
    return PidfileStatus(PidfileState.STALE, _parse_pid(content))


def _unlink_if_stale(fd: int, path: str, expect_pid: int | None) -> bool:
    """Lock ``fd`` (OSError if someone holds it), then unlink ``path`` if it is still that file."""
    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    fst = os.fstat(fd)
    now = os.stat(path, follow_symlinks=False)
    if (now.st_dev, now.st_ino) != (fst.st_dev, fst.st_ino):
        return False
    if expect_pid is not None and _parse_pid(os.pread(fd, 64, 0)) != expect_pid:
        return False
    os.unlink(path)
    return True


def _parse_pid(content: bytes) -> int | None:
    text = content.strip()
    return int(text) if text.isdigit() and int(text) > 0 else None


def _open(path: str, flags: int) -> int:
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise PidfileError(
                exc.errno, f"refusing pidfile {path}: it is a symlink", path
            ) from None
        raise PidfileError(
            exc.errno or 0, f"cannot open pidfile {path}: {exc.strerror}", path
        ) from None


def _unsafe_directory(path: str) -> bool:
    """True if the directory is world-writable and not ours: the file must then be ours."""
    directory = os.path.dirname(path)
    try:
        st = os.stat(directory)
    except OSError as exc:
        raise PidfileError(
            exc.errno or 0,
            f"cannot use pidfile {path}: directory {directory}: {exc.strerror}",
            path,
        ) from None
    return bool(st.st_mode & stat.S_IWOTH) and st.st_uid != os.geteuid()


def _check_file(path: str, st: os.stat_result, must_own: bool) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise PidfileError(errno.EINVAL, f"refusing pidfile {path}: not a regular file", path)
    if must_own and st.st_uid != os.geteuid():
        raise PidfileError(
            errno.EPERM,
            f"refusing pidfile {path}: it is owned by uid {st.st_uid} in a world-writable "
            "directory (another user could control it)",
            path,
        )


def _lock_holder(fd: int) -> tuple[bool, int | None]:
    """(locked?, holder pid) for a lock that would conflict with a read lock on ``fd``."""
    query = _FLOCK.pack(fcntl.F_RDLCK, os.SEEK_SET, 0, 0, 0)
    l_type, _, _, _, l_pid = _FLOCK.unpack(fcntl.fcntl(fd, fcntl.F_GETLK, query))
    if l_type == fcntl.F_UNLCK:
        return False, None
    # l_pid is 0 when the holder lives in another pid namespace.
    return True, (l_pid if l_pid > 0 else None)
