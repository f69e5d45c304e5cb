"""``forkwell probe``: each kind against real listeners, real commands and a real supervisor.

Exit 0 when up, 1 with one line on stderr saying why when not, 2 for a
target that is not one.  Listeners are real sockets; the HTTP server is the
standard library's, answering the status each test asks for.
"""

from __future__ import annotations

import socket
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from helpers import PY, wait_until
from test_ctl_e2e import IDLE, make_fleet  # noqa: F401  (the fixture, with its real supervisor)

pytestmark = pytest.mark.timeout(60)


def probe(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PY, "-m", "forkwell", "probe", *args], capture_output=True,
                          text=True, timeout=30)  # fmt: skip


class _Status(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        status = int(self.path.strip("/").partition("?")[0] or 200)
        self.send_response(status, "Teapot Trouble" if status == 418 else None)
        if 300 <= status < 400:
            self.send_header("Location", "/200")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def http_port() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Status)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
    thread.join()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("status", [200, 204, 302, 399])
def test_http_200_to_399_is_up(http_port: int, status: int) -> None:
    result = probe(f"http://127.0.0.1:{http_port}/{status}")
    assert (result.returncode, result.stderr) == (0, "")


@pytest.mark.parametrize("status", [404, 418, 500, 503])
def test_http_errors_are_down_with_the_status_in_one_line(http_port: int, status: int) -> None:
    url = f"http://127.0.0.1:{http_port}/{status}"
    result = probe(url)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert f"{url}: HTTP {status}" in result.stderr
    if status == 418:
        assert "Teapot Trouble" in result.stderr


def test_http_to_a_closed_port_says_refused() -> None:
    result = probe(f"http://127.0.0.1:{free_port()}/health")
    assert result.returncode == 1
    assert "refused" in result.stderr and result.stderr.count("\n") == 1


def test_http_that_never_answers_times_out_within_the_timeout() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()  # accepts (the kernel does), never answers
        port = listener.getsockname()[1]
        result = probe("--timeout", "0.3", f"http://127.0.0.1:{port}/")
    assert result.returncode == 1
    assert "no answer within 0.3s" in result.stderr


def test_a_non_http_answer_is_down() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]

        def answer() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.recv(1024)
                conn.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")

        thread = threading.Thread(target=answer)
        thread.start()
        result = probe(f"http://127.0.0.1:{port}/")
        thread.join()
    assert result.returncode == 1
    assert "not an HTTP answer: 'SSH-2.0-OpenSSH_9.2'" in result.stderr


def test_tcp_up_and_down() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert probe(f"tcp:127.0.0.1:{port}").returncode == 0
        assert probe(f"tcp:{port}").returncode == 0  # tcp:PORT: 127.0.0.1
    down = probe(f"tcp:127.0.0.1:{free_port()}")
    assert down.returncode == 1
    assert "connection refused" in down.stderr


def test_tcp_unresolvable_host_says_so() -> None:
    result = probe("tcp:no-such-host.invalid:80")
    assert result.returncode == 1
    assert "cannot resolve no-such-host.invalid" in result.stderr


def test_wait_returns_as_soon_as_the_port_listens() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))  # bound, not listening: refused until listen()
        port = s.getsockname()[1]
        proc = subprocess.Popen([PY, "-m", "forkwell", "probe", "--wait", "--timeout", "20",
                                 f"tcp:127.0.0.1:{port}"], stderr=subprocess.PIPE, text=True)  # fmt: skip
        s.listen()
        _, err = proc.communicate(timeout=30)
    assert (proc.returncode, err) == (0, "")


def test_wait_gives_up_after_its_timeout_with_the_last_reason() -> None:
    result = probe("--wait", "--timeout", "0.5", f"tcp:127.0.0.1:{free_port()}")
    assert result.returncode == 1
    assert "connection refused (still, after 0.5s)" in result.stderr


