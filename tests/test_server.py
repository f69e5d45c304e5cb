"""ForkingServer and ``forkwell serve --per-connection``: real sockets, real clients."""

from __future__ import annotations

import errno
import http.client
import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_server_apps import (
    TESTS_DIR,
    Served,
    ask,
    burst,
    child_states,
    children,
    closed_by_peer,
    connect,
    read_all,
)

import forkwell
from forkwell._servers._common import parse_bind

pytestmark = pytest.mark.timeout(60)

ECHO = "test_server_apps:echo"


def wait_until(pred, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        select.select([], [], [], 0.01)


def test_200_concurrent_connections_get_their_own_answers() -> None:
    with Served("--per-connection", "--bind", "127.0.0.1:0", "-q", ECHO) as srv:
        srv.started()
        payloads = [f"client-{i}".encode() for i in range(200)]
        replies = burst(srv.address, payloads, concurrency=200)
        pids = set()
        for payload, reply in zip(payloads, replies, strict=True):
            pid, _, text = reply.strip().partition(b" ")
            assert text == payload
            pids.add(int(pid))
        # One child per connection: never the server itself, never reused.
        assert srv.pid not in pids
        assert len(pids) == 200
        assert srv.stop() == 0
        assert "Traceback" not in srv.text()


def test_no_zombie_after_2000_connections() -> None:
    with Served("--per-connection", "--bind", "127.0.0.1:0", "-q", ECHO) as srv:
        srv.started()
        replies = burst(srv.address, [b"x"] * 2000, concurrency=100, timeout=45)
        assert all(r.endswith(b" x\n") for r in replies)
        # Every child has exited (the client saw EOF); each must be reaped
        # promptly, without any further connection to trigger it.
        wait_until(lambda: not child_states(srv.pid), 5, "the server to have no children")
        assert srv.stop() == 0


def test_child_holds_only_stdio_and_its_connection() -> None:
    with Served("--per-connection", "--bind", "127.0.0.1:0", "-q", ECHO) as srv:
        srv.started()
        _pid, listing = ask(srv.address, b"fds")
        fds = dict(item.split("=", 1) for item in listing.decode().split())
        extra = {n: target for n, target in fds.items() if n not in ("0", "1", "2")}
        assert len(extra) == 1, fds  # no listener, pidfd, epoll or pipe of the server
        (conn,) = extra.values()
        assert conn.startswith("socket:")
        # It is the connection, not the listener (the server's own fds).
        server_fd_dir = f"/proc/{srv.pid}/fd"
        server_fds = {os.readlink(f"{server_fd_dir}/{n}") for n in os.listdir(server_fd_dir)}
        assert conn not in server_fds
        assert srv.stop() == 0


def test_parent_closes_its_copy_so_the_client_sees_eof() -> None:
    # If the server kept the connection open after forking, read_all would
    # hang until the timeout instead of returning at the child's exit.
    with Served("--per-connection", "--bind", "127.0.0.1:0", "-q", ECHO) as srv:
        srv.started()
        t0 = time.monotonic()
        with connect(srv.address, timeout=5) as sock:
            sock.sendall(b"hello\n")
            assert read_all(sock).endswith(b" hello\n")
        assert time.monotonic() - t0 < 4
        assert srv.stop() == 0


def test_per_connection_time_limit_kills_and_reaps() -> None:
    with Served("--per-connection", "--timeout", "0.5", "--bind", "127.0.0.1:0", ECHO) as srv:
        srv.started()
        with connect(srv.address, timeout=10) as sock:
            t0 = time.monotonic()
            sock.sendall(b"hang\n")
            assert closed_by_peer(sock)  # the child was killed: FIN, or RST if data was unread
            elapsed = time.monotonic() - t0
        assert 0.4 <= elapsed < 5, elapsed
        srv.wait_line(r"exceeded its 0.5s limit: killed")
        wait_until(lambda: not child_states(srv.pid), 5, "the killed child to be reaped")
        assert ask(srv.address, b"still here")[1] == b"still here"
        assert srv.stop() == 0


def test_max_children_is_back_pressure_not_a_failure() -> None:
    with Served("--per-connection", "--max-children", "2", "--bind", "127.0.0.1:0", ECHO) as srv:
        srv.started()
        held = [connect(srv.address) for _ in range(2)]
        for sock in held:
            sock.sendall(b"wait\n")
            assert sock.recv(100).endswith(b"waiting\n")
        third = connect(srv.address)  # queued in the backlog
        third.sendall(b"third\n")
        # At the limit no child is forked for it: no answer while both are busy.
        assert select.select([third], [], [], 0.3)[0] == []
        assert len(children(srv.pid)) == 2
        held[0].sendall(b"done\n")
        assert read_all(held[0]).endswith(b" done\n")
        assert read_all(third).endswith(b" third\n")  # served once a slot freed
        held[1].sendall(b"done\n")
        assert read_all(held[1]).endswith(b" done\n")
        for sock in (*held, third):
            sock.close()
        assert srv.stop() == 0


def test_graceful_stop_finishes_in_flight_then_refuses() -> None:
    with Served("--per-connection", "--bind", "127.0.0.1:0", ECHO) as srv:
        srv.started()
        with connect(srv.address) as sock:
            sock.sendall(b"wait\n")
            assert sock.recv(100).endswith(b"waiting\n")
            os.kill(srv.pid, signal.SIGTERM)
            srv.wait_line(r"stopping: waiting up to 30s for 1 children")
            with pytest.raises(ConnectionRefusedError):
                connect(srv.address)
            assert srv.proc.poll() is None  # still waiting for the in-flight child
            sock.sendall(b"bye\n")
            assert read_all(sock).endswith(b" bye\n")
        assert srv.wait(timeout=10) == 0


def test_graceful_timeout_kills_what_is_left() -> None:
    args = ("--per-connection", "--graceful-timeout", "0.5", "--bind", "127.0.0.1:0", ECHO)
    with Served(*args) as srv:
        srv.started()
        with connect(srv.address) as sock:
            sock.sendall(b"hang\n")
            wait_until(lambda: children(srv.pid), 5, "the connection's child")
            t0 = time.monotonic()
            assert srv.stop(signal.SIGTERM) == 0
            assert 0.4 <= time.monotonic() - t0 < 8
            assert closed_by_peer(sock)  # FIN, or RST if "hang" was still unread


def test_fast_stop_kills_children_at_once() -> None:
    with Served("--per-connection", "--bind", "127.0.0.1:0", ECHO) as srv:
        srv.started()
        with connect(srv.address) as sock:
            sock.sendall(b"hang\n")
            wait_until(lambda: children(srv.pid), 5, "the connection's child")
            t0 = time.monotonic()
            assert srv.stop(signal.SIGINT) == 0
            assert time.monotonic() - t0 < 5
            assert closed_by_peer(sock)  # FIN, or RST if "hang" was still unread


@pytest.mark.parametrize("mode", [["--per-connection"], ["--workers", "2"]])
def test_simple_http_request_handler_unchanged(tmp_path: Path, mode: list[str]) -> None:
    (tmp_path / "hello.txt").write_text("hello from forkwell\n")
    args = (*mode, "--bind", "127.0.0.1:0", "-q", "http.server:SimpleHTTPRequestHandler")
    with Served(*args, cwd=tmp_path) as srv:
        srv.started()
        host, port = srv.address.rsplit(":", 1)
        for _ in range(3):
            conn = http.client.HTTPConnection(host, int(port), timeout=10)
            conn.request("GET", "/hello.txt")
            resp = conn.getresponse()
            assert resp.status == 200
            assert resp.read() == b"hello from forkwell\n"
            conn.close()
        assert srv.stop() == 0


def test_unix_socket_listener_and_handler_class(tmp_path: Path) -> None:
    path = tmp_path / "echo.sock"
    with Served(
        "--per-connection", "--bind", f"unix:{path}", "-q", "test_server_apps:EchoHandler"
    ) as srv:
        srv.started()
        assert srv.address == f"unix:{path}"
        assert ask(srv.address, b"over unix")[1] == b"over unix"
        assert srv.stop() == 0
    assert not path.exists()  # the server removes the socket file it created


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback on this machine")
def test_ipv6_and_ipv4_listeners_at_once() -> None:
    args = ("--per-connection", "--bind", "127.0.0.1:0", "--bind", "[::1]:0", "-q", ECHO)
    with Served(*args) as srv:
        line = srv.wait_line(r"listening on (\S+), (\S+) ").groups()
        assert line[1].startswith("[::1]:")
        assert ask(line[0], b"v4")[1] == b"v4"
        assert ask(line[1], b"v6")[1] == b"v6"
        assert srv.stop() == 0


# ---------------------------------------------------------------- bad input


def _serve_error(*args: str, cwd: Path | None = None) -> tuple[int, str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, (str(TESTS_DIR), os.environ.get("PYTHONPATH")))))
    proc = subprocess.run(
        [sys.executable, "-m", "forkwell", "serve", *args],
        capture_output=True,
        text=True,
        timeout=20,
        cwd=cwd,
        env=env,
    )
    return proc.returncode, proc.stderr


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["no_such_module_xyz:app"], 2, "cannot import 'no_such_module_xyz': ModuleNotFoundError"),
        (["http.server:nothing"], 2, "module 'http.server' has no attribute 'nothing'"),
        (["http.server"], 2, "bad handler 'http.server' (expected MODULE:HANDLER)"),
        (["http.server:HTTPServer"], 2, "HTTPServer is a class but not a socketserver"),
        (["--bind", "localhost", ECHO], 2, "bad bind address 'localhost'"),
        (["--bind", "127.0.0.1:99999", ECHO], 2, "bad bind address '127.0.0.1:99999'"),
        (["--bind", "unix:", ECHO], 2, "unix: needs a path"),
        (["--workers", "0", ECHO], 2, "must be >= 1"),
        (["--workers", "100000", ECHO], 2, "workers must be between 1 and 512"),
        (["--per-connection", "--max-requests", "5", ECHO], 2, "applies to pre-fork workers"),
        (["--timeout", "soon", ECHO], 2, "invalid time interval 'soon'"),
    ],
)
def test_bad_input_one_line_error(args: list[str], code: int, message: str) -> None:
    rc, err = _serve_error(*args)
    assert rc == code
    assert err.count("\n") == 1, err
    assert err.startswith("forkwell serve: ")
    assert message in err


