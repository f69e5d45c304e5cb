"""``forkwell.run()``: a command with a deadline, its whole tree ended, always reaped.

The loop itself lives in :mod:`forkwell._core._driver`; it also serves ``forkwell
timeout`` (which adds signal forwarding and reaping of adopted orphans), and
:func:`run_async` runs it in a thread and cancels it through a pipe.

When the run ends, for whatever reason, nothing it started is still running:

* deadline: ``stop_signal`` to every process of the tree, ``grace`` seconds,
  then SIGKILL until none is left;
* the child exited by itself: whatever it left behind (background jobs,
  ``setsid``'d or double-forked descendants) is ended the same way, not waited
  for; the kernel's last allocated PID tells in O(1) when there can be none;
* an exception (KeyboardInterrupt, a cancelled task): the same, then re-raise.
"""

from __future__ import annotations

import math
import os
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ._core import _process
from ._core._driver import _Capture, _Driver, _Phase
from ._core._process import StrPath, spawn
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


def run(
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
    _cancel_fd: int | None = None,
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
    proc = spawn(argv, stdin=stdin, stdout=stdout, stderr=stderr, cwd=cwd, env=env)
    if stdout is None and stderr is None and data is None and _cancel_fd is None:
        # Nothing to pump: wait on the pidfd alone.  This is the hot path of
        # run(["/bin/true"]), kept within a few percent of subprocess.run.
        try:
            proc.wait(timeout)
        except BaseException:
            proc.terminate_tree(stop_signal, grace)
            proc.close()
            raise
        tree = proc.tree
        if proc.returncode is not None and (tree is None or not tree.may_have_descendants()):
            proc.close()
            result = RunResult(argv, proc.pid, proc.returncode, None, None, False,
                               time.monotonic() - proc.started)
            if check:
                result.check_returncode()
            return result
    captures: dict[int, _Capture] = {}
    out_cap = err_cap = None
    if proc.stdout is not None:
        out_cap = captures[proc.stdout.fileno()] = _Capture(max_output)
    if proc.stderr is not None:
        err_cap = captures[proc.stderr.fileno()] = _Capture(max_output)
    driver = _Driver(
        proc,
        timeout=timeout,
        grace=grace,
        stop_signal=stop_signal,
        input=data,
        captures=captures,
        wake_fd=_cancel_fd,
        on_wake=None,
    )
    if _cancel_fd is not None:

        def cancelled(_: bytes) -> None:
            if driver.phase is _Phase.RUNNING:
                driver.begin_termination(stop_signal, grace, include_root=True)

        driver.on_wake = cancelled
    try:
        driver.run()
    finally:
        proc.close()
    rc = proc.returncode
    assert rc is not None

    def out(cap: _Capture | None) -> Any:
        if cap is None:
            return None
        value = cap.value()
        return value.decode(errors="replace") if text else value

    result = RunResult(
        args=argv,
        pid=proc.pid,
        returncode=rc,
        stdout=out(out_cap),
        stderr=out(err_cap),
        timed_out=driver.timed_out,
        duration=time.monotonic() - proc.started,
        stdout_omitted=out_cap.omitted if out_cap else 0,
        stderr_omitted=err_cap.omitted if err_cap else 0,
    )
    if check:
        result.check_returncode()
    return result


async def run_async(
    args: StrPath | Sequence[StrPath],
    **kwargs: Any,
) -> RunResult:
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
        try:
            result = run(args, _cancel_fd=cancel_r, **kwargs)
        except BaseException as exc:
            loop.call_soon_threadsafe(settle, None, exc)
        else:
            loop.call_soon_threadsafe(settle, result, None)

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
