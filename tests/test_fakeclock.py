"""Long grace periods and deadlines, tested in milliseconds on a fake clock.

Each test runs real processes with long values of its setting (an hour's
deadline and grace; the supervisor's stop timeout, backoff up to its 30 s cap,
30 s ready timeout and min_uptime) and moves a
:class:`fakeclock.MockClock` past them once a handshake says the moment has
come.  Had the code under test read the real clock, each would hang until its
real-time bound fails it; and each checks that, before the jump, the grace
still holds (the process still runs, the call has not returned).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakeclock import MockClock, installed
from helpers import running, wait_until
from test_supervisor_harness import (
    LONG,
    MARGIN,
    config,
    drive,
    info,
    jump_past,
    py,
    states,
    until,
)

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


# -- the supervisor's long timers, at their production values ----------------

# Marks its start, and its SIGTERM (then exits): never ready by notify.
MUTE = """
import signal, sys
def term(signum, frame):
    open(sys.argv[1], "a").write("TERM\\n")
    sys.exit(0)
signal.signal(signal.SIGTERM, term)
open(sys.argv[1], "a").write("up\\n")
while True:
    signal.pause()
"""


@pytest.fixture
def clock() -> Iterator[MockClock]:
    c = MockClock()
    yield c
    c.close()


def why(sup: Supervisor, name: str, new: str, nth: int = 0) -> str:
    """The reason of the ``nth`` transition of ``name`` into ``new``."""
    return [e.why for e in sup.events if e.instance == name and e.new == new][nth]


def test_supervisor_backoff_reaches_fatal_at_the_default_cap(
    tmp_path: Path, clock: MockClock
) -> None:
    # backoff_max is the default, 30 s; the delays double from 0.1 s up to it.
    cfg = config(
        tmp_path,
        """
        [programs.bad]
        command = "sh -c 'exit 3'"
        autostart = false
        start_retries = 12
        """,
    )
    delays = [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 12.8, 25.6, 30, 30]

    async def body(sup: Supervisor) -> None:
        def entered(state: str) -> int:
            return states(sup, "bad:0").count(state)

        start = asyncio.create_task(sup.start(["bad"]))
        for n, delay in enumerate(delays, 1):
            await until(lambda n=n: entered("BACKOFF") == n, 10, f"backoff {n}")
            assert why(sup, "bad:0", "BACKOFF", n - 1).endswith(f"attempt {n + 1} in {delay:g}s")
            await jump_past(clock, delay, lambda n=n: entered("STARTING") == n)
        began = time.monotonic()
        [res] = await asyncio.wait_for(start, 5)
        assert time.monotonic() - began < 1
        assert not res.ok and res.state == "FATAL"
        assert res.message.endswith("(12 failed starts)"), res.message
        assert states(sup, "bad:0").count("STARTING") == 12

    drive(cfg, body, LONG, loop_factory=clock.event_loop)


def test_supervisor_ready_timeout_passes_on_the_fake_clock(
    tmp_path: Path, clock: MockClock
) -> None:
    log = tmp_path / "log"
    cfg = config(
        tmp_path,
        f"""
        [programs.mute]
        command = {py(MUTE)[:-1]}, "{log}"]
        ready = "notify"
        autostart = false
        start_retries = 2
        """,
    )  # ready_timeout: the default, 30 s; each attempt has its own

    async def body(sup: Supervisor) -> None:
        start = asyncio.create_task(sup.start(["mute"]))
        for n in (1, 2):
            await until(lambda n=n: marks(log).count("up") == n, 10, f"attempt {n}")
            await jump_past(
                clock,
                30,
                lambda: info(sup, "mute:0").state == "STARTING" and marks(log)[-1] == "up",
            )
            await until(lambda: marks(log)[-1] == "TERM", 10, "SIGTERM at the deadline")
            if n == 1:
                clock.jump(0.1)  # its backoff
        began = time.monotonic()
        [res] = await asyncio.wait_for(start, 5)
        assert time.monotonic() - began < 1
        assert not res.ok and res.state == "FATAL"
        assert "not ready within 30s (ready = notify) (2 failed starts)" in res.message

    drive(cfg, body, LONG, loop_factory=clock.event_loop)


def test_supervisor_min_uptime_passes_on_the_fake_clock(tmp_path: Path, clock: MockClock) -> None:
    cfg = config(
        tmp_path,
        """
        [programs.app]
        command = "sleep 1000"
        autostart = false
        min_uptime = 30
        """,
    )

    async def body(sup: Supervisor) -> None:
        start = asyncio.create_task(sup.start(["app"]))
        await until(lambda: info(sup, "app:0").state == "RUNNING", 10, "RUNNING (exec'd)")
        # Exec'd is RUNNING, but a start has its answer once it held min_uptime.
        await jump_past(clock, 30, lambda: not start.done())
        [res] = await asyncio.wait_for(start, 1)
        assert res.ok and res.state == "RUNNING"
        # Up 30 s: an exit now is a crash, restarted at once.
        first = info(sup, "app:0").pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        await until(lambda: info(sup, "app:0").restarts == 1, 10, "the restart")
        assert states(sup, "app:0")[-3:] == ["EXITED", "STARTING", "RUNNING"]
        # Up 29 s: an exit is a failed start, and backs off.
        second = info(sup, "app:0").pid
        assert second is not None and running(second)
        clock.jump(30 - MARGIN)
        os.kill(second, signal.SIGKILL)
        await until(lambda: info(sup, "app:0").state == "BACKOFF", 10, "BACKOFF")
        assert why(sup, "app:0", "EXITED", 1).startswith("was killed by SIGKILL after 29.")
        assert "(min_uptime 30s); attempt 2 in 0.1s" in why(sup, "app:0", "BACKOFF")

    drive(cfg, body, LONG, loop_factory=clock.event_loop)
