"""The process core: spawn a command, wait for it, signal it, end its whole tree.

Everything in forkwell that starts a program goes through :func:`spawn`.

* Spawning uses ``subprocess.Popen``'s C path (vfork/posix_spawn + exec), so
  its cost does not grow with the parent's memory, unlike a Python ``fork()``.
  ``pdeathsig`` needs code between fork and exec and so takes the slower
  fork path; only dedicated processes (the CLI) ask for it.
* Waiting uses a pidfd (Linux >= 5.3): :meth:`Process.fileno` can sit in any
  selector or event loop, and nothing polls.  Elsewhere ``waitpid`` is used.
* Signals go through ``pidfd_send_signal``, so they cannot reach a recycled PID.
* :meth:`Process.terminate_tree` ends the child and every descendant (see
  :mod:`forkwell._core._tree` for how the tree is found) and reaps the child.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Any, TypeVar

from .._exceptions import spawn_error
from . import _clock, _proc, _sys, _tree
from ._status import waitid_returncode

StrPath = str | os.PathLike[str]
ProcessArgs = Sequence[StrPath]
FileArg = int | IO[Any] | None

PIPE = subprocess.PIPE
DEVNULL = subprocess.DEVNULL
STDOUT = subprocess.STDOUT


_T = TypeVar("_T")


class _FromFactory(type):
    """A metaclass for classes whose objects only a factory function makes.

    ``Process(...)`` raises ``TypeError`` naming the factory; the factory
    calls ``Process._create(...)``.  (trio's ``NoPublicConstructor``.)
    """

    _factory = "its factory function"

    def __call__(cls, *args: object, **kwargs: object) -> Any:
        name = f"forkwell.{cls.__qualname__}"
        raise TypeError(f"{name} has no public constructor; use {cls._factory}")

    def _create(cls: type[_T], *args: object, **kwargs: object) -> _T:
        return super().__call__(*args, **kwargs)  # type: ignore[misc, no-any-return]


class Process(metaclass=_FromFactory):
    """A spawned child.  Get one from :func:`spawn`; there is no public constructor.

    ``returncode`` follows ``subprocess``: the exit code, or ``-N`` when the
    child died of signal N, or None while it runs.
    """

    _factory = "forkwell.spawn()"
    args: list[str]
    pid: int
    tree: _tree.Tree | None

    def __init__(
        self,
        popen: subprocess.Popen[bytes],
        args: list[str],
        token: str | None,
        not_before: int = 0,
    ):
        self._popen = popen
        self.args = args
        self.pid = popen.pid
        self.started = _clock.monotonic()
        # Open the pidfd at once: the child cannot be reaped (and its pid
        # recycled) before we wait for it, so this refers to our child.
        self._pidfd = _sys.pidfd_open(self.pid)
        # Without /proc no cookie can be read: a Tree would find no member, not
        # even the root, and signal nobody.  The process group is then the tree.
        tracked = token is not None and _sys.HAVE_PROC
        self.tree = _tree.Tree(token, self.pid, not_before) if token and tracked else None
        self.stdin = popen.stdin
        self.stdout = popen.stdout
        self.stderr = popen.stderr

    def __repr__(self) -> str:
        state = "running" if self.returncode is None else f"returncode={self.returncode}"
        return f"<forkwell.Process pid={self.pid} {self.args[0]!r} {state}>"

    @property
    def returncode(self) -> int | None:
        return self._popen.returncode

    def fileno(self) -> int:
        """The pidfd: readable once the child has exited.  -1 without pidfd support."""
        return -1 if self._pidfd is None else self._pidfd

    def poll(self) -> int | None:
        """Reap the child if it has exited; return ``returncode``."""
        if self._popen.returncode is None:
            if self._pidfd is not None:
                if not _sys.wait_ready([self._pidfd], 0):
                    return None
                self._popen.wait()
            else:
                self._popen.poll()
        return self._popen.returncode

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait for the child to exit and reap it; None if ``timeout`` passed first."""
        if self._popen.returncode is not None:
            return self._popen.returncode
        if self._pidfd is not None:
            if timeout is not None and not _sys.wait_ready([self._pidfd], timeout):
                return None
            # One blocking syscall on the pidfd reaps exactly our child.
            try:
                res = os.waitid(os.P_PIDFD, self._pidfd, os.WEXITED)
            except ChildProcessError:
                return self._popen.wait()  # reaped elsewhere; let Popen sort it out
            assert res is not None  # only WNOHANG returns None
            self._popen.returncode = waitid_returncode(res)
            return self._popen.returncode
        try:
            return self._popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def _set_reaped(self, returncode: int) -> None:
        """Record a status reaped elsewhere (a dedicated process reaping with waitpid(-1))."""
        self._popen.returncode = returncode

    def send_signal(self, sig: int) -> bool:
        """Signal the child only; False if it has already exited or been reaped."""
        if self._popen.returncode is not None:
            return False
        if self._pidfd is not None:
            return _sys.pidfd_signal(self._pidfd, sig)
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            return False
        return True

    def signal_tree(self, sig: int) -> None:
        """Send ``sig`` to the child and every descendant (no escalation)."""
        if self.tree is not None:
            self.tree.signal(sig)
        else:
            self._signal_group(sig)

    def _signal_group(self, sig: int) -> None:
        if self._popen.returncode is None:
            try:
                os.killpg(self.pid, sig)
            except OSError:
                self.send_signal(sig)

    def terminate_tree(self, stop_signal: int = signal.SIGTERM, grace: float = 5.0) -> int:
        """End the child and all its descendants, reap the child, return ``returncode``.

        ``stop_signal`` goes to every process of the tree; whoever is left after
        ``grace`` seconds gets SIGKILL.  Returns early once all are gone.
        """
        if self.tree is not None:
            _tree.terminate_tree(self.tree, stop_signal, grace)
            # The root is gone (killed or exited): reap it.
            if self._popen.returncode is None:
                self.send_signal(signal.SIGKILL)
                self._popen.wait()
            self.tree.kill_all()
        else:
            self._signal_group(stop_signal)
            if self.wait(grace) is None:
                self._signal_group(signal.SIGKILL)
                self._popen.wait()
        rc = self._popen.returncode
        assert rc is not None
        return rc

    def end_descendants(self, stop_signal: int = signal.SIGTERM, grace: float = 5.0) -> bool:
        """After the child has exited: end whatever it left running.  True if any."""
        if self.tree is None or not self.tree.may_have_descendants():
            return False
        if not self.tree.members(include_root=False):
            return False
        _tree.terminate_tree(self.tree, stop_signal, grace, include_root=False)
        return True

    def close(self) -> None:
        """Release the pidfd and pipes.  The child must have been reaped."""
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None
        if self.tree is not None:
            self.tree.close()
        for stream in (self.stdin, self.stdout, self.stderr):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass

    def __enter__(self) -> Process:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.returncode is None:
            self.terminate_tree()
        self.close()


def _command_name(args: ProcessArgs) -> str:
    return os.fsdecode(args[0]) if args else ""


def find_executable(command: str, search: str) -> str | None:
    """The file ``execvp`` would run for ``command`` along ``search`` (a PATH value).

    None when ``command`` has a slash, is not found, or the search reaches a
    relative entry (it depends on the child's cwd): exec then searches itself.
    Popen joins every entry in Python and the child tries ``execve`` on each
    in turn; a caller starting one command many times looks it up once.
    """
    if not command or "/" in command:
        return None
    for directory in search.split(os.pathsep):
        if not directory.startswith("/"):
            return None
        path = os.path.join(directory, command)
        try:
            st = os.stat(path)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) and os.access(path, os.X_OK):
            return path
    return None


