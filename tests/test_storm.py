"""A fleet that exits the moment it starts, restarted the moment it exits.

Programs like ``true`` under ``restart = "always"`` and ``min_uptime = "0s"``
make a storm of SIGCHLD and spawns.  Found by the soak: the SIGCHLD handler
spawned each replacement inside its reaping loop, which then never ended
(the control socket was never served), and asyncio's wake-up socket, full of
SIGCHLD numbers, dropped the operator's SIGTERM.  The supervisor must stay
in charge: it answers, it stops when told, its fds stay bounded.
"""

from __future__ import annotations

import os
import signal
import subprocess
import textwrap
from pathlib import Path

import pytest
from helpers import PY, wait_until
from test_supervisor_harness import cmd

pytestmark = pytest.mark.timeout(120)

PROGRAMS = 50


def test_a_storm_of_instant_exits_leaves_the_supervisor_in_charge(tmp_path: Path) -> None:
    cfg = tmp_path / "forkwell.toml"
    cfg.write_text(
        textwrap.dedent(f"""
        [programs.t]
        command = {cmd("true")}
        numprocs = {PROGRAMS}
        min_uptime = "0s"
        restart = "always"
        """)
    )
    log = tmp_path / ".forkwell" / "logs" / "forkwell.log"
    up = subprocess.Popen(
        [PY, "-m", "forkwell", "up", "-c", str(cfg), "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_until(lambda: log.exists() and "autostart done" in log.read_text(), 60, "autostart")
        # Hundreds of restarts a second from here on.
        wait_until(lambda: log.read_text().count("restarting") > 20 * PROGRAMS, 60, "a storm")
        ps = subprocess.run(
            [PY, "-m", "forkwell", "ps", "-c", str(cfg)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert ps.returncode == 0, ps.stderr
        assert sum(line.startswith("t:") for line in ps.stdout.splitlines()) == PROGRAMS
        # Each instance holds a pidfd, two pipes and two log files; a few
        # more for the loop and the control socket, and the pidfds of trees
        # still being ended (more of them at once under load: 509 was seen at
        # load 12).  A pidfd per restart would be over 1,000 by now.
        fds = len(os.listdir(f"/proc/{up.pid}/fd"))
        assert fds < 10 * PROGRAMS + 100, fds
    finally:
        up.send_signal(signal.SIGTERM)
        _, err = up.communicate(timeout=60)
    assert up.returncode == 0, err
    assert "shutting down" in log.read_text()
