"""The ctl commands end to end: the real CLI against a real supervisor running real programs.

Each test writes a ``forkwell.toml``, runs the supervisor (``forkwell up`` when
that command exists, else ``Supervisor.run()`` directly, which is what it
calls), drives it with ``python -m forkwell <cmd>`` and checks pids, states and
files from the outside.  The leak check proves every program was ended.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import select
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import IS_ROOT, PY, public_sources, running, wait_until

import forkwell

pytestmark = pytest.mark.timeout(60)

HAVE_CLI_UP = importlib.util.find_spec("forkwell._cli._up") is not None
RUN_SUPERVISOR = (
    "import asyncio, sys, forkwell\n"
    "sup = forkwell.Supervisor(forkwell.load_config(sys.argv[1]), quiet=True)\n"
    "sys.exit(asyncio.run(sup.run()))\n"
)
# A program that runs until stopped; it announces itself on stdout.
IDLE = f'command = ["{PY}", "-c", "import signal; print(\'up\', flush=True); signal.pause()"]'


class Fleet:
    def __init__(self, directory: Path, config: str) -> None:
        self.dir = directory
        self.config = directory / "forkwell.toml"
        self.config.write_text(config)
        self.sock = directory / ".forkwell" / "forkwell.sock"
        self.out = (directory / "up.out").open("wb")
        if HAVE_CLI_UP:
            cmd = [PY, "-m", "forkwell", "up", "-c", str(self.config), "--quiet"]
        else:
            cmd = [PY, "-c", RUN_SUPERVISOR, str(self.config)]
        self.proc = subprocess.Popen(cmd, stdout=self.out, stderr=subprocess.STDOUT, cwd=directory)

    def ctl(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [PY, "-m", "forkwell", *args, "-c", str(self.config)],
            capture_output=True, text=True, timeout=timeout, cwd=self.dir,
        )  # fmt: skip

    def client(self) -> forkwell.ControlClient:
        return forkwell.ControlClient(self.sock)

    def ps(self) -> dict[str, dict[str, Any]]:
        with self.client() as c:
            return {i["name"]: i for i in c.request("ps")["instances"]}

    def pids(self) -> dict[str, int | None]:
        return {name: row["pid"] for name, row in self.ps().items()}

    def wait_healthy(self, timeout: float = 20.0) -> None:
        def healthy() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"supervisor exited: {self.log()}")
            try:
                with self.client() as c:
                    return bool(c.request("ps")["healthy"])
            except forkwell.ControlError:
                return False

        wait_until(healthy, timeout, "every autostart instance RUNNING")

    def log(self) -> str:
        self.out.flush()
        return (self.dir / "up.out").read_text(errors="replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(forkwell.ControlError), self.client() as c:
                c.request("down", timeout=30)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.out.close()


@pytest.fixture
def make_fleet(tmp_path: Path) -> Iterator[Any]:
    fleets: list[Fleet] = []

    def make(config: str, directory: Path | None = None) -> Fleet:
        fleet = Fleet(directory or tmp_path, config)
        fleets.append(fleet)
        return fleet

    yield make
    for fleet in fleets:
        fleet.close()


TWO = f"""
[programs.web]
{IDLE}
numprocs = 2