@pytest.mark.parametrize("mode", ["--per-connection", "--workers=1"])
def test_port_in_use_is_a_one_line_error(mode: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        rc, err = _serve_error(mode, "--bind", f"127.0.0.1:{port}", ECHO)
    assert rc == 1
    assert err == f"forkwell serve: cannot listen on 127.0.0.1:{port}: Address already in use\n"


def test_syntax_error_in_handler_module_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "broken_app.py").write_text("def handler(:\n")
    rc, err = _serve_error("broken_app:handler", cwd=tmp_path)
    assert rc == 2
    assert err.startswith("forkwell serve: cannot import 'broken_app': SyntaxError")
    assert err.count("\n") == 1


def test_live_unix_socket_is_not_stolen(tmp_path: Path) -> None:
    path = tmp_path / "taken.sock"
    with socket.socket(socket.AF_UNIX) as live:
        live.bind(str(path))
        live.listen()
        rc, err = _serve_error("--bind", f"unix:{path}", ECHO)
    assert rc == 1
    assert "another server is using it" in err


# ---------------------------------------------------------------- library API


def test_parse_bind() -> None:
    assert parse_bind("127.0.0.1:80").address == ("127.0.0.1", 80)
    assert parse_bind("[::1]:8080").family == socket.AF_INET6
    assert parse_bind(":8000").address == ("0.0.0.0", 8000)
    assert parse_bind("unix:/run/x.sock").address == "/run/x.sock"
    with pytest.raises(forkwell.BindError) as exc:
        parse_bind("nope")
    assert exc.value.errno == errno.EINVAL
    assert isinstance(exc.value, OSError)


def test_serve_forever_runs_once_and_rejects_non_handlers() -> None:
    with pytest.raises(TypeError):
        forkwell.ForkingServer(42, "127.0.0.1:0")  # type: ignore[arg-type]
    server = forkwell.ForkingServer(lambda sock, addr: None, "127.0.0.1:0")
    server.close()
    with pytest.raises(forkwell.StateError):
        server.serve_forever()


def test_shutdown_from_another_thread_returns_after_reaping() -> None:
    # serve_forever in a worker thread of this process: no signal handlers are
    # installed there, shutdown() is the way to stop it.
    import threading

    server = forkwell.ForkingServer(
        lambda sock, addr: sock.sendall(b"hi\n"), "127.0.0.1:0", timeout=5
    )
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        with connect(server.addresses[0]) as sock:
            assert read_all(sock) == b"hi\n"
    finally:
        server.shutdown()
        thread.join(10)
    assert not thread.is_alive()
    assert server.state.value == "closed"
    assert server.served == 1
    assert not child_states(os.getpid())
