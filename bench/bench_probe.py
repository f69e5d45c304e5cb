"""``forkwell probe`` start-up: what every exec probe of every pod pays, beside its peers.

    python bench/bench_probe.py [--runs 40]

Whole-process wall and CPU time (medians) of one probe of a listening port
and of an HTTP server on this machine (started here), run interleaved so the
machine's load falls on every command alike.  The yardstick is ``python -c
pass`` (the issue's bound: at most 1.5x); the peers are what a probe is
otherwise written with: curl and netcat where installed, and the Python
one-liner people reach for (``urllib.request.urlopen``).  Prints a table
for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

PY = sys.executable
SRC = str(Path(__file__).resolve().parent.parent / "src")


class _Ok(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def timed(argv: list[str]) -> tuple[float, float]:
    env = dict(os.environ, PYTHONPATH=SRC)
    began = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - began
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"bench: {' '.join(argv)} failed")
    return elapsed, usage.ru_utime + usage.ru_stime


def commands(port: int, http: int) -> dict[str, list[str]]:
    url = f"http://127.0.0.1:{http}/health"
    found = {
        "python -c pass": [PY, "-c", "pass"],
        "forkwell probe tcp:": [PY, "-m", "forkwell", "probe", f"tcp:127.0.0.1:{port}"],
        "forkwell probe http://": [PY, "-m", "forkwell", "probe", url],
        "python urllib one-liner": [PY, "-c", f"import urllib.request; urllib.request.urlopen({url!r})"],
    }
    if shutil.which("curl"):
        found["curl -fsS (http)"] = ["curl", "-fsS", "-o", "/dev/null", url]
    if shutil.which("nc"):
        found["nc -z (tcp)"] = ["nc", "-z", "127.0.0.1", str(port)]
    return found


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=40)
    args = p.parse_args()
    subprocess.run([PY, "-m", "compileall", "-q", SRC], check=True)
    listener = socket.create_server(("127.0.0.1", 0))
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    cmds = commands(listener.getsockname()[1], server.server_address[1])
    walls: dict[str, list[float]] = {n: [] for n in cmds}
    cpus: dict[str, list[float]] = {n: [] for n in cmds}
    for _ in range(args.runs):
        for name, argv in cmds.items():
            wall, cpu = timed(argv)
            walls[name].append(wall)
            cpus[name].append(cpu)
    server.shutdown()
    listener.close()
    base_wall = statistics.median(walls["python -c pass"])
    base_cpu = statistics.median(cpus["python -c pass"])
    print(f"runs: {args.runs}, load average: {os.getloadavg()[0]:.1f}, cpus: {os.cpu_count()}")
    print("| command | wall (median) | x python -c pass | CPU (median) | x python -c pass |")
    print("|---|---|---|---|---|")
    for name in cmds:
        wall, cpu = statistics.median(walls[name]), statistics.median(cpus[name])
        print(f"| {name} | {wall * 1000:.1f} ms | {wall / base_wall:.2f} | "
              f"{cpu * 1000:.1f} ms | {cpu / base_cpu:.2f} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
