"""The control socket and protocol layer (forkwell._supervisor._control), and the ctl CLI's own logic.

These tests drive a real ``ControlServer`` on a real Unix socket, served by a
real asyncio loop in a thread, but with a small in-test double of the
``Supervisor`` (``FakeSupervisor``) behind it.  That is deliberate and limited
to this layer: what is under test here is framing, limits, permissions,
peer credentials, error mapping and the client, which do not depend on how the
engine starts programs.  End-to-end behaviour against a real ``forkwell up``
is in ``tests/test_ctl_e2e.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import select
import signal
import socket
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import pytest
from helpers import IS_ROOT, PY

import forkwell
from forkwell._cli._ctl import format_bytes, format_uptime
from forkwell._core._files import tail_bytes as tail_lines
from forkwell._core._proc import read_stat
from forkwell._core._status import exit_label
from forkwell._exceptions import UnknownProgramError
from forkwell._supervisor._control import _discovery, _server
from forkwell._supervisor._snapshot import SCHEMA_VERSION, Usage

pytestmark = pytest.mark.timeout(30)

# -- the Supervisor double ------------------------------------------------------


@dataclass(frozen=True)
class Info:
    name: str
    program: str
    index: int
    state: str
    pid: int | None
    started_at: float | None
    ready_at: float | None
    restarts: int
    last_exit: int | None
    autostart: bool
    last_exit_at: float | None = None
    essential: bool = False
    readiness: str | None = None
    ready_probe: str = "exec"
    liveness: str | None = None
    liveness_probe: str | None = None
    liveness_failures: int = 0
    last_probe_failure: str | None = None
    last_probe_failure_at: float | None = None
    failed_starts: int = 0


@dataclass(frozen=True)
class Op:
    instance: str
    ok: bool
    state: str
    message: str
    last_exit: int | None
    log_tail: list[str]


@dataclass(frozen=True)
class Report:
    added: list[str]
    removed: list[str]
    changed: list[str]
    unchanged: list[str]
    scaled: list[str]
    kept: list[str] = field(default_factory=list)


async def pause(seconds: float) -> None:
    """Let the loop run for ``seconds`` (a timer, not a sleep in the test thread)."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[None] = loop.create_future()
    loop.call_later(seconds, fut.set_result, None)
    await fut


@dataclass
class FakeSupervisor:
    """Just enough of the engine contract for the protocol layer."""

    log_dir: Path
    programs: dict[str, int] = field(default_factory=lambda: {"web": 2, "worker": 1})
    config_path: Path = Path("/fake/forkwell.toml")
    start_delay: float = 0.0
    fatal: set[str] = field(default_factory=set)
    autostart: dict[str, bool] = field(default_factory=dict)
    reload_error: list[str] | None = None
    calls: list[tuple[Any, ...]] = field(default_factory=list)
    states: dict[str, str] = field(default_factory=dict)
    pids: dict[str, int] = field(default_factory=dict)
    exits: dict[str, int] = field(default_factory=dict)
    shut_down: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        for prog, n in self.programs.items():
            for i in range(n):
                self.states.setdefault(f"{prog}:{i}", "STOPPED")

    def instances(self) -> list[Info]:
        out = []
        for name, state in self.states.items():
            prog, _, idx = name.partition(":")
            pid = self.pids.get(name)
            out.append(
                Info(name, prog, int(idx), state, pid, time.time() - 5 if pid else None,
                     None, 0, self.exits.get(name), self.autostart.get(prog, True))
            )  # fmt: skip
        return out

    def usage(self, names: list[str]) -> dict[str, Usage]:
        """A one-process tree per running instance: its pid's own figures, from /proc."""
        out = {}
        for name in names:
            info = read_stat(self.pids[name]) if name in self.pids else None
            if info is not None:
                out[name] = Usage(info.cpu_ticks, info.rss_bytes, 1)
        return out

    def resolve(self, names: list[str]) -> list[str]:
        out: list[str] = []
        for n in names:
            if n == "all":
                found = list(self.states)
            elif n in self.states:
                found = [n]
            else:
                found = [i for i in self.states if i.partition(":")[0] == n]
            if not found:
                raise UnknownProgramError(f"no program or instance named {n!r}")
            out += [f for f in found if f not in out]
        return out

    def log_path(self, instance: str, stream: str) -> Path:
        return self.log_dir / f"{instance.replace(':', '.')}.{stream}.log"

    async def start(self, instances: list[str], *, wait: bool = True) -> list[Op]:
        self.calls.append(("start", instances, wait))
        for i in instances:
            self.states[i] = "STARTING"
        if not wait:
            return [Op(i, True, "STARTING", "", None, []) for i in instances]
        if self.start_delay:
            await pause(self.start_delay)
        results = []
        for i in instances:
            if i in self.fatal:
                self.states[i] = "FATAL"
                msg = f"{i} is FATAL: exited with status 3 (5 failed starts)"
                results.append(Op(i, False, "FATAL", msg, 3, ["starting", "boom: no database"]))
            else:
                self.states[i] = "RUNNING"
                self.pids[i] = os.getpid()  # a real, live process for the /proc columns
                results.append(Op(i, True, "RUNNING", "", None, []))
        return results

    async def stop(self, instances: list[str], *, wait: bool = True) -> list[Op]:
        self.calls.append(("stop", instances, wait))
        for i in instances:
            self.states[i] = "STOPPED"
            self.pids.pop(i, None)
        return [Op(i, True, "STOPPED", "", -15, []) for i in instances]

    async def restart(self, instances: list[str], *, wait: bool = True) -> list[Op]:
        self.calls.append(("restart", instances, wait))
        await self.stop(instances, wait=wait)
        return await self.start(instances, wait=wait)

    def send_signal(self, instances: list[str], sig: int, *, tree: bool = False) -> list[Op]:
        self.calls.append(("signal", instances, sig, tree))
        return [
            Op(i, self.states[i] == "RUNNING", self.states[i],
               "" if self.states[i] == "RUNNING" else f"{i} is not running", None, [])
            for i in instances
        ]  # fmt: skip

    async def reload(self) -> Report:
        self.calls.append(("reload",))
        if self.reload_error is not None:
            raise forkwell.ConfigError(self.reload_error)
        return Report(["db"], [], ["worker"], ["web"], [])

    async def scale(self, program: str, n: int) -> list[Op]:
        self.calls.append(("scale", program, n))
        if program not in self.programs:
            raise UnknownProgramError(f"no program named {program!r}")
        return []

    async def shutdown(self) -> None:
        self.calls.append(("shutdown",))
        await pause(0.05)
        self.shut_down.set()


