"""FileLock between forked processes, and the inherited-flock trap it avoids."""

from __future__ import annotations

import fcntl
import os
import select
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import forkwell

pytestmark = pytest.mark.timeout(30)


def fork_child(body: Callable[[], int]) -> int:
    """Fork; the child runs ``body`` and exits with its result (never returns here)."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = body()
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            os._exit(code)
    return pid


def wait_exit(pid: int, timeout: float = 20.0) -> int:
    deadline = time.monotonic() + timeout
    while True:
        got, status = os.waitpid(pid, os.WNOHANG)
        if got:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() >= deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError(f"child {pid} did not exit within {timeout}s")
        select.select([], [], [], 0.005)


def read_byte(fd: int, timeout: float = 20.0) -> bytes:
    ready, _, _ = select.select([fd], [], [], timeout)
    assert ready, "no handshake from the child"
    return os.read(fd, 1)


def test_8_workers_append_without_interleaving_or_loss(tmp_path: Path) -> None:
    log = tmp_path / "shared.log"
    lock = forkwell.FileLock(tmp_path / "shared.lock")  # made before fork, as servers do
    go_r, go_w = os.pipe()
    lines_each = 150

    def worker(n: int) -> Callable[[], int]:
        def body() -> int:
            os.close(go_w)
            assert os.read(go_r, 1) == b""  # all start together, at the parent's close
            fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
            for i in range(lines_each):
                with lock:
                    # One line in three writes: only the lock keeps them together.
                    os.write(fd, f"worker={n} ".encode())
                    os.write(fd, f"line={i} ".encode())
                    os.write(fd, b"end\n")
            return 0

        return body

    pids = [fork_child(worker(n)) for n in range(8)]
    os.close(go_r)
    os.close(go_w)
    assert [wait_exit(p) for p in pids] == [0] * 8
    lines = log.read_text().splitlines()
    assert len(lines) == 8 * lines_each
    seen = set()
    for line in lines:
        parts = line.split()
        assert len(parts) == 3 and parts[2] == "end", f"interleaved: {line!r}"
        seen.add((parts[0], parts[1]))
    assert len(seen) == 8 * lines_each  # none lost, none duplicated


def test_negative_control_inherited_flock_is_no_lock(tmp_path: Path) -> None:
    """The trap: a lock taken through an inherited fd does not exclude the parent."""
    path = tmp_path / "trap.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # the parent holds it...

    def child() -> int:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # ...and so, at once, does the child
        except BlockingIOError:
            return 1
        return 0

    try:
        assert wait_exit(fork_child(child)) == 0
    finally:
        os.close(fd)


def test_filelock_excludes_a_child_forked_while_held(tmp_path: Path) -> None:
    lock = forkwell.FileLock(tmp_path / "held.lock")
    lock.acquire()
    report_r, report_w = os.pipe()

    def child() -> int:
        os.close(report_r)
        assert not lock.locked  # the copy is not held here
        try:
            lock.acquire(timeout=0)
        except forkwell.LockTimeoutError:
            os.write(report_w, b"E")  # excluded, as a lock must
        else:
            os.write(report_w, b"!")
            return 1
        lock.acquire(timeout=10)  # granted once the parent releases
        os.write(report_w, b"G")
        lock.release()
        return 0

    pid = fork_child(child)
    os.close(report_w)
    try:
        assert read_byte(report_r) == b"E"
        lock.release()
        assert read_byte(report_r) == b"G"
        assert wait_exit(pid) == 0
    finally:
        os.close(report_r)


def test_timeout_raises_after_about_the_timeout(tmp_path: Path) -> None:
    path = tmp_path / "busy.lock"
    holder = forkwell.FileLock(path)
    holder.acquire()
    try:
        other = forkwell.FileLock(path, timeout=0.2)
        t0 = time.monotonic()
        with pytest.raises(forkwell.LockTimeoutError) as exc:
            other.acquire()
        elapsed = time.monotonic() - t0
        assert 0.2 <= elapsed < 2.0
        assert isinstance(exc.value, TimeoutError)
        assert "within 0.2s" in str(exc.value)
        assert not other.locked
    finally:
        holder.release()
    with forkwell.FileLock(path, timeout=0):  # free again
        pass


def test_lock_dies_with_its_holder(tmp_path: Path) -> None:
    path = tmp_path / "dead.lock"
    ready_r, ready_w = os.pipe()
    block_r, block_w = os.pipe()

    def child() -> int:
        os.close(ready_r)
        os.close(block_w)
        forkwell.FileLock(path).acquire()
        os.write(ready_w, b"L")
        os.read(block_r, 1)  # held until killed: nobody writes to this pipe
        return 0

    pid = fork_child(child)
    os.close(ready_w)
    os.close(block_r)
    try:
        assert read_byte(ready_r) == b"L"
        with pytest.raises(forkwell.LockTimeoutError):
            forkwell.FileLock(path).acquire(timeout=0)
    finally:
        os.kill(pid, signal.SIGKILL)
        assert wait_exit(pid) == -signal.SIGKILL
        os.close(ready_r)
        os.close(block_w)
    with forkwell.FileLock(path, timeout=5):  # released by the kernel at the holder's death
        pass


def test_misuse_is_a_state_error(tmp_path: Path) -> None:
    lock = forkwell.FileLock(tmp_path / "x.lock")
    with pytest.raises(forkwell.StateError):
        lock.release()
    with lock:
        assert lock.locked
        assert "held" in repr(lock)
        with pytest.raises(forkwell.StateError):
            lock.acquire()
    assert not lock.locked
