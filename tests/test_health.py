"""Liveness probes, the watchdog, and dependents restarted with what they depend on.

Real programs in a real supervisor (driven in-process): an HTTP server that
turns to 503, a program that stops sending ``WATCHDOG=1``, a chain of
programs restarted in order.  Nothing sleeps to synchronise: each test waits
for the state it needs (``until``) and counts what the programs saw.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from test_supervisor_harness import config, drive, info, py, until

from forkwell import Supervisor

pytestmark = pytest.mark.timeout(60)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# An HTTP server that answers /health 200 for the first OK requests, then 503;
# /ready always 200.  Each /health request appends the server's pid to COUNT.
HEALTH_SERVER = """
import http.server, os, sys
port, ok, count = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
seen = 0
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        global seen
        if self.path == "/health":
            seen += 1
            with open(count, "a") as f:
                f.write(f"{os.getpid()}\\n")
            code = 200 if seen <= ok else 503
        else:
            code = 200
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
"""


def _counts(path: Path) -> dict[int, int]:
    out: dict[int, int] = {}
    if path.exists():
        for line in path.read_text().split():
            out[int(line)] = out.get(int(line), 0) + 1
    return out


def test_http_liveness_restarts_after_exactly_liveness_failures(tmp_path: Path) -> None:
    port, count = free_port(), tmp_path / "count"
    import json
    import sys

    argv = json.dumps([sys.executable, "-c", HEALTH_SERVER, str(port), "2", str(count)])
    cfg = config(
        tmp_path,
        f"""
        [programs.web]
        command = {argv}
        ready = "http://127.0.0.1:{port}/ready"
        liveness = "http://127.0.0.1:{port}/health"
        liveness_period = 0.2
        liveness_failures = 3
        min_uptime = 0
        stop_timeout = 5
        """,
    )

    async def body(sup: Supervisor) -> None:
        first = info(sup, "web:0").pid
        assert first is not None and info(sup, "web:0").liveness in ("pending", "ok")
        await until(lambda: info(sup, "web:0").pid not in (None, first), 20, "a restart")
        # 2 answers 200, then 503 three times in a row: restarted, and not probed again.
        assert _counts(count)[first] == 5
        stopping = [e for e in sup.events if e.new == "STOPPING"]
        assert len(stopping) == 1
        assert stopping[0].why.startswith(
            f"liveness: http://127.0.0.1:{port}/health returned 503 (3 times in a row)"
        )
        await until(lambda: info(sup, "web:0").state == "RUNNING", 20, "RUNNING again")
        now = info(sup, "web:0")
        assert now.restarts == 1
        assert now.last_probe_failure == f"http://127.0.0.1:{port}/health returned 503"

    drive(cfg, body, timeout=40)


def test_a_failing_probe_short_of_the_limit_is_shown_and_a_success_resets_it(
    tmp_path: Path,
) -> None:
    flag = tmp_path / "sick"
    cfg = config(
        tmp_path,
        f"""
        [programs.app]
        command = {py("import time; time.sleep(600)")}
        liveness = "cmd:test ! -e {flag}"
        liveness_period = 0.1
        liveness_failures = 1000
        """,
    )

    async def body(sup: Supervisor) -> None:
        await until(lambda: info(sup, "app:0").liveness == "ok", 10, "liveness ok")
        flag.touch()
        await until(lambda: info(sup, "app:0").liveness_failures >= 2, 10, "failures")
        row = info(sup, "app:0")
        assert row.liveness == "failing" and row.state == "RUNNING" and row.restarts == 0
        assert row.last_probe_failure == f"cmd:test ! -e {flag} exited with status 1"
        flag.unlink()
        await until(lambda: info(sup, "app:0").liveness == "ok", 10, "liveness ok again")
        assert info(sup, "app:0").liveness_failures == 0

    drive(cfg, body)


def test_a_program_that_stops_sending_watchdog_is_restarted(tmp_path: Path) -> None:
    pings = tmp_path / "pings"
    # READY=1, then WATCHDOG=1 five times (each after the supervisor has seen the
    # previous one: it writes a line per ping), then silence while alive.
    program = py(
        f"""
        import os, socket, time
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        addr = os.environ["NOTIFY_SOCKET"]
        assert os.environ["WATCHDOG_USEC"] == "500000"
        s.sendto(b"READY=1", addr)
        for _ in range(5):
            s.sendto(b"WATCHDOG=1", addr)
            with open({str(pings)!r}, "a") as f:
                f.write(f"{{os.getpid()}}\\n")
            time.sleep(0.2)
        time.sleep(600)
        """
    )
    cfg = config(
        tmp_path,
        f"""
        [programs.hb]
        command = {program}
        ready = "notify"
        liveness = "watchdog"
        watchdog_sec = 0.5
        min_uptime = 0
        """,
    )

    async def body(sup: Supervisor) -> None:
        first = info(sup, "hb:0").pid
        assert first is not None
        await until(lambda: info(sup, "hb:0").pid not in (None, first), 20, "a restart")
        # Pinged every 0.2 s within a 0.5 s watchdog: not restarted until the pings ended.
        assert _counts(pings)[first] == 5
        stopping = [e for e in sup.events if e.new == "STOPPING"]
        assert stopping[0].why.startswith(
            "liveness: watchdog: no WATCHDOG=1 for 0.5s (watchdog_sec)"
        )
        assert info(sup, "hb:0").restarts == 1

    drive(cfg, body, timeout=40)


def test_no_liveness_probe_means_no_liveness_state(tmp_path: Path) -> None:
    cfg = config(
        tmp_path,
        f"""
        [programs.app]
        command = {py("import time; time.sleep(600)")}
        """,
    )

    async def body(sup: Supervisor) -> None:
        row = info(sup, "app:0")
        assert row.liveness is None and row.liveness_probe is None
        assert row.readiness == "ready" and row.ready_probe == "exec"
        inst = next(i for i in sup._all() if i.name == "app:0")
        assert inst.liveness is None  # no object, no timer

    drive(cfg, body)


LONG_RUNNING = py("import time; time.sleep(600)")


def _chain(tmp_path: Path) -> object:
    return config(
        tmp_path,
        f"""
        [programs.db]
        command = {LONG_RUNNING}
        [programs.api]
        command = {LONG_RUNNING}
        depends_on = [{{ name = "db", restart = true }}]
        [programs.web]
        command = {LONG_RUNNING}
        depends_on = [{{ name = "api", restart = true }}]
        [programs.cron]
        command = {LONG_RUNNING}
        depends_on = ["db"]
        min_uptime = 0
        """,
    )


def test_restart_takes_restart_true_dependents_along_in_order(tmp_path: Path) -> None:
    cfg = _chain(tmp_path)

    async def body(sup: Supervisor) -> None:
        before = {i.name: i.pid for i in sup.instances()}
        mark = len(sup.events)
        results = await sup.restart(["db"])
        assert [r.ok for r in results] == [True]
        await until(
            lambda: all(i.state == "RUNNING" for i in sup.instances()), 20, "all RUNNING"
        )
        after = {i.name: i.pid for i in sup.instances()}
        assert after["cron:0"] == before["cron:0"]  # a plain depends_on: untouched
        for name in ("db:0", "api:0", "web:0"):
            assert after[name] != before[name], name
        seq = [(e.instance, e.new) for e in list(sup.events)[mark:]]
        order = [s for s in seq if s[1] in ("STOPPED", "STARTING", "RUNNING")]
        # Stopped dependents first (web, api, db), started in dependency order.
        assert order.index(("web:0", "STOPPED")) < order.index(("api:0", "STOPPED"))
        assert order.index(("api:0", "STOPPED")) < order.index(("db:0", "STOPPED"))
        assert order.index(("db:0", "RUNNING")) < order.index(("api:0", "STARTING"))
        assert order.index(("api:0", "RUNNING")) < order.index(("web:0", "STARTING"))

    drive(cfg, body, timeout=40)


def test_a_crash_restarts_restart_true_dependents_after_it(tmp_path: Path) -> None:
    cfg = _chain(tmp_path)

    async def body(sup: Supervisor) -> None:
        import os
        import signal

        before = {i.name: i.pid for i in sup.instances()}
        db = before["db:0"]
        assert db is not None
        os.kill(db, signal.SIGKILL)

        def bounced() -> bool:
            now = {i.name: (i.pid, i.state) for i in sup.instances()}
            return all(
                now[n][1] == "RUNNING" and now[n][0] != before[n] for n in ("db:0", "api:0", "web:0")
            )

        await until(bounced, 20, "db, api and web restarted")
        assert info(sup, "cron:0").pid == before["cron:0"]
        assert any("restarting" in line and "restart = true" in line for line in sup_notes(sup))

    drive(cfg, body, timeout=40)


def sup_notes(sup: Supervisor) -> list[str]:
    """The supervisor's own log lines (forkwell.log)."""
    path = sup.config.supervisor.log_dir / "forkwell.log"
    return path.read_text().splitlines() if path.exists() else []


