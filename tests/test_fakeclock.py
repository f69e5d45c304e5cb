"""Long grace periods and deadlines, tested in milliseconds on a fake clock.

Each test runs real processes with long values of its setting (an hour's
deadline and grace, a supervisor's 10 s stop timeout) and moves a
:class:`fakeclock.MockClock` past them once a handshake says the moment has
come.  Had the code under test read the real clock, each would hang until its
real-time bound fails it; and each checks that, before the jump, the grace
still holds (the process still runs, the call has not returned).
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from pathlib import Path

from fakeclock import MockClock, installed
from helpers import wait_until
from test_supervisor_harness import config, drive, py, until

import forkwell
from forkwell import Supervisor

# A child that reports SIGTERM in a file and keeps running: only SIGKILL ends it.
STUBBORN = """
import signal, sys, time
def term(signum, frame):
    open(sys.argv[1], "a").write("TERM\\n")
signal.signal(signal.SIGTERM, term)
open(sys.argv[1], "a").write("ready\\n")
while True:
    signal.pause()
"""


def marks(path: Path) -> list[str]:
    try:
        return path.read_text().split()
    except FileNotFoundError:
        return []


def test_run_deadline_and_grace_pass_on_the_fake_clock(tmp_path: Path) -> None:
    log = tmp_path / "log"
    result: list[forkwell.RunResult] = []
    with installed() as clock:
        began = time.monotonic()
        worker = threading.Thread(
            target=lambda: result.append(
                forkwell.run([sys.executable, "-c", STUBBORN, str(log)], timeout=3600, grace=3600)
            )
        )
        worker.start()
        wait_until(lambda: marks(log) == ["ready"], 10, "the child to start")
        clock.jump(3600)  # the deadline: SIGTERM to the tree
        wait_until(lambda: marks(log) == ["ready", "TERM"], 10, "SIGTERM at the deadline")
        # Ignoring TERM buys it the whole grace: nothing ends it until the clock moves.
        assert worker.is_alive()
        clock.jump(3600)
        worker.join(10)
        assert not worker.is_alive()
    [r] = result
    assert r.timed_out
    assert r.returncode == -signal.SIGKILL
    assert r.duration >= 7200  # fake seconds
    assert time.monotonic() - began < 20  # real ones


def test_terminate_tree_grace_passes_on_the_fake_clock(tmp_path: Path) -> None:
    log = tmp_path / "log"
    with installed() as clock:
        proc = forkwell.spawn([sys.executable, "-c", STUBBORN, str(log)])
        wait_until(lambda: marks(log) == ["ready"], 10, "the child to start")
        done: list[int] = []
        worker = threading.Thread(target=lambda: done.append(proc.terminate_tree(grace=3600)))
        worker.start()
        wait_until(lambda: "TERM" in marks(log), 10, "SIGTERM")
        assert worker.is_alive()
        clock.jump(3600)
        worker.join(10)
        proc.close()
    assert done == [-signal.SIGKILL]


def test_supervisor_stop_timeout_passes_on_the_fake_clock(tmp_path: Path) -> None:
    log = tmp_path / "log"
    cfg = config(
        tmp_path,
        f"""
        [programs.stubborn]
        command = {py(STUBBORN)[:-1]}, "{log}"]
        stop_timeout = 10
        """,
    )
    clock = MockClock()

    async def body(sup: Supervisor) -> None:
        import asyncio

        await until(lambda: marks(log) == ["ready"], 10, "the program to start")
        stop = asyncio.create_task(sup.stop(["stubborn"]))
        await until(lambda: "TERM" in marks(log), 10, "SIGTERM")
        assert not stop.done()
        began = time.monotonic()
        clock.jump(10)
        [res] = await asyncio.wait_for(stop, 10)
        assert res.ok and res.state == "STOPPED"
        assert res.last_exit == -signal.SIGKILL
        assert time.monotonic() - began < 5

    try:
        drive(cfg, body, loop_factory=clock.event_loop)
    finally:
        clock.close()