def test_cmd_exit_status_decides(tmp_path: Path) -> None:
    assert probe("cmd:test -d /").returncode == 0
    down = probe("cmd:exit 3")
    assert down.returncode == 1
    assert down.stderr == "forkwell probe: cmd:exit 3: exited with status 3\n"


def test_cmd_that_outlasts_the_timeout_is_ended_with_its_tree(tmp_path: Path) -> None:
    marker = tmp_path / "child.pid"
    result = probe("--timeout", "0.5", f"cmd:sleep 30 & echo $! > {marker}; wait")
    assert result.returncode == 1
    assert "did not finish within 0.5s" in result.stderr
    pid = int(marker.read_text())
    # the leak fixture would catch it too; say it here where it matters
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()


@pytest.mark.parametrize(("target", "message"), [
    ("nonsense", "expected an http:// or https:// URL, tcp:HOST:PORT or cmd:COMMAND"),
    ("tcp:host", "invalid probe 'tcp:host'"),
    ("http://", "expected a URL like http://127.0.0.1:8000/health"),
    ("http://u:p@127.0.0.1/", "a probe URL takes no user or password"),
    ("exec", "'exec' cannot be probed"),
])  # fmt: skip
def test_a_target_that_is_no_form_is_a_usage_error(target: str, message: str) -> None:
    result = probe(target)
    assert result.returncode == 2
    assert message in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_ready_and_live_ask_the_supervisor(make_fleet: Any, tmp_path: Path) -> None:  # noqa: F811
    config = tmp_path / "forkwell.toml"
    assert probe("live", "-c", str(config)).returncode == 1  # nothing runs yet
    fleet = make_fleet(f"""
[programs.up]
{IDLE}

[programs.never]
command = ["{PY}", "-c", "raise SystemExit(1)"]
start_retries = 1
min_uptime = 5
""")  # fmt: skip

    def settled() -> bool:
        states = {r["state"] for r in fleet.ps().values()}
        return states <= {"RUNNING", "FATAL"} and "FATAL" in states

    wait_until(fleet.sock.exists, 20, "the control socket")
    wait_until(settled, 20, "never FATAL")
    assert probe("live", "-c", str(config)).returncode == 0
    not_ready = probe("ready", "-c", str(config))
    assert not_ready.returncode == 1
    assert "not ready: never:0 FATAL" in not_ready.stderr
    assert fleet.ctl("stop", "never").returncode == 0
    # a stopped program is not up either: `ready` is what `forkwell ps` exits 0 for
    assert probe("ready", "-c", str(config)).returncode == 1
    assert fleet.ctl("start", "up").returncode == 0


def test_ready_when_every_autostart_program_is_up(make_fleet: Any, tmp_path: Path) -> None:  # noqa: F811
    fleet = make_fleet(f"[programs.up]\n{IDLE}\nnumprocs = 2\n")
    fleet.wait_healthy()
    result = probe("ready", "-c", str(tmp_path / "forkwell.toml"))
    assert (result.returncode, result.stderr) == (0, "")
    # --socket names the supervisor as for `forkwell ps`
    assert probe("ready", "--socket", str(fleet.sock)).returncode == 0


@pytest.mark.parametrize("kind", ["tcp", "http"])
def test_a_network_probe_stays_lean(http_port: int, kind: str) -> None:
    """It runs every few seconds in every pod: none of the heavy modules load."""
    target = f"tcp:127.0.0.1:{http_port}" if kind == "tcp" else f"http://127.0.0.1:{http_port}/"
    code = (
        "import sys; from forkwell._cli import main; rc = main(['probe', sys.argv[1]]);"
        "print(' '.join(sorted(sys.modules)), file=sys.stderr); sys.exit(rc)"
    )
    result = subprocess.run([PY, "-c", code, target], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    loaded = set(result.stderr.split())
    heavy = {"asyncio", "tomllib", "http.client", "email", "ssl", "subprocess", "socket",
             "forkwell._supervisor._engine", "forkwell._supervisor._control._client"}  # fmt: skip
    assert not loaded & heavy