def _with_cookie(
    env: Mapping[str, str] | None, token: str
) -> Mapping[str, str] | Mapping[bytes, bytes]:
    """The child's environment: ``env`` (default ours) with the tree's cookie added."""
    if env is not None:
        senv = dict(env)
        senv[_tree.COOKIE_VAR] = _tree.cookie_value(senv.get(_tree.COOKIE_VAR), token)
        return senv
    # Bytes avoid decoding and re-encoding the whole environment on every
    # spawn; os.environ's own bytes dict copies in C (CPython keeps it in
    # ``_data``; other implementations take the slower public path).
    raw = getattr(os.environ, "_data", None)
    benv: dict[bytes, bytes] = dict(raw) if isinstance(raw, dict) else dict(os.environb)
    key = _tree.COOKIE_VAR.encode()
    outer = benv.get(key)
    benv[key] = _tree.cookie_value(None if outer is None else outer.decode(), token).encode()
    return benv


def _then(
    first: Callable[[], None] | None, second: Callable[[], None] | None
) -> Callable[[], None] | None:
    """One ``preexec_fn`` that runs ``first`` then ``second`` (either may be None)."""
    if first is None or second is None:
        return first or second

    def both() -> None:
        first()
        second()

    return both


def spawn(  # noqa: PLR0913 (subprocess.Popen's keywords, plus the tree's)
    args: ProcessArgs,
    *,
    stdin: FileArg = None,
    stdout: FileArg = None,
    stderr: FileArg = None,
    cwd: StrPath | None = None,
    env: Mapping[str, str] | None = None,
    pass_fds: Sequence[int] = (),
    new_process_group: bool = True,
    new_session: bool = False,
    track_tree: bool = True,
    pdeathsig: int | None = None,
    user: str | int | None = None,
    group: str | int | None = None,
    extra_groups: Sequence[str | int] | None = None,
    umask: int = -1,
    preexec_fn: Callable[[], None] | None = None,
    executable: str | None = None,
) -> Process:
    """Start ``args`` (an argv list, no shell) and return its :class:`Process`.

    ``track_tree`` marks the child and all its descendants with a cookie so
    :meth:`Process.terminate_tree` can find them.  ``new_process_group`` (the
    default) puts it in a group of its own, the fallback where ``/proc`` is
    missing.  ``executable``: the file to run, already found (see
    :func:`find_executable`), ``args[0]`` being only the name it is given.
    Raises a :class:`~forkwell.SpawnError` subclass naming the command.
    """
    argv = [os.fsdecode(a) for a in args]
    if not argv:
        raise ValueError("cannot spawn an empty command")
    token = _tree.new_token() if track_tree else None
    child_env = env if token is None else _with_cookie(env, token)
    if pdeathsig is not None:
        preexec_fn = _then(_sys.make_pdeathsig_preexec(pdeathsig), preexec_fn)
    # A tick of margin: starttime is rounded down to clock ticks.
    not_before = _proc.boot_ticks() - 1 if track_tree else 0
    try:
        popen = subprocess.Popen(
            argv,
            executable=executable,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            cwd=cwd,
            env=child_env,
            pass_fds=tuple(pass_fds),
            close_fds=True,
            start_new_session=new_session,
            process_group=0 if (new_process_group and not new_session) else None,
            preexec_fn=preexec_fn,  # noqa: PLW1509 (only pdeathsig/callers that accept the risk)
            umask=umask,
            user=user,
            group=group,
            extra_groups=extra_groups,
        )
    except OSError as exc:
        raise spawn_error(exc, argv[0], None if cwd is None else os.fsdecode(cwd)) from None
    return Process._create(popen, argv, token, not_before)
