"""forkwell.daemonize(): a Python program becomes a daemon; its caller learns whether it came up."""

from __future__ import annotations

import grp
import os
import pwd
import select
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import PY, running, wait_until

import forkwell
from forkwell._core._notify import NotifyListener
from forkwell._daemon._pidfile import Pidfile

REAPER = int(os.environ.get("FORKWELL_TEST_REAPER_PID", "1"))

# The program under test.  argv: pidfile, log, mode, extra daemonize kwargs as Python.
APP = r"""
import logging, os, signal, sys
import forkwell

pidfile, log, mode, kwargs = sys.argv[1], sys.argv[2], sys.argv[3], eval(sys.argv[4])
handler = logging.FileHandler(log)
logger = logging.getLogger("app")
logger.addHandler(handler)
logger.setLevel(logging.INFO)
unkept = os.open(os.devnull, os.O_RDONLY)  # an fd the daemon must not inherit
os.set_inheritable(unkept, True)
print("before daemonize", flush=True)
kwargs.setdefault("keep_fds", [handler.stream])
forkwell.daemonize(pidfile, **kwargs)
logger.info("daemon %d started", os.getpid())
try:
    if mode == "raise":
        raise ValueError("bad config: port 99999 out of range")
    if mode == "exit3":
        sys.exit(3)
    if mode == "never-ready":
        forkwell.notify_status("loading cache")
        signal.pause()
    if mode == "notify":
        forkwell.notify_status("almost")
        logger.info("ready")  # before telling: the caller checks it once it returns
        assert forkwell.notify_ready() is True
    while True:
        signal.pause()
finally:
    logger.info("clean exit %d", os.getpid())
"""


@pytest.fixture
def app(tmp_path: Path) -> Iterator[tuple[Path, Path, Path]]:
    script = tmp_path / "app.py"
    script.write_text(APP)
    pidfile = tmp_path / "app.pid"
    yield script, pidfile, tmp_path / "app.log"
    holder = Pidfile.holder(pidfile)
    if holder is not None:
        os.kill(holder, signal.SIGKILL)
        wait_until(lambda: not running(holder), 5, "daemon killed")


def run_app(
    app: tuple[Path, Path, Path], mode: str, timeout: float = 30, env: dict[str, str] | None = None,
    **kwargs: object,
) -> subprocess.CompletedProcess[str]:
    script, pidfile, log = app
    return subprocess.run(
        [PY, str(script), str(pidfile), str(log), mode, repr(kwargs)],
        capture_output=True, text=True, timeout=timeout, check=False, env=env,
    )  # fmt: skip


def daemon_pid(app: tuple[Path, Path, Path]) -> int:
    pid = Pidfile.holder(app[1])
    assert pid is not None
    return pid


def status_field(pid: int, name: str) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(name)


def terminate(pid: int) -> None:
    os.kill(pid, signal.SIGTERM)
    wait_until(lambda: not running(pid), 10, f"daemon {pid} to exit")


