"""The supervisor engine, driven in-process: real programs, real signals, no sleeps.

Programs are tiny shell or Python commands; they announce themselves by
writing lines or files, and the tests wait for that with deadlines.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakeclock import MockClock
from helpers import running, wait_until
from test_supervisor_harness import (
    LONG,
    all_gone,
    cmd,
    config,
    drive,
    info,
    jump_past,
    log_text,
    pause,
    py,
    states,
    until,
    when,
)

import forkwell
from forkwell import Supervisor

pytestmark = pytest.mark.timeout(40)


@pytest.fixture
def clock() -> Iterator[MockClock]:
    """For the tests of long timeouts: the loop's clock, which the test moves."""
    c = MockClock()
    yield c
    c.close()


def test_crash_after_min_uptime_is_restarted_at_once(tmp_path: Path) -> None:
    cfg = config(
        tmp_path,
        f"""
        [programs.app]
        command = {cmd("sleep", "1000")}
        min_uptime = 0
        """,
    )

    async def body(sup: Supervisor) -> None:
        first = info(sup, "app:0")
        assert first.state == "RUNNING" and first.pid is not None
        killed_at = time.time()
        os.kill(first.pid, signal.SIGKILL)
        await until(lambda: info(sup, "app:0").restarts == 1, what="a restart")
        now = info(sup, "app:0")
        assert now.state == "RUNNING"
        assert now.pid != first.pid and running(now.pid or 0)
        assert now.last_exit == -signal.SIGKILL
        assert states(sup, "app:0")[-3:] == ["EXITED", "STARTING", "RUNNING"]
        # The benchmark measures the real latency; here only that it is not a poll tick.
        assert when(sup, "app:0", "RUNNING", 1) - killed_at < 0.5

    drive(cfg, body)


def test_failed_starts_back_off_exponentially_then_fatal(tmp_path: Path) -> None:
    cfg = config(
        tmp_path,
        """
        [programs.bad]
        command = "sh -c 'echo boom-$$ >&2; exit 3'"
        start_retries = 5
        backoff_max = 0.3
        """,
    )

    async def body(sup: Supervisor) -> None:
        await until(lambda: info(sup, "bad:0").state == "FATAL", 10, "FATAL")
        seen = states(sup, "bad:0")
        assert seen.count("BACKOFF") == 4 and seen.count("RUNNING") == 5
        # Delay between entering BACKOFF and the next attempt: 0.1, 0.2, then capped at 0.3.
        waits = [
            when(sup, "bad:0", "STARTING", n + 1) - when(sup, "bad:0", "BACKOFF", n)
            for n in range(4)
        ]
        for got, want in zip(waits, [0.1, 0.2, 0.3, 0.3], strict=True):
            assert want - 0.01 <= got < want + 0.25, waits
        result = (await sup.start(["bad:0"], wait=False))[0]
        assert result.instance == "bad:0"

    drive(cfg, body)


def test_start_reports_fatal_with_reason_and_log_tail(tmp_path: Path) -> None:
    cfg = config(
        tmp_path,
        """
        [programs.bad]
        command = "sh -c 'echo cannot open database >&2; exit 3'"
        autostart = false
        start_retries = 2
        """,
    )

    async def body(sup: Supervisor) -> None:
        [result] = await sup.start(["bad"])
        assert not result.ok and result.state == "FATAL"
        assert result.message.startswith("bad:0 is FATAL: exited with status 3")
        assert "(2 failed starts)" in result.message
        assert result.last_exit == 3
        assert result.log_tail[-1] == "cannot open database"
        # FATAL stays down until started by hand; a manual start tries again.
        [again] = await sup.start(["bad:0"])
        assert again.state == "FATAL" and states(sup, "bad:0").count("FATAL") == 2

    drive(cfg, body)


def test_command_not_found_is_a_failed_start(tmp_path: Path) -> None:
    cfg = config(
        tmp_path,
        """
        [programs.ghost]
        command = "/no/such/program --flag"
        autostart = false
        start_retries = 1
        """,
    )

    async def body(sup: Supervisor) -> None:
        [result] = await sup.start(["ghost"])
        assert not result.ok
        assert "command not found: '/no/such/program'" in result.message

    drive(cfg, body)


def test_restart_policies(tmp_path: Path) -> None:
    cfg = config(
        tmp_path,
        """
        [programs.job]
        command = "sh -c 'echo done'"
        restart = "on-failure"
        [programs.once]
        command = "sh -c 'exit 4'"
        restart = "never"
        min_uptime = 0
        """,
    )

    async def body(sup: Supervisor) -> None:
        await until(lambda: info(sup, "once:0").state == "EXITED", what="once EXITED")
        await until(lambda: info(sup, "job:0").state == "EXITED", what="job EXITED")
        assert info(sup, "job:0").last_exit == 0 and info(sup, "job:0").restarts == 0
        assert info(sup, "once:0").last_exit == 4 and info(sup, "once:0").restarts == 0
        assert log_text(sup, "job:0") == "done\n"

    drive(cfg, body)


