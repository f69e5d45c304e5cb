"""Control-command benchmark: forkwell ps/stop all/start all vs supervisorctl, side by side.

    python bench/bench_ctl.py [--programs 100] [--big 1000] [--runs 30] [--cycles 7]

Whole-process wall time of each command, as a person or a health check runs it:

* ``python -c pass`` by the same interpreter: the floor for any Python CLI;
* ``forkwell ps`` against a ``forkwell up`` with ``--programs`` instances, and
  with ``--big`` instances;
* ``supervisorctl status`` against a ``supervisord`` running the same programs;
* ``stop all`` then ``start all`` (each waits for STOPPED / RUNNING) for both.

Programs are ``sleep 3600``; a start is done when the program exec'd, on both
sides: forkwell ``ready = "exec"`` with ``min_uptime = "0s"``, supervisord
``startsecs = 0`` (with their defaults both would also hold each start for
about one second to catch programs that crash at once).  The ``forkwell`` command is the installed entry-point script run
by ``sys.executable`` (not a pyenv/venv shim).  Prints medians and ratios.
"""

from __future__ import annotations

import argparse
import os
import platform
import select
import shutil
import signal
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

PY = sys.executable
# Measure what users get: cached bytecode.  (With PYTHONDONTWRITEBYTECODE set,
# every run would recompile forkwell's modules and time the compiler.)
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)


def pause(seconds: float) -> None:
    select.select([], [], [], seconds)