def test_immediate_ready_and_daemon7_state(app: tuple[Path, Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "out.log"
    result = run_app(app, "immediate", detach=True, stdout=str(out), stderr=str(out), umask=0o027)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "before daemonize\n"  # printed once, not again by the daemon
    assert result.stderr == ""
    pid = daemon_pid(app)
    _, pidfile, log = app
    assert pidfile.read_text() == f"{pid}\n"
    data = Path(f"/proc/{pid}/stat").read_bytes()
    ppid, _, session, tty_nr = (int(x) for x in data[data.rfind(b")") + 2 :].split()[1:5])
    assert ppid in (1, REAPER)
    assert session != pid
    assert tty_nr == 0
    assert os.readlink(f"/proc/{pid}/cwd") == "/"
    assert status_field(pid, "Umask") == "0027"
    assert status_field(pid, "SigBlk") == "0000000000000000"
    # Only what the interpreter itself ignores at start-up: SIGPIPE (13), SIGXFSZ (25).
    assert int(status_field(pid, "SigIgn"), 16) == (1 << 12) | (1 << 24)
    fds = {int(fd): os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
    assert fds[0] == "/dev/null"
    assert fds[1] == fds[2] == str(out)
    # The logging handler's stream (kept) and the pidfile lock: nothing else.
    assert sorted(fds) == [0, 1, 2, 3, 4]
    assert {fds[3], fds[4]} == {str(log), str(pidfile)}
    wait_until(lambda: f"daemon {pid} started" in log.read_text(), 10, "log line")
    terminate(pid)
    # SIGTERM: finally blocks and exit handlers ran, the pidfile is gone.
    assert f"clean exit {pid}" in log.read_text()
    assert not pidfile.exists()


def test_notify_ready_waits_for_the_daemon(app: tuple[Path, Path, Path]) -> None:
    result = run_app(app, "notify", detach=True, ready="notify")
    assert result.returncode == 0, result.stderr
    pid = daemon_pid(app)
    # The caller exited only after notify_ready() had been called.
    assert "ready" in app[2].read_text().splitlines()
    terminate(pid)


def test_exception_before_ready_makes_caller_fail_with_message(
    app: tuple[Path, Path, Path],
) -> None:
    result = run_app(app, "raise", detach=True, ready="notify")
    assert result.returncode == 1
    assert result.stderr == (
        "app.py: daemon failed before it was ready: "
        "ValueError: bad config: port 99999 out of range (it exited with status 1)\n"
    )
    assert not app[1].exists()


def test_exit_before_ready_reports_status(app: tuple[Path, Path, Path]) -> None:
    result = run_app(app, "exit3", detach=True, ready="notify")
    assert result.returncode == 1
    assert "daemon exited with status 3 before it was ready" in result.stderr
    assert not app[1].exists()


@pytest.mark.timeout(30)
def test_readiness_timeout_stops_the_daemon(app: tuple[Path, Path, Path]) -> None:
    started = time.monotonic()
    result = run_app(app, "never-ready", detach=True, ready="notify", ready_timeout=1)
    assert result.returncode == 1
    assert "not ready after 1s (last status: loading cache); it was stopped" in result.stderr
    assert time.monotonic() - started < 10
    assert not app[1].exists()
    # SIGTERM reached it while it waited: it ran its exit path.
    assert "clean exit" in app[2].read_text()


def test_second_instance_is_refused(app: tuple[Path, Path, Path]) -> None:
    assert run_app(app, "immediate", detach=True).returncode == 0
    pid = daemon_pid(app)
    again = run_app(app, "immediate", detach=True)
    assert again.returncode == 1
    assert f"already running: pidfile is locked by pid {pid}" in again.stderr
    assert daemon_pid(app) == pid
    terminate(pid)


def test_bad_workdir_names_the_step(app: tuple[Path, Path, Path], tmp_path: Path) -> None:
    result = run_app(app, "immediate", detach=True, workdir=str(tmp_path / "missing"))
    assert result.returncode == 1
    assert "daemon failed at step chdir: cannot change directory to" in result.stderr
    assert not app[1].exists()


def test_unknown_user_raises_in_the_caller_before_forking(app: tuple[Path, Path, Path]) -> None:
    result = run_app(app, "immediate", detach=True, user="no-such-user-xyz")
    assert result.returncode == 1
    assert "DaemonStartError: unknown user 'no-such-user-xyz'" in result.stderr
    assert not app[1].exists()


def test_auto_detach_under_a_service_manager_does_not_fork(app: tuple[Path, Path, Path]) -> None:
    with NotifyListener() as listener:
        env = {**os.environ, **listener.environ()}
        script, pidfile, log = app
        child = subprocess.Popen(
            [PY, str(script), str(pidfile), str(log), "notify", repr({"ready": "notify"})],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 20
            ready: list[dict[str, str]] = []
            while not any(m.get("READY") == "1" for m in ready):
                assert time.monotonic() < deadline, ready
                select.select([listener], [], [], 0.5)
                ready += listener.receive()
            # No fork: the READY=1 came from the very process we started,
            # which still runs and holds the pidfile.
            assert ready[-1]["_PID"] == str(child.pid) == ready[-1]["MAINPID"]
            assert any(m.get("STATUS") == "almost" for m in ready)
            assert child.poll() is None
            assert Pidfile.holder(pidfile) == child.pid
        finally:
            child.terminate()
            _, err = child.communicate(timeout=10)
        assert child.returncode == 0, err
        assert f"clean exit {child.pid}" in log.read_text()
        assert not pidfile.exists()


def test_argument_validation() -> None:
    with pytest.raises(ValueError, match="ready must be"):
        forkwell.daemonize(ready="later")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="detach must be"):
        forkwell.daemonize(detach="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="umask"):
        forkwell.daemonize(umask=0o1000)


def test_refuses_a_non_main_thread() -> None:
    errors: list[BaseException] = []

    def call() -> None:
        try:
            forkwell.daemonize(detach=True)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=call)
    thread.start()
    thread.join(timeout=10)
    assert len(errors) == 1
    assert isinstance(errors[0], RuntimeError)
    assert "main thread" in str(errors[0])


@pytest.mark.root
def test_user_nobody_library_daemon(app: tuple[Path, Path, Path]) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to switch users")
    nobody = pwd.getpwnam("nobody")
    result = run_app(app, "immediate", detach=True, user="nobody")
    assert result.returncode == 0, result.stderr
    pid = daemon_pid(app)
    assert status_field(pid, "Uid").split() == [str(nobody.pw_uid)] * 4
    groups = sorted(int(g) for g in status_field(pid, "Groups").split())
    assert groups == sorted({nobody.pw_gid, *os.getgrouplist("nobody", nobody.pw_gid)})
    # ready="immediate" returns before the program's first line runs: wait for it.
    wait_until(lambda: f"daemon {pid} started" in app[2].read_text(), 10, "log line")
    terminate(pid)
    # The pidfile's directory is root's: the daemon, now nobody, cannot unlink
    # the file, so it empties it, which reads as "not running".
    assert forkwell.Pidfile.holder(app[1]) is None
    assert not app[1].exists() or app[1].read_text() == ""
    assert "clean exit" in app[2].read_text()


@pytest.mark.root
def test_chroot_and_group(app: tuple[Path, Path, Path], tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to chroot")
    jail = tmp_path / "jail"
    jail.mkdir()
    result = run_app(app, "immediate", detach=True, chroot=str(jail), group="nogroup")
    assert result.returncode == 0, result.stderr
    pid = daemon_pid(app)
    assert os.readlink(f"/proc/{pid}/root") == str(jail)
    assert os.readlink(f"/proc/{pid}/cwd") == str(jail)
    assert status_field(pid, "Gid").split()[0] == str(grp.getgrnam("nogroup").gr_gid)
    terminate(pid)


@pytest.mark.root
@pytest.mark.timeout(30)
def test_auto_detach_as_pid1_in_a_container(app: tuple[Path, Path, Path]) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root for a PID namespace (unshare --pid)")
    script, pidfile, log = app
    with subprocess.Popen(
        ["unshare", "--pid", "--fork", "--mount-proc", PY, str(script), str(pidfile), str(log),
         "immediate", repr({})],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    ) as container:  # fmt: skip
        try:
            wait_until(lambda: Pidfile.holder(pidfile) is not None, 20, "pidfile held")
            pid = daemon_pid(app)
            # No fork: the program is still the namespace's init, not a grandchild.
            nspid = status_field(pid, "NSpid").split()
            assert nspid[-1] == "1", nspid
            assert container.poll() is None
            wait_until(lambda: "daemon 1 started" in log.read_text(), 10, "log line")
            os.kill(pid, signal.SIGTERM)
            _, err = container.communicate(timeout=15)
        finally:
            if container.poll() is None:
                container.kill()
    assert container.returncode == 0, err
    assert "clean exit 1" in log.read_text()
    assert not pidfile.exists()
