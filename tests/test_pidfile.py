"""forkwell.Pidfile: the kernel lock, not the file's content, decides who runs."""

from __future__ import annotations

import os
import pwd
import signal
import subprocess
from pathlib import Path

import pytest
from helpers import IS_ROOT, PY, running, wait_until

import forkwell
from forkwell._daemon._pidfile import Pidfile, PidfileState

HOLD = """
import sys
from forkwell import Pidfile
pf = Pidfile(sys.argv[1]).acquire()
print("held", flush=True)
sys.stdin.read()
pf.release()
"""


def _holder(path: Path) -> subprocess.Popen[str]:
    """A child that holds ``path`` until its stdin closes; returns once it holds it."""
    child = subprocess.Popen(
        [PY, "-c", HOLD, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    assert child.stdout.readline() == "held\n"
    return child


def _release(child: subprocess.Popen[str]) -> None:
    assert child.stdin is not None
    child.stdin.close()
    assert child.wait(timeout=10) == 0
    _close(child)


def _kill(child: subprocess.Popen[str]) -> None:
    child.kill()
    child.wait(timeout=10)
    _close(child)


def _close(child: subprocess.Popen[str]) -> None:
    for stream in (child.stdin, child.stdout):
        if stream is not None:
            try:
                stream.close()
            except BrokenPipeError:
                pass


def _probe_from_child(path: Path) -> str:
    code = "import sys; from forkwell._daemon._pidfile import Pidfile; print(Pidfile.probe(sys.argv[1]))"
    return subprocess.run(
        [PY, "-c", code, str(path)], capture_output=True, text=True, check=True, timeout=30
    ).stdout


def test_acquire_writes_pid_and_locks(tmp_path: Path) -> None:
    path = tmp_path / "app.pid"
    with forkwell.Pidfile(path) as pf:
        assert pf.locked
        # Read through the locked fd: opening and closing the file in this
        # process would drop our POSIX lock (the documented fcntl trap).
        assert os.pread(pf.fileno(), 64, 0) == f"{os.getpid()}\n".encode()
        # Answered from memory: opening the file here would drop our POSIX lock.
        assert Pidfile.holder(path) == os.getpid()
        # Another process sees the lock through F_GETLK, with our pid.
        assert f"pid={os.getpid()}" in _probe_from_child(path)
        assert "RUNNING" in _probe_from_child(path)
        locks = Path("/proc/locks").read_text()
        inode = os.stat(path).st_ino
        assert any(
            "POSIX" in line and "WRITE" in line and f" {os.getpid()} " in line and f":{inode} " in line
            for line in locks.splitlines()
        ), locks
    assert not path.exists()
    assert Pidfile.probe(path).state is PidfileState.ABSENT


def test_second_acquire_in_same_process_is_refused_and_keeps_lock(tmp_path: Path) -> None:
    path = tmp_path / "app.pid"
    with Pidfile(path):
        with pytest.raises(forkwell.PidfileLockedError) as info:
            Pidfile(path).acquire()
        assert info.value.pid == os.getpid()
        assert "RUNNING" in _probe_from_child(path)


def test_held_by_another_process(tmp_path: Path) -> None:
    path = tmp_path / "app.pid"
    child = _holder(path)
    try:
        with pytest.raises(forkwell.PidfileLockedError) as info:
            Pidfile(path).acquire()
        assert info.value.pid == child.pid
        assert isinstance(info.value, BlockingIOError)
        # A failed attempt must not truncate the holder's file.
        assert path.read_text() == f"{child.pid}\n"
        assert Pidfile.holder(path) == child.pid
    finally:
        _release(child)
    assert not path.exists()


def test_kill_9_leaves_stale_file_that_is_taken_over(tmp_path: Path) -> None:
    path = tmp_path / "app.pid"
    child = _holder(path)
    _kill(child)
    status = Pidfile.probe(path)
    assert status.state is PidfileState.STALE
    assert status.pid == child.pid
    with Pidfile(path) as pf:
        assert os.pread(pf.fileno(), 64, 0) == f"{os.getpid()}\n".encode()


def test_live_unrelated_pid_in_unlocked_file_is_stale(tmp_path: Path) -> None:
    path = tmp_path / "app.pid"
    # Our own pid: alive, yet it does not hold the lock, so the file is stale.
    path.write_text(f"{os.getpid()}\n")
    assert Pidfile.probe(path).state is PidfileState.STALE
    assert Pidfile.holder(path) is None


def test_empty_file_reads_as_absent(tmp_path: Path) -> None:
    path = tmp_path / "app.pid"
    path.write_text("")
    assert Pidfile.probe(path).state is PidfileState.ABSENT


def test_symlink_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.write_text("precious\n")
    link = tmp_path / "app.pid"
    link.symlink_to(target)
    with pytest.raises(forkwell.PidfileError, match="symlink"):
        Pidfile(link).acquire()
    assert target.read_text() == "precious\n"
    assert Pidfile.probe(link).state is PidfileState.UNKNOWN


def test_directory_in_the_way_is_refused(tmp_path: Path) -> None:
    (tmp_path / "app.pid").mkdir()
    with pytest.raises(forkwell.PidfileError):
        Pidfile(tmp_path / "app.pid").acquire()
    assert Pidfile.probe(tmp_path / "app.pid").state is PidfileState.UNKNOWN


def test_missing_directory_names_it(tmp_path: Path) -> None:
    with pytest.raises(forkwell.PidfileError, match="no/such"):
        Pidfile(tmp_path / "no" / "such" / "app.pid").acquire()


@pytest.mark.root
def test_world_writable_directory_of_another_user(tmp_path: Path) -> None:
    if not IS_ROOT:
        pytest.skip("needs root to make a directory and a file owned by another user")
    nobody = pwd.getpwnam("nobody")
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chown(shared, nobody.pw_uid, nobody.pw_gid)
    shared.chmod(0o1777)
    planted = shared / "planted.pid"
    planted.write_text("")
    os.chown(planted, nobody.pw_uid, nobody.pw_gid)
    with pytest.raises(forkwell.PidfileError, match="world-writable"):
        Pidfile(planted).acquire()
    # A file we create ourselves there is fine.
    with Pidfile(shared / "ours.pid"):
        assert (shared / "ours.pid").stat().st_uid == os.geteuid()


def test_release_in_forked_child_keeps_parent_lock(tmp_path: Path) -> None:
    path = tmp_path / "app.pid"
    with Pidfile(path) as pf:
        pid = os.fork()
        if pid == 0:
            pf.release()
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert path.exists()
        assert "RUNNING" in _probe_from_child(path)


def test_remove_stale(tmp_path: Path) -> None:
    path = tmp_path / "app.pid"
    child = _holder(path)
    try:
        assert Pidfile.remove_stale(path) is False
        assert path.exists()
    finally:
        _kill(child)
    assert Pidfile.remove_stale(path, expect_pid=child.pid + 1) is False
    assert Pidfile.remove_stale(path, expect_pid=child.pid) is True
    assert not path.exists()
    assert Pidfile.remove_stale(path) is False


def test_concurrent_acquires_exactly_one_wins(tmp_path: Path) -> None:
    path = tmp_path / "app.pid"
    gate = tmp_path / "go"
    code = """
import os, select, sys
from forkwell import Pidfile, PidfileLockedError
gate = sys.argv[2]
while not os.path.exists(gate):
    select.select([], [], [], 0.002)
try:
    pf = Pidfile(sys.argv[1]).acquire()
except PidfileLockedError as exc:
    print("lost", exc.pid, flush=True)
else:
    print("won", os.getpid(), flush=True)
    sys.stdin.read()
    pf.release()
"""
    children = [
        subprocess.Popen(
            [PY, "-c", code, str(path), str(gate)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(10)
    ]
    try:
        gate.touch()
        results = []
        for child in children:
            assert child.stdout is not None
            results.append(child.stdout.readline().split())
        winners = [int(r[1]) for r in results if r[0] == "won"]
        assert len(winners) == 1, results
        assert all(int(r[1]) == winners[0] for r in results if r[0] == "lost"), results
        assert path.read_text() == f"{winners[0]}\n"
    finally:
        for child in children:
            assert child.stdin is not None
            child.stdin.close()
        for child in children:
            child.wait(timeout=10)
            _close(child)
    assert not path.exists()


def test_state_errors(tmp_path: Path) -> None:
    pf = Pidfile(tmp_path / "app.pid")
    with pytest.raises(forkwell.StateError):
        pf.fileno()
    pf.acquire()
    with pytest.raises(forkwell.StateError):
        pf.acquire()
    pf.release()
    pf.release()  # idempotent


def test_holder_process_signalled_by_pid_from_lock_not_content(tmp_path: Path) -> None:
    """Content can lie (an old pid); the lock holder is what `holder()` reports."""
    path = tmp_path / "app.pid"
    child = _holder(path)
    try:
        # Only a process holding the lock could rewrite the file legitimately;
        # an outsider scribbling another pid there changes nothing.
        path.write_text("1\n")
        assert Pidfile.holder(path) == child.pid
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        _close(child)
    wait_until(lambda: not running(child.pid), 5, "holder gone")
    assert Pidfile.probe(path).state is PidfileState.STALE
