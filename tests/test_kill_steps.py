"""SIGKILL of the supervisor in the middle of start, stop, scale and reload.

Each step is driven to a known point: the program instance the step is
about stops the supervisor (``kill -STOP $PPID``; the supervisor is its
parent) as it starts or as it handles SIGTERM, so the supervisor is frozen
halfway through the operation.  Then it is SIGKILLed:

* with its watchdog alive, the watchdog ends the whole fleet;
* with its watchdog killed too, the next ``forkwell up`` ends every
  survivor from the state file before it starts anything.

Either way nothing the supervisor started is left, and the control command
that was waiting for the answer says so in one line.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import PY, proc_state, running, wait_until
from test_supervisor_harness import cmd

pytestmark = pytest.mark.timeout(90)

# An instance whose index is in the file ``arm`` stops its supervisor, once:
# on start (``when=start``) or on SIGTERM (``when=term``).
PROGRAM = """
echo $$ >> "$DIR/pids"
armed() {{ [ -e "$DIR/arm" ] && grep -qx "$FORKWELL_INDEX" "$DIR/arm" && rm -f "$DIR/arm"; }}
{body}
"""
ON_START = "armed && kill -STOP $PPID\nexec sleep 1000"
# The armed one stays (as a program slow to stop would): a survivor to find.
ON_TERM = "trap 'if armed; then kill -STOP $PPID; else exit 0; fi' TERM\nwhile :; do sleep 1; done"


def write(tmp_path: Path, numprocs: int, body: str, extra: str = "") -> Path:
    script = tmp_path / "program.sh"
    script.write_text(PROGRAM.format(body=body))
    cfg = tmp_path / "forkwell.toml"
    cfg.write_text(
        textwrap.dedent(f"""
        [supervisor]
        shutdown_timeout = 10
        [programs.web]
        command = {cmd("sh", str(script))}
        environment = {{ DIR = "{tmp_path}" }}
        numprocs = {numprocs}
        stop_timeout = 10
        """)
        + extra
    )
    return cfg


def forkwell(cfg: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [PY, "-m", "forkwell", *args, "-c", str(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def pids(tmp_path: Path) -> list[int]:
    path = tmp_path / "pids"
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def state(tmp_path: Path) -> dict[str, int]:
    data: dict[str, int] = json.loads((tmp_path / ".forkwell" / "state.json").read_text())
    return data


def stopped(pid: int) -> bool:
    return proc_state(pid) == "T"


def answers(cfg: Path) -> bool:
    ps = forkwell(cfg, "ps")
    ps.communicate(timeout=30)
    return ps.returncode == 0


def freeze_during(
    tmp_path: Path,
    cfg: Path,
    index: int,
    step: Callable[[], subprocess.Popen[str] | None],
    autostart: int,
) -> tuple[subprocess.Popen[str], subprocess.Popen[str] | None]:
    """Start ``forkwell up``, arm instance ``index``, run ``step``; the supervisor ends frozen."""
    up = forkwell(cfg, "up", "--quiet")
    wait_until((tmp_path / ".forkwell" / "state.json").exists, 20, "the state file")
    wait_until(lambda: answers(cfg), 20, "the control socket")
    if autostart:
        wait_until(lambda: len(pids(tmp_path)) >= autostart, 20, "the fleet to start")
    (tmp_path / "arm").write_text(f"{index}\n")
    ctl = step()
    wait_until(lambda: stopped(up.pid), 20, "the armed instance to stop the supervisor")
    return up, ctl


def kill_and_check(tmp_path: Path, cfg: Path, up: subprocess.Popen[str], *, watchdog: bool) -> None:
    dog = state(tmp_path)["watchdog"]
    started = pids(tmp_path)
    assert any(running(p) for p in started)
    if not watchdog:
        os.kill(dog, signal.SIGKILL)
    up.send_signal(signal.SIGKILL)
    up.communicate(timeout=10)
    if watchdog:
        wait_until(lambda: not any(running(p) for p in started), 20, "the watchdog to end them")
        # And then itself: it outlives the fleet by its last scan, and the leak
        # check saw it still running once under load (a forkwell up, by its argv).
        wait_until(lambda: not running(dog), 20, "the watchdog to exit")
        return
    wait_until(lambda: not running(dog), 10, "the watchdog to go")
    survivors = [p for p in started if running(p)]
    assert survivors, "nothing survived: the case the state file is for was not reached"
    again = forkwell(cfg, "up", "--quiet", "--exit-after", "0.5")
    _, err = again.communicate(timeout=60)
    assert again.returncode == 0, err
    assert not any(running(p) for p in pids(tmp_path)), "the next up ended every survivor"
    log = (tmp_path / ".forkwell" / "logs" / "forkwell.log").read_text()
    line = next(ln for ln in log.splitlines() if "left by a killed supervisor" in ln)
    assert all(str(p) in line for p in survivors), (line, survivors)


def assert_ctl_failed_cleanly(ctl: subprocess.Popen[str] | None) -> None:
    if ctl is None:
        return
    _, err = ctl.communicate(timeout=30)
    assert ctl.returncode != 0
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def scale(cfg: Path) -> subprocess.Popen[str]:
    return forkwell(cfg, "scale", "web=4")


def start(cfg: Path) -> subprocess.Popen[str]:
    return forkwell(cfg, "start", "web")


def stop(cfg: Path) -> subprocess.Popen[str]:
    return forkwell(cfg, "stop", "web")


STEPS = {
    # name: (numprocs, program, autostart, the step, which instance stops it)
    "scale up, after the 2nd new instance": (1, ON_START, True, scale, 2),
    "start, after the 2nd of 3": (3, ON_START, False, start, 1),
    "stop, as the 2nd of 3 is told to stop": (3, ON_TERM, True, stop, 1),
}


@pytest.mark.parametrize("watchdog", [True, False], ids=["watchdog alive", "watchdog killed"])
@pytest.mark.parametrize("name", list(STEPS))
def test_sigkill_in_the_middle_of_a_step(tmp_path: Path, name: str, watchdog: bool) -> None:
    numprocs, body, autostart, step, index = STEPS[name]
    extra = "" if autostart else "autostart = false\n"
    cfg = write(tmp_path, numprocs, body)
    if extra:
        cfg.write_text(cfg.read_text() + extra)
    up, ctl = freeze_during(tmp_path, cfg, index, lambda: step(cfg), numprocs if autostart else 0)
    kill_and_check(tmp_path, cfg, up, watchdog=watchdog)
    assert_ctl_failed_cleanly(ctl)


@pytest.mark.parametrize("watchdog", [True, False], ids=["watchdog alive", "watchdog killed"])
def test_sigkill_in_the_middle_of_a_reload(tmp_path: Path, watchdog: bool) -> None:
    cfg = write(tmp_path, 1, ON_START)

    def reload() -> None:
        # Two more instances and a new program: the reload's spawns stop it.
        text = cfg.read_text().replace("numprocs = 1", "numprocs = 3")
        more = f"[programs.more]\ncommand = {cmd('sh', str(tmp_path / 'program.sh'))}\n"
        cfg.write_text(text + more + f'environment = {{ DIR = "{tmp_path}" }}\n')
        up_pid = state(tmp_path)["pid"]
        os.kill(up_pid, signal.SIGHUP)

    up, _ = freeze_during(tmp_path, cfg, 2, reload, 1)  # type: ignore[arg-type, func-returns-value]
    kill_and_check(tmp_path, cfg, up, watchdog=watchdog)


@pytest.mark.parametrize("rotations", [1, 3, 6])
def test_sigkill_while_logs_rotate_loses_no_byte_it_read(tmp_path: Path, rotations: int) -> None:
    """Output at full speed into 4 KiB files: killed at any moment, the files
    hold a prefix of the program's output, in order, without a gap or a
    repeated byte (nothing is buffered in Python between pipe and file)."""
    cfg = tmp_path / "forkwell.toml"
    cfg.write_text(
        textwrap.dedent(f"""
        [programs.writer]
        command = {cmd(PY, "-c", FULL_SPEED)}
        log_max_bytes = "4KB"
        log_backups = 100
        log_markers = false     # the program's bytes alone (markers: test_health_logs.py)
        """)
    )
    logs = tmp_path / ".forkwell" / "logs"
    up = forkwell(cfg, "up", "--quiet")
    try:
        wait_until((logs / f"writer.0.stdout.log.{rotations}").exists, 30, "rotations")
    finally:
        up.send_signal(signal.SIGKILL)
        up.communicate(timeout=10)
    files = sorted(logs.glob("writer.0.stdout.log.*"), key=lambda p: -int(p.suffix[1:]))
    data = b"".join(p.read_bytes() for p in [*files, logs / "writer.0.stdout.log"])
    assert all(p.stat().st_size == 4096 for p in files), "every rotated file is full"
    assert len(data) >= rotations * 4096
    assert data == stream(len(data) // 10 + 1)[: len(data)]
    again = forkwell(cfg, "up", "--quiet", "--exit-after", "0")
    again.communicate(timeout=60)  # the watchdog ended the writer; this ends nothing more
    assert again.returncode == 0


# Numbered 10-byte lines as fast as the pipe takes them, for a bounded time.
FULL_SPEED = (
    "import sys, time\n"
    "end = time.monotonic() + 30\n"
    "n = 0\n"
    "while time.monotonic() < end:\n"
    "    sys.stdout.write(''.join(f'{i:09d}\\n' for i in range(n, n + 100))); n += 100\n"
)


def stream(lines: int) -> bytes:
    return b"".join(f"{i:09d}\n".encode() for i in range(lines))