def test_kubernetes_defaults_on_the_fake_clock(tmp_path: Path) -> None:
    """liveness_delay 5 s, then every 10 s (the default period), restart at the 3rd failure."""
    from fakeclock import MockClock
    from test_supervisor_harness import LONG, jump_past

    count = tmp_path / "probes"
    cfg = config(
        tmp_path,
        f"""
        [programs.app]
        command = {LONG_RUNNING}
        liveness = "cmd:echo x >> {count}; exit 1"
        liveness_delay = 5
        min_uptime = 0          # up() returns at RUNNING: the delay is all ahead
        """,
    )
    clock = MockClock()

    def probes() -> int:
        return len(count.read_text().split()) if count.exists() else 0

    async def body(sup: Supervisor) -> None:
        first = info(sup, "app:0").pid
        await jump_past(clock, 5, lambda: probes() == 0)
        await until(lambda: probes() == 1, 10, "the first probe, at liveness_delay")
        await until(lambda: info(sup, "app:0").liveness == "failing", 10, "failing x1")
        await jump_past(clock, 10, lambda: probes() == 1)
        await until(lambda: probes() == 2, 10, "the second probe, a period later")
        await jump_past(clock, 10, lambda: probes() == 2 and info(sup, "app:0").pid == first)
        await until(lambda: info(sup, "app:0").pid not in (None, first), 10, "the restart")
        assert probes() == 3
        assert info(sup, "app:0").restarts == 1

    try:
        drive(cfg, body, LONG, loop_factory=clock.event_loop)
    finally:
        clock.close()