class Served:
    """A ControlServer on its own event loop thread."""

    def __init__(self, sup: FakeSupervisor, path: Path, **kwargs: Any) -> None:
        self.sup = sup
        self.path = path
        self.loop = asyncio.new_event_loop()
        self.server = _server.ControlServer(sup, path, **kwargs)  # type: ignore[arg-type]
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.call(self.server.start())

    def call(self, coro: Any, timeout: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.call(self.server.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def client(self) -> forkwell.ControlClient:
        return forkwell.ControlClient(self.path)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    logs = tmp_path / "logs"
    logs.mkdir()
    s = Served(FakeSupervisor(logs), tmp_path / "run" / "ctl.sock")
    try:
        yield s
    finally:
        s.close()


def raw(path: Path, payload: bytes, *, read: bool = True, timeout: float = 5.0) -> bytes:
    """Send raw bytes, then read until the server closes or a line arrives."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            s.sendall(payload)
        if not read:
            return b""
        data = b""
        with contextlib.suppress(ConnectionResetError):
            while b"\n" not in data:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        return data


def ctl(served: Served, *args: str, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
    """Run the real CLI in a child process against the served socket."""
    return subprocess.run(
        [PY, "-m", "forkwell", *args, "--socket", str(served.path)],
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


# -- the socket itself -------------------------------------------------------------


def test_socket_is_0600_in_an_owner_only_directory(served: Served) -> None:
    st = os.stat(served.path)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_uid == os.geteuid()
    dir_mode = stat.S_IMODE(os.stat(served.path.parent).st_mode)
    assert dir_mode & 0o022 == 0, oct(dir_mode)


def test_close_removes_the_socket(tmp_path: Path) -> None:
    s = Served(FakeSupervisor(tmp_path), tmp_path / "ctl.sock")
    assert s.path.exists()
    s.close()
    assert not s.path.exists()


def test_refuses_a_directory_others_can_write(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    server = _server.ControlServer(FakeSupervisor(tmp_path), shared / "ctl.sock")  # type: ignore[arg-type]
    with pytest.raises(forkwell.ControlSocketError, match="writable by other users"):
        asyncio.run(server.start())
    assert not (shared / "ctl.sock").exists()


def test_a_second_server_on_a_live_socket_is_refused_and_keeps_the_first(served: Served) -> None:
    second = _server.ControlServer(served.sup, served.path)  # type: ignore[arg-type]

    async def start_then_close() -> None:
        # What Supervisor.run() does: close() in its finally, also after a failed start().
        try:
            await second.start()
        finally:
            await second.close()

    with pytest.raises(forkwell.ControlSocketError, match="already listening"):
        asyncio.run(start_then_close())
    assert served.path.exists()
    with served.client() as c:
        assert c.request("hello")["pid"] == os.getpid()


def test_closing_does_not_remove_a_socket_that_replaced_ours(tmp_path: Path) -> None:
    s = Served(FakeSupervisor(tmp_path), tmp_path / "ctl.sock")
    try:
        s.path.unlink()  # someone removed ours and another took the path
        other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        other.bind(str(s.path))
        other.close()
    finally:
        s.close()
    assert s.path.exists()


def test_a_stale_socket_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "ctl.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # the file stays, nobody listens: a supervisor killed with -9
    s = Served(FakeSupervisor(tmp_path), path)
    try:
        with s.client() as c:
            assert c.request("hello")["protocol"] == 1
    finally:
        s.close()


def test_a_regular_file_in_the_way_is_not_deleted(tmp_path: Path) -> None:
    path = tmp_path / "ctl.sock"
    path.write_text("precious")
    server = _server.ControlServer(FakeSupervisor(tmp_path), path)  # type: ignore[arg-type]
    with pytest.raises(forkwell.ControlSocketError, match="non-socket"):
        asyncio.run(server.start())
    assert path.read_text() == "precious"


# -- the protocol --------------------------------------------------------------------


def test_ps_reports_every_instance_with_proc_figures(served: Served) -> None:
    with served.client() as c:
        c.request("start", {"names": ["web:0"]})
        result = c.request("ps")
    rows = {r["name"]: r for r in result["instances"]}
    assert list(rows) == ["web:0", "web:1", "worker:0"]
    web0 = rows["web:0"]
    assert web0["state"] == "RUNNING"
    assert web0["pid"] == os.getpid()
    assert web0["rss_bytes"] > 1_000_000  # this Python process, read from /proc
    assert web0["cpu_percent"] >= 0
    assert 4 < web0["uptime"] < 60
    assert rows["web:1"]["pid"] is None and rows["web:1"]["rss_bytes"] is None
    assert result["healthy"] is False  # web:1 and worker:0 are autostart and STOPPED
    assert result["supervisor"]["pid"] == os.getpid()
    assert result["supervisor"]["socket"] == str(served.path)


def test_ps_is_healthy_when_every_autostart_instance_runs(served: Served) -> None:
    served.sup.autostart["worker"] = False
    with served.client() as c:
        c.request("start", {"names": ["web"]})
        assert c.request("ps")["healthy"] is True
        assert c.request("ps", {"names": ["worker"]})["healthy"] is True  # not autostart
        c.request("stop", {"names": ["web:1"]})
        assert c.request("ps")["healthy"] is False


@pytest.mark.parametrize(
    ("state", "last_exit", "healthy"),
    [
        ("EXITED", 0, True),  # a one-shot job that is done
        ("EXITED", 1, False),
        ("EXITED", -9, False),
        ("FATAL", 3, False),
        ("STARTING", None, False),  # not up until ready (supervisorctl issue 1488)
        ("BACKOFF", 1, False),
        ("STOPPING", None, False),
    ],
)
def test_health_of_resting_states(
    served: Served, state: str, last_exit: int | None, healthy: bool
) -> None:
    with served.client() as c:
        c.request("start", {"names": ["all"]})
        served.sup.states["worker:0"] = state
        if last_exit is not None:
            served.sup.exits["worker:0"] = last_exit
        assert c.request("ps")["healthy"] is healthy


def test_names_are_resolved_before_acting(served: Served) -> None:
    with served.client() as c:
        c.request("stop", {"names": ["web", "all"]})
        with pytest.raises(forkwell.ControlRequestError) as info:
            c.request("start", {"names": ["web", "nope"]})
    assert info.value.code == "unknown_name"
    assert str(info.value) == "no program or instance named 'nope'"
    assert served.sup.calls == [("stop", ["web:0", "web:1", "worker:0"], True)]


def test_a_fatal_start_returns_the_exit_status_and_log_lines(served: Served) -> None:
    served.sup.fatal.add("web:1")
    with served.client() as c:
        results = c.request("start", {"names": ["web"]})["results"]
    assert [r["ok"] for r in results] == [True, False]
    assert results[1]["last_exit"] == 3
    assert results[1]["log_tail"] == ["starting", "boom: no database"]
    assert "FATAL" in results[1]["message"]


def test_progress_lines_arrive_while_a_start_waits(served: Served) -> None:
    served.sup.start_delay = 0.7
    seen: list[dict[str, str]] = []
    with served.client() as c:
        result = c.request("start", {"names": ["web"]}, on_progress=seen.append)
    assert seen, "no progress line during a 0.7 s start"
    assert seen[0] == {"web:0": "STARTING", "web:1": "STARTING"}
    assert [r["state"] for r in result["results"]] == ["RUNNING", "RUNNING"]


def test_no_wait_is_passed_through(served: Served) -> None:
    with served.client() as c:
        results = c.request("start", {"names": ["worker"], "wait": False})["results"]
    assert results[0]["state"] == "STARTING"
    assert served.sup.calls == [("start", ["worker:0"], False)]


def test_signal_names_and_numbers_and_tree(served: Served) -> None:
    with served.client() as c:
        c.request("start", {"names": ["web:0"]})
        r = c.request("signal", {"names": ["web"], "signal": "hup", "tree": True})
        assert r["signal"] == "SIGHUP"
        assert [x["ok"] for x in r["results"]] == [True, False]
        c.request("signal", {"names": ["web:0"], "signal": 10})
        with pytest.raises(forkwell.ControlRequestError, match="invalid signal") as info:
            c.request("signal", {"names": ["web:0"], "signal": "NOPE"})
    assert info.value.code == "bad_request"
    assert served.sup.calls[1:] == [
        ("signal", ["web:0", "web:1"], signal.SIGHUP, True),
        ("signal", ["web:0"], signal.SIGUSR1, False),
    ]


def test_logs_gives_the_log_paths(served: Served) -> None:
    logs = served.sup.log_dir
    with served.client() as c:
        r = c.request("logs", {"names": ["worker"], "stream": "stderr"})
        assert r == {
            "stream": "stderr",
            "logs": [{"instance": "worker:0", "path": str(logs / "worker.0.stderr.log")}],
        }
        r = c.request("logs", {"names": ["web"]})
        assert [x["path"] for x in r["logs"]] == [
            str(logs / "web.0.stdout.log"), str(logs / "web.1.stdout.log")
        ]  # fmt: skip
        assert len(c.request("logs", {"names": ["all"]})["logs"]) == 3
        with pytest.raises(forkwell.ControlRequestError, match="'stream' must be"):
            c.request("logs", {"names": ["web"], "stream": "stdin"})


def test_reload_errors_list_every_problem(served: Served) -> None:
    with served.client() as c:
        assert c.request("reload")["changed"] == ["worker"]
        served.sup.reload_error = ["f.toml: programs.web.ready: bad", "f.toml: programs.x: bad"]
        with pytest.raises(forkwell.ControlRequestError) as info:
            c.request("reload")
    assert info.value.code == "config"
    assert info.value.errors == served.sup.reload_error
    assert "nothing was changed" in str(info.value)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"program": "web", "n": -1}, "'n' must be an integer >= 0"),
        ({"program": "web", "n": True}, "'n' must be an integer >= 0"),
        ({"program": "", "n": 2}, "'program' must be a program name"),
    ],
)
def test_scale_validates_its_arguments(served: Served, args: dict[str, Any], message: str) -> None:
    with served.client() as c, pytest.raises(forkwell.ControlRequestError, match=message):
        c.request("scale", args)
    assert served.sup.calls == []


def test_down_answers_after_shutdown_with_the_supervisor_pid(served: Served) -> None:
    with served.client() as c:
        r = c.request("down")
    assert served.sup.shut_down.is_set()
    assert r["pid"] == os.getpid()


def test_close_lets_a_busy_answer_out(tmp_path: Path) -> None:
    """``down`` answers while run() is already closing the server: the answer must arrive."""
    sup = FakeSupervisor(tmp_path)
    s = Served(sup, tmp_path / "ctl.sock")
    original = sup.shutdown
    closing: list[asyncio.Future[None]] = []

    async def shutdown_then_close() -> None:
        await original()
        # What Supervisor.run() does once shutdown() is over.
        closing.append(asyncio.ensure_future(s.server.close()))

    sup.shutdown = shutdown_then_close  # type: ignore[method-assign]
    try:
        with s.client() as c:
            assert c.request("down")["pid"] == os.getpid()
            assert c.wait_closed(5.0)
        assert not s.path.exists()
    finally:
        s.close()


@pytest.mark.parametrize(
    ("request_line", "code"),
    [
        (b"this is not json\n", "bad_request"),
        (b"[1, 2, 3]\n", "bad_request"),
        (b'{"v": 1, "cmd": "rm -rf /"}\n', "bad_request"),
        (b'{"v": 1, "cmd": "ps", "args": []}\n', "bad_request"),
        (b'{"v": 1, "cmd": "start", "args": {"names": "web"}}\n', "bad_request"),
        (b'{"v": 1, "cmd": "start", "args": {"names": []}}\n', "bad_request"),
        (b'{"v": 2, "cmd": "ps"}\n', "version"),
        (b'{"cmd": "ps"}\n', "version"),
        (b"\xff\xfe\n", "bad_request"),
    ],
)
def test_malformed_requests_get_an_error_and_the_connection_goes_on(
    served: Served, request_line: bytes, code: str
) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(str(served.path))
        s.sendall(request_line + b'{"v": 1, "cmd": "hello"}\n')
        f = s.makefile("rb")
        first = json.loads(f.readline())
        second = json.loads(f.readline())
    assert first["ok"] is False and first["error"]["code"] == code
    assert first["v"] == 1
    assert second["ok"] is True and second["result"]["protocol"] == 1
    assert served.sup.calls == []


def test_a_half_request_then_hangup_leaves_the_server_serving(served: Served) -> None:
    raw(served.path, b'{"v": 1, "cmd": "p', read=False)  # and close at once
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(str(served.path))
        s.sendall(b'{"v": 1, "cm')
        s.shutdown(socket.SHUT_WR)
        s.settimeout(5)
        reply = s.recv(65536)
    assert json.loads(reply)["error"]["message"] == "incomplete request"
    with served.client() as c:
        assert c.request("hello")["protocol"] == 1


def test_a_silent_client_is_timed_out_without_blocking_others(tmp_path: Path) -> None:
    s = Served(FakeSupervisor(tmp_path), tmp_path / "ctl.sock", request_timeout=0.5)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as slow:
            slow.connect(str(s.path))
            slow.sendall(b'{"v": 1, "cmd"')  # and then nothing
            with s.client() as c:  # others are served meanwhile
                assert c.request("ps")["instances"]
            slow.settimeout(5)
            reply = json.loads(slow.recv(65536))
            assert reply["error"]["code"] == "timeout"
            assert slow.recv(65536) == b""  # and hung up on
    finally:
        s.close()


def test_a_10_mb_request_is_refused_and_the_server_keeps_serving(served: Served) -> None:
    big = b'{"v": 1, "cmd": "ps", "args": {"names": ["' + b"x" * (10 << 20) + b'"]}}\n'
    reply = raw(served.path, big)
    if reply:  # the answer may be lost to the reset when we are still sending
        assert json.loads(reply)["error"]["code"] == "too_large"
    with served.client() as c:
        assert c.request("hello")["protocol"] == 1
    assert served.sup.calls == []


def test_garbage_without_newlines_is_cut_off(served: Served) -> None:
    reply = raw(served.path, os.urandom(200_000).replace(b"\n", b"?"))
    if reply:
        assert json.loads(reply)["error"]["code"] == "too_large"
    with served.client() as c:
        assert c.request("hello")["protocol"] == 1


def test_fifty_concurrent_clients_all_get_answers(served: Served) -> None:
    served.sup.start_delay = 0.3
    answers: dict[int, Any] = {}

    def one(i: int) -> None:
        try:
            with served.client() as c:
                if i % 5 == 0:  # some wait on a slow start while others ask ps
                    answers[i] = c.request("start", {"names": [f"web:{i % 2}"]})["results"][0]["ok"]
                else:
                    answers[i] = len(c.request("ps")["instances"])
        except Exception as exc:
            answers[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert sorted(answers) == list(range(50))
    for i, answer in answers.items():
        assert answer == (True if i % 5 == 0 else 3), (i, answer)


def test_too_many_connections_get_busy(tmp_path: Path) -> None:
    s = Served(FakeSupervisor(tmp_path), tmp_path / "ctl.sock", max_connections=2)
    held = []
    try:
        for _ in range(2):
            c = s.client()
            c.request("hello")  # make sure the connection is accepted and counted
            held.append(c)
        assert json.loads(raw(s.path, b""))["error"]["code"] == "busy"
        held.pop().close()
        deadline = time.monotonic() + 5
        while True:  # the server notices the hang-up asynchronously
            try:
                with s.client() as c:
                    assert c.request("hello")["protocol"] == 1
                break
            except forkwell.ControlError:
                if time.monotonic() > deadline:
                    raise
                select.select([], [], [], 0.01)
    finally:
        for c in held:
            c.close()
        s.close()


# -- other users -------------------------------------------------------------------

NOBODY_CLIENT = r"""
import json, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    s.connect(sys.argv[1])
except OSError as exc:
    print("connect-error", exc.errno)
    raise SystemExit(0)
try:
    s.sendall(b'{"v": 1, "cmd": "down"}\n')
except OSError:
    pass  # refused peers may be answered and hung up on before they send
print("reply", s.makefile().readline().strip())
"""


def as_nobody(path: Path) -> str:
    return subprocess.run(
        ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
         PY, "-c", NOBODY_CLIENT, str(path)],
        capture_output=True, text=True, timeout=20, check=True,
    ).stdout  # fmt: skip


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A directory other users can traverse (pytest's tmp_path is private to root)."""
    d = Path(tempfile.mkdtemp(prefix="forkwell-ctl-"))
    try:
        yield d
    finally:
        for p in sorted(d.rglob("*"), reverse=True):
            p.unlink() if not p.is_dir() else p.rmdir()
        d.rmdir()


@pytest.mark.root
@pytest.mark.skipif(not IS_ROOT, reason="switching to user nobody needs root")
def test_another_user_cannot_even_connect(public_dir: Path) -> None:
    public_dir.chmod(0o755)
    s = Served(FakeSupervisor(public_dir), public_dir / "run" / "ctl.sock")
    try:
        out = as_nobody(s.path)
        assert out.split() == ["connect-error", "13"]  # EACCES: the 0700 dir and 0600 socket
        assert s.sup.calls == []
    finally:
        s.close()


@pytest.mark.root
@pytest.mark.skipif(not IS_ROOT, reason="switching to user nobody needs root")
def test_so_peercred_refuses_another_user_even_if_the_socket_is_opened_up(public_dir: Path) -> None:
    """Defence in depth: a careless chmod must not hand the supervisor to other users."""
    public_dir.chmod(0o755)
    s = Served(FakeSupervisor(public_dir), public_dir / "run" / "ctl.sock")
    try:
        s.path.parent.chmod(0o755)
        s.path.chmod(0o777)
        out = as_nobody(s.path)
        kind, _, reply = out.partition(" ")
        assert kind == "reply", out
        error = json.loads(reply)["error"]
        assert error["code"] == "forbidden"
        assert "uid 65534" in error["message"]
        assert s.sup.calls == []  # `down` was not executed
        assert not s.sup.shut_down.is_set()
        with s.client() as c:  # root and the owner still get in
            assert c.request("hello")["protocol"] == 1
    finally:
        s.close()


# -- finding the socket ---------------------------------------------------------------


@pytest.mark.parametrize(
    "setting",
    [
        None,
        '"run/ctl.sock"',
        "'run/ctl.sock'  # literal string, comment",
        '"/tmp/abs/x.sock"',
        '"~/x.sock"',
        '"../up/x.sock"',
    ],
)
def test_find_socket_agrees_with_the_config_loader(tmp_path: Path, setting: str | None) -> None:
    cfg = tmp_path / "forkwell.toml"
    sup = "" if setting is None else f"[supervisor]\nsocket = {setting}\n\n"
    cfg.write_text(f'# fleet\n{sup}[programs.web]\ncommand = "true"\n')
    expected = str(forkwell.load_config(cfg).supervisor.socket)
    assert _discovery.find_socket(None, str(cfg), env={}) == expected


@pytest.mark.parametrize(
    "text",
    [
        'supervisor.socket = "odd/place.sock"\n',
        '[supervisor]\nsocket = "with\\u0041escape.sock"\n',
        'supervisor = { socket = "inline.sock" }\n',
    ],
)
def test_unusual_toml_falls_back_to_a_real_parse(tmp_path: Path, text: str) -> None:
    cfg = tmp_path / "forkwell.toml"
    cfg.write_text(text)
    with pytest.raises(_discovery._Unsure):
        _discovery.scan_socket_setting(text)
    expected = str(forkwell.load_config(cfg).supervisor.socket)
    assert _discovery.find_socket(None, str(cfg), env={}) == expected


def test_socket_option_beats_environment_beats_config(tmp_path: Path) -> None:
    cfg = tmp_path / "forkwell.toml"
    cfg.write_text('[supervisor]\nsocket = "from-config.sock"\n')
    env = {"FORKWELL_SOCKET": str(tmp_path / "from-env.sock")}
    assert _discovery.find_socket(str(tmp_path / "opt.sock"), str(cfg), env) == str(
        tmp_path / "opt.sock"
    )
    assert _discovery.find_socket(None, str(cfg), env) == str(tmp_path / "from-env.sock")
    assert _discovery.find_socket(None, str(cfg), {}) == str(tmp_path / "from-config.sock")


def test_a_broken_config_still_finds_the_socket(tmp_path: Path) -> None:
    """After a refused reload the file on disk is invalid, but ps must still work."""
    cfg = tmp_path / "forkwell.toml"
    cfg.write_text('[supervisor]\nsocket = "s.sock"\n[programs.web]\nready = "tcp:x"\n')
    assert _discovery.find_socket(None, str(cfg), {}) == str(tmp_path / "s.sock")


# -- the CLI against the served socket --------------------------------------------------


def fw(*args: str, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "FORKWELL_SOCKET"}
    return subprocess.run([PY, "-m", "forkwell", *args], capture_output=True, text=True,
                          timeout=30, cwd=cwd, env={**environ, **env})  # fmt: skip


def test_cli_unreachable_is_one_line_naming_the_socket_and_exit_1(tmp_path: Path) -> None:
    path = tmp_path / "none.sock"
    for cmd in (["ps"], ["start", "all"], ["logs", "web"], ["reload"], ["scale", "web=2"]):
        r = fw(*cmd, "--socket", str(path))
        assert r.returncode == 1, (cmd, r)
        assert r.stderr == (f"forkwell {cmd[0]}: cannot reach the supervisor at {path}: no "
                            "supervisor is running there (start it with 'forkwell up')\n")


def test_stopping_what_is_not_running_succeeds_as_daemon_stop_does(tmp_path: Path) -> None:
    """One rule for "already stopped": `down`, `stop` and `daemon stop` exit 0 and say so."""
    path = tmp_path / "none.sock"
    for cmd in (["down"], ["stop", "all"], ["stop", "web:1"]):
        r = fw(*cmd, "--socket", str(path))
        assert (r.returncode, r.stdout, r.stderr) == (0, f"not running (no supervisor at {path})\n",
                                                      ""), cmd  # fmt: skip
    pidfile = tmp_path / "d.pid"
    r = fw("daemon", "stop", "--pidfile", str(pidfile))
    assert (r.returncode, r.stdout) == (0, "not running\n")
    # A stale socket (nobody listens: a supervisor killed with -9) is "not running" too.
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()
    assert fw("down", "--socket", str(path)).returncode == 0
    assert fw("ps", "--socket", str(path)).returncode == 1


def test_a_config_that_does_not_exist_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "does" / "not" / "exist.toml"
    for cmd in (["ps"], ["down"], ["stop", "web"]):
        r = fw(*cmd, "-c", str(missing))
        assert (r.returncode, r.stdout) == (2, ""), (cmd, r)
        assert r.stderr == f"forkwell {cmd[0]}: config file {missing} does not exist\n"
    # `forkwell ps` where there is no config of any format says so, rather than "start one".
    r = fw("ps", cwd=tmp_path)
    sock = tmp_path / ".forkwell" / "forkwell.sock"
    assert r.returncode == 1
    assert r.stderr == (f"forkwell ps: cannot reach the supervisor at {sock}: no supervisor is "
                        "running there (and there is no forkwell.toml, Procfile, "
                        f"process-compose.yaml or supervisord.conf in {tmp_path}: give -c "
                        "FILE, or --socket PATH)\n")  # fmt: skip
    with pytest.raises(forkwell.ConfigError, match="does not exist"):
        forkwell.socket_path(missing)


def test_socket_path_is_where_up_listens(tmp_path: Path) -> None:
    cfg = tmp_path / "forkwell.toml"
    cfg.write_text('[supervisor]\nsocket = "run/ctl.sock"\n[programs.a]\ncommand = "true"\n')
    expected = str(forkwell.load_config(cfg).supervisor.socket)
    assert forkwell.socket_path(cfg, env={}) == expected == str(tmp_path / "run" / "ctl.sock")
    assert forkwell.socket_path(str(cfg), env={"FORKWELL_SOCKET": "/x/y.sock"}) == "/x/y.sock"


def test_cli_uses_forkwell_socket_from_the_environment(served: Served, tmp_path: Path) -> None:
    r = subprocess.run([PY, "-m", "forkwell", "ps"], capture_output=True, text=True, timeout=20,
                       cwd=tmp_path, env={**os.environ, "FORKWELL_SOCKET": str(served.path)})  # fmt: skip
    assert r.returncode == 3, r.stderr
    assert "web:0" in r.stdout


def test_cli_ps_table_json_and_exit_codes(served: Served) -> None:
    r = ctl(served, "ps")
    assert r.returncode == 3, r.stderr  # nothing is running yet
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["NAME", "STATE", "PID", "UPTIME", "RESTARTS", "LAST-EXIT", "CPU%", "RSS"]
    assert [ln.split()[:2] for ln in lines[1:]] == [
        ["web:0", "STOPPED"], ["web:1", "STOPPED"], ["worker:0", "STOPPED"]
    ]  # fmt: skip
    assert ctl(served, "start", "all").returncode == 0
    r = ctl(served, "ps", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["version"] == SCHEMA_VERSION == 2 and doc["healthy"] is True
    assert {i["name"]: i["state"] for i in doc["instances"]} == dict.fromkeys(
        ["web:0", "web:1", "worker:0"], "RUNNING"
    )
    assert set(doc["instances"][0]) == {
        "name", "program", "index", "state", "pid", "started_at", "ready_at", "uptime",
        "restarts", "last_exit", "autostart", "cpu_percent", "rss_bytes", "last_exit_at",
        "essential", "readiness", "ready_probe", "liveness", "liveness_probe",
        "liveness_failures", "last_probe_failure", "last_probe_failure_at", "processes",
        "failed_starts",
    }  # fmt: skip


def test_cli_progress_line_on_a_terminal(served: Served) -> None:
    import pty

    served.sup.start_delay = 0.8
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(
            [PY, "-m", "forkwell", "start", "web", "--socket", str(served.path)],
            stdout=subprocess.PIPE, stderr=slave,
        )  # fmt: skip
        os.close(slave)
        slave = -1
        terminal = b""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                terminal += chunk
            elif proc.poll() is not None:
                break
        out, _ = proc.communicate(timeout=10)
    finally:
        if slave >= 0:
            os.close(slave)
        os.close(master)
    assert proc.returncode == 0
    assert b"\r\x1b[Kforkwell start: web:0 STARTING, web:1 STARTING" in terminal, terminal
    assert terminal.endswith(b"\r\x1b[K")  # the line is gone when done
    assert out == b"web:0: started (RUNNING)\nweb:1: started (RUNNING)\n"  # no progress in pipes


def test_cli_start_failure_names_instance_status_and_log(served: Served) -> None:
    served.sup.fatal.add("web:1")
    r = ctl(served, "start", "web")
    assert r.returncode == 3
    assert "web:0: started (RUNNING)" in r.stdout
    assert "forkwell start: web:1 is FATAL: exited with status 3" in r.stderr
    assert "last exit: 3" in r.stderr
    assert "| boom: no database" in r.stderr


def test_cli_unknown_name_is_a_usage_error(served: Served) -> None:
    r = ctl(served, "stop", "nope")
    assert r.returncode == 2
    assert r.stderr == "forkwell stop: no program or instance named 'nope'\n"


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["signal", "NOPE", "web"], "invalid signal 'NOPE'"),
        (["scale", "web"], "expected NAME=N"),
        (["scale", "web=-1"], "expected NAME=N"),
        (["start"], "the following arguments are required"),
        (["ps", "--bogus"], "unrecognized arguments"),
        (["logs", "web:0", "-n", "x"], "invalid int value"),
    ],
)
def test_cli_usage_errors_are_one_line_exit_2(served: Served, args: list[str], fragment: str) -> None:
    r = ctl(served, *args)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and fragment in r.stderr, r.stderr
    assert served.sup.calls == []


