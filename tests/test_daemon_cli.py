"""``forkwell daemon start|stop|status|restart``: real daemons, checked against daemon(7) in /proc."""

from __future__ import annotations

import os
import pwd
import resource
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import IS_ROOT, PY, public_sources, running, wait_until

from forkwell._daemon._pidfile import Pidfile

REAPER = int(os.environ.get("FORKWELL_TEST_REAPER_PID", "1"))


def fw(*args: str, timeout: float = 30, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PY, "-m", "forkwell", "daemon", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        **kwargs,  # type: ignore[arg-type]
    )


def started_pid(result: subprocess.CompletedProcess[str]) -> int:
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("started "), result.stdout
    return int(result.stdout.rsplit("(pid ", 1)[1].rstrip(")\n"))


def stat_fields(pid: int) -> list[str]:
    data = Path(f"/proc/{pid}/stat").read_bytes()
    return data[data.rfind(b")") + 2 :].decode().split()


def status_field(pid: int, name: str) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"no {name} in /proc/{pid}/status")


def cookie_processes(needle: str, exact: bool = False) -> list[int]:
    """Live processes of this test (by the leak-check cookie) whose cmdline has ``needle``."""
    cookie = f"FORKWELL_TEST_ID={os.environ['FORKWELL_TEST_ID']}".encode()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            env = Path(f"/proc/{name}/environ").read_bytes().split(b"\0")
            cmd = Path(f"/proc/{name}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        matches = cmd.strip() == needle if exact else needle in cmd
        if cookie in env and matches and running(int(name)):
            found.append(int(name))
    return found


@pytest.fixture
def pidfile(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "d.pid"
    yield path
    # Whatever a test started is stopped, so one failure cannot leak into others.
    fw("stop", "--pidfile", str(path), "--timeout", "2")


@pytest.mark.timeout(30)
def test_started_daemon_follows_daemon7(pidfile: Path, tmp_path: Path) -> None:
    log = tmp_path / "d.log"
    work = tmp_path / "work"
    work.mkdir()
    result = fw(
        "start", "--pidfile", str(pidfile), "--log", str(log), "--workdir", str(work),
        "--umask", "027", "--", "sleep", "1000",
    )  # fmt: skip
    pid = started_pid(result)
    assert result.stdout == f"started sleep (pid {pid})\n"
    fields = stat_fields(pid)
    ppid, pgrp, session, tty_nr = (int(x) for x in fields[1:5])
    # Parent: init or the nearest subreaper (the test session's reaper).
    assert ppid in (1, REAPER), (ppid, REAPER, fields)
    assert session != pid, "daemon must not be a session leader"
    assert session != os.getsid(0), (session, fields)
    assert tty_nr == 0, "daemon must have no controlling terminal"
    assert pgrp != os.getpgid(0), (pgrp, fields)
    assert os.readlink(f"/proc/{pid}/cwd") == str(work)
    assert status_field(pid, "Umask") == "0027"
    assert status_field(pid, "SigBlk") == "0000000000000000"
    assert status_field(pid, "SigIgn") == "0000000000000000"
    fds = {int(fd): os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
    assert fds == {0: "/dev/null", 1: str(log), 2: str(log), 3: str(pidfile)}, fds
    # The command itself (not an intermediate) is named in the pidfile and holds the lock.
    assert Path(f"/proc/{pid}/comm").read_text().strip() == "sleep"
    assert pidfile.read_text() == f"{pid}\n"
    assert Pidfile.holder(pidfile) == pid
    locks = Path("/proc/locks").read_text()
    assert any(
        line.split()[1:5] == ["POSIX", "ADVISORY", "WRITE", str(pid)] for line in locks.splitlines()
    ), locks

    status = fw("status", "--pidfile", str(pidfile))
    assert status.returncode == 0, (status.stdout, status.stderr)
    assert f"sleep is running (pid {pid}, up " in status.stdout, status.stdout

    stop = fw("stop", "--pidfile", str(pidfile))
    assert stop.returncode == 0, stop.stderr
    assert stop.stdout == f"stopped pid {pid}\n", (stop.stdout, stop.stderr)
    assert not running(pid)
    assert not pidfile.exists()
    final = fw("status", "--pidfile", str(pidfile))
    assert final.returncode == 3, (final.stdout, final.stderr)


def test_default_stdio_is_dev_null_and_cwd_root(pidfile: Path) -> None:
    pid = started_pid(fw("start", "--pidfile", str(pidfile), "--", "sleep", "1000"))
    for fd in (0, 1, 2):
        assert os.readlink(f"/proc/{pid}/fd/{fd}") == "/dev/null"
    assert os.readlink(f"/proc/{pid}/cwd") == "/"
    assert status_field(pid, "Umask") == "0022"


def test_already_running_is_success_with_pid(pidfile: Path) -> None:
    pid = started_pid(fw("start", "--pidfile", str(pidfile), "--", "sleep", "1000"))
    again = fw("start", "--pidfile", str(pidfile), "--", "sleep", "1000")
    assert again.returncode == 0
    assert again.stdout == f"sleep is already running (pid {pid})\n"
    assert cookie_processes("sleep 1000") == [pid]


@pytest.mark.timeout(60)
def test_twenty_concurrent_starts_make_exactly_one_daemon(pidfile: Path) -> None:
    starters = [
        subprocess.Popen(
            [PY, "-m", "forkwell", "daemon", "start", "--pidfile", str(pidfile), "--",
             "sleep", "1000"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(20)
    ]
    outputs = []
    for starter in starters:
        out, err = starter.communicate(timeout=50)
        assert starter.returncode == 0, err
        outputs.append(out)
    pids = {int(out.rsplit("(pid ", 1)[1].rstrip(")\n")) for out in outputs}
    assert len(pids) == 1, outputs
    assert sum(out.startswith("started ") for out in outputs) == 1, outputs
    (pid,) = pids
    assert cookie_processes("sleep 1000") == [pid]
    assert Pidfile.holder(pidfile) == pid


def test_kill_9_then_status_1_then_start_works(pidfile: Path) -> None:
    pid = started_pid(fw("start", "--pidfile", str(pidfile), "--", "sleep", "1000"))
    os.kill(pid, 9)
    wait_until(lambda: not running(pid), 5, "daemon killed")
    status = fw("status", "--pidfile", str(pidfile))
    assert status.returncode == 1
    assert "stale" in status.stdout
    new = started_pid(fw("start", "--pidfile", str(pidfile), "--", "sleep", "1000"))
    assert new != pid
    assert pidfile.read_text() == f"{new}\n"


def test_unrelated_pid_in_unlocked_pidfile_is_never_signalled(pidfile: Path) -> None:
    with subprocess.Popen(["sleep", "1000"]) as bystander:
        try:
            pidfile.write_text(f"{bystander.pid}\n")
            status = fw("status", "--pidfile", str(pidfile))
            assert status.returncode == 1
            assert f"naming pid {bystander.pid}" in status.stdout
            stop = fw("stop", "--pidfile", str(pidfile))
            assert stop.returncode == 0
            assert "removed stale pidfile" in stop.stdout
            assert bystander.poll() is None
            assert not pidfile.exists()

            pidfile.write_text(f"{bystander.pid}\n")
            pid = started_pid(fw("start", "--pidfile", str(pidfile), "--", "sleep", "1000"))
            assert pid != bystander.pid
            assert fw("stop", "--pidfile", str(pidfile)).returncode == 0
            assert not running(pid)
            assert bystander.poll() is None
        finally:
            bystander.kill()


@pytest.mark.timeout(30)
def test_exit_3_during_delay_readiness_fails_with_log_tail(pidfile: Path, tmp_path: Path) -> None:
    log = tmp_path / "d.log"
    script = "echo booting; sleep 1; echo 'fatal: port 80 taken' >&2; exit 3"
    result = fw(
        "start", "--pidfile", str(pidfile), "--log", str(log), "--ready", "delay:2",
        "--", "sh", "-c", script,
    )  # fmt: skip
    assert result.returncode == 1
    assert "exited with status 3 before it was ready" in result.stderr
    assert "  booting\n" in result.stderr
    assert "  fatal: port 80 taken\n" in result.stderr
    assert result.stdout == ""
    assert not pidfile.exists()
    assert cookie_processes("port 80") == []


@pytest.mark.timeout(40)
def test_death_during_long_delay_is_reported_at_once(pidfile: Path) -> None:
    started = time.monotonic()
    result = fw(
        "start", "--pidfile", str(pidfile), "--ready", "delay:30", "--",
        "sh", "-c", "sleep 1; exit 4",
    )  # fmt: skip
    assert result.returncode == 1
    assert "exited with status 4 before it was ready" in result.stderr
    # Reported when it died (~1 s after exec), not when the 30 s delay ended.
    assert time.monotonic() - started < 15


def test_delay_readiness_success(pidfile: Path) -> None:
    started = time.monotonic()
    pid = started_pid(
        fw("start", "--pidfile", str(pidfile), "--ready", "delay:0.5", "--", "sleep", "1000")
    )
    assert time.monotonic() - started >= 0.5
    assert running(pid)


@pytest.mark.parametrize(
    ("command", "code", "message"),
    [
        (["no-such-command-xyz"], 127, "command not found: 'no-such-command-xyz'"),
        (["/etc/passwd"], 126, "command not executable: '/etc/passwd'"),
    ],
)
def test_exec_failures(pidfile: Path, command: list[str], code: int, message: str) -> None:
    result = fw("start", "--pidfile", str(pidfile), "--", *command)
    assert result.returncode == code
    assert result.stderr.count("\n") == 1
    assert message in result.stderr
    assert not pidfile.exists()


def test_bad_workdir_fails_naming_the_step(pidfile: Path, tmp_path: Path) -> None:
    result = fw(
        "start", "--pidfile", str(pidfile), "--workdir", str(tmp_path / "nope"), "--",
        "sleep", "1000",
    )  # fmt: skip
    assert result.returncode == 1
    assert "step chdir" in result.stderr
    assert "nope" in result.stderr
    assert not pidfile.exists()
    assert cookie_processes("sleep 1000") == []


def test_bad_user_fails_before_forking(pidfile: Path) -> None:
    result = fw("start", "--pidfile", str(pidfile), "--user", "no-such-user-xyz", "--", "true")
    assert result.returncode == 1
    assert "unknown user 'no-such-user-xyz'" in result.stderr
    assert not pidfile.exists()


NOTIFY_DAEMON = """
import os, socket, sys
open(sys.argv[1], "w").write(os.environ.get("NOTIFY_SOCKET", ""))
sys.stdin.read()  # /dev/null: returns at once
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
addr = os.environ["NOTIFY_SOCKET"]
s.sendto(b"STATUS=warming up\\n", addr)
if sys.argv[2] == "ready":
    s.sendto(b"READY=1\\nSTATUS=serving\\n", addr)
import signal
while True:
    signal.pause()
"""


def test_notify_readiness(pidfile: Path, tmp_path: Path) -> None:
    marker = tmp_path / "socket"
    pid = started_pid(
        fw("start", "--pidfile", str(pidfile), "--ready", "notify", "--",
           PY, "-c", NOTIFY_DAEMON, str(marker), "ready")
    )  # fmt: skip
    assert running(pid)
    assert marker.read_text().endswith("/notify")


@pytest.mark.timeout(30)
def test_notify_never_sent_times_out_and_stops_daemon(pidfile: Path, tmp_path: Path) -> None:
    marker = tmp_path / "socket"
    result = fw(
        "start", "--pidfile", str(pidfile), "--ready", "notify", "--ready-timeout", "1",
        "--", PY, "-c", NOTIFY_DAEMON, str(marker), "never",
    )  # fmt: skip
    assert result.returncode == 1
    assert "not ready after 1s (last status: warming up); it was stopped" in result.stderr
    assert not pidfile.exists()
    assert cookie_processes(str(marker)) == []


def test_notify_socket_of_caller_is_not_inherited(pidfile: Path, tmp_path: Path) -> None:
    marker = tmp_path / "env"
    code = "import os, sys, signal; open(sys.argv[1], 'w').write(repr(os.environ.get('NOTIFY_SOCKET'))); signal.pause()"
    env = {**os.environ, "NOTIFY_SOCKET": "/run/systemd/notify"}
    started_pid(fw("start", "--pidfile", str(pidfile), "--", PY, "-c", code, str(marker), env=env))
    wait_until(marker.exists, 10, "marker")
    wait_until(lambda: marker.read_text() != "", 10, "marker content")
    assert marker.read_text() == "None"


TCP_DAEMON = """
import socket, sys, signal, select
port = int(sys.argv[1])
select.select([], [], [], 0.3)  # not listening at once: readiness must wait for it
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", port))
s.listen()
while True:
    signal.pause()
"""


def test_tcp_readiness(pidfile: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    pid = started_pid(
        fw("start", "--pidfile", str(pidfile), "--ready", f"tcp:127.0.0.1:{port}", "--",
           PY, "-c", TCP_DAEMON, str(port))
    )  # fmt: skip
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        pass
    assert running(pid)


def test_env_and_restart(pidfile: Path, tmp_path: Path) -> None:
    marker = tmp_path / "env"
    code = "import os, sys, signal; open(sys.argv[1], 'a').write(os.environ['GREETING'] + '\\n'); signal.pause()"
    args = ["--pidfile", str(pidfile), "--env", "GREETING=hello", "--", PY, "-c", code, str(marker)]
    def greetings() -> int:
        try:
            return marker.read_text().count("hello")
        except FileNotFoundError:
            return 0

    first = started_pid(fw("start", *args))
    # `start` returns at exec; the interpreter greets a little later.
    wait_until(lambda: greetings() == 1, 10, "first greeting")
    restart = fw("restart", *args)
    assert restart.returncode == 0, restart.stderr
    assert f"stopped pid {first}\n" in restart.stdout
    second = int(restart.stdout.rsplit("(pid ", 1)[1].rstrip(")\n"))
    assert second != first
    assert not running(first)
    wait_until(lambda: greetings() == 2, 10, "two greetings")


@pytest.mark.timeout(30)
def test_stop_escalates_to_kill_and_ends_the_session(pidfile: Path) -> None:
    # sh ignores TERM; its background child would survive a plain kill of sh.
    script = "trap '' TERM; sleep 1000 & wait; wait"
    pid = started_pid(fw("start", "--pidfile", str(pidfile), "--", "sh", "-c", script))
    wait_until(lambda: len(cookie_processes("sleep 1000", exact=True)) == 1, 10, "background sleep")
    stop = fw("stop", "--pidfile", str(pidfile), "--timeout", "0.5")
    assert stop.returncode == 0, stop.stderr
    assert stop.stdout == f"stopped pid {pid} with SIGKILL\n"
    assert not running(pid)
    wait_until(lambda: cookie_processes("sleep 1000", exact=True) == [], 5, "session ended")


def test_stop_when_not_running(pidfile: Path) -> None:
    result = fw("stop", "--pidfile", str(pidfile))
    assert result.returncode == 0
    assert result.stdout == "not running\n"


def test_status_unknown_for_symlink(pidfile: Path, tmp_path: Path) -> None:
    pidfile.symlink_to(tmp_path / "elsewhere")
    result = fw("status", "--pidfile", str(pidfile))
    assert result.returncode == 4
    assert "symlink" in result.stderr
    start = fw("start", "--pidfile", str(pidfile), "--", "sleep", "1000")
    assert start.returncode == 1
    assert "symlink" in start.stderr
    assert cookie_processes("sleep 1000") == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["start", "--", "true"], "needs --pidfile"),
        (["start", "--pidfile", "x"], "no COMMAND"),
        (["start", "--pidfile", "x", "--bogus", "1", "--", "true"], "unknown option '--bogus'"),
        (["start", "--pidfile", "x", "--umask", "9z", "--", "true"], "invalid umask"),
        (["start", "--pidfile", "x", "--env", "NOEQUALS", "--", "true"], "invalid --env"),
        (["start", "--pidfile", "x", "--ready", "soon", "--", "true"], "invalid readiness"),
        (["stop", "--pidfile", "x", "--signal", "NOPE"], "invalid signal"),
        (["status", "--pidfile", "x", "extra"], "takes no COMMAND"),
        (["bounce"], "unknown action 'bounce'"),
    ],
)
def test_usage_errors_are_one_line_exit_2(args: list[str], message: str, tmp_path: Path) -> None:
    result = fw(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_help() -> None:
    result = fw("--help")
    assert result.returncode == 0
    for word in ("--pidfile", "--ready", "notify", "tcp:HOST:PORT", "exit status", "127"):
        assert word in result.stdout
    assert fw("start", "--help").returncode == 0


def _timed_start_stop(pidfile: Path, nofile: int) -> float:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))

    started = time.perf_counter()
    result = subprocess.run(
        [PY, "-m", "forkwell", "daemon", "start", "--pidfile", str(pidfile), "--", "sleep", "1000"],
        capture_output=True, text=True, timeout=30, check=False, preexec_fn=limit,
    )  # fmt: skip
    elapsed = time.perf_counter() - started
    pid = started_pid(result)
    assert fw("stop", "--pidfile", str(pidfile)).returncode == 0
    assert not running(pid)
    return elapsed


@pytest.mark.timeout(60)
def test_huge_nofile_limit_costs_nothing_and_high_fds_are_closed(pidfile: Path) -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    high = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if high < 4096:
        pytest.skip(f"RLIMIT_NOFILE hard limit is only {high}")
    # An fd near the top of the range, inherited by `start`: it must not reach the daemon.
    r, w = os.pipe()
    top = high - 5
    os.dup2(r, top, inheritable=True)
    try:
        result = subprocess.run(
            [PY, "-m", "forkwell", "daemon", "start", "--pidfile", str(pidfile), "--",
             "sleep", "1000"],
            capture_output=True, text=True, timeout=30, check=False, pass_fds=[top],
        )  # fmt: skip
        pid = started_pid(result)
        assert sorted(int(fd) for fd in os.listdir(f"/proc/{pid}/fd")) == [0, 1, 2, 3]
        assert fw("stop", "--pidfile", str(pidfile)).returncode == 0
    finally:
        for fd in (r, w, top):
            os.close(fd)
    # Minimum of several runs, alternating, so load from other tests mostly
    # cancels out.  The margin is for a shared 2-core machine: it catches a
    # cost that grows with the limit in bulk (a Python close loop is ~0.7 s at
    # 1,048,576); the exact check is the syscall count below.
    low_times, high_times = [], []
    for _ in range(5):
        low_times.append(_timed_start_stop(pidfile, 1024))
        high_times.append(_timed_start_stop(pidfile, high))
    assert min(high_times) <= min(low_times) * 1.5 + 0.05, (low_times, high_times)


@pytest.mark.timeout(60)
def test_no_close_loop_up_to_the_fd_limit(pidfile: Path, tmp_path: Path) -> None:
    """Count close(2) calls under strace: a loop to RLIMIT_NOFILE would make ~20,000."""
    if shutil.which("strace") is None or shutil.which("prlimit") is None:
        pytest.skip("strace or prlimit is not installed")
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    high = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if high < 4096:
        pytest.skip(f"RLIMIT_NOFILE hard limit is only {high}")
    summary = tmp_path / "strace.txt"
    with subprocess.Popen(
        ["prlimit", f"--nofile={high}:{high}",
         "strace", "-f", "-c", "-o", str(summary), "-e", "trace=close,close_range",
         PY, "-m", "forkwell", "daemon", "start", "--pidfile", str(pidfile), "--",
         "sleep", "1000"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    ) as tracer:  # fmt: skip
        try:
            wait_until(lambda: Pidfile.holder(pidfile) is not None, 30, "traced daemon")
        finally:
            # strace follows the daemon too: it ends when the daemon does.
            fw("stop", "--pidfile", str(pidfile))
            tracer.communicate(timeout=30)
    calls = {}
    for line in summary.read_text().splitlines():
        parts = line.split()
        # % time, seconds, usecs/call, calls, [errors,] syscall
        if len(parts) >= 5 and parts[-1] in ("close", "close_range"):
            calls[parts[-1]] = int(parts[3])
    assert calls.get("close_range", 0) >= 1, summary.read_text()
    assert calls.get("close", 0) < 2000, summary.read_text()


@pytest.mark.root
def test_user_nobody_drops_supplementary_groups(pidfile: Path, tmp_path: Path) -> None:
    if not IS_ROOT:
        pytest.skip("needs root to switch users")
    nobody = pwd.getpwnam("nobody")

    def extra_groups() -> None:
        # Give the starter (root) supplementary groups that must not survive.
        os.setgroups([0, 4, 27])

    result = subprocess.run(
        [PY, "-m", "forkwell", "daemon", "start", "--pidfile", str(pidfile), "--user", "nobody",
         "--", "sleep", "1000"],
        capture_output=True, text=True, timeout=30, check=False, preexec_fn=extra_groups,
    )  # fmt: skip
    pid = started_pid(result)
    assert status_field(pid, "Uid").split() == [str(nobody.pw_uid)] * 4
    assert status_field(pid, "Gid").split() == [str(nobody.pw_gid)] * 4
    expected = sorted({nobody.pw_gid, *os.getgrouplist("nobody", nobody.pw_gid)})
    assert sorted(int(g) for g in status_field(pid, "Groups").split()) == expected
    # Root made and locked the pidfile; the daemon, now nobody, still holds the lock.
    assert Pidfile.holder(pidfile) == pid
    assert fw("stop", "--pidfile", str(pidfile)).returncode == 0
    assert not running(pid)


@pytest.mark.root
def test_user_nobody_with_notify_readiness(pidfile: Path, tmp_path: Path) -> None:
    if not IS_ROOT:
        pytest.skip("needs root to switch users")
    # The system interpreter: ours lives under /root, which nobody cannot enter.
    code = (
        "import os, socket, signal; s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM);"
        "s.sendto(b'READY=1', os.environ['NOTIFY_SOCKET']); signal.pause()"
    )
    pid = started_pid(
        fw("start", "--pidfile", str(pidfile), "--user", "nobody", "--ready", "notify",
           "--ready-timeout", "20", "--", "/usr/bin/python3", "-c", code)
    )  # fmt: skip
    assert status_field(pid, "Uid").split()[0] == str(pwd.getpwnam("nobody").pw_uid)


@pytest.mark.timeout(30)
def test_interrupted_start_leaves_nothing_behind(pidfile: Path, tmp_path: Path) -> None:
    marker = tmp_path / "socket"
    with subprocess.Popen(
        [PY, "-m", "forkwell", "daemon", "start", "--pidfile", str(pidfile), "--ready", "notify",
         "--ready-timeout", "25", "--", PY, "-c", NOTIFY_DAEMON, str(marker), "never"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    ) as starter:  # fmt: skip
        wait_until(lambda: Pidfile.holder(pidfile) is not None, 15, "daemon holding the pidfile")
        daemon = Pidfile.holder(pidfile)
        assert daemon is not None
        starter.send_signal(signal.SIGINT)
        _, err = starter.communicate(timeout=15)
    assert starter.returncode == 130
    assert err == "forkwell daemon start: interrupted\n"
    wait_until(lambda: not running(daemon), 10, "daemon stopped after the starter was interrupted")
    wait_until(lambda: not pidfile.exists(), 5, "pidfile removed")
    assert cookie_processes(str(marker)) == []


@pytest.mark.root
def test_unprivileged_status_and_stop_say_4(pidfile: Path, tmp_path: Path) -> None:
    if not IS_ROOT:
        pytest.skip("needs root to start a daemon another user cannot touch")
    # A world-readable copy: the checkout may sit in a directory nobody cannot enter.
    src = str(public_sources())
    as_nobody = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                 "env", f"PYTHONPATH={src}", "/usr/bin/python3", "-m", "forkwell", "daemon"]  # fmt: skip
    probe = subprocess.run([*as_nobody, "--help"], capture_output=True, timeout=30, check=False)
    if probe.returncode != 0:
        pytest.skip(f"user nobody cannot run forkwell from {src}")
    pid = started_pid(fw("start", "--pidfile", str(pidfile), "--", "sleep", "1000"))
    # tmp_path is root's 0700 directory: nobody cannot even stat the pidfile.
    for action in ("status", "stop"):
        result = subprocess.run(
            [*as_nobody, action, "--pidfile", str(pidfile)],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert result.returncode == 4, result.stderr
        assert "Permission denied" in result.stderr
    assert running(pid)
    # Readable pidfile, but the daemon is root's: stop is refused with 4 too.
    public = Path("/tmp") / f"forkwell-test-{os.getpid()}-{pid}.pid"
    try:
        pid2 = started_pid(fw("start", "--pidfile", str(public), "--", "sleep", "1000"))
        result = subprocess.run(
            [*as_nobody, "stop", "--pidfile", str(public)],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert result.returncode == 4, result.stderr
        assert "not permitted" in result.stderr
        assert running(pid2)
    finally:
        fw("stop", "--pidfile", str(public))


def test_cli_imports_stay_lean(tmp_path: Path) -> None:
    """status and a plain start import neither socket, dataclasses nor tempfile (start-up time)."""
    code = """
import sys
from forkwell._cli import main
before = set(sys.modules)
main(["daemon", "status", "--pidfile", sys.argv[1]])
main(["daemon", "start", "--pidfile", sys.argv[1], "--", "no-such-command-xyz"])
print(sorted(set(sys.modules) - before))
"""
    out = subprocess.run(
        [PY, "-c", code, str(tmp_path / "x.pid")], capture_output=True, text=True, timeout=30,
        check=True,
    ).stdout.splitlines()[-1]  # fmt: skip
    for heavy in ("socket", "dataclasses", "tempfile", "asyncio", "argparse"):
        assert f"'{heavy}'" not in out, out