[programs.worker]
{IDLE}
"""


def test_ps_exit_codes_follow_autostart_instances(make_fleet: Any) -> None:
    fleet = make_fleet(TWO + f"\n[programs.manual]\n{IDLE}\nautostart = false\n")
    fleet.wait_healthy()
    r = fleet.ctl("ps")
    assert r.returncode == 0, r.stderr
    rows = [line.split() for line in r.stdout.splitlines()[1:]]
    assert [(row[0], row[1]) for row in rows] == [
        ("web:0", "RUNNING"), ("web:1", "RUNNING"), ("worker:0", "RUNNING"), ("manual:0", "STOPPED")
    ]  # fmt: skip
    for row in rows[:3]:
        assert running(int(row[2]))
        assert row[7].endswith("M")  # RSS of a live Python from /proc
    # One autostart instance down: unhealthy, exit 3.
    assert fleet.ctl("stop", "web:1").returncode == 0
    r = fleet.ctl("ps")
    assert r.returncode == 3
    assert re.search(r"^web:1\s+STOPPED\s+-", r.stdout, re.M)
    # A non-autostart program running or not does not matter.
    assert fleet.ctl("start", "web:1", "manual").returncode == 0
    assert fleet.ctl("ps").returncode == 0
    doc = json.loads(fleet.ctl("ps", "--json").stdout)
    assert doc["version"] == 2 and doc["healthy"] is True
    assert len(doc["instances"]) == 4


def test_restart_one_instance_touches_no_other(make_fleet: Any) -> None:
    fleet = make_fleet(TWO)
    fleet.wait_healthy()
    before = fleet.pids()
    r = fleet.ctl("restart", "web:1")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "web:1: restarted (RUNNING)\n"
    after = fleet.pids()
    assert after["web:0"] == before["web:0"] and after["worker:0"] == before["worker:0"]
    assert after["web:1"] != before["web:1"]
    assert not running(before["web:1"])  # type: ignore[arg-type]


def test_stop_and_start_all_wait_for_the_states(make_fleet: Any) -> None:
    fleet = make_fleet(TWO)
    fleet.wait_healthy()
    old = fleet.pids()
    r = fleet.ctl("stop", "all")
    assert r.returncode == 0, r.stderr
    assert all(not running(pid) for pid in old.values())  # type: ignore[arg-type]
    assert {row["state"] for row in fleet.ps().values()} == {"STOPPED"}
    r = fleet.ctl("start", "all")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("started (RUNNING)") == 3
    assert all(running(pid) for pid in fleet.pids().values())  # type: ignore[arg-type]


def test_start_of_several_names_respects_dependencies(make_fleet: Any) -> None:
    fleet = make_fleet(
        f"[programs.web]\n{IDLE}\nnumprocs = 2\ndepends_on = [\"db\"]\n\n"
        f"[programs.db]\n{IDLE}\nready = \"delay:0.5\"\n"
    )
    fleet.wait_healthy()
    assert fleet.ctl("stop", "all").returncode == 0
    r = fleet.ctl("start", "web", "db")  # named in the "wrong" order
    assert r.returncode == 0, r.stderr
    rows = fleet.ps()
    assert {row["state"] for row in rows.values()} == {"RUNNING"}
    db_ready = rows["db:0"]["ready_at"]
    assert db_ready is not None
    for name in ("web:0", "web:1"):
        assert rows[name]["started_at"] >= db_ready, rows


def test_no_wait_returns_before_the_instance_is_ready(make_fleet: Any) -> None:
    fleet = make_fleet(
        f"[programs.slow]\n{IDLE}\nautostart = false\nready = \"delay:30\"\nready_timeout = \"60s\"\n"
    )
    wait_until(fleet.sock.exists, 20, "the control socket")
    started = time.monotonic()
    r = fleet.ctl("start", "slow", "--no-wait")
    assert r.returncode == 0, r.stderr
    assert time.monotonic() - started < 20  # far below the 30 s readiness delay
    assert fleet.ps()["slow:0"]["state"] == "STARTING"
    assert fleet.ctl("ps").returncode == 0  # slow is not autostart


def test_a_fatal_start_names_instance_status_and_log_lines(make_fleet: Any) -> None:
    fleet = make_fleet(
        TWO
        + f"""
