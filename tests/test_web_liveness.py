"""Liveness in /metrics, the JSON API and the page: real probes that really fail.

A real ``forkwell up`` with three programs: ``flaky``, an HTTP server whose
``/health`` answers 503 exactly as many times as the test writes into its
budget file (so the number of failures, and of the restarts they cause, is
known exactly, whatever the machine's speed); ``sick``, whose ``cmd:`` probe
always fails but never enough times in a row to be restarted; and ``plain``,
which has no probe.  ``/metrics`` is read by Prometheus' own parser and
checked by ``promtool``.  Nothing sleeps: each step waits for the state it
needs.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import wait_until
from test_health import free_port
from test_web import families, value
from webclient import SLEEPER, Up

pytestmark = pytest.mark.timeout(90)

# /health: 503 while the budget file holds a positive number (each 503 spends
# one), else 200; any other path 200 (readiness).
BUDGET_SERVER = """
import http.server, os, sys
port, budget = int(sys.argv[1]), sys.argv[2]
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        code = 200
        if self.path == "/health":
            try:
                left = int(open(budget).read() or 0)
            except FileNotFoundError:
                left = 0
            if left > 0:
                tmp = budget + ".tmp"
                with open(tmp, "w") as f:
                    f.write(str(left - 1))
                os.replace(tmp, budget)
                code = 503
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
"""


def rows(up: Up) -> dict[str, dict[str, Any]]:
    reply = up.get("/api/v1/programs")
    assert reply.status == 200
    return {r["name"]: r for r in reply.json()["instances"]}


def spend(budget: Path, failures: int) -> None:
    tmp = budget.with_suffix(".new")
    tmp.write_text(str(failures))
    tmp.replace(budget)  # the server never reads half a number


def test_liveness_failures_and_restarts_are_counted_everywhere(tmp_path: Path) -> None:
    port, budget = free_port(), tmp_path / "budget"
    argv = json.dumps([sys.executable, "-c", BUDGET_SERVER, str(port), str(budget)])
    programs = f"""
    [programs.flaky]
    command = {argv}
    ready = "http://127.0.0.1:{port}/ready"
    liveness = "http://127.0.0.1:{port}/health"
    liveness_period = 0.1
    liveness_failures = 2
    min_uptime = 0

    [programs.sick]
    command = {SLEEPER}
    liveness = "cmd:exit 3"
    liveness_period = 0.1
    liveness_failures = 1000000

    [programs.plain]
    command = {SLEEPER}
    """
    with Up(tmp_path, programs) as up:
        wait_until(lambda: rows(up)["flaky:0"]["liveness"] == "ok", 20, "flaky alive")
        wait_until(lambda: rows(up)["sick:0"]["liveness_failures"] >= 2, 20, "sick failing")
        before = families(up.get("/metrics").text)
        first_pid = rows(up)["flaky:0"]["pid"]
        spend(budget, 2)  # exactly two 503s: liveness_failures = 2 in a row, one restart
        wait_until(lambda: rows(up)["flaky:0"]["liveness_restarts"] == 1, 20, "the restart")
        wait_until(lambda: rows(up)["flaky:0"]["liveness"] == "ok", 20, "flaky alive again")
        reply = up.get("/metrics")
        api = rows(up)
        page = up.get("/").text
    flaky = {"program": "flaky", "instance": "flaky:0"}

    # Before the 503s: alive, nothing counted.
    assert value(before, "forkwell_instance_liveness_state", state="ok", **flaky) == 1
    assert value(before, "forkwell_instance_liveness_state", state="failing", **flaky) == 0
    assert value(before, "forkwell_instance_liveness_failures_total", **flaky) == 0
    assert value(before, "forkwell_instance_liveness_restarts_total", **flaky) == 0

    assert reply.status == 200
    fams = families(reply.text)
    # Exactly the two failures the server gave, and the one restart they caused.
    assert value(fams, "forkwell_instance_liveness_failures_total", **flaky) == 2
    assert value(fams, "forkwell_instance_liveness_restarts_total", **flaky) == 1
    assert value(fams, "forkwell_instance_restarts_total", **flaky) == 1
    assert value(fams, "forkwell_instance_liveness_consecutive_failures", **flaky) == 0
    assert value(fams, "forkwell_instance_liveness_state", state="ok", **flaky) == 1
    assert value(fams, "forkwell_instance_up", **flaky) == 1
    assert api["flaky:0"]["pid"] != first_pid
    assert api["flaky:0"]["liveness_failed_checks"] == 2
    assert api["flaky:0"]["liveness_restarts"] == 1
    assert api["flaky:0"]["last_probe_failure"] == f"http://127.0.0.1:{port}/health returned 503"

    failing_short_of_the_limit(fams, api)

    # The page says the same: failing xN with the probe's words, restarts it caused.
    assert '<span class="probe probe-failing" title="cmd:exit 3 exited with status 3">failing x' \
        in page  # fmt: skip
    assert "liveness restarts: 1" in page

    every_series_is_documented(fams)
    promtool_passes(reply.text)


def failing_short_of_the_limit(fams: dict[str, Any], api: dict[str, dict[str, Any]]) -> None:
    """``sick`` is failing, counted, never restarted; ``plain`` has no liveness series."""
    sick = {"program": "sick", "instance": "sick:0"}
    assert value(fams, "forkwell_instance_liveness_state", state="failing", **sick) == 1
    assert sum(v for lab, v in fams["forkwell_instance_liveness_state"]
               if lab["instance"] == "sick:0") == 1  # one state at a time  # fmt: skip
    in_a_row = value(fams, "forkwell_instance_liveness_consecutive_failures", **sick)
    assert in_a_row >= 2
    assert value(fams, "forkwell_instance_liveness_failures_total", **sick) == in_a_row
    assert value(fams, "forkwell_instance_liveness_restarts_total", **sick) == 0
    assert value(fams, "forkwell_instance_restarts_total", **sick) == 0
    assert api["sick:0"]["liveness_restarts"] == 0
    assert api["sick:0"]["liveness_failed_checks"] >= in_a_row

    # No probe, no liveness series (rather than a fake "off").
    for name, samples in fams.items():
        if name.startswith("forkwell_instance_liveness_"):
            assert {lab["instance"] for lab, _ in samples} == {"flaky:0", "sick:0"}, name
    assert api["plain:0"]["liveness"] is None and api["plain:0"]["liveness_restarts"] == 0


def promtool_passes(text: str) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian package prometheus): text parsed only")
    check = subprocess.run([promtool, "check", "metrics"], input=text,
                           capture_output=True, text=True, timeout=30)  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr


def every_series_is_documented(fams: dict[str, Any]) -> None:
    """docs/web.md names each metric served (the supervisor's by their suffix, as it lists them)."""
    doc = (Path(__file__).parent.parent / "docs" / "web.md").read_text()
    for name in fams:
        short = name.removeprefix("forkwell_supervisor")
        assert f"`{name}`" in doc or f"`{name}{{" in doc or f"`{short}`" in doc, name
