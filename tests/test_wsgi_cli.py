"""``forkwell serve MODULE:APP --wsgi``: the WSGI server from the command line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from test_server_apps import TESTS_DIR, Served

pytestmark = pytest.mark.timeout(60)


def serve_cli(*args: str, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), *sys.path])}
    env.update(extra_env or {})
    return subprocess.run([sys.executable, "-m", "forkwell", "serve", *args], capture_output=True,
                          text=True, env=env, timeout=30)


def test_a_wsgi_callable_is_detected_and_served() -> None:
    with Served("--workers", "2", "--bind", "127.0.0.1:0", "wsgi_apps:plain") as srv:
        srv.started()
        assert "(WSGI, pre-fork, 2 workers, pid" in srv.text()
        with httpx.Client(base_url=f"http://{srv.address}", timeout=10) as c:
            assert c.get("/x").text == "hello /x"
        assert srv.stop() == 0


def test_wsgi_flags_a_factory_and_the_access_log(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    with Served("--wsgi", "--workers", "1", "--bind", "127.0.0.1:0", "--keep-alive", "5",
                "--access-logfile", str(log), "--limit-request-line", "100",
                "wsgi_flask_app:create_app()") as srv:
        srv.started()
        srv.wait_line(r"worker \d+ booted")
        with httpx.Client(base_url=f"http://{srv.address}", timeout=10) as c:
            assert c.get("/").text == "flask index"
            assert c.get("/" + "a" * 200).status_code == 414
        assert srv.stop() == 0
    assert '"GET / HTTP/1.1" 200 11' in log.read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--keep-alive", "5", "test_server_apps:echo"],
         "--keep-alive applies to WSGI apps, and test_server_apps:echo is not one (give --wsgi if it is)"),
        (["--wsgi", "--per-connection", "wsgi_apps:plain"],
         "--wsgi applies to WSGI apps, served by pre-forked workers, not --per-connection"),
        (["--wsgi", "no_such_module:app"],
         "cannot import 'no_such_module': ModuleNotFoundError: No module named 'no_such_module'"),
        (["--wsgi", "--limit-request-line", "9000", "wsgi_apps:plain"],
         "limit_request_line must be between 0 and 8190, got 9000"),
    ],
    ids=["wsgi-flag-on-a-handler", "per-connection", "no-module", "limit-out-of-range"],
)
def test_usage_errors_are_one_line_and_exit_2(args: list[str], message: str) -> None:
    out = serve_cli(*args)
    assert out.returncode == 2
    assert out.stderr.splitlines()[0].startswith(f"forkwell serve: {message}"), out.stderr
    assert "Traceback" not in out.stderr


def test_without_the_extra_the_cli_names_the_pip_command(tmp_path: Path) -> None:
    # A sitecustomize that hides httptools, as a machine without the extra would.
    (tmp_path / "sitecustomize.py").write_text("import sys\nsys.modules['httptools'] = None\n")
    out = serve_cli("--wsgi", "wsgi_apps:plain", extra_env={
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(TESTS_DIR), *sys.path])})
    assert out.returncode == 2
    assert out.stderr == (
        "forkwell serve: forkwell's WSGI server needs httptools: pip install 'forkwell[wsgi]'\n")