# -- readiness ------------------------------------------------------------------


def _gate(tmp_path: Path) -> Path:
    fifo = tmp_path / "gate"
    os.mkfifo(fifo)
    return fifo


async def _open_gate(fifo: Path) -> None:
    # Opening a FIFO for writing blocks until the reader is there: the program
    # printed "waiting" before it opened it, so it is there or about to be.
    fd = os.open(fifo, os.O_WRONLY)
    os.write(fd, b"go\n")
    os.close(fd)


NOTIFY_PROGRAM = """
    import os, socket, sys
    print("waiting", flush=True)
    open(sys.argv[1]).read()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.sendto(b"READY=1\\nSTATUS=serving", os.environ["NOTIFY_SOCKET"])
    print("notified", flush=True)
    open(sys.argv[1] + ".never").read() if os.path.exists(sys.argv[1] + ".never") else None
    import signal; signal.pause()
"""

TCP_PROGRAM = """
    import socket, sys, signal
    print("waiting", flush=True)
    open(sys.argv[1]).read()
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", int(sys.argv[2])))
    s.listen()
    print("listening", flush=True)
    signal.pause()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("kind", ["notify", "tcp", "cmd"])
def test_ready_only_when_the_program_says_so(tmp_path: Path, kind: str) -> None:
    fifo = _gate(tmp_path)
    port = _free_port()
    flag = tmp_path / "flag"
    if kind == "notify":
        command, ready = cmd(PYTHON, "-c", _dedent(NOTIFY_PROGRAM), str(fifo)), "notify"
    elif kind == "tcp":
        command, ready = cmd(PYTHON, "-c", _dedent(TCP_PROGRAM), str(fifo), str(port)), (
            f"tcp:127.0.0.1:{port}"
        )
    else:
        script = f"echo waiting; cat {fifo} >/dev/null; touch {flag}; exec sleep 1000"
        command, ready = cmd("sh", "-c", script), f"cmd:test -e {flag}"
    cfg = config(
        tmp_path,
        f"""
        [programs.srv]
        command = {command}
        ready = "{ready}"
        autostart = false
        """,
    )

    async def body(sup: Supervisor) -> None:
        await sup.start(["srv"], wait=False)
        await until(lambda: "waiting" in log_text(sup, "srv:0"), what="the program to wait")
        await pause(0.15)  # more than one readiness probe interval
        assert info(sup, "srv:0").state == "STARTING"
        opened = time.time()
        await _open_gate(fifo)
        [result] = await sup.start(["srv"])
        assert result.ok and result.state == "RUNNING"
        ready_at = info(sup, "srv:0").ready_at
        assert ready_at is not None and ready_at >= opened

    drive(cfg, body)


def test_delay_readiness(tmp_path: Path) -> None:
    cfg = config(
        tmp_path,
        f"""
        [programs.slow]
        command = {cmd("sleep", "1000")}
        ready = "delay:0.3"
        autostart = false
        """,
    )

    async def body(sup: Supervisor) -> None:
        [result] = await sup.start(["slow"])
        assert result.ok
        i = info(sup, "slow:0")
        assert i.ready_at is not None and i.started_at is not None
        assert 0.3 <= i.ready_at - i.started_at < 1.5

    drive(cfg, body)


def test_not_ready_in_time_is_a_failed_start_and_its_tree_is_ended(
    tmp_path: Path, clock: MockClock
) -> None:
    pids = tmp_path / "pids"
    script = f"sh -c 'echo $$ >> {pids}; exec sleep 1000' & echo $$ >> {pids}; exec sleep 1000"
    cfg = config(
        tmp_path,
        f"""
        [programs.mute]
        command = {cmd("sh", "-c", script)}
        ready = "notify"
        ready_timeout = 30
        start_retries = 1
        autostart = false
        """,
    )

    def started() -> list[int]:
        return [int(p) for p in pids.read_text().split()] if pids.exists() else []

    async def body(sup: Supervisor) -> None:
        start = asyncio.create_task(sup.start(["mute"]))
        await until(lambda: len(started()) == 2, 10, "2 pids")
        await jump_past(clock, 30, lambda: not start.done() and all(map(running, started())))
        [result] = await asyncio.wait_for(start, 10)
        assert not result.ok and result.state == "FATAL"
        assert "not ready within 30s (ready = notify)" in result.message
        assert len(started()) == 2 and all_gone(started())

    drive(cfg, body, LONG, loop_factory=clock.event_loop)


def test_stop_while_a_readiness_probe_runs_ends_the_probe_too(tmp_path: Path) -> None:
    probes = tmp_path / "probes"
    probe = f"echo $$ >> {probes}; exec sleep 1000"  # a probe that hangs
    cfg = config(
        tmp_path,
        f"""
        [programs.slowcheck]
        command = {cmd("sleep", "1000")}
        ready = "cmd:{probe}"
        autostart = false
        """,
    )

    async def body(sup: Supervisor) -> None:
        await sup.start(["slowcheck"], wait=False)
        await until(lambda: probes.exists() and probes.read_text().strip(), what="a probe")
        probe_pid = int(probes.read_text().split()[0])
        [result] = await sup.stop(["slowcheck"])
        assert result.ok and result.state == "STOPPED"
        assert states(sup, "slowcheck:0") == ["STARTING", "STOPPING", "STOPPED"]
        await until(lambda: not running(probe_pid), what="the probe to end")

    drive(cfg, body)


def test_unusable_log_file_is_a_failed_start_not_a_crash(tmp_path: Path) -> None:
    cfg = config(
        tmp_path,
        f"""
        [programs.app]
        command = {cmd("sleep", "1000")}
        autostart = false
        start_retries = 1
        """,
    )
    (cfg.supervisor.log_dir / "app.0.stdout.log").mkdir(parents=True)  # a directory: EISDIR

    async def body(sup: Supervisor) -> None:
        [result] = await sup.start(["app"])
        assert result.state == "FATAL"
        assert "cannot open its pipes and log files: Is a directory" in result.message

    drive(cfg, body)


def test_exit_before_ready_is_a_failed_start(tmp_path: Path) -> None:
    cfg = config(
        tmp_path,
        """
        [programs.quitter]
        command = "sh -c 'exit 1'"
        ready = "delay:5"
        start_retries = 1
        autostart = false
        """,
    )

    async def body(sup: Supervisor) -> None:
        [result] = await sup.start(["quitter"])
        assert result.state == "FATAL"
        assert "exited with status 1 before it was ready" in result.message

    drive(cfg, body)


# -- dependencies -----------------------------------------------------------------

STAMP = """
    import sys, time, signal
    with open(sys.argv[1], "a") as f:
        f.write(f"{sys.argv[2]} {time.time()!r}\\n")
    signal.pause()