def wait_for(pred: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: timed out waiting for {what}")
        pause(0.05)


def timed(cmd: list[str], *, ok: tuple[int, ...] = (0,)) -> float:
    began = time.perf_counter()
    r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - began
    if r.returncode not in ok:
        raise SystemExit(f"bench: {' '.join(cmd)} exited {r.returncode}: {r.stderr.decode()}")
    return elapsed


def median_ms(cmd: list[str], runs: int, *, ok: tuple[int, ...] = (0,)) -> float:
    timed(cmd, ok=ok)  # warm the page cache
    return statistics.median(timed(cmd, ok=ok) for _ in range(runs)) * 1000


def forkwell_script() -> str:
    """The installed ``forkwell`` entry point, run by this interpreter."""
    candidates = [
        os.path.join(sysconfig.get_path("scripts"), "forkwell"),
        os.path.join(os.path.dirname(PY), "forkwell"),
    ]
    for path in candidates:
        if os.path.exists(path):
            with open(path, "rb") as f:
                if f.read(2) == b"#!" and b"python" in f.readline():
                    return path
    raise SystemExit("bench: the forkwell entry point is not installed (pip install -e .)")


class Forkwell:
    def __init__(self, directory: Path, instances: int, programs: int) -> None:
        self.dir = directory
        self.config = directory / "forkwell.toml"
        per = instances // programs
        self.config.write_text(
            "".join(
                f'[programs.p{i}]\ncommand = ["sleep", "3600"]\nnumprocs = {per}\n'
                'min_uptime = "0s"\n\n'
                for i in range(programs)
            )
        )
        self.script = forkwell_script()
        self.out = (directory / "up.out").open("wb")
        self.proc = subprocess.Popen(
            [PY, self.script, "up", "-c", str(self.config), "--quiet"],
            stdout=self.out, stderr=subprocess.STDOUT, cwd=directory,
        )  # fmt: skip
        wait_for(self.healthy, 120, f"forkwell up with {instances} instances")

    def cmd(self, *args: str) -> list[str]:
        return [PY, self.script, *args, "-c", str(self.config)]

    def healthy(self) -> bool:
        if self.proc.poll() is not None:
            raise SystemExit(f"bench: forkwell up exited: {(self.dir / 'up.out').read_text()}")
        return subprocess.run(self.cmd("ps"), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL).returncode == 0  # fmt: skip

    def close(self) -> None:
        subprocess.run(self.cmd("down"), stdout=subprocess.DEVNULL, timeout=120)
        self.proc.wait(60)
        self.out.close()


class Supervisord:
    def __init__(self, directory: Path, programs: int) -> None:
        exe = shutil.which("supervisord")
        ctl = shutil.which("supervisorctl")
        if exe is None or ctl is None:
            raise SystemExit("bench: supervisord not installed (bench/setup.sh)")
        self.dir = directory
        self.conf = directory / "supervisord.conf"
        sock = directory / "supervisor.sock"
        lines = [
            "[unix_http_server]", f"file={sock}", "chmod=0700", "",
            "[supervisord]", f"logfile={directory / 'supervisord.log'}",
            f"pidfile={directory / 'supervisord.pid'}", f"childlogdir={directory}", "nodaemon=true",
            "minfds=4096", "",
            "[rpcinterface:supervisor]",
            "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface", "",
            "[supervisorctl]", f"serverurl=unix://{sock}", "",
        ]  # fmt: skip
        for i in range(programs):
            lines += [f"[program:p{i}]", "command=sleep 3600", "startsecs=0", "autorestart=true",
                      "stdout_logfile=NONE", "stderr_logfile=NONE", ""]  # fmt: skip
        self.conf.write_text("\n".join(lines))
        # supervisord and supervisorctl are Python scripts: run them by their own
        # shebang interpreter (resolving a pyenv shim would add a bash start-up).
        self.ctl = self._python_script(ctl)
        self.proc = subprocess.Popen(
            [*self._python_script(exe), "-c", str(self.conf)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.programs = programs
        wait_for(self.all_running, 120, "supervisord to start its programs")

    @staticmethod
    def _python_script(path: str) -> list[str]:
        with open(path, "rb") as f:
            head = f.read(200)
        if head.startswith(b"#!") and b"python" in head.split(b"\n")[0]:
            return [head.split(b"\n")[0][2:].decode().strip(), path]
        # A pyenv shim: ask it where the real script is.
        real = subprocess.run(["pyenv", "which", os.path.basename(path)], capture_output=True,
                              text=True).stdout.strip()  # fmt: skip
        if real:
            return Supervisord._python_script(real)
        return [path]

    def cmd(self, *args: str) -> list[str]:
        return [*self.ctl, "-c", str(self.conf), *args]

    def all_running(self) -> bool:
        r = subprocess.run(self.cmd("status"), capture_output=True, text=True)
        return r.stdout.count("RUNNING") == self.programs

    def close(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--programs", type=int, default=100)
    ap.add_argument("--big", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--cycles", type=int, default=7)
    args = ap.parse_args()
    n = args.programs

    import compileall

    import forkwell

    compileall.compile_dir(os.path.dirname(forkwell.__file__), quiet=1)
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, "
          f"Linux {platform.release()}, Python {platform.python_version()}")  # fmt: skip
    rows: list[tuple[str, float, str]] = []
    with tempfile.TemporaryDirectory(prefix="bench-ctl-") as tmp:
        base = Path(tmp)
        (base / "fw").mkdir()
        (base / "sv").mkdir()
        (base / "big").mkdir()
        fw = Forkwell(base / "fw", n, n)
        sv = Supervisord(base / "sv", n)
        try:
            floor = median_ms([PY, "-c", "pass"], args.runs)
            fw_ps = median_ms(fw.cmd("ps"), args.runs)
            sv_status = median_ms(sv.cmd("status"), args.runs)
            fw_stop, fw_start, sv_stop, sv_start = [], [], [], []
            for _ in range(args.cycles):
                # Interleaved, so drift on a shared machine hits both alike.
                fw_stop.append(timed(fw.cmd("stop", "all")))
                fw_start.append(timed(fw.cmd("start", "all")))
                sv_stop.append(timed(sv.cmd("stop", "all")))
                sv_start.append(timed(sv.cmd("start", "all")))
            if not fw.healthy() or not sv.all_running():
                raise SystemExit("bench: not everything is running again after start all")
        finally:
            fw.close()
            sv.close()
        big = Forkwell(base / "big", args.big, 10)
        try:
            fw_ps_big = median_ms(big.cmd("ps"), args.runs)
            fw_json_big = median_ms(big.cmd("ps", "--json"), args.runs)
        finally:
            big.close()

    for label, xs in (("forkwell stop all", fw_stop), ("forkwell start all", fw_start),
                      ("supervisorctl stop all", sv_stop), ("supervisorctl start all", sv_start)):
        print(f"{label} (ms, each cycle): {' '.join(f'{x * 1000:.0f}' for x in xs)}")
    med = lambda xs: statistics.median(xs) * 1000  # noqa: E731
    rows = [
        ("python -c pass (same interpreter)", floor, "1.00x (floor)"),
        (f"forkwell ps, {n} instances", fw_ps, f"{fw_ps / floor:.2f}x python -c pass"),
        (f"supervisorctl status, {n} programs", sv_status,
         f"forkwell ps is {sv_status / fw_ps:.1f}x faster"),
        (f"forkwell ps, {args.big} instances", fw_ps_big, f"{fw_ps_big / floor:.2f}x python -c pass"),
        (f"forkwell ps --json, {args.big} instances", fw_json_big,
         f"{fw_json_big / floor:.2f}x python -c pass"),
        (f"forkwell stop all, {n}", med(fw_stop), f"{med(sv_stop) / med(fw_stop):.1f}x faster"),
        (f"supervisorctl stop all, {n}", med(sv_stop), ""),
        (f"forkwell start all, {n}", med(fw_start), f"{med(sv_start) / med(fw_start):.1f}x faster"),
        (f"supervisorctl start all, {n}", med(sv_start), ""),
    ]  # fmt: skip
    print(f"\nmedians of {args.runs} runs (ps/status) and {args.cycles} stop/start cycles\n")
    width = max(len(r[0]) for r in rows)
    print(f"{'command':<{width}}  {'wall ms':>8}  ratio")
    for name, ms, ratio in rows:
        print(f"{name:<{width}}  {ms:8.1f}  {ratio}")


if __name__ == "__main__":
    main()