[programs.broken]
command = ["{PY}", "-c", "import sys; print('connecting to db:5432', flush=True); sys.exit(3)"]
autostart = false
start_retries = 2
"""
    )
    fleet.wait_healthy()
    r = fleet.ctl("start", "broken", timeout=40)
    assert r.returncode == 3, r
    assert r.stderr.startswith("forkwell start: broken:0 is FATAL")
    assert "status 3" in r.stderr
    assert "| connecting to db:5432" in r.stderr
    assert fleet.ps()["broken:0"]["state"] == "FATAL"
    assert fleet.ctl("ps").returncode == 0  # broken is not autostart


TREE_CHILD = (
    "import signal, sys\n"
    "signal.signal(signal.SIGUSR1, lambda *a: open(sys.argv[1], 'w').close())\n"
    "print('child ready', flush=True)\n"
    "while True: signal.pause()\n"
)
# The main process ignores USR1 and waits for its child, which notes USR1 in a file.
TREE_PARENT = (
    "import signal, subprocess, sys\n"
    "signal.signal(signal.SIGUSR1, signal.SIG_IGN)\n"
    f"subprocess.Popen([sys.executable, '-c', {TREE_CHILD!r}, sys.argv[1]]).wait()\n"
)


def tree_fleet(make_fleet: Any, marker: Path, stop_timeout: str) -> Fleet:
    fleet: Fleet = make_fleet(
        f"[programs.tree]\ncommand = [{json.dumps(PY)}, \"-c\", {json.dumps(TREE_PARENT)}, "
        f"{json.dumps(str(marker))}]\nstop_timeout = \"{stop_timeout}\"\n"
    )
    fleet.wait_healthy()
    log = fleet.dir / ".forkwell" / "logs" / "tree.0.stdout.log"
    wait_until(lambda: log.exists() and b"child ready" in log.read_bytes(), 20, "child ready")
    return fleet


def test_signal_tree_reaches_the_children(make_fleet: Any, tmp_path: Path) -> None:
    marker = tmp_path / "usr1"
    fleet = tree_fleet(make_fleet, marker, "1s")
    pid = fleet.pids()["tree:0"]
    r = fleet.ctl("signal", "USR1", "tree", "--tree")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "tree:0: sent SIGUSR1 (RUNNING)\n"
    wait_until(marker.exists, 10, "the grandchild to get SIGUSR1")
    assert fleet.pids()["tree:0"] == pid  # the main process ignored it and still runs


def test_stop_after_signal_tree_still_stops_the_children_promptly(
    make_fleet: Any, tmp_path: Path
) -> None:
    marker = tmp_path / "usr1"
    fleet = tree_fleet(make_fleet, marker, "8s")
    assert fleet.ctl("signal", "USR1", "tree", "--tree").returncode == 0
    wait_until(marker.exists, 10, "the grandchild to get SIGUSR1")
    began = time.monotonic()
    assert fleet.ctl("stop", "tree").returncode == 0
    # SIGTERM ends both processes at once; 8 s would be the SIGKILL fallback.
    assert time.monotonic() - began < 5


def test_signal_without_tree_reaches_the_main_process_only(make_fleet: Any) -> None:
    fleet = make_fleet(f"[programs.one]\n{IDLE}\nmin_uptime = \"0s\"\n")
    fleet.wait_healthy()
    pid = fleet.pids()["one:0"]
    r = fleet.ctl("signal", "TERM", "one")
    assert r.returncode == 0, r.stderr
    wait_until(lambda: not running(pid), 10, "the main process to die of SIGTERM")  # type: ignore[arg-type]
    row: dict[str, Any] = {}

    def restarted() -> bool:
        row.update(fleet.ps()["one:0"])
        return row["restarts"] >= 1 and row["state"] == "RUNNING"

    wait_until(restarted, 10, "a restart")
    assert row["last_exit"] == -signal.SIGTERM
    r = fleet.ctl("signal", "TERM", "nope")
    assert r.returncode == 2


def test_reload_keeps_unchanged_programs_and_applies_the_rest(make_fleet: Any) -> None:
    fleet = make_fleet(TWO + f"\n[programs.old]\n{IDLE}\n")
    fleet.wait_healthy()
    before = fleet.pids()
    fleet.config.write_text(
        f"""
[programs.web]
{IDLE}
numprocs = 2

[programs.worker]
{IDLE}
environment = {{ CHANGED = "1" }}