"""


def test_dependency_starts_only_after_its_dependency_is_ready(tmp_path: Path) -> None:
    stamps = tmp_path / "stamps"
    cfg = config(
        tmp_path,
        f"""
        [programs.web]
        command = {cmd(PYTHON, "-c", _dedent(STAMP), str(stamps), "web")}
        depends_on = ["db"]
        numprocs = 2
        [programs.db]
        command = {cmd(PYTHON, "-c", _dedent(STAMP), str(stamps), "db")}
        ready = "delay:0.4"
        [programs.other]
        command = {cmd(PYTHON, "-c", _dedent(STAMP), str(stamps), "other")}
        """,
    )

    async def body(sup: Supervisor) -> None:
        db_ready = info(sup, "db:0").ready_at
        assert db_ready is not None
        lines = [line.split() for line in stamps.read_text().splitlines()]
        started = {}
        for who, at in lines:
            started.setdefault(who, []).append(float(at))
        assert len(started["web"]) == 2
        assert min(started["web"]) >= db_ready  # never before its dependency is ready
        # Independent programs do not wait: spawned (the supervisor's clock, not
        # the child's, whose interpreter may take longer than 0.4 s to start
        # on a loaded machine) before the dependency was ready.
        other = info(sup, "other:0").started_at
        assert other is not None and other < db_ready
        assert all((info(sup, f"web:{i}").started_at or 0) >= db_ready for i in range(2))
        assert all(i.state == "RUNNING" for i in sup.instances())

    drive(cfg, body)


def test_start_brings_up_dependencies_and_a_failed_dependency_fails_the_dependent(
    tmp_path: Path,
) -> None:
    cfg = config(
        tmp_path,
        f"""
        [programs.app]
        command = {cmd("sleep", "1000")}
        depends_on = ["broken"]
        autostart = false
        [programs.broken]
        command = "sh -c 'exit 2'"
        ready = "delay:0.2"
        autostart = false
        start_retries = 1
        """,
    )

    async def body(sup: Supervisor) -> None:
        [result] = await sup.start(["app"])
        assert not result.ok and result.state == "FATAL"
        assert result.message == "app:0 is FATAL: dependency broken:0 is FATAL"
        assert info(sup, "broken:0").state == "FATAL"
        assert "RUNNING" not in states(sup, "app:0")

    drive(cfg, body)


def test_shutdown_stops_dependents_first(tmp_path: Path) -> None:
    cfg = config(
        tmp_path,
        f"""
        [programs.db]
        command = {cmd("sleep", "1000")}
        [programs.web]
        command = {cmd("sleep", "1000")}
        depends_on = ["db"]
        numprocs = 3
        [programs.front]
        command = {cmd("sleep", "1000")}
        depends_on = ["web"]
        """,
    )
    seen: dict[str, Supervisor] = {}

    async def body(sup: Supervisor) -> None:
        seen["sup"] = sup

    drive(cfg, body)
    sup = seen["sup"]
    front_stopped = when(sup, "front:0", "STOPPED")
    web_stopping = min(when(sup, f"web:{i}", "STOPPING") for i in range(3))
    web_stopped = max(when(sup, f"web:{i}", "STOPPED") for i in range(3))
    assert front_stopped <= web_stopping
    assert web_stopped <= when(sup, "db:0", "STOPPING")


def test_stop_ends_the_whole_tree_including_setsid_and_sigterm_ignoring(
    tmp_path: Path, clock: MockClock
) -> None:
    pids = tmp_path / "pids"
    tree = f"""
    import os, signal, subprocess, sys
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # A child that leaves the session and ignores SIGTERM too.
    subprocess.Popen(["setsid", "sh", "-c", "trap '' TERM; echo $$ >> {pids}; exec sleep 1000"])
    # A double-forked daemon, re-parented away from us.
    if os.fork() == 0:
        if os.fork() == 0:
            os.setsid()
            with open("{pids}", "a") as f:
                f.write(f"{{os.getpid()}}\\n")
            os.execvp("sleep", ["sleep", "1000"])
        os._exit(0)
    with open("{pids}", "a") as f:
        f.write(f"{{os.getpid()}}\\n")
    signal.pause()
    """
    cfg = config(
        tmp_path,
        f"""
        [programs.tree]
        command = {cmd(PYTHON, "-c", _dedent(tree))}
        stop_timeout = 10
        """,
    )

    async def body(sup: Supervisor) -> None:
        await until(lambda: pids.exists() and len(pids.read_text().split()) == 3, what="3 pids")
        members = [int(p) for p in pids.read_text().split()]
        assert all(running(p) for p in members)
        began = clock.monotonic()
        stop = asyncio.create_task(sup.stop(["tree"]))
        await until(lambda: info(sup, "tree:0").state == "STOPPING", what="STOPPING")
        await jump_past(clock, 10, lambda: not stop.done() and all(map(running, members)))
        [result] = await asyncio.wait_for(stop, 10)
        took = clock.monotonic() - began
        assert result.ok and result.state == "STOPPED"
        assert all_gone(members), [p for p in members if running(p)]
        # SIGTERM was ignored, so it took the stop_timeout and then SIGKILL.
        assert 10 <= took < 14.0
        assert result.last_exit == -signal.SIGKILL

    drive(cfg, body, LONG, loop_factory=clock.event_loop)


def test_orphans_handed_to_the_supervisor_are_reaped_without_stealing_statuses(
    tmp_path: Path,
) -> None:
    gpid = tmp_path / "gpid"
    script = f"(sh -c 'echo $$ > {gpid}; exec sleep 1000' &); exec sleep 1000"
    cfg = config(
        tmp_path,
        f"""
        [programs.parent]
        command = {cmd("sh", "-c", script)}
        """,
    )

    async def body(sup: Supervisor) -> None:
        await until(lambda: gpid.exists() and gpid.read_text().strip(), what="grandchild pid")
        orphan = int(gpid.read_text())
        # Its parent (the subshell) exited: it was handed to us, the subreaper.
        assert forkwell_ppid(orphan) == os.getpid()
        os.kill(orphan, signal.SIGKILL)
        await until(lambda: not os.path.exists(f"/proc/{orphan}"), what="the orphan reaped")
        main = info(sup, "parent:0").pid
        assert main is not None
        sup.send_signal(["parent:0"], signal.SIGUSR1)
        await until(lambda: info(sup, "parent:0").restarts == 1, what="a restart")
        # The program's own status reached its instance, not the orphan reaper.
        assert info(sup, "parent:0").last_exit == -signal.SIGUSR1

    drive(cfg, body)


def forkwell_ppid(pid: int) -> int:
    data = Path(f"/proc/{pid}/stat").read_bytes()
    return int(data[data.rfind(b")") + 2 :].split()[1])


# -- actions -----------------------------------------------------------------------


def test_restart_one_instance_touches_no_other(tmp_path: Path) -> None:
    cfg = config(
        tmp_path,
        f"""
        [programs.web]
        command = {cmd("sleep", "1000")}
        numprocs = 3
        [programs.db]
        command = {cmd("sleep", "1000")}
        """,
    )

    async def body(sup: Supervisor) -> None:
        before = {i.name: i.pid for i in sup.instances()}
        [result] = await sup.restart(["web:1"])
        assert result.ok
        after = {i.name: i.pid for i in sup.instances()}
        assert after["web:1"] != before["web:1"]
        assert {k: v for k, v in after.items() if k != "web:1"} == {
            k: v for k, v in before.items() if k != "web:1"
        }

    drive(cfg, body)


def test_resolve_and_unknown_names(tmp_path: Path) -> None:
    cfg = config(
        tmp_path,
        f"""
        [programs.web]
        command = {cmd("sleep", "1000")}
        numprocs = 2
        autostart = false
        [programs.db]
        command = {cmd("sleep", "1000")}
        autostart = false
        """,
    )

    async def body(sup: Supervisor) -> None:
        assert sup.resolve(["all"]) == ["web:0", "web:1", "db:0"]
        assert sup.resolve(["db", "web:1", "db:0"]) == ["db:0", "web:1"]
        with pytest.raises(forkwell.UnknownProgramError, match="unknown program 'cache'"):
            sup.resolve(["cache"])
        with pytest.raises(KeyError):
            sup.resolve(["web:7"])
        assert sup.log_path("web:1", "stderr").name == "web.1.stderr.log"
        assert [i.state for i in sup.instances()] == ["STOPPED"] * 3
        results = sup.send_signal(["db"], signal.SIGTERM)
        assert not results[0].ok and results[0].message == "db:0 is not running"

    drive(cfg, body)


def test_stop_during_backoff_and_while_waiting_for_a_dependency(tmp_path: Path) -> None:
    cfg = config(
        tmp_path,
        f"""
        [programs.flaky]
        command = "sh -c 'exit 1'"
        backoff_max = 30
        start_retries = 50
        autostart = false
        [programs.waiter]
        command = {cmd("sleep", "1000")}
        depends_on = ["slow"]
        autostart = false
        [programs.slow]
        command = {cmd("sleep", "1000")}
        ready = "delay:30"
        autostart = false
        """,
    )

    async def body(sup: Supervisor) -> None:
        await sup.start(["flaky", "waiter"], wait=False)
        await until(lambda: info(sup, "flaky:0").state == "BACKOFF", what="BACKOFF")
        assert info(sup, "waiter:0").state == "STARTING" and info(sup, "waiter:0").pid is None
        results = await sup.stop(["flaky", "waiter", "slow"])
        assert [r.state for r in results] == ["STOPPED"] * 3
        # Nothing is scheduled any more: no respawn after the stop.
        await pause(0.3)
        assert [i.state for i in sup.instances()] == ["STOPPED"] * 3

    drive(cfg, body)


def test_scale_keeps_existing_instances(tmp_path: Path) -> None:
    cfg = config(
        tmp_path,
        f"""
        [programs.worker]
        command = {cmd("sleep", "1000")}
        numprocs = 2
        """,
    )

    async def body(sup: Supervisor) -> None:
        before = [i.pid for i in sup.instances()]
        up = await sup.scale("worker", 4)
        assert [r.instance for r in up] == ["worker:2", "worker:3"] and all(r.ok for r in up)
        assert [i.pid for i in sup.instances()][:2] == before
        gone_pids = [i.pid for i in sup.instances()][1:]
        down = await sup.scale("worker", 1)
        assert [r.instance for r in down] == ["worker:1", "worker:2", "worker:3"]
        assert [i.pid for i in sup.instances()] == before[:1]
        assert all_gone([p for p in gone_pids if p])
        with pytest.raises(forkwell.UnknownProgramError):
            await sup.scale("nope", 1)

    drive(cfg, body)


def test_reload_applies_only_what_changed(tmp_path: Path) -> None:
    path = tmp_path / "forkwell.toml"
    cfg = config(
        tmp_path,
        f"""
        [programs.keep]
        command = {cmd("sleep", "1000")}
        [programs.grow]
        command = {cmd("sleep", "1000")}
        [programs.change]
        command = {cmd("sleep", "1000")}
        [programs.drop]
        command = {cmd("sleep", "1000")}
        """,
    )

    async def body(sup: Supervisor) -> None:
        before = {i.name: i.pid for i in sup.instances()}
        text = path.read_text()
        path.write_text(text.replace("[programs.drop]", "[programs.drop]\nbogus = 1"))
        with pytest.raises(forkwell.ConfigError, match=r"programs\.drop\.bogus"):
            await sup.reload()
        assert {i.name: i.pid for i in sup.instances()} == before
        new = (
            text.replace("[programs.grow]\n", "[programs.grow]\nnumprocs = 3\n")
            .replace("[programs.change]\n", '[programs.change]\nenvironment = { X = "1" }\n')
            .split("[programs.drop]")[0]
            + f"[programs.added]\ncommand = {cmd('sleep', '1000')}\n"
        )
        path.write_text(new)
        report = await sup.reload()
        assert report.unchanged == ["keep"]
        assert report.scaled == ["grow"]
        assert report.changed == ["change"]
        assert report.removed == ["drop"]
        assert report.added == ["added"]
        after = {i.name: i.pid for i in sup.instances()}
        assert after["keep:0"] == before["keep:0"]
        assert after["grow:0"] == before["grow:0"]
        assert after["change:0"] != before["change:0"]
        assert set(after) == {"keep:0", "grow:0", "grow:1", "grow:2", "change:0", "added:0"}
        assert all(i.state == "RUNNING" for i in sup.instances())
        assert not running(before["drop:0"] or 0)

    drive(cfg, body)


def test_output_goes_to_per_instance_logs_with_env(tmp_path: Path) -> None:
    cfg = config(
        tmp_path,
        """
        [programs.talk]
        command = "sh -c 'echo out $FORKWELL_INSTANCE $GREETING; echo err >&2; exec sleep 1000'"
        environment = { GREETING = "hi" }
        numprocs = 2
        [programs.merged]
        command = "sh -c 'echo one; echo two >&2; exec sleep 1000'"
        redirect_stderr = true
        """,
    )

    async def body(sup: Supervisor) -> None:
        await until(lambda: log_text(sup, "talk:1") and log_text(sup, "talk:1", "stderr"))
        assert log_text(sup, "talk:1") == "out talk:1 hi\n"
        assert log_text(sup, "talk:1", "stderr") == "err\n"
        await until(lambda: log_text(sup, "merged:0").count("\n") == 2)
        assert sorted(log_text(sup, "merged:0").split()) == ["one", "two"]
        assert sup.log_path("merged:0", "stderr") == sup.log_path("merged:0", "stdout")

    drive(cfg, body)


def test_survivors_of_a_killed_supervisor_are_ended_by_the_next_run(tmp_path: Path) -> None:
    """In-process variant: a state file names a dead supervisor's cookie; its tree is ended."""
    escaped = tmp_path / "escaped"
    cfg = config(
        tmp_path,
        f"""
        [programs.noop]
        command = {cmd("sleep", "1000")}
        autostart = false
        """,
    )
    # Simulate what a SIGKILLed supervisor leaves: an orphan carrying its cookie.
    token = "feedfacecafebeef"
    env = dict(os.environ, FORKWELL_TREE=token)
    import subprocess

    subprocess.run(
        ["sh", "-c", f"setsid sh -c 'echo $$ > {escaped}; exec sleep 1000' &"], env=env, check=True
    )
    wait_until(lambda: escaped.exists() and escaped.read_text().strip(), what="the orphan")
    orphan = int(escaped.read_text())
    cfg.supervisor.state_file.parent.mkdir(parents=True, exist_ok=True)
    cfg.supervisor.state_file.write_text(f'{{"pid": 1, "starttime": -1, "token": "{token}"}}')

    async def body(sup: Supervisor) -> None:
        assert not running(orphan)
        assert sup.state_file_survivors == [orphan]

    drive(cfg, body)


