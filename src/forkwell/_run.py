"""``forkwell.run()``: a command with a deadline, its whole tree ended, always reaped.

The loop itself lives in :mod:`forkwell._core._driver`; it also serves ``forkwell
timeout`` (:mod:`forkwell._timeout`, which adds signal forwarding and reaping of
adopted orphans), and :func:`run_async` runs it in a thread and cancels it
through a pipe.

When the run ends, for whatever reason, nothing it started is still running:

* deadline: ``stop_signal`` to every process of the tree, ``grace`` seconds,
  then SIGKILL until none is left;
* the child exited by itself: whatever it left behind (background jobs,
  ``setsid``'d or double-forked descendants) is ended the same way, not waited
  for; the kernel's last allocated PID tells in O(1) when there can be none;
* an exception (KeyboardInterrupt, a cancelled task): the same, then re-raise.
"""

from __future__ import annotations

import _thread
import math
import os
import signal
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, ParamSpec

from ._core import _clock, _process
from ._core._driver import Capture, Driver, Hooks, Phase, Policy, Pumps
from ._core._process import Process, StrPath, spawn
from ._exceptions import CommandFailedError, CommandTimedOutError


@dataclass(frozen=True)
class RunResult:
    """What :func:`run` saw.  ``returncode`` is ``subprocess``-style (-N = signal N)."""

    args: list[str]
    pid: int
    returncode: int
    stdout: Any  # bytes, or str with text=True, or None when not captured
    stderr: Any
    timed_out: bool
    duration: float
    stdout_omitted: int = 0  # bytes cut from the middle by max_output
    stderr_omitted: int = 0

    def check_returncode(self) -> None:
        """Raise :class:`CommandTimedOutError` / :class:`CommandFailedError` on failure."""
        if self.timed_out:
            raise CommandTimedOutError(self)
        if self.returncode != 0:
            raise CommandFailedError(self)


def _argv(args: StrPath | Sequence[StrPath], shell: bool) -> list[str]:
    if shell:
        if not isinstance(args, str | os.PathLike):
            raise TypeError("with shell=True, args must be a string")
        return ["/bin/sh", "-c", os.fspath(args)]
    if isinstance(args, str | bytes | os.PathLike):
        return [os.fsdecode(args)]
    return [os.fsdecode(a) for a in args]


def _validate(timeout: float | None, grace: float, max_output: int | None) -> None:
    if timeout is not None and (math.isnan(timeout) or timeout < 0):
        raise ValueError(f"timeout must be a number of seconds >= 0, got {timeout!r}")
    if math.isnan(grace) or grace < 0:
        raise ValueError(f"grace must be a number of seconds >= 0, got {grace!r}")
    if max_output is not None and max_output < 0:
        raise ValueError(f"max_output must be >= 0 bytes, got {max_output!r}")


def run(  # noqa: PLR0913 (subprocess.run's keywords, plus the deadline's)
    args: StrPath | Sequence[StrPath],
    *,
    timeout: float | None = None,
    grace: float = 5.0,
    stop_signal: int = signal.SIGTERM,
    capture_output: bool = False,
    input: bytes | str | None = None,
    cwd: StrPath | None = None,
    env: Mapping[str, str] | None = None,
    max_output: int | None = None,
    check: bool = False,
    shell: bool = False,
    text: bool = False,
    stdin: _process.FileArg = None,
    stdout: _process.FileArg = None,
    stderr: _process.FileArg = None,
) -> RunResult:
    """Run a command to completion; end its whole process tree; return a :class:`RunResult`.

    Never returns while the child or any descendant still runs (Linux).  When
    ``timeout`` passes, every process of the tree gets ``stop_signal``, then
    SIGKILL after ``grace`` seconds.  When the child exits by itself, whatever it
    left running is ended the same way (not waited for).

    ``capture_output`` collects stdout and stderr (bytes, or str with ``text``);
    ``max_output`` bounds each to that many bytes, keeping the head and the tail
    around a marker.  ``check`` raises :class:`CommandFailedError` (or
    :class:`CommandTimedOutError`) carrying the result.  Spawn failures raise
    :class:`SpawnError` subclasses (all ``OSError``) naming the command.
    """
    _validate(timeout, grace, max_output)
    argv = _argv(args, shell)
    data = input.encode() if isinstance(input, str) else input
    if capture_output:
        if stdout is not None or stderr is not None:
            raise ValueError("stdout and stderr arguments may not be used with capture_output")
        stdout = stderr = _process.PIPE
    if data is not None:
        if stdin is not None:
            raise ValueError("stdin and input arguments may not both be used")
        stdin = _process.PIPE
    cancel_fd = _cancel_fds.get(_thread.get_ident())
    proc = spawn(argv, stdin=stdin, stdout=stdout, stderr=stderr, cwd=cwd, env=env)
    policy = Policy(timeout=timeout, grace=grace, stop_signal=stop_signal)
    if stdout is None and stderr is None and data is None and cancel_fd is None:
        # Nothing to pump: wait on the pidfd alone.  This is the hot path of
        # run(["/bin/true"]), kept within a few percent of subprocess.run.
        result = _wait_only(proc, argv, policy)
    else:
        result = _drive(proc, argv, policy, _Io(data, max_output, text, cancel_fd))
    if check:
        result.check_returncode()
    return result