def test_cli_help_helps() -> None:
    r = subprocess.run([PY, "-m", "forkwell", "logs", "--help"], capture_output=True, text=True,
                       timeout=20)  # fmt: skip
    assert r.returncode == 0
    assert "--follow" in r.stdout and "rotations" in r.stdout and "exit status:" in r.stdout


def test_cli_reload_prints_errors_and_exit_2(served: Served) -> None:
    served.sup.reload_error = ["forkwell.toml: programs.web.ready: expected 'exec', got 'tcp:x'"]
    r = ctl(served, "reload")
    assert r.returncode == 2
    assert "nothing was changed" in r.stderr
    assert "  forkwell.toml: programs.web.ready: expected 'exec', got 'tcp:x'" in r.stderr


def test_cli_down_waits_for_the_answer(served: Served) -> None:
    r = ctl(served, "down", "--wait", "0.2")
    # The double does not exit (it is this test process), so down must say so.
    assert served.sup.shut_down.is_set()
    assert r.returncode == 1
    assert "has not exited" in r.stderr


def test_cli_check(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text('[programs.web]\ncommand = "true"\nnumprocs = 3\n')
    r = subprocess.run([PY, "-m", "forkwell", "check", "-c", str(good)], capture_output=True,
                       text=True, timeout=20)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "ok (1 program, 3 instances" in r.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text('[programs.web]\ncommand = "true"\nready = "tcp:x"\nnumprocs = "two"\n'
                   '[programs.db]\nstop_signal = "TREM"\n')  # fmt: skip
    r = subprocess.run([PY, "-m", "forkwell", "check", "-c", str(bad)], capture_output=True,
                       text=True, timeout=20)  # fmt: skip
    assert r.returncode == 2
    assert "programs.web.ready" in r.stderr
    assert "programs.web.numprocs" in r.stderr
    assert "programs.db.stop_signal" in r.stderr
    assert "programs.db.command" in r.stderr
    r = subprocess.run([PY, "-m", "forkwell", "check", "-c", str(tmp_path / "missing.toml")],
                       capture_output=True, text=True, timeout=20)  # fmt: skip
    assert r.returncode == 2 and "no such file" in r.stderr


def read_until(stream: Any, needle: bytes, timeout: float = 10.0) -> bytes:
    """Read from a pipe until ``needle`` appears; fail after ``timeout``."""
    fd = stream.fileno()
    data = b""
    deadline = time.monotonic() + timeout
    while needle not in data:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"timed out waiting for {needle!r}; got {data!r}")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                raise AssertionError(f"EOF before {needle!r}; got {data!r}")
            data += chunk
    return data


