"""``forkwell ps`` that tells the story: exits and when, probes, the whole tree's CPU and RSS.

The real CLI against a real ``forkwell up`` (``test_ctl_e2e.Fleet``).
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import PY, wait_until
from test_ctl_e2e import Fleet

import forkwell

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def fleet_of(tmp_path: Path) -> Iterator[Any]:
    made: list[Fleet] = []

    def make(config: str) -> Fleet:
        made.append(Fleet(tmp_path, config))
        return made[-1]

    yield make
    for fleet in made:
        fleet.close()


def ps_json(fleet: Fleet) -> dict[str, Any]:
    r = fleet.ctl("ps", "--json")
    doc: dict[str, Any] = json.loads(r.stdout)
    return doc


def test_ps_of_a_crash_looping_program(fleet_of: Any) -> None:
    fleet = fleet_of(
        f"""
[programs.crashy]
command = ["{PY}", "-c", "import sys, time; time.sleep(0.3); sys.exit(3)"]
min_uptime = 0.1
restart = "always"

[programs.hopeless]
command = ["/bin/sh", "-c", "exit 4"]
min_uptime = 3600  # "never up" whatever the load: a slow shell took the default's 1 s once
start_retries = 1000
backoff_max = 0.2
"""
    )
    begun = time.time()

    def restarts() -> int:
        try:
            return int(fleet.ps()["crashy:0"]["restarts"])
        except forkwell.ControlError:  # not listening yet
            return 0

    wait_until(lambda: restarts() >= 3, 30, "3 restarts")
    r = fleet.ctl("ps")
    header, row, _ = r.stdout.splitlines()
    assert header.split() == ["NAME", "STATE", "PID", "UPTIME", "RESTARTS", "LAST-EXIT", "CPU%", "RSS"]
    m = re.match(r"crashy:0\s+(RUNNING|STARTING)\s+\d+\s+\S+\s+(\d+)\s+3 \((\d+)s ago\)", row)
    assert m is not None, row
    assert int(m.group(2)) >= 3 and int(m.group(3)) < 30
    doc = ps_json(fleet)
    assert doc["version"] == 2
    crashy, hopeless = doc["instances"]
    assert crashy["last_exit"] == 3 and crashy["restarts"] >= 3 and crashy["failed_starts"] == 0
    assert begun <= crashy["last_exit_at"] <= doc["time"]
    assert crashy["liveness"] is None and crashy["essential"] is False
    # Exits at once: never up, so no restart; a growing count of failed starts.
    assert hopeless["restarts"] == 0 and hopeless["failed_starts"] >= 3
    assert hopeless["state"] in ("BACKOFF", "STARTING") and hopeless["last_exit"] == 4


# A parent and a child that holds 64 MB and has burnt 0.5 s of CPU, then both wait.
TREE = """
import os, signal, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", '''
import os, signal, time
block = bytearray(64 << 20)
for i in range(0, len(block), 4096):
    block[i] = 1
t = time.process_time()
while time.process_time() - t < 0.5:
    pass
open(os.environ["READY_FILE"], "w").close()
signal.pause()
'''])
signal.pause()
"""


def test_ps_cpu_and_rss_are_the_whole_trees(fleet_of: Any, tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    fleet = fleet_of(
        f"""
[programs.tree]
command = {json.dumps([PY, "-c", TREE])}
environment = {{ READY_FILE = "{ready}" }}
"""
    )
    fleet.wait_healthy()
    wait_until(ready.exists, 30, "the child's work done")
    doc = ps_json(fleet)
    inst = doc["instances"][0]
    assert inst["processes"] == 2
    main_rss = _rss(inst["pid"])
    assert inst["rss_bytes"] >= main_rss + (64 << 20)
    # The tree's CPU time, from its % over its life: the child's 0.5 s are in it.
    assert inst["cpu_percent"] * inst["uptime"] / 100 >= 0.45
    r = fleet.ctl("ps")
    assert re.search(r"^tree:0\s+RUNNING\s+\d+\s+\S+\s+0\s+-\s+[\d.]+\s+\d+(\.\d)?M$", r.stdout, re.M)


def _rss(pid: int) -> int:
    data = Path(f"/proc/{pid}/stat").read_bytes()
    return int(data[data.rfind(b")") + 2 :].split()[21]) * os.sysconf("SC_PAGE_SIZE")


def test_ps_shows_readiness_liveness_and_the_last_probe_failure(fleet_of: Any) -> None:
    fleet = fleet_of(
        f"""
[programs.sick]
command = ["{PY}", "-c", "import signal; signal.pause()"]
ready = "delay:0.1"
liveness = "cmd:exit 7"
liveness_period = 0.1
liveness_failures = 1000

[programs.fine]
command = ["{PY}", "-c", "import signal; signal.pause()"]
"""
    )
    fleet.wait_healthy()
    wait_until(lambda: fleet.ps()["sick:0"]["liveness_failures"] >= 2, 20, "failures")
    r = fleet.ctl("ps")
    lines = r.stdout.splitlines()
    assert lines[0].split()[-3:] == ["READY", "LIVENESS", "PROBE-FAILURE"]
    sick = next(ln for ln in lines if ln.startswith("sick:0"))
    assert re.search(r"\sready\s+failing x\d+\s+\d+s ago: cmd:exit 7 exited with status 7$", sick)
    fine = next(ln for ln in lines if ln.startswith("fine:0"))
    assert re.search(r"\sready\s+-\s+-$", fine)
    row = fleet.ps()["sick:0"]
    assert row["liveness"] == "failing" and row["liveness_probe"] == "cmd:exit 7"
    assert row["ready_probe"] == "delay:0.1"
    assert row["last_probe_failure"] == "cmd:exit 7 exited with status 7"
    assert row["last_probe_failure_at"] <= time.time()


def test_read_small_reads_a_proc_file_longer_than_a_page_whole() -> None:
    """A children list of 1,000 pids is ~7 KB, handed out a page at a time: none is lost."""
    from forkwell._core._proc import read_small

    with open("/proc/self/maps", "rb") as f:
        expected = f.read()
    assert len(expected) > 4096  # several pages of records
    assert read_small("/proc/self/maps") == expected
    assert read_small("/proc/self/no-such-file") is None
