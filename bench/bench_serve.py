"""Forking servers under load: forkwell vs socketserver, side by side in one run.

Every server serves the same small static file with the unchanged
``http.server.SimpleHTTPRequestHandler`` on 127.0.0.1; Debian's ``wrk``
(``bench/setup.sh`` installs it) loads each in turn with ``wrk -t2 -c32``.
Rounds interleave the servers so drift on a shared machine hits all alike;
the table shows medians and ratios against ``socketserver.ForkingTCPServer``.

    python bench/bench_serve.py [--rounds 3] [--duration 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STDLIB = """
import http.server, socketserver, sys
cls = getattr(socketserver, sys.argv[1])
cls.allow_reuse_address = True
cls.daemon_threads = True
cls.request_queue_size = 128
server = cls(("127.0.0.1", int(sys.argv[2])), http.server.SimpleHTTPRequestHandler)
server.serve_forever()
"""

HANDLER = "http.server:SimpleHTTPRequestHandler"


def servers(port: int) -> dict[str, list[str]]:
    py = sys.executable
    bind = f"127.0.0.1:{port}"
    serve = [py, "-m", "forkwell", "serve", "--bind", bind, "-q"]
    return {
        "socketserver.ForkingTCPServer": [py, "-c", STDLIB, "ForkingTCPServer", str(port)],
        "forkwell per-connection": [*serve, "--per-connection", HANDLER],
        "forkwell pre-fork, 2 workers": [*serve, "--workers", "2", HANDLER],
        "forkwell pre-fork, 4 workers": [*serve, "--workers", "4", HANDLER],
        "socketserver.ThreadingTCPServer (ref)": [
            py,
            "-c",
            STDLIB,
            "ThreadingTCPServer",
            str(port),
        ],
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_serving(port: int, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"GET /hello.txt HTTP/1.0\r\n\r\n")
                if s.recv(12).startswith(b"HTTP/1.0 200"):
                    return
        except OSError:
            pass
        select.select([], [], [], 0.02)
    raise RuntimeError("server did not start")


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def run_wrk(port: int, duration: int) -> tuple[float, float, int]:
    """-> (requests/s, p99 latency in ms, socket errors)."""
    out = subprocess.run(
        [
            "wrk",
            "-t2",
            "-c32",
            f"-d{duration}s",
            "--latency",
            "--timeout",
            "5s",
            f"http://127.0.0.1:{port}/hello.txt",
        ],
        capture_output=True,
        text=True,
        timeout=duration + 30,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    m = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    p99 = float(m.group(1)) * _UNITS[m.group(2)] if m else float("nan")
    errors = 0
    e = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if e:
        errors = sum(int(x) for x in e.groups())
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        errors += int(non2xx.group(1))
    return rps, p99, errors


def measure(
    name: str, argv: list[str], port: int, duration: int, docroot: Path
) -> tuple[float, float, int]:
    proc = subprocess.Popen(
        argv,
        cwd=docroot,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,  # the handler logs every request there
        start_new_session=True,
    )
    try:
        wait_serving(port, proc)
        return run_wrk(port, duration)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        # socketserver's forked children may outlive their server: end the group.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=5, help="seconds of wrk per server and round")
    ap.add_argument("--only", action="append", help="run only servers whose name contains this")
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        print("bench_serve: wrk not found (run bench/setup.sh)", file=sys.stderr)
        return 2
    results: dict[str, list[tuple[float, float, int]]] = {}
    base = "socketserver.ForkingTCPServer"
    with tempfile.TemporaryDirectory() as tmp:
        docroot = Path(tmp)
        (docroot / "hello.txt").write_bytes(b"x" * 512)
        for r in range(args.rounds):
            for name in servers(0):
                if args.only and name != base and not any(o in name for o in args.only):
                    continue
                port = free_port()
                argv = servers(port)[name]
                res = measure(name, argv, port, args.duration, docroot)
                results.setdefault(name, []).append(res)
                print(
                    f"  round {r + 1} {name:<40} {res[0]:>9.0f} req/s  p99 {res[1]:>8.1f} ms"
                    f"  errors {res[2]}",
                    file=sys.stderr,
                )
    print(
        f"machine: {os.cpu_count()} cores, Linux {platform.release()}, "
        f"Python {platform.python_version()}; wrk -t2 -c32 -d{args.duration}s, "
        f"{args.rounds} rounds, 512-byte file, 127.0.0.1"
    )
    base_rps = statistics.median(x[0] for x in results[base])
    base_p99 = statistics.median(x[1] for x in results[base])
    print()
    print(
        f"| {'server':<40} | {'req/s':>8} | {'vs Forking':>10} | {'p99 ms':>8} | {'vs Forking':>10} | errors |"
    )
    print(f"|{'-' * 42}|{'-' * 10}|{'-' * 12}|{'-' * 10}|{'-' * 12}|--------|")
    for name, runs in results.items():
        rps = statistics.median(x[0] for x in runs)
        p99 = statistics.median(x[1] for x in runs)
        errors = sum(x[2] for x in runs)
        print(
            f"| {name:<40} | {rps:>8.0f} | {rps / base_rps:>9.2f}x | {p99:>8.1f} | "
            f"{p99 / base_p99:>9.2f}x | {errors:>6} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
