"""examples/Procfile, examples/supervisord.conf and examples/process-compose.yaml, run.

Each runs from a copy of examples/ (the files write their sockets and logs
beside themselves) under ``forkwell up``, and the test waits for what the
file's comments promise.  The only change to the copy is the port, made free
(other suites on this machine use the fixed ones).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import pytest
from helpers import PY, wait_until

EXAMPLES = Path(__file__).parent.parent / "examples"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _copy(tmp_path: Path, name: str, port: int, fixed: str | None) -> Path:
    d = tmp_path / "examples"
    shutil.copytree(EXAMPLES, d, ignore=shutil.ignore_patterns(".forkwell", "__pycache__"))
    if fixed is not None:
        text = (d / name).read_text()
        assert fixed in text
        (d / name).write_text(text.replace(fixed, str(port)))
    return d


def _ctl(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PY, "-m", "forkwell", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=30)  # fmt: skip


class _Up:
    """``forkwell up`` on one example, its output collected in a file."""

    def __init__(self, d: Path, args: list[str]) -> None:
        self.log = d.parent / "up.log"
        with self.log.open("w") as sink:
            self.proc = subprocess.Popen([PY, "-m", "forkwell", "up", *args], cwd=d,
                                         stdout=sink, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)  # fmt: skip

    def text(self) -> str:
        return self.log.read_text()

    def wait_for(self, *needles: str) -> None:
        wait_until(lambda: all(n in self.text() for n in needles) or self.proc.poll() is not None,
                   30, f"{needles} in forkwell up's output")  # fmt: skip
        missing = [n for n in needles if n not in self.text()]
        assert not missing, f"{missing} not in:\n{self.text()}"

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        finally:
            if self.proc.poll() is None:  # pragma: no cover - only if it hangs
                self.proc.kill()
                self.proc.wait()


@pytest.mark.timeout(90)
def test_the_procfile_example(tmp_path: Path) -> None:
    port = _free_port()
    d = _copy(tmp_path, "Procfile", port, None)
    up = _Up(d, ["-c", "Procfile", "-p", str(port)])
    try:
        up.wait_for(f"web.1    | serving on http://127.0.0.1:{port}/",
                    "worker.1 | worker.1: processed job 1")  # fmt: skip
    finally:
        status = up.stop()
    assert status == 0, up.text()
    assert "forkwell up: all stopped, exiting" in up.text()


@pytest.mark.timeout(90)
def test_the_supervisord_example_with_supervisorctl_names(tmp_path: Path) -> None:
    port = _free_port()
    d = _copy(tmp_path, "supervisord.conf", port, "8766")
    up = _Up(d, ["-c", "supervisord.conf"])
    try:
        up.wait_for(f"demo:web       | serving on http://127.0.0.1:{port}/",
                    "demo:worker_01 | demo:worker_01: processed job 1")  # fmt: skip
        ps = _ctl("ps", "-c", "supervisord.conf", cwd=d)
        names = [line.split()[0] for line in ps.stdout.splitlines()[1:]]
        assert names == ["demo:web", "demo:worker_00", "demo:worker_01"], ps.stdout + ps.stderr
        stopped = _ctl("stop", "demo:*", "-c", "supervisord.conf", cwd=d)
        assert stopped.returncode == 0, stopped.stderr
        assert (tmp_path / ".forkwell" / "supervisord-demo" / "logs").is_dir()
    finally:
        status = up.stop()
    assert status == 0, up.text()


@pytest.mark.timeout(90)
def test_the_process_compose_example(tmp_path: Path) -> None:
    pytest.importorskip("yaml", reason="pip install 'forkwell[yaml]'")
    port = _free_port()
    d = _copy(tmp_path, "process-compose.yaml", port, "8767")
    up = _Up(d, ["-c", "process-compose.yaml"])
    try:
        up.wait_for(f"report:0 | report: http://127.0.0.1:{port}/ answered 200",
                    "report:0 RUNNING -> EXITED (exited with status 0",
                    "worker:1 | worker:1: processed job 1")  # fmt: skip
        # report started only once web was ready: process_healthy
        text = up.text()
        assert text.index("web:0 STARTING -> RUNNING") < text.index("report:0 STARTING -> RUNNING")
    finally:
        status = up.stop()
    assert status == 0, up.text()


def test_every_example_passes_check() -> None:
    env = {**os.environ}
    for name in ("Procfile", "supervisord.conf", "process-compose.yaml", "demo.toml"):
        if name.endswith(".yaml"):
            pytest.importorskip("yaml")
        done = subprocess.run([PY, "-m", "forkwell", "check", "-c", name], cwd=EXAMPLES,
                              capture_output=True, text=True, timeout=30, env=env)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert done.stderr == "", done.stderr  # nothing ignored: each example is all forkwell reads