def test_cli_logs_tail(served: Served) -> None:
    log = served.sup.log_path("worker:0", "stdout")
    log.write_bytes(b"".join(b"line %d\n" % i for i in range(1000)) + b"partial")
    r = ctl(served, "logs", "worker", "-n", "3")
    assert r.returncode == 0
    assert r.stdout == "line 998\nline 999\npartial"
    r = ctl(served, "logs", "worker:0", "--stderr")
    assert r.returncode == 0 and "no stderr log yet for worker:0" in r.stderr


def test_cli_logs_of_several_instances_are_prefixed(served: Served) -> None:
    served.sup.log_path("web:0", "stdout").write_bytes(b"a1\na2\na3\n")
    served.sup.log_path("web:1", "stdout").write_bytes(b"b1\nb2\npartial")
    r = ctl(served, "logs", "web", "-n", "2")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "web:0 | a2\nweb:0 | a3\nweb:1 | b2\nweb:1 | partial\n"
    r = ctl(served, "logs", "all", "-n", "1")
    assert r.returncode == 0
    assert r.stdout == "web:0    | a3\nweb:1    | partial\n"
    assert r.stderr == "forkwell logs: no stdout log yet for worker:0\n"


def test_cli_logs_follow_several_instances(served: Served) -> None:
    a, b = (served.sup.log_path(f"web:{i}", "stdout") for i in (0, 1))
    a.write_bytes(b"old a\n")
    proc = subprocess.Popen(
        [PY, "-m", "forkwell", "logs", "web", "-f", "-n", "1", "--socket", str(served.path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        read_until(proc.stdout, b"web:0 | old a\n")
        b.write_bytes(b"half ")  # web:1's log appears, with half a line at first
        with a.open("ab") as f:
            f.write(b"new a\n")
        read_until(proc.stdout, b"web:0 | new a\n")
        with b.open("ab") as f:
            f.write(b"line\n")
        read_until(proc.stdout, b"web:1 | half line\n")
    finally:
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(10)
        proc.stdout.close()  # type: ignore[union-attr]
        proc.stderr.close()  # type: ignore[union-attr]
    assert rc == 130


def test_cli_logs_follow_across_rotation_and_truncation(served: Served) -> None:
    log = served.sup.log_path("web:0", "stdout")
    log.write_bytes(b"old 1\nold 2\n")
    proc = subprocess.Popen(
        [PY, "-m", "forkwell", "logs", "web:0", "-f", "-n", "1", "--socket", str(served.path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert read_until(proc.stdout, b"old 2\n") == b"old 2\n"
        with log.open("ab") as f:
            f.write(b"appended\n")
        read_until(proc.stdout, b"appended\n")
        # Rotation as the engine and logrotate do it: rename, then a new file.
        with log.open("ab") as f:
            f.write(b"last words of the old file\n")
        log.rename(log.with_suffix(".log.1"))
        log.write_bytes(b"first of the new file\n")
        got = read_until(proc.stdout, b"first of the new file\n")
        assert b"last words of the old file\n" in got
        # Truncation in place (copytruncate).
        with log.open("ab") as f:
            f.write(b"x" * 100 + b"\n")
        read_until(proc.stdout, b"x" * 100 + b"\n")
        log.write_bytes(b"after truncation\n")
        read_until(proc.stdout, b"after truncation\n")
    finally:
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(10)
        proc.stdout.close()  # type: ignore[union-attr]
        stderr = proc.stderr.read()  # type: ignore[union-attr]
        proc.stderr.close()  # type: ignore[union-attr]
    assert rc == 130
    assert stderr == b""  # Ctrl-C is not an error worth a traceback


def test_cli_logs_follow_waits_for_a_log_that_does_not_exist_yet(served: Served) -> None:
    log = served.sup.log_path("worker:0", "stderr")
    proc = subprocess.Popen(
        [PY, "-m", "forkwell", "logs", "worker", "-f", "--stderr", "--socket", str(served.path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        # It must be following (not failed) before the file appears.
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 0.5)
        assert not ready and proc.poll() is None
        log.write_bytes(b"born\n")
        read_until(proc.stdout, b"born\n")
    finally:
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(10)
        proc.stdout.close()  # type: ignore[union-attr]
        proc.stderr.close()  # type: ignore[union-attr]
    assert rc == 130


# -- small pure helpers --------------------------------------------------------------------


def test_formatting_helpers() -> None:
    assert format_uptime(5.9) == "5s"
    assert format_uptime(312) == "5m12s"
    assert format_uptime(7380) == "2h03m"
    assert format_uptime(2 * 86400 + 3600) == "2d01h"
    assert exit_label(None) == "-"
    assert exit_label(0) == "0"
    assert exit_label(-9) == "SIGKILL"
    assert format_bytes(512) == "512B"
    assert format_bytes(12_800_000) == "12.2M"


def test_tail_lines_across_blocks(tmp_path: Path) -> None:
    p = tmp_path / "f"
    p.write_bytes(b"".join(b"%05d\n" % i for i in range(5000)))
    with p.open("rb") as f:
        assert tail_lines(f, 3, block=7) == b"04997\n04998\n04999\n"
        assert tail_lines(f, 0) == b""
        assert tail_lines(f, 10_000).count(b"\n") == 5000
    p.write_bytes(b"")
    with p.open("rb") as f:
        assert tail_lines(f, 5) == b""


def _argparse_of(command: Any) -> Any:
    """An argparse parser built from a command's declaration, as a reference to hold ours to."""
    import argparse

    from forkwell._cli._options import UsageError
    from forkwell._cli._parser import convert

    class Parser(argparse.ArgumentParser):
        def error(self, message: str) -> NoReturn:
            raise UsageError(message)

    def typed(kind: Any, name: str) -> Any:
        def read(text: str) -> Any:
            try:
                return convert(kind, text, name)
            except UsageError as exc:
                raise argparse.ArgumentTypeError(str(exc)) from None

        return read

    p = Parser(prog="x", add_help=False, allow_abbrev=True)
    for opt in command.options:
        if opt.metavar is None:
            p.add_argument(*opt.spellings, dest=opt.key, action="store_true")
        else:
            p.add_argument(*opt.spellings, dest=opt.key, type=typed(opt.kind, opt.long),
                           action="append" if opt.repeat else "store",
                           default=opt.initial())  # fmt: skip
    for operand in command.operands:
        nargs = None if operand.nargs == "1" else operand.nargs
        p.add_argument(operand.key, nargs=nargs, type=typed(operand.kind, ""))
    return p


def _where_argparse_differs(command: Any, argv: list[str]) -> str:
    """Why GNU's rules (ours) and argparse's may part on ``argv``; "" if they may not."""
    if "-9" in argv:
        return "argparse takes -9 for a negative number, GNU for an option"
    if "--" in argv:
        return "argparse before 3.12 keeps a '--' with nothing after it as an operand"
    valued = {name for opt in command.options if opt.metavar for name in opt.spellings}
    for before, after in itertools.pairwise(argv):
        takes = before in valued or any(n.startswith(before) for n in valued if before[:2] == "--")
        if takes and after.startswith("-"):
            return "GNU takes a value that starts with '-', argparse refuses it"
        if before.startswith("-") and before[:2] != "--" and after.startswith("-"):
            return "a bundle ending in an option that takes the next word"  # -fn -x
    return ""


def test_the_parser_agrees_with_argparse_on_generated_command_lines() -> None:
    """The control commands' one parser against argparse built from the same declarations."""
    import random

    from forkwell._cli._ctl import DECLARED
    from forkwell._cli._options import UsageError
    from forkwell._cli._parser import parse

    tokens = [
        "web", "web:1", "all", "-c", "f.toml", "--config", "--config=x.toml", "--socket", "/s",
        "--socket=/s", "--json", "--no-wait", "--tree", "-n", "5", "--lines=7", "-f",
        "--stderr", "--timeout", "2.5", "TERM", "web=3", "-x", "--", "-n5", "--js", "-9",
        "-fn", "3", "--s", "--st", "--tim=1", "--json=1",
    ]  # fmt: skip
    rng = random.Random(7)
    agreed = accepted = diverged = 0
    for command in DECLARED.values():
        reference = _argparse_of(command)
        for _ in range(400):
            argv = [rng.choice(tokens) for _ in range(rng.randint(0, 6))]
            try:
                ours: dict[str, object] | None = vars(parse(command, argv))
            except UsageError:
                ours = None
            try:
                # Before 3.13 the intermixed parse loses track of "--".
                read = reference.parse_args if "--" in argv else reference.parse_intermixed_args
                theirs: dict[str, object] | None = vars(read(argv))
            except UsageError:
                theirs = None
            if ours == theirs:
                agreed += 1
                accepted += ours is not None
                continue
            assert ours is None or theirs is None, (command.name, argv, ours, theirs)
            assert _where_argparse_differs(command, argv), (command.name, argv, ours, theirs)
            diverged += 1
    assert agreed > 3000 and accepted > 300 and diverged < 600, (agreed, accepted, diverged)
    assert vars(parse(DECLARED["logs"], ["web", "-n", "3", "-f"])) == {
        "config": None, "format": None, "socket": None, "names": ["web"], "lines": 3, "follow": True,
        "stderr": False,
    }  # fmt: skip
