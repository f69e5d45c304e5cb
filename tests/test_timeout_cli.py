"""forkwell timeout: GNU timeout's syntax and exit codes, plus nothing left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from helpers import PY, read_pids, running, wait_until

from forkwell._core._duration import parse_duration, parse_signal

pytestmark = pytest.mark.timeout(30)

FT = [PY, "-m", "forkwell", "timeout"]


def ft(*args: str, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FT, *args], capture_output=True, text=True, timeout=20, **kw)  # type: ignore[call-overload, no-any-return]


# -- exit codes ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["5", "true"], 0),
        (["5", "sh", "-c", "exit 7"], 7),
        (["5", "sh", "-c", "exit 255"], 255),
        (["0.2", "sleep", "10"], 124),
        (["-s", "KILL", "0.2", "sleep", "10"], 137),
        (["-k", "0.2", "0.2", "sh", "-c", "trap '' TERM; sleep 10"], 137),
        (["-p", "0.2", "sleep", "10"], 128 + signal.SIGTERM),
        (["5", "sh", "-c", "kill -USR1 $$"], 128 + signal.SIGUSR1),
        (["0", "sh", "-c", "exit 3"], 3),
        (["5", "no-such-command-forkwell"], 127),
        (["5", "/etc/passwd"], 126),
    ],
)
def test_exit_codes(args: list[str], code: int) -> None:
    assert ft(*args).returncode == code


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "missing operand"),
        (["5"], "missing operand after '5'"),
        (["abc", "true"], "invalid time interval 'abc'"),
        (["-5", "true"], "invalid option"),
        (["5x", "true"], "invalid time interval '5x'"),
        (["-s", "NOPE", "1", "true"], "invalid signal 'NOPE'"),
        (["--bogus", "1", "true"], "unrecognized option '--bogus'"),
        (["-k"], "requires an argument"),
        (["--verbose=1", "1", "true"], "doesn't allow an argument"),
    ],
)
def test_bad_arguments_exit_125_with_one_line(args: list[str], message: str) -> None:
    r = ft(*args)
    assert r.returncode == 125
    first, hint = r.stderr.splitlines()
    assert first.startswith("forkwell timeout: ") and message in first
    assert "--help" in hint
    assert "Traceback" not in r.stderr


def test_not_found_message() -> None:
    r = ft("5", "no-such-command-forkwell")
    assert r.stderr.strip() == (
        "forkwell timeout: failed to run command 'no-such-command-forkwell': No such file or directory"
    )


def test_help() -> None:
    r = ft("--help")
    assert r.returncode == 0
    assert "usage: forkwell timeout" in r.stdout
    for code in ("124", "125", "126", "127", "137"):
        assert code in r.stdout


def test_option_spellings() -> None:
    assert ft("--signal=INT", "0.2", "sleep", "5").returncode == 124
    assert ft("-sINT", "-p", "0.2", "sleep", "5").returncode == 128 + signal.SIGINT
    assert ft("--sig", "HUP", "--preserve", "0.2", "sleep", "5").returncode == 128 + signal.SIGHUP
    assert ft("-pk", "0.1", "0.2", "sh", "-c", "trap '' TERM; sleep 5").returncode == 137
    assert ft("--", "0.2", "sleep", "5").returncode == 124
    # Options after DURATION belong to the command, as in GNU.
    assert ft("5", "sh", "-c", "exit 4", "-v").returncode == 4


def test_verbose_names_the_signal() -> None:
    r = ft("-v", "-s", "INT", "0.2", "sleep", "5")
    assert r.stderr.strip() == "forkwell timeout: sending signal INT to command 'sleep'"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("10", 10.0), ("1.5", 1.5), ("2s", 2.0), ("3m", 180.0), ("1h", 3600.0), ("0.5d", 43200.0),
     ("0", 0.0), (".25", 0.25)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "s", "-1", "1x", "nan", "1.2.3", "m5"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_parse_signal() -> None:
    assert parse_signal("TERM") == signal.SIGTERM
    assert parse_signal("sigkill") == signal.SIGKILL
    assert parse_signal("9") == signal.SIGKILL
    with pytest.raises(ValueError):
        parse_signal("999")


# -- signals ---------------------------------------------------------------------

HANDLER = """
import signal, sys
def h(sig, frame):
    print("got", signal.Signals(sig).name, flush=True)
    sys.exit(3)
