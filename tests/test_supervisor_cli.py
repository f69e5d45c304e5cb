"""``forkwell up`` end to end: a real supervisor process, real signals, real /proc."""

from __future__ import annotations

import hashlib
import json
import os
import select
import shutil
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import pytest
from helpers import IS_ROOT, PY, read_pids, running, wait_until
from test_supervisor_harness import cmd

pytestmark = pytest.mark.timeout(60)


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "forkwell.toml"
    path.write_text("[supervisor]\nshutdown_timeout = 10\n\n" + textwrap.dedent(text))
    return path


def up(cfg: Path, *args: str, **kwargs: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [PY, "-m", "forkwell", "up", "-c", str(cfg), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,  # type: ignore[arg-type]
    )


def cpu_seconds(pid: int) -> float:
    data = Path(f"/proc/{pid}/stat").read_bytes()
    fields = data[data.rfind(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ctx_switches(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("voluntary_ctxt_switches:"):
            return int(line.split()[1])
    raise AssertionError("no voluntary_ctxt_switches")


def asleep_in_epoll(pid: int) -> bool:
    """Blocked in epoll_wait (wchan), or just asleep where the kernel hides wchan."""
    wchan = Path(f"/proc/{pid}/wchan").read_text()
    if wchan in ("do_epoll_wait", "ep_poll"):
        return True
    state = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
    return wchan == "0" and state == b"S"


def test_invalid_config_exits_2_listing_every_problem_and_starts_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "started"
    cfg = write_config(
        tmp_path,
        f"""
        [programs.good]
        command = {cmd("touch", str(marker))}
        [programs.bad]
        command = "x"
        stop_signal = "TREM"
        depends_on = ["nope"]
        """,
    )
    proc = up(cfg)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    lines = err.splitlines()
    assert lines[0] == (
        f"forkwell up: {cfg}: programs.bad.stop_signal: expected a signal name or number "
        "like 'TERM', 'SIGINT' or 15, got 'TREM'"
    )
    assert "programs.bad.depends_on: unknown program 'nope'" in lines[1]
    assert lines[2] == "forkwell up: 2 problems; nothing was started"
    assert "Traceback" not in err and out == ""
    assert not marker.exists()


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    proc = up(tmp_path / "missing.toml")
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2 and err == f"forkwell up: {tmp_path / 'missing.toml'}: no such file\n"
    proc = up(tmp_path / "x.toml", "--exit-after", "soon")
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2 and "--exit-after: invalid time interval 'soon'" in err


def test_foreground_output_and_sigterm_stops_everything_with_exit_0(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    cfg = write_config(
        tmp_path,
        f"""
        [programs.web]
        command = {cmd("sh", "-c", f"echo hello from $FORKWELL_INSTANCE; echo $$ >> {pids}; exec sleep 1000")}
        numprocs = 2
        """,
    )
    proc = up(cfg)
    members = read_pids(pids, 2, timeout=20)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert not any(running(p) for p in members)
    assert "web:0    | hello from web:0" in out
    assert "web:1 RUNNING -> STOPPING" in out and "forkwell up: all stopped, exiting" in out


def _up_with_a_runaway(tmp_path: Path) -> tuple[Path, subprocess.Popen[str], int, int]:
    """``forkwell up`` running a program, and one whose setsid'd grandchild left
    its process group and session: (config, supervisor, program pid, runaway pid)."""
    direct = tmp_path / "direct"
    escaped = tmp_path / "escaped"
    cfg = write_config(
        tmp_path,
        f"""
        [programs.plain]
        command = {cmd("sh", "-c", f"echo $$ > {direct}; exec sleep 1000")}
        [programs.sneaky]
        command = {cmd("sh", "-c", f"setsid sh -c 'echo $$ > {escaped}; exec sleep 1000' & exec sleep 1000")}
        """,
    )
    proc = up(cfg, "--quiet")
    return cfg, proc, read_pids(direct, 1, timeout=20)[0], read_pids(escaped, 1, timeout=20)[0]


def _state(tmp_path: Path) -> dict[str, int]:
    data: dict[str, int] = json.loads((tmp_path / ".forkwell" / "state.json").read_text())
    return data


def test_sigkill_of_the_supervisor_leaves_nothing_running(tmp_path: Path) -> None:
    _cfg, proc, plain, runaway = _up_with_a_runaway(tmp_path)
    state = _state(tmp_path)
    assert state["pid"] == proc.pid
    watchdog = state["watchdog"]
    assert Path(f"/proc/{watchdog}/comm").read_text() == "forkwell-watch\n"
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=10)  # EOF: the watchdog holds none of our pipes
    # The watchdog ends the whole fleet, the setsid'd grandchild included.
    wait_until(lambda: not running(plain) and not running(runaway), 10, "the fleet to die")
    wait_until(lambda: not running(watchdog), 10, "the watchdog to exit")


def test_a_killed_watchdog_is_replaced(tmp_path: Path) -> None:
    _cfg, proc, plain, runaway = _up_with_a_runaway(tmp_path)
    first = _state(tmp_path)["watchdog"]
    os.kill(first, signal.SIGKILL)
    wait_until(lambda: _state(tmp_path)["watchdog"] != first, 10, "a new watchdog")
    assert running(plain) and running(runaway)  # losing the watchdog touched nothing
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=10)
    wait_until(lambda: not running(plain) and not running(runaway), 10, "the fleet to die")
    log = (tmp_path / ".forkwell" / "logs" / "forkwell.log").read_text()
    assert f"watchdog (pid {first}) was killed by SIGKILL; starting a new one" in log


def test_next_up_ends_what_a_killed_supervisor_and_watchdog_left(tmp_path: Path) -> None:
    cfg, proc, plain, runaway = _up_with_a_runaway(tmp_path)
    watchdog = _state(tmp_path)["watchdog"]
    # Both gone at once (stopped first, so it cannot replace its watchdog).
    proc.send_signal(signal.SIGSTOP)
    os.kill(watchdog, signal.SIGKILL)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=10)
    assert running(plain) and running(runaway)
    again = up(cfg, "--quiet", "--exit-after", "0.5")
    _, err = again.communicate(timeout=30)
    assert again.returncode == 0, err
    assert not running(plain) and not running(runaway)
    log = (tmp_path / ".forkwell" / "logs" / "forkwell.log").read_text()
    line = next(ln for ln in log.splitlines() if "left by a killed supervisor" in ln)
    assert f"(pid {proc.pid})" in line and str(plain) in line and str(runaway) in line


def test_up_imports_no_asyncio_before_it_spawns() -> None:
    """``forkwell up`` spawns its simple programs before importing asyncio (~12 ms)."""
    code = "import sys, forkwell._cli._up, forkwell._supervisor._engine; print('asyncio' in sys.modules)"
    out = subprocess.run([PY, "-c", code], capture_output=True, text=True, timeout=30, check=True)
    assert out.stdout == "False\n"


def test_crash_loop_does_not_make_the_supervisor_spin(tmp_path: Path) -> None:
    starts = tmp_path / "starts"
    cfg = write_config(
        tmp_path,
        f"""
        [programs.crasher]
        command = {cmd("sh", "-c", f"echo x >> {starts}; exit 1")}
        start_retries = 1000
        backoff_max = 0.2
        """,
    )
    proc = up(cfg, "--quiet")
    try:
        read_pids_count = lambda n: starts.exists() and len(starts.read_text().split()) >= n  # noqa: E731
        wait_until(lambda: read_pids_count(3), 20, "3 starts")
        cpu0, wall0 = cpu_seconds(proc.pid), time.monotonic()
        wait_until(lambda: read_pids_count(10), 20, "10 starts")
        cpu1, wall1 = cpu_seconds(proc.pid), time.monotonic()
        assert wall1 - wall0 >= 1.0  # 7 backoffs of 0.2 s: it did back off
        assert (cpu1 - cpu0) / (wall1 - wall0) < 0.25, (cpu1 - cpu0, wall1 - wall0)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    assert proc.returncode == 0


def test_idle_supervisor_does_not_wake_up(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    cfg = write_config(
        tmp_path,
        f"""
        [programs.idle]
        command = {cmd("sh", "-c", f"echo $$ >> {pids}; exec sleep 1000")}
        numprocs = 5
        """,
    )
    proc = up(cfg, "--quiet")
    try:
        read_pids(pids, 5, timeout=20)
        log = tmp_path / ".forkwell" / "logs" / "forkwell.log"
        wait_until(lambda: "autostart done: 5 up" in log.read_text(), 20, "autostart")
        # The line is written just before the loop goes back to sleep: start
        # counting once it sleeps in epoll_wait, or that sleep is counted too.
        wait_until(lambda: asleep_in_epoll(proc.pid), 10, "the supervisor to sleep in epoll_wait")
        before = ctx_switches(proc.pid)
        select.select([], [], [], 1.0)  # the idle window being measured
        assert ctx_switches(proc.pid) - before == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)


def test_sighup_reloads_the_config(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    program = cmd("sh", "-c", f"echo $FORKWELL_INSTANCE $$ >> {pids}; exec sleep 1000")
    cfg = write_config(tmp_path, f"[programs.a]\ncommand = {program}\n")
    proc = up(cfg, "--quiet")
    try:
        wait_until(lambda: pids.exists() and pids.read_text().count("\n") == 1, 20)
        cfg.write_text(cfg.read_text() + f"[programs.b]\ncommand = {program}\n")
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: pids.read_text().count("\n") == 2, 20, "b to start")
        assert pids.read_text().splitlines()[1].startswith("b:0 ")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    assert proc.returncode == 0


def test_detach_returns_once_programs_are_up(tmp_path: Path) -> None:
    flag = tmp_path / "ready"
    cfg = write_config(
        tmp_path,
        f"""
        [programs.svc]
        command = {cmd("sh", "-c", f"echo $$ > {flag}; exec sleep 1000")}
        ready = "cmd:test -s {flag}"
        """,
    )
    done = subprocess.run(
        [PY, "-m", "forkwell", "up", "-c", str(cfg), "--detach"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    program = int(flag.read_text())  # written before up --detach returned
    daemon = json.loads((tmp_path / ".forkwell" / "state.json").read_text())["pid"]
    assert done.stdout == f"forkwell up: supervisor running (pid {daemon}), 1 instance up\n"
    try:
        assert running(program) and running(daemon)
        second = subprocess.run(
            [PY, "-m", "forkwell", "up", "-c", str(cfg)], capture_output=True, text=True, timeout=30
        )
        assert second.returncode == 1
        assert f"another forkwell up is running for {cfg} (pid {daemon})" in second.stderr
    finally:
        os.kill(daemon, signal.SIGTERM)
        wait_until(lambda: not running(daemon) and not running(program), 20, "the daemon to stop")


def test_detach_reports_a_failed_autostart(tmp_path: Path) -> None:
    cfg = write_config(
        tmp_path,
        """
        [programs.broken]
        command = "sh -c 'echo no config found >&2; exit 78'"
        start_retries = 2
        """,
    )
    done = subprocess.run(
        [PY, "-m", "forkwell", "up", "-c", str(cfg), "--detach"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 1
    assert "broken:0 is FATAL: exited with status 78" in done.stderr
    assert "Traceback" not in done.stderr


def test_full_speed_output_survives_rotation_byte_for_byte(tmp_path: Path) -> None:
    size = (20 << 20) + 12345  # 20 full files and a partial one
    writer = f"""
import hashlib, sys
out = sys.stdout.buffer
n = 0
left = {size}
while left:
    block = b"".join(hashlib.sha256((n + i).to_bytes(8, "big")).digest() for i in range(2048))
    n += 2048
    block = block[:left]
    out.write(block)
    left -= len(block)
out.flush()
"""
    cfg = write_config(
        tmp_path,
        f"""
        [programs.firehose]
        command = {cmd(PY, "-c", writer)}
        restart = "never"
        log_max_bytes = "1MB"
        log_backups = 30
        log_markers = false     # the program's bytes alone (markers: test_health_logs.py)
        """,
    )
    proc = up(cfg, "--quiet")
    logs = tmp_path / ".forkwell" / "logs"
    def logged() -> int:
        try:
            return sum(p.stat().st_size for p in logs.glob("firehose.0.stdout.log*"))
        except FileNotFoundError:  # renamed by a rotation between glob and stat
            return 0

    try:
        wait_until(lambda: logged() >= size, 40, "20 MB of logs")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    files = sorted(
        logs.glob("firehose.0.stdout.log.*"), key=lambda p: int(p.suffix[1:]), reverse=True
    )
    assert len(files) == 20
    data = b"".join(p.read_bytes() for p in files) + (logs / "firehose.0.stdout.log").read_bytes()
    expected = b"".join(hashlib.sha256(i.to_bytes(8, "big")).digest() for i in range(size // 32 + 1))
    expected = expected[:size]
    assert len(data) == size and data == expected


@pytest.mark.root
@pytest.mark.skipif(not IS_ROOT, reason="needs root for a PID namespace (unshare --pid)")
@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare(1)")
def test_works_as_pid_1_and_reaps_orphans(tmp_path: Path) -> None:
    count = tmp_path / "zombies"
    orphaner = "for i in 1 2 3 4 5 6 7 8; do (true &); done; exec sleep 1000"
    checker = (
        f"grep -l '^State:.Z' /proc/[0-9]*/status 2>/dev/null | wc -l > {count}.tmp; "
        f"mv {count}.tmp {count}; exec sleep 1000"
    )
    cfg = write_config(
        tmp_path,
        f"""
        [programs.orphaner]
        command = {cmd("sh", "-c", orphaner)}
        ready = "delay:0.5"
        [programs.checker]
        command = {cmd("sh", "-c", checker)}
        depends_on = ["orphaner"]
        """,
    )
    done = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", PY, "-m", "forkwell", "up",
         "-c", str(cfg), "--quiet", "--exit-after", "1.5"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert count.read_text().strip() == "0"
    log = (tmp_path / ".forkwell" / "logs" / "forkwell.log").read_text()
    assert "forkwell up: pid 1," in log
    assert "checker:0 STOPPING -> STOPPED" in log


def test_second_ctrl_c_kills_at_once(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    stubborn = f"trap '' TERM; echo $$ >> {pids}; while :; do read -t 1 x < /dev/zero; done"
    cfg = write_config(
        tmp_path,
        f"""
        [programs.stubborn]
        command = {cmd("sh", "-c", stubborn)}
        stop_timeout = 30
        """,
    )
    proc = up(cfg, "--quiet")
    [pid] = read_pids(pids, 1, timeout=20)
    log = tmp_path / ".forkwell" / "logs" / "forkwell.log"
    wait_until(lambda: "autostart done" in log.read_text(), 20, "autostart")
    proc.send_signal(signal.SIGINT)
    wait_until(lambda: "RUNNING -> STOPPING" in log.read_text(), 10, "the graceful stop")
    began = time.monotonic()
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert time.monotonic() - began < 5.0  # not the 30 s stop_timeout
    assert not running(pid)
    assert "second stop request: SIGKILL to every tree now" in log.read_text()