def test_second_supervisor_for_the_same_config_is_refused(tmp_path: Path) -> None:
    cfg = config(
        tmp_path,
        f"""
        [programs.noop]
        command = {cmd("sleep", "1000")}
        autostart = false
        """,
    )

    async def body(sup: Supervisor) -> None:
        other = Supervisor(cfg, quiet=True)
        with pytest.raises(forkwell.StateError, match="another forkwell up is running"):
            await other.run()

    drive(cfg, body)


def test_shutdown_timeout_kills_what_ignores_the_stop_signal(
    tmp_path: Path, clock: MockClock
) -> None:
    path = tmp_path / "forkwell.toml"
    script = "trap '' TERM; while :; do read -t 1 x < /dev/zero; done"
    path.write_text(
        "[supervisor]\nshutdown_timeout = 30\n"
        f"[programs.stubborn]\ncommand = {cmd('sh', '-c', script)}\nstop_timeout = 60\n"
    )
    cfg = forkwell.load_config(path)
    seen: dict[str, float] = {}

    async def body(sup: Supervisor) -> None:
        pid = info(sup, "stubborn:0").pid or 0
        seen["pid"] = float(pid)
        seen["began"] = clock.monotonic()
        shutdown = asyncio.create_task(sup.shutdown())
        await until(lambda: info(sup, "stubborn:0").state == "STOPPING", what="STOPPING")
        await jump_past(clock, 30, lambda: not shutdown.done() and running(pid))
        await asyncio.wait_for(shutdown, 10)

    drive(cfg, body, LONG, loop_factory=clock.event_loop)
    took = clock.monotonic() - seen["began"]
    assert 30 <= took < 34.0
    assert not running(int(seen["pid"]))


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch users")
def test_user_group_and_umask(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    cfg = config(
        tmp_path,
        """
        [programs.who]
        command = "sh -c 'echo $(id -u) $(id -g) $(umask) $USER; exec sleep 1000'"
        user = "nobody"
        umask = "027"
        """,
    )

    async def body(sup: Supervisor) -> None:
        await until(lambda: log_text(sup, "who:0"), what="its output")
        import pwd

        nobody = pwd.getpwnam("nobody")
        assert log_text(sup, "who:0").split() == [
            str(nobody.pw_uid), str(nobody.pw_gid), "0027", "nobody"
        ]

    drive(cfg, body)


def _watchdog_ready(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/comm").read_text() == "forkwell-watch\n"
    except OSError:
        return False


def test_watchdog_kills_the_cookie_carriers_when_the_supervisor_dies() -> None:
    import subprocess

    from forkwell._core import _tree
    from forkwell._supervisor._watchdog import Watchdog

    token = _tree.new_token()
    dog = Watchdog(token)
    pid = dog.start()
    marked = subprocess.Popen(
        ["sleep", "1000"], env={**os.environ, "FORKWELL_TREE": f"outer:{token}"},
        start_new_session=True,
    )  # fmt: skip
    bystander = subprocess.Popen(["sleep", "1000"])
    try:
        wait_until(lambda: _watchdog_ready(pid), 10, "the watchdog to settle")
        # It holds nothing of ours: /dev/null as stdio, and its pipe.
        fds = os.listdir(f"/proc/{pid}/fd")
        assert len(fds) == 4, fds
        assert all(os.readlink(f"/proc/{pid}/fd/{fd}") == "/dev/null" for fd in "012")
        os.close(dog._write_end)  # what the kernel does when the supervisor dies
        dog._write_end = -1
        assert marked.wait(timeout=10) == -signal.SIGKILL
        assert bystander.poll() is None
        assert dog.reap() == 0
    finally:
        bystander.kill()
        bystander.wait()
        marked.kill()
        marked.wait()


def test_watchdog_stopped_cleanly_kills_nothing() -> None:
    import subprocess

    from forkwell._core import _tree
    from forkwell._supervisor._watchdog import Watchdog

    token = _tree.new_token()
    dog = Watchdog(token)
    pid = dog.start()
    marked = subprocess.Popen(["sleep", "1000"], env={**os.environ, "FORKWELL_TREE": token})
    try:
        wait_until(lambda: _watchdog_ready(pid), 10, "the watchdog to settle")
        dog.stop()
        assert dog.pid is None and not running(pid)
        assert marked.poll() is None
    finally:
        marked.kill()
        marked.wait()


def test_prestart_spawns_what_needs_no_loop_and_run_takes_over(tmp_path: Path) -> None:
    cfg = config(
        tmp_path,
        f"""
        [programs.plain]
        command = {cmd("sh", "-c", "echo before the loop; exec sleep 1000")}
        [programs.quick]
        command = {cmd("sh", "-c", "exit 3")}
        restart = "never"
        min_uptime = 0
        [programs.missing]
        command = "/nonexistent/program"
        start_retries = 2
        [programs.dependent]
        command = "sleep 1000"
        depends_on = ["plain"]
        [programs.delayed]
        command = "sleep 1000"
        ready = "delay:0.05"
        """,
    )
    sup = Supervisor(cfg, quiet=True)
    # No event loop exists yet: only exec-ready programs without dependencies start.
    assert sup.prestart() == 3
    before = {i.name: i.state.name for i in sup._all()}
    assert before == {
        "plain:0": "RUNNING", "quick:0": "RUNNING", "missing:0": "BACKOFF",
        "dependent:0": "STOPPED", "delayed:0": "STOPPED",
    }  # fmt: skip

    async def body(sup: Supervisor) -> None:
        # The backoff timer recorded before the loop ran did fire: the 2nd try failed too.
        assert states(sup, "missing:0") == ["STARTING", "BACKOFF", "STARTING", "FATAL"]
        assert info(sup, "dependent:0").state == "RUNNING"
        assert info(sup, "delayed:0").state == "RUNNING"
        # An exit before the loop watched its pidfd, and output written meanwhile.
        await until(lambda: info(sup, "quick:0").state == "EXITED", what="quick's exit")
        assert info(sup, "quick:0").last_exit == 3
        await until(lambda: log_text(sup, "plain:0"), what="plain's output")
        assert log_text(sup, "plain:0") == "before the loop\n"

    drive(cfg, body, supervisor=sup)


def test_a_stop_signal_during_prestart_is_honoured_once_the_loop_runs(tmp_path: Path) -> None:
    cfg = config(tmp_path, '[programs.plain]\ncommand = "sleep 1000"\n')
    sup = Supervisor(cfg, quiet=True)
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    try:
        assert sup.prestart() == 1
        pid = info(sup, "plain:0").pid
        # No loop yet: the handler only records it (SIGTERM's default would orphan plain).
        os.kill(os.getpid(), signal.SIGTERM)
        assert sup._early_signals == [signal.SIGTERM]

        async def main() -> int:
            return await asyncio.wait_for(sup.run(), 30)  # ends by itself: a stop request

        assert asyncio.run(main()) == 0
        assert info(sup, "plain:0").state == "STOPPED"
        assert pid is not None and not running(pid)
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def test_a_fleet_holding_over_1024_fds_stops_and_starts(tmp_path: Path) -> None:
    # 200 instances hold ~1,400 fds: waiting on the later pidfds once broke
    # on select()'s 1023 limit ("filedescriptor out of range").
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2000:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < 2000")
    cfg = config(tmp_path, '[programs.many]\ncommand = "sleep 1000"\nnumprocs = 200\nmin_uptime = 0\n')

    async def body(sup: Supervisor) -> None:
        last = info(sup, "many:199")
        assert last.state == "RUNNING" and last.pid is not None
        assert sup._by_name()["many:199"].proc.fileno() > 1023  # type: ignore[union-attr]
        results = await sup.stop(["all"])
        assert all(r.ok for r in results) and all_gone([last.pid])
        results = await sup.start(["all"])
        assert all(r.ok for r in results)
        assert {i.state for i in sup.instances()} == {"RUNNING"}

    try:
        drive(cfg, body)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_commands_are_found_along_the_programs_own_path(tmp_path: Path) -> None:
    bin_a, bin_b = tmp_path / "a", tmp_path / "b"
    for d in (bin_a, bin_b):
        d.mkdir()
        tool = d / "tool"
        tool.write_text(f"#!/bin/sh\necho {d.name} $0\nexec sleep 1000\n")
        tool.chmod(0o755)
    cfg = config(
        tmp_path,
        f"""
        [programs.first]
        command = "tool"
        numprocs = 2
        environment = {{ PATH = "{bin_a}:{bin_b}:/usr/bin:/bin" }}
        [programs.second]
        command = "tool"
        environment = {{ PATH = "/nonexistent:{bin_b}:/usr/bin:/bin" }}
        [programs.missing]
        command = "no-such-tool-anywhere"
        start_retries = 1
        """,
    )

    async def body(sup: Supervisor) -> None:
        for name, expected in (("first:0", "a"), ("first:1", "a"), ("second:0", "b")):
            await until(lambda n=name: log_text(sup, n), what=f"{name}'s output")  # type: ignore[misc]
            # Found the way exec would: the first match along its PATH; $0 stays "tool".
            assert log_text(sup, name) == f"{expected} {tmp_path / expected / 'tool'}\n"
        assert info(sup, "missing:0").state == "FATAL"
        assert "not found" in sup._by_name()["missing:0"].message

    drive(cfg, body)


def test_a_refused_prestart_starts_nothing_and_restores_the_signal_handlers(tmp_path: Path) -> None:
    import json

    from forkwell import StateError
    from forkwell._core import _tree

    cfg = config(tmp_path, '[programs.plain]\ncommand = "sleep 1000"\n')
    me = _tree.read_stat(os.getpid())
    assert me is not None
    # The state file says a supervisor runs here (this very process, alive).
    cfg.supervisor.state_file.parent.mkdir(parents=True)
    cfg.supervisor.state_file.write_text(json.dumps({"pid": os.getpid(), "starttime": me.starttime}))
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    sup = Supervisor(cfg, quiet=True)
    with pytest.raises(StateError, match="another forkwell up is running"):
        sup.prestart()
    assert {sig: signal.getsignal(sig) for sig in before} == before
    assert info(sup, "plain:0").state == "STOPPED" and sup._watchdog.pid is None


def test_nothing_starts_once_shutdown_began(tmp_path: Path, clock: MockClock) -> None:
    script = "trap '' TERM; while :; do read -t 1 x < /dev/zero; done"
    cfg = config(
        tmp_path,
        f"""
        [programs.slow]
        command = {cmd("sh", "-c", script)}
        stop_timeout = 5
        [programs.later]
        command = {cmd("sleep", "1000")}
        autostart = false
        """,
    )

    async def body(sup: Supervisor) -> None:
        shutdown = asyncio.ensure_future(sup.shutdown())
        await until(lambda: info(sup, "slow:0").state == "STOPPING", what="STOPPING")
        [result] = await sup.start(["later"])
        assert not result.ok and result.message == "later:0: the supervisor is shutting down"
        clock.jump(5)  # the stop_timeout of slow, which ignores SIGTERM
        await shutdown
        assert [i.state for i in sup.instances()] == ["STOPPED", "STOPPED"]

    drive(cfg, body, LONG, loop_factory=clock.event_loop)


def test_invalid_transition_raises_state_error(tmp_path: Path) -> None:
    from forkwell._supervisor._program import Instance

    cfg = config(tmp_path, f"[programs.x]\ncommand = {cmd('true')}\n")
    sup = Supervisor(cfg, quiet=True)
    inst = Instance(sup, cfg.programs["x"], 0)
    with pytest.raises(forkwell.StateError, match="x:0: cannot go from STOPPED to RUNNING"):
        inst._set(forkwell.ProgramState.RUNNING)


PYTHON = __import__("sys").executable


def _dedent(code: str) -> str:
    import textwrap

    return textwrap.dedent(code)


_ = py  # re-exported helper, used by the CLI tests