def _wait_only(proc: Process, argv: list[str], policy: Policy) -> RunResult:
    """No pipes to pump: one wait on the pidfd, the loop only if something is left."""
    try:
        proc.wait(policy.timeout)
    except BaseException:
        proc.terminate_tree(policy.stop_signal, policy.grace)
        proc.close()
        raise
    tree = proc.tree
    if proc.returncode is None or (tree is not None and tree.may_have_descendants()):
        # The deadline passed, or the child may have left descendants: the loop ends them.
        return _drive(proc, argv, policy)
    proc.close()
    duration = _clock.monotonic() - proc.started
    return RunResult(argv, proc.pid, proc.returncode, None, None, False, duration)


class _Io(NamedTuple):
    """What one run pumps: the input to write, and how to keep the output."""

    data: bytes | None = None
    max_output: int | None = None
    text: bool = False
    cancel_fd: int | None = None  # readable: run_async's task was cancelled


_NO_IO = _Io()


def _drive(proc: Process, argv: list[str], policy: Policy, io: _Io = _NO_IO) -> RunResult:
    """Run the loop: pump input and output, keep the deadline, end the tree."""
    data, max_output, text, cancel_fd = io
    captures: dict[int, Capture] = {}
    out_cap = err_cap = None
    if proc.stdout is not None:
        out_cap = captures[proc.stdout.fileno()] = Capture(max_output)
    if proc.stderr is not None:
        err_cap = captures[proc.stderr.fileno()] = Capture(max_output)
    driver = Driver(proc, policy, Pumps(data, captures), Hooks(wake_fd=cancel_fd))
    if cancel_fd is not None:

        def cancelled(_: bytes) -> None:
            if driver.phase is Phase.RUNNING:
                driver.begin_termination(policy.stop_signal, policy.grace, include_root=True)

        driver.on_wake = cancelled
    try:
        driver.run()
    finally:
        proc.close()
    rc = proc.returncode
    assert rc is not None  # the loop returns only once the child is reaped

    def out(cap: Capture | None) -> Any:
        if cap is None:
            return None
        value = cap.value()
        return value.decode(errors="replace") if text else value

    return RunResult(
        args=argv,
        pid=proc.pid,
        returncode=rc,
        stdout=out(out_cap),
        stderr=out(err_cap),
        timed_out=driver.timed_out,
        duration=_clock.monotonic() - proc.started,
        stdout_omitted=out_cap.omitted if out_cap else 0,
        stderr_omitted=err_cap.omitted if err_cap else 0,
    )


# run_async() runs run() in a worker thread and cancels it through a pipe; the
# read end reaches that thread's run() here, keyed by the thread, so that no
# private parameter shows in run()'s signature.
_cancel_fds: dict[int, int] = {}

_P = ParamSpec("_P")
_AsyncRun = Callable[_P, Coroutine[Any, Any, RunResult]]


def _same_arguments_as(
    sync: Callable[_P, RunResult],
) -> Callable[[Callable[..., Coroutine[Any, Any, RunResult]]], _AsyncRun[_P]]:
    """Give the async twin ``sync``'s parameters, for the type checker and ``help()``."""

    def adopt(twin: Callable[..., Coroutine[Any, Any, RunResult]]) -> _AsyncRun[_P]:
        twin.__wrapped__ = sync  # type: ignore[attr-defined]  # inspect.signature follows it
        return twin

    return adopt


@_same_arguments_as(run)
async def run_async(*args: Any, **kwargs: Any) -> RunResult:
    """The asyncio twin of :func:`run`, with the same arguments and guarantees.

    The run happens in a thread of its own; cancelling the awaiting task ends
    the whole tree (``stop_signal``, ``grace``, SIGKILL) *before* the
    cancellation propagates, so nothing outlives the task.
    """
    import asyncio
    import threading

    loop = asyncio.get_running_loop()
    future: asyncio.Future[RunResult] = loop.create_future()
    cancel_r, cancel_w = os.pipe()

    def settle(result: RunResult | None, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            assert result is not None
            future.set_result(result)

    def worker() -> None:
        _cancel_fds[_thread.get_ident()] = cancel_r
        try:
            result = run(*args, **kwargs)
        except BaseException as exc:
            loop.call_soon_threadsafe(settle, None, exc)
        else:
            loop.call_soon_threadsafe(settle, result, None)
        finally:
            del _cancel_fds[_thread.get_ident()]

    thread = threading.Thread(target=worker, name="forkwell.run_async", daemon=True)
    thread.start()
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        os.write(cancel_w, b"c")
        # Wait for the tree to be gone even if we are cancelled again meanwhile.
        while not future.done():
            try:
                await asyncio.shield(future)
            except asyncio.CancelledError:
                continue
            except BaseException:
                break
        raise
    finally:
        if future.done() and not future.cancelled():
            future.exception()  # mark retrieved
        await asyncio.shield(loop.run_in_executor(None, thread.join))
        os.close(cancel_r)
        os.close(cancel_w)