[programs.new]
{IDLE}
"""
    )
    r = fleet.ctl("reload")
    assert r.returncode == 0, r.stderr
    assert "added: new" in r.stdout
    assert "removed: old" in r.stdout
    assert "restarted (changed): worker" in r.stdout
    fleet.wait_healthy()
    after = fleet.pids()
    assert after["web:0"] == before["web:0"] and after["web:1"] == before["web:1"]
    assert after["worker:0"] != before["worker:0"]
    assert "old:0" not in after and not running(before["old:0"])  # type: ignore[arg-type]
    assert after["new:0"] is not None and running(after["new:0"])


def test_reload_with_a_broken_config_changes_nothing_and_names_the_key(make_fleet: Any) -> None:
    fleet = make_fleet(TWO)
    fleet.wait_healthy()
    before = fleet.pids()
    fleet.config.write_text(TWO + '\n[programs.api]\ncommand = "true"\nready = "tcp:x"\n')
    r = fleet.ctl("reload")
    assert r.returncode == 2
    assert "nothing was changed" in r.stderr
    assert "programs.api.ready" in r.stderr
    assert fleet.pids() == before
    assert fleet.ctl("ps").returncode == 0  # the broken file on disk still finds the socket


def test_scale_up_and_down_keeps_the_first_instances(make_fleet: Any) -> None:
    fleet = make_fleet(TWO)
    fleet.wait_healthy()
    first = fleet.pids()
    r = fleet.ctl("scale", "web=5")
    assert r.returncode == 0, r.stderr
    five = fleet.pids()
    assert [n for n in five if n.startswith("web:")] == [f"web:{i}" for i in range(5)]
    assert all(running(five[f"web:{i}"]) for i in range(5))  # type: ignore[arg-type]
    r = fleet.ctl("scale", "web=2")
    assert r.returncode == 0, r.stderr
    two = fleet.pids()
    assert [n for n in two if n.startswith("web:")] == ["web:0", "web:1"]
    assert two["web:0"] == first["web:0"] and two["web:1"] == first["web:1"]
    assert two["worker:0"] == first["worker:0"]
    assert not any(running(five[f"web:{i}"]) for i in (2, 3, 4))  # type: ignore[arg-type]
    assert fleet.ctl("ps").returncode == 0
    r = fleet.ctl("scale", "nope=1")
    assert r.returncode == 2 and "nope" in r.stderr


def test_logs_follow_keeps_following_across_rotations(make_fleet: Any) -> None:
    # 100-byte numbered lines every 10 ms into a 4 KB log: a rotation every ~0.4 s.
    code = (
        "import itertools, select\n"
        "for i in itertools.count():\n"
        "    print(f'line {i:08d} ' + 'x' * 85, flush=True)\n"
        "    select.select([], [], [], 0.01)\n"
    )
    fleet = make_fleet(
        f"[programs.chatty]\ncommand = [{json.dumps(PY)}, \"-c\", {json.dumps(code)}]\n"
        'log_max_bytes = "4KB"\nlog_backups = 3\n'
    )
    fleet.wait_healthy()
    proc = subprocess.Popen(
        [PY, "-m", "forkwell", "logs", "chatty", "-f", "-n", "5", "-c", str(fleet.config)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    numbers: list[int] = []
    buffer = b""
    try:
        deadline = time.monotonic() + 30
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        while len(numbers) < 200:  # about 5 rotations
            assert time.monotonic() < deadline, f"only {len(numbers)} lines"
            ready, _, _ = select.select([fd], [], [], 1.0)
            if ready:
                chunk = os.read(fd, 65536)
                assert chunk, "logs -f ended"
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                numbers += [int(line.split()[1]) for line in lines]
    finally:
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(10)
        proc.stdout.close()  # type: ignore[union-attr]
        err = proc.stderr.read()  # type: ignore[union-attr]
        proc.stderr.close()  # type: ignore[union-attr]
    assert rc == 130 and err == b""
    rotated = fleet.dir / ".forkwell" / "logs" / "chatty.0.stdout.log.1"
    assert rotated.exists(), "the log never rotated: the test proves nothing"
    # Every line exactly once, in order, across all the rotations.
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))


def test_down_returns_once_the_supervisor_has_exited(make_fleet: Any) -> None:
    fleet = make_fleet(TWO)
    fleet.wait_healthy()
    pids = fleet.pids()
    r = fleet.ctl("down")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "stopped 3 instances; supervisor exited\n"
    # It has exited (a zombie until we reap it): reaping cannot block.
    assert fleet.proc.wait(timeout=1) == 0
    assert not fleet.sock.exists()
    assert all(not running(pid) for pid in pids.values())  # type: ignore[arg-type]
    r = fleet.ctl("ps")
    assert r.returncode == 1
    assert "forkwell up" in r.stderr and str(fleet.sock) in r.stderr


def test_a_second_supervisor_on_the_same_socket_is_refused_and_harmless(
    make_fleet: Any, tmp_path: Path
) -> None:
    fleet = make_fleet(TWO)
    fleet.wait_healthy()
    other = tmp_path / "other"
    other.mkdir()
    (other / "forkwell.toml").write_text(
        f'[supervisor]\nsocket = "{fleet.sock}"\n\n[programs.x]\n{IDLE}\n'
    )
    cmd = [PY, "-m", "forkwell", "up", "-c", str(other / "forkwell.toml"), "--quiet"]
    if not HAVE_CLI_UP:
        cmd = [PY, "-c", RUN_SUPERVISOR, str(other / "forkwell.toml")]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert "already listening" in r.stdout + r.stderr
    assert fleet.sock.exists()
    assert fleet.ctl("ps").returncode == 0  # the first one is still reachable


def test_hostile_clients_leave_the_supervisor_serving(make_fleet: Any) -> None:
    fleet = make_fleet(TWO)
    fleet.wait_healthy()
    before = fleet.pids()
    path = str(fleet.sock)
    held = []
    # A half request kept open, garbage, a half request then hang-up, 10 MB in one line.
    half = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    half.connect(path)
    half.sendall(b'{"v": 1, "cmd": "st')
    held.append(half)
    for payload in (os.urandom(4096), b'{"v": 1, "cmd": "do', b'{"v":1}' + b" " * (10 << 20)):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(path)
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                s.sendall(payload)
    try:
        r = fleet.ctl("ps")
        assert r.returncode == 0, r.stderr
        assert fleet.pids() == before
    finally:
        for s in held:
            s.close()
    assert fleet.proc.poll() is None


def test_fifty_concurrent_clients_all_get_answers(make_fleet: Any) -> None:
    fleet = make_fleet(TWO.replace("numprocs = 2", "numprocs = 5"))
    fleet.wait_healthy()
    answers: dict[int, Any] = {}

    def one(i: int) -> None:
        try:
            with fleet.client() as c:
                if i % 10 == 0:  # a few restarts, each of its own instance
                    r = c.request("restart", {"names": [f"web:{i // 10}"]}, timeout=40)
                    answers[i] = r["results"][0]["state"]
                elif i % 10 == 1:
                    answers[i] = c.request("signal", {"names": ["worker"], "signal": "CONT"})[
                        "results"
                    ][0]["ok"]
                else:
                    answers[i] = len(c.request("ps", timeout=40)["instances"])
        except Exception as exc:
            answers[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(45)
    assert sorted(answers) == list(range(50))
    for i, answer in answers.items():
        expected = "RUNNING" if i % 10 == 0 else True if i % 10 == 1 else 6
        assert answer == expected, (i, answer)
    assert fleet.ctl("ps").returncode == 0


@pytest.mark.root
@pytest.mark.skipif(not IS_ROOT, reason="switching to user nobody needs root")
def test_another_user_is_refused(make_fleet: Any) -> None:
    public = Path(tempfile.mkdtemp(prefix="forkwell-e2e-"))
    try:
        public.chmod(0o755)
        fleet = make_fleet(TWO, public)
        fleet.wait_healthy()
        before = fleet.pids()
        r = subprocess.run(
            ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
             PY, "-m", "forkwell", "down", "--socket", str(fleet.sock)],
            capture_output=True, text=True, timeout=30,
            # nobody may read neither root's editable-install hook nor the checkout.
            env={**os.environ, "PYTHONPATH": str(public_sources())},
        )  # fmt: skip
        assert r.returncode == 1, r
        # Whose it is and who may control it; not "start it with 'forkwell up'".
        assert r.stderr == (f"forkwell down: cannot reach the supervisor at {fleet.sock}: "
                            "permission denied: it is the supervisor of user root (uid 0); only "
                            "root may control it\n")  # fmt: skip
        assert fleet.pids() == before
        fleet.close()
    finally:
        subprocess.run(["rm", "-rf", str(public)], check=True)


def test_up_and_the_client_both_honour_forkwell_socket(tmp_path: Path) -> None:
    """$FORKWELL_SOCKET moves the socket for `forkwell up` as it does for the client."""
    config = tmp_path / "forkwell.toml"
    config.write_text(f"[programs.one]\n{IDLE}\n")
    sock = tmp_path / "elsewhere" / "s.sock"
    sock.parent.mkdir(mode=0o700)
    env = dict(os.environ, FORKWELL_SOCKET=str(sock))
    up = subprocess.Popen([PY, "-m", "forkwell", "up", "-c", str(config), "--quiet"], env=env,
                          cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(sock.exists, 20, "the socket at $FORKWELL_SOCKET")
        assert not (tmp_path / ".forkwell" / "forkwell.sock").exists()

        def healthy() -> bool:
            r = subprocess.run([PY, "-m", "forkwell", "ps", "-c", str(config)], env=env,
                               capture_output=True, text=True, timeout=30)
            return r.returncode == 0

        wait_until(healthy, 20, "ps through $FORKWELL_SOCKET to report healthy")
        r = subprocess.run([PY, "-m", "forkwell", "down", "-c", str(config)], env=env,
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        assert up.wait(30) == 0
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()


def test_a_program_that_daemonizes_stays_supervised(make_fleet: Any, tmp_path: Path) -> None:
    """Under forkwell up, daemonize(detach="auto") does not fork: the pid stays the supervised one."""
    pidfile = tmp_path / "d.pid"
    code = (
        "import os, signal, forkwell; "
        f"forkwell.daemonize({str(pidfile)!r}); "
        "signal.pause()"
    )
    env = f'environment = {{ PYTHONPATH = "{Path(forkwell.__file__).parent.parent}" }}'
    fleet = make_fleet(f'[programs.d]\ncommand = ["{PY}", "-c", "{code}"]\n{env}\nmin_uptime = "0.2s"\n')
    fleet.wait_healthy()
    wait_until(pidfile.exists, 10, "the daemon's pidfile")
    wait_until(lambda: pidfile.read_text().strip() != "", 10, "the pid in the pidfile")
    assert int(pidfile.read_text()) == fleet.pids()["d:0"]


def test_a_command_sent_while_up_is_starting_waits_for_its_socket(tmp_path: Path) -> None:
    """`forkwell up & ...; forkwell down`: the down is not lost while up starts.

    The programs are spawned before the control socket exists; 150 of them keep
    the socket away long enough for `down`, sent once the state file names the
    supervisor, to arrive first.  It must wait for the socket, not say "not
    running" (and exit 0 with the fleet still running).
    """
    config = tmp_path / "forkwell.toml"
    config.write_text('[programs.many]\ncommand = "sleep 1000"\nnumprocs = 150\n')
    state = tmp_path / ".forkwell" / "state.json"
    sock = tmp_path / ".forkwell" / "forkwell.sock"
    up = subprocess.Popen([PY, "-m", "forkwell", "up", "-c", str(config), "--quiet"],
                          cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(state.exists, 20, "the state file")
        early = not sock.exists()
        down = subprocess.run([PY, "-m", "forkwell", "down", "-c", str(config)],
                              capture_output=True, text=True, timeout=60)  # fmt: skip
        assert (down.returncode, down.stderr) == (0, ""), down
        assert down.stdout == "stopped 150 instances; supervisor exited\n"
        assert up.wait(30) == 0
        assert early, "the socket existed before down was sent: nothing was tested"
    finally:
        if up.poll() is None:
            up.terminate()
            up.wait(30)


def test_starting_means_the_state_file_names_a_live_supervisor(tmp_path: Path) -> None:
    """The wait is bounded, and only for a supervisor that runs."""
    from forkwell._supervisor._control._client import connect

    state = tmp_path / "state.json"
    sock = str(tmp_path / "s.sock")
    me = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19]
    state.write_text(json.dumps({"pid": os.getpid(), "starttime": int(me)}))
    began = time.monotonic()
    with pytest.raises(forkwell.SupervisorUnreachableError) as info:
        connect(sock, state_file=str(state), wait=0.3)
    assert time.monotonic() - began >= 0.3
    assert str(info.value) == (f"cannot reach the supervisor at {sock}: it is starting (pid "
                               f"{os.getpid()}) but its socket did not appear within 0.3s; try "
                               "again")  # fmt: skip
    # The same pid with another start time is a recycled pid: no supervisor, no wait.
    state.write_text(json.dumps({"pid": os.getpid(), "starttime": int(me) + 1}))
    began = time.monotonic()
    with pytest.raises(forkwell.SupervisorUnreachableError, match="no supervisor is running"):
        connect(sock, state_file=str(state), wait=30)
    assert time.monotonic() - began < 5
