"""Platform layer: the few syscalls forkwell needs beyond ``os``, with fallbacks.

Everything above this module asks *capabilities* (``HAVE_PIDFD``...) instead of
testing ``sys.platform`` itself, so a port touches one file.

Kernel features used, and what happens without them:

=============================  =======  ==============================================
feature                        Linux    fallback
=============================  =======  ==============================================
``pidfd_open``                 5.3      wait by ``waitpid`` in a helper, signal by pid
``pidfd_send_signal``          5.1      ``os.kill`` (a recycled pid can be hit)
``waitid(P_PIDFD)``            5.4      ``waitpid(pid)``
``PR_SET_CHILD_SUBREAPER``     3.4      orphans go to init (no reaping by us)
``PR_SET_PDEATHSIG``           2.1      none: the child outlives a killed parent
``/proc/PID/environ``, ``stat``  any    the process group is the only tree we know
=============================  =======  ==============================================

``FORKWELL_NO_PIDFD=1`` in the environment forces the fallbacks of the first
three rows on a kernel that has pidfds (read once, when this module is first
imported): the tests run every command that way, and an operator can use it
where a seccomp filter or a container runtime breaks pidfds.
"""

from __future__ import annotations

import errno
import os
import select
import sys
from typing import Any

from . import _clock

IS_LINUX = sys.platform.startswith("linux")
#: The switch documented above; children inherit it like any variable.
NO_PIDFD_VAR = "FORKWELL_NO_PIDFD"
HAVE_PIDFD = (
    IS_LINUX
    and hasattr(os, "pidfd_open")
    and hasattr(os, "P_PIDFD")
    and os.environ.get(NO_PIDFD_VAR) != "1"
)
HAVE_PROC = IS_LINUX and os.path.isdir("/proc/self")

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
PR_GET_CHILD_SUBREAPER = 37

_libc: Any = None


def _prctl(option: int, arg: int) -> int:
    """Call prctl(2) through ctypes (imported lazily: it costs ~4 ms at start-up)."""
    global _libc
    if _libc is None:
        import ctypes

        _libc = ctypes.CDLL(None, use_errno=True)
    rc: int = _libc.prctl(option, arg, 0, 0, 0)
    if rc == -1:
        import ctypes

        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return rc


def set_subreaper(enable: bool = True) -> bool:
    """Make this process a child subreaper; return False where unsupported."""
    if not IS_LINUX:
        return False
    try:
        _prctl(PR_SET_CHILD_SUBREAPER, 1 if enable else 0)
    except OSError:
        return False
    return True


def is_subreaper() -> bool:
    """True when this process is a child subreaper (or PID 1, which always reaps)."""
    if os.getpid() == 1:
        return True
    if not IS_LINUX:
        return False
    import ctypes

    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    value = ctypes.c_int(0)
    if _libc.prctl(PR_GET_CHILD_SUBREAPER, ctypes.byref(value), 0, 0, 0) != 0:
        return False
    return bool(value.value)


def make_pdeathsig_preexec(sig: int = 9) -> Any:  # SIGKILL
    """Return a ``preexec_fn`` that kills the child when this process dies.

    PDEATHSIG fires when the parent *thread* exits, so it must be set from the
    thread that will outlive the child (the CLI's main thread).  Because the
    parent may already be gone when the flag is set, the child checks ``getppid``
    afterwards and kills itself if it was re-parented meanwhile.
    """
    if not IS_LINUX:
        return None
    global _libc
    if _libc is None:
        import ctypes

        _libc = ctypes.CDLL(None, use_errno=True)
    libc = _libc
    parent = os.getpid()

    def preexec() -> None:
        libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:
            os.kill(os.getpid(), 9)  # SIGKILL

    return preexec


def pidfd_open(pid: int) -> int | None:
    """A pidfd for ``pid``, or None if the process is gone or pidfds are missing."""
    if not HAVE_PIDFD:
        return None
    try:
        return os.pidfd_open(pid)
    except ProcessLookupError:
        return None
    except OSError as exc:
        if exc.errno in (errno.ENOSYS, errno.EINVAL, errno.EPERM):
            return None
        raise


def wait_ready(fds: list[int], timeout: float | None, *, write: bool = False) -> list[int]:
    """Those of ``fds`` readable (or writable) within ``timeout`` seconds; None: no limit.

    poll(2), not select(2): select() cannot watch an fd numbered 1024 or
    more, and a supervisor of a few hundred programs holds thousands.
    """
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLOUT if write else select.POLLIN)
    return [fd for fd, _ in _clock.poll(poller, timeout)]


def pidfd_signal(pidfd: int, sig: int) -> bool:
    """Send ``sig`` through a pidfd; False if the process has already exited."""
    import signal  # here: the control client imports this module, and no signals

    try:
        signal.pidfd_send_signal(pidfd, sig)
    except ProcessLookupError:
        return False
    return True


def send_signal(pid: int, pidfd: int | None, sig: int) -> bool:
    """Signal through ``pidfd``; by pid only where there is none (Linux < 5.3).

    False if the process has already exited.
    """
    if pidfd is not None:
        return pidfd_signal(pidfd, sig)
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True


def last_pid() -> int | None:
    """The last PID the kernel allocated in our PID namespace, or None if unknown.

    A process cannot have descendants if no PID was allocated after its own: that
    is forkwell's fast path for "did the command leave anything behind?".
    """
    if not HAVE_PROC:
        return None
    try:
        with open("/proc/loadavg", "rb") as f:
            return int(f.read().split()[-1])
    except (OSError, ValueError, IndexError):
        return None


def free_fds() -> int | None:
    """How many more fds this process may open (RLIMIT_NOFILE), or None if unknown."""
    if not HAVE_PROC:
        return None
    import resource

    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return None
    try:
        used = len(os.listdir("/proc/self/fd")) - 1  # listdir's own fd
    except OSError:
        return 0
    return max(0, soft - used)


def close_fds_except(keep: set[int]) -> None:
    """Close every fd >= 3 except ``keep``, in a few syscalls (close_range on Linux)."""
    lo = 3
    for fd in sorted(k for k in keep if k >= 3):
        if fd > lo:
            os.closerange(lo, fd)
        lo = fd + 1
    os.closerange(lo, _max_fd())


def _max_fd() -> int:
    # os.closerange uses close_range(2) when the kernel has it, so a huge bound
    # costs nothing there; elsewhere it loops, and RLIMIT_NOFILE bounds the loop.
    if IS_LINUX:
        return 2**31 - 1
    try:
        return os.sysconf("SC_OPEN_MAX")
    except (ValueError, OSError):
        return 65536