for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2):
    signal.signal(s, h)
print("ready", flush=True)
while True:
    signal.pause()
"""


@pytest.mark.parametrize(
    "sig",
    [signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2],
)
def test_signals_are_passed_on(sig: signal.Signals) -> None:
    p = subprocess.Popen([*FT, "20", PY, "-c", HANDLER], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None
        assert p.stdout.readline() == "ready\n"
        p.send_signal(sig)
        out, _ = p.communicate(timeout=10)
        assert out == f"got {sig.name}\n"
        assert p.returncode == 3
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_killing_forkwell_timeout_kills_the_command(tmp_path: Path) -> None:
    pidf = tmp_path / "pid"
    p = subprocess.Popen([*FT, "30", "sh", "-c", f"echo $$ > {pidf}; exec sleep 30"])
    try:
        (child,) = read_pids(pidf, 1)
        p.kill()
        p.wait()
        wait_until(lambda: not running(child), 5, "the command to die with forkwell timeout")
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


# -- nothing left behind ----------------------------------------------------------


def test_descendants_end_when_the_command_exits(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    script = (f"setsid sleep 30 & echo $! >> {pids}; (sleep 31 & echo $! >> {pids}); "
              f"sleep 32 & echo $! >> {pids}; exit 6")
    start = time.monotonic()
    r = ft("10", "sh", "-c", script)
    assert r.returncode == 6
    assert time.monotonic() - start < 5
    found = [int(x) for x in pids.read_text().split()]
    assert len(found) == 3
    assert not any(running(p) for p in found)


def test_leftovers_ignoring_term_are_killed_after_kill_after(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    script = f"setsid sh -c 'trap \"\" TERM; echo $$ >> {pids}; sleep 30' & while [ ! -s {pids} ]; do :; done"
    start = time.monotonic()
    r = ft("-k", "0.3", "10", "sh", "-c", script)
    elapsed = time.monotonic() - start
    assert r.returncode == 0
    assert 0.3 <= elapsed < 5
    (left,) = [int(x) for x in pids.read_text().split()]
    assert not running(left)


def test_timed_out_tree_is_gone(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    script = (f"setsid sleep 30 & echo $! >> {pids}; (sleep 31 & echo $! >> {pids}); "
              f"sleep 32 & echo $! >> {pids}; wait")
    r = ft("0.5", "sh", "-c", script)
    assert r.returncode == 124
    found = [int(x) for x in pids.read_text().split()]
    assert len(found) == 3 and not any(running(p) for p in found)


def _pgid(pid: int) -> int:
    data = Path(f"/proc/{pid}/stat").read_bytes()
    return int(data[data.rfind(b")") + 2 :].split()[2])


def test_foreground_keeps_the_process_group(tmp_path: Path) -> None:
    pidf = tmp_path / "pid"
    for flag, same in (("-f", True), (None, False)):
        pidf.unlink(missing_ok=True)
        args = [*FT, *([flag] if flag else []), "10", "sh", "-c", f"echo $$ > {pidf}; exec sleep 30"]
        p = subprocess.Popen(args)
        try:
            (child,) = read_pids(pidf, 1)
            assert (_pgid(child) == _pgid(p.pid)) is same
        finally:
            p.send_signal(signal.SIGTERM)
            p.wait(10)


def test_orphans_are_reaped_by_forkwell_timeout(tmp_path: Path) -> None:
    """forkwell timeout is a subreaper: orphans that die under it never stay zombies."""
    pidf = tmp_path / "pid"
    script = f"(sh -c 'echo $$ > {pidf}; exec sleep 30' &); exec {PY} -c 'import sys; sys.stdin.read()'"
    p = subprocess.Popen([*FT, "20", "sh", "-c", script], stdin=subprocess.PIPE)
    try:
        (orphan,) = read_pids(pidf, 1)
        parent = int(Path(f"/proc/{orphan}/stat").read_bytes().split(b")")[1].split()[1])
        assert parent == p.pid  # adopted by forkwell timeout, not init
        os.kill(orphan, signal.SIGKILL)
        wait_until(lambda: not Path(f"/proc/{orphan}").exists(), 5, "the orphan to be reaped")
    finally:
        assert p.stdin is not None
        p.stdin.close()
        p.wait(10)
