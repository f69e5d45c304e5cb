"""Essential programs and ``exit_when``: ``forkwell up`` ends the run and passes the status on.

A real ``forkwell up`` process each time: the exit status is what a container
orchestrator would see, and the order of the stops is read from the
supervisor's own log (``forkwell.log``).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from helpers import running
from test_supervisor_cli import up, write_config
from test_supervisor_harness import py

pytestmark = pytest.mark.timeout(60)

IDLE = py("import time; time.sleep(600)")


def transitions(tmp_path: Path) -> list[tuple[str, str]]:
    """(instance, new state) for each transition in forkwell.log, in order."""
    text = (tmp_path / ".forkwell" / "logs" / "forkwell.log").read_text()
    return re.findall(r"^\S+ \S+ (\S+) \w+ -> (\w+)", text, re.M)


def notes(tmp_path: Path) -> str:
    return (tmp_path / ".forkwell" / "logs" / "forkwell.log").read_text()


def finish(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=40)
    return proc.returncode, out, err


def pids_in(tmp_path: Path) -> list[int]:
    text = notes(tmp_path)
    return [int(p) for p in re.findall(r"STARTING -> \w+ \(pid (\d+)", text)]


def test_an_essential_fatal_program_stops_the_rest_in_order_and_passes_its_status(
    tmp_path: Path,
) -> None:
    # main needs db and web up first; then it fails three times fast: FATAL.
    cfg = write_config(
        tmp_path,
        f"""
        [programs.db]
        command = {IDLE}
        [programs.web]
        command = {IDLE}
        depends_on = ["db"]
        [programs.main]
        command = {py("import sys; sys.exit(3)")}
        depends_on = ["web"]
        essential = true
        start_retries = 3
        """,
    )
    code, _, err = finish(up(cfg, "--quiet"))
    assert code == 3, err
    seen = transitions(tmp_path)
    assert ("main:0", "FATAL") in seen
    after = seen[seen.index(("main:0", "FATAL")) :]
    stops = [name for name, state in after if state == "STOPPED"]
    assert stops == ["web:0", "db:0"]  # dependents first
    assert "essential main:0 is FATAL: stopping everything, then exiting with status 3" in notes(
        tmp_path
    )
    pids = pids_in(tmp_path)
    assert len(pids) >= 2 and not any(running(p) for p in pids)


def test_an_essential_program_killed_by_a_signal_gives_128_plus_n(tmp_path: Path) -> None:
    cfg = write_config(
        tmp_path,
        f"""
        [programs.side]
        command = {IDLE}
        [programs.main]
        command = {py("import os, signal; os.kill(os.getpid(), signal.SIGKILL)")}
        restart = "never"
        min_uptime = 0
        essential = true
        """,
    )
    code, _, err = finish(up(cfg, "--quiet"))
    assert code == 128 + 9, err
    assert "essential main:0 exited and is not restarted" in notes(tmp_path)


def test_an_essential_program_that_is_restarted_does_not_end_the_run(tmp_path: Path) -> None:
    marker = tmp_path / "runs"
    # Exits 1 on its first run (restarted: on-failure), then 0 on the second: EXITED, done.
    program = py(
        f"""
        import pathlib, sys
        p = pathlib.Path({str(marker)!r})
        runs = int(p.read_text()) + 1 if p.exists() else 1
        p.write_text(str(runs))
        sys.exit(1 if runs == 1 else 0)
        """
    )
    cfg = write_config(
        tmp_path,
        f"""
        [programs.main]
        command = {program}
        min_uptime = 0
        essential = true
        """,
    )
    code, _, err = finish(up(cfg, "--quiet"))
    assert code == 0, err
    assert marker.read_text() == "2"


def test_exit_when_any_exit_stops_all_at_the_first_exit(tmp_path: Path) -> None:
    path = tmp_path / "forkwell.toml"
    path.write_text(
        f"""[supervisor]
shutdown_timeout = 10
exit_when = "any-exit"
[programs.long]
command = {IDLE}
[programs.quick]
command = {py("import sys; sys.exit(5)")}
min_uptime = 0
restart = "always"
"""
    )
    code, _, err = finish(up(path, "--quiet"))
    assert code == 5, err
    seen = transitions(tmp_path)
    assert ("long:0", "STOPPED") in seen
    assert seen.count(("quick:0", "STARTING")) == 1  # the exit ended the run: no restart


@pytest.mark.parametrize(("codes", "status"), [((0, 0), 0), ((0, 4), 4)])
def test_exit_when_all_exited_ends_a_batch(
    tmp_path: Path, codes: tuple[int, int], status: int
) -> None:
    path = tmp_path / "forkwell.toml"
    path.write_text(
        '[supervisor]\nshutdown_timeout = 10\nexit_when = "all-exited"\n'
        + "".join(
            f"[programs.job{i}]\ncommand = {py(f'import sys; sys.exit({c})')}\n"
            "restart = 'never'\nmin_uptime = 0\n"
            for i, c in enumerate(codes)
        )
    )
    code, _, err = finish(up(path, "--quiet"))
    assert code == status, err
    assert f"every instance has exited (exit_when = 'all-exited'): exiting with status {status}" in (
        notes(tmp_path)
    )
