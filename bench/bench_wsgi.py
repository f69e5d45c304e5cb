"""WSGI servers under load: forkwell.serve_wsgi vs gunicorn (sync and gthread), in one run.

The same apps (``bench/wsgi_bench_apps.py``: a hello-world WSGI callable and
a small Flask app returning JSON), the same number of workers (2 and 4),
Debian's ``wrk -t2 -c32 -d10s`` with keep-alive on and off (``Connection:
close``), on 127.0.0.1.  Every round runs every configuration, the servers
of one configuration back to back, so drift on a shared machine hits all of
them alike; tables give medians over the rounds and, against gunicorn sync, the
median of each round's ratio.  Then, under load, what fails while workers are replaced: HUP reloads,
``max_requests`` recycling and SIGKILLed workers (wrk's socket errors plus
non-2xx answers), and how long the master takes to replace a killed worker.
Last, an app that waits 20 ms per request (slow I/O): what gunicorn's threads
buy there, and what more workers buy.

    bash bench/setup.sh && python bench/bench_wsgi.py [--rounds 3] [--duration 10]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_serve import free_port  # noqa: E402

PY = sys.executable
FORKWELL = """
import sys, forkwell
spec, port, workers, extra = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
opts = dict(a.split("=", 1) for a in extra)
forkwell.serve_wsgi(spec, f"127.0.0.1:{port}", workers=workers,
                    max_requests=int(opts.get("max_requests", 0)),
                    max_requests_jitter=int(opts.get("max_requests_jitter", 0)))
"""
APPS = {"hello": "wsgi_bench_apps:hello", "flask": "wsgi_bench_apps:flask_app"}
BASE = "gunicorn sync"


def server_argv(name: str, app: str, port: int, workers: int, max_requests: int = 0) -> list[str]:
    jitter = max_requests // 10
    if name == "forkwell":
        extra = [f"max_requests={max_requests}", f"max_requests_jitter={jitter}"]
        return [PY, "-c", FORKWELL, app, str(port), str(workers), *extra]
    argv = [PY, "-m", "gunicorn", "-b", f"127.0.0.1:{port}", "-w", str(workers),
            "--keep-alive", "2", "--log-level", "warning"]
    if max_requests:
        argv += ["--max-requests", str(max_requests), "--max-requests-jitter", str(jitter)]
    if name == "gunicorn gthread":
        argv += ["-k", "gthread", "--threads", "4"]
    return [*argv, app]


SERVERS = ("forkwell", "gunicorn sync", "gunicorn gthread")


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    out = []
    for c in text.split():
        try:
            stat = Path(f"/proc/{c}/stat").read_text()
        except OSError:
            continue
        if stat[stat.rfind(")") + 2] != "Z":
            out.append(int(c))
    return out


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def wait_until(pred: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.005)


class Server:
    def __init__(self, name: str, app: str, workers: int, max_requests: int = 0) -> None:
        self.name = name
        self.workers = workers
        self.port = free_port()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), *sys.path])}
        self.proc = subprocess.Popen(
            server_argv(name, app, self.port, workers, max_requests), env=env, cwd=HERE,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        wait_until(lambda: len(children(self.proc.pid)) == workers and self._answers(), 30,
                   f"{name} to serve")

    def _answers(self) -> bool:
        out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                              f"http://127.0.0.1:{self.port}/"], capture_output=True, text=True)
        return out.stdout == "200"

    def workers_pids(self) -> list[int]:
        return children(self.proc.pid)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def wrk(port: int, duration: int, keep_alive: bool) -> dict[str, float]:
    argv = ["wrk", "-t2", "-c32", f"-d{duration}s", "--latency", "--timeout", "5s"]
    if not keep_alive:
        argv += ["-H", "Connection: close"]
    out = subprocess.run([*argv, f"http://127.0.0.1:{port}/"], capture_output=True, text=True,
                         timeout=duration + 30, check=True).stdout
    res: dict[str, float] = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}  # type: ignore[union-attr]
    for pct in ("50", "99"):
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        res[f"p{pct}"] = float(m.group(1)) * _UNITS[m.group(2)] if m else float("nan")
    errors = 0
    e = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if e:
        errors += sum(int(x) for x in e.groups())
    n = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if n:
        errors += int(n.group(1))
    res["errors"] = errors
    res["requests"] = float(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    return res


# ---------------------------------------------------------------- throughput


def throughput(rounds: int, duration: int, loads: list[float]) -> dict[tuple[Any, ...], list[dict[str, float]]]:
    results: dict[tuple[Any, ...], list[dict[str, float]]] = {}
    for r in range(rounds):
        for app_name, app in APPS.items():
            for keep_alive in (True, False):
                for workers in (2, 4):
                    for name in SERVERS:
                        srv = Server(name, app, workers)
                        try:
                            loads.append(os.getloadavg()[0])
                            res = wrk(srv.port, duration, keep_alive)
                            res["rss"] = statistics.median(rss_kib(p) for p in srv.workers_pids())
                        finally:
                            srv.stop()
                        key = (app_name, keep_alive, workers, name)
                        results.setdefault(key, []).append(res)
                        print(f"  round {r + 1} {app_name:<5} keep-alive {'on ' if keep_alive else 'off'}"
                              f" {workers}w {name:<17} {res['rps']:>8.0f} req/s p50 {res['p50']:>7.2f}"
                              f" p99 {res['p99']:>7.2f} ms errors {res['errors']:.0f}"
                              f" rss {res['rss'] / 1024:.1f} MiB", file=sys.stderr)
    return results


def print_throughput(results: dict[tuple[Any, ...], list[dict[str, float]]]) -> None:
    print("| app | keep-alive | workers | server | req/s | vs sync | p50 ms | p99 ms | p99 vs sync | errors | worker RSS MiB |")
    print("|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for (app_name, keep_alive, workers, name), runs in results.items():
        base = results[(app_name, keep_alive, workers, BASE)]
        rps = statistics.median(x["rps"] for x in runs)
        p50 = statistics.median(x["p50"] for x in runs)
        p99 = statistics.median(x["p99"] for x in runs)
        # Ratios pair each run with gunicorn sync's of the same round (run back
        # to back): the median of those is steadier than a ratio of medians.
        vs_rps = statistics.median(x["rps"] / b["rps"] for x, b in zip(runs, base, strict=True))
        vs_p99 = statistics.median(x["p99"] / b["p99"] for x, b in zip(runs, base, strict=True))
        errors = sum(x["errors"] for x in runs)
        rss = statistics.median(x["rss"] for x in runs) / 1024
        print(f"| {app_name} | {'on' if keep_alive else 'off'} | {workers} | {name} | {rps:,.0f} | "
              f"{vs_rps:.2f}x | {p50:.2f} | {p99:.2f} | {vs_p99:.2f}x | "
              f"{errors:.0f} | {rss:.1f} |")


# ---------------------------------------------------------------- replacing workers


def under_load(srv: Server, duration: int, action: Callable[[Server], None], times: int) -> dict[str, float]:
    """wrk for ``duration`` s with ``action`` done ``times`` times, evenly spaced, meanwhile."""
    box: dict[str, dict[str, float]] = {}
    t = threading.Thread(target=lambda: box.update(res=wrk(srv.port, duration, True)))
    t.start()
    for i in range(times):
        time.sleep(duration * (i + 1) / (times + 1))  # a benchmark's schedule, not a test's sync
        action(srv)
    t.join()
    return box["res"]


def hup(srv: Server) -> None:
    os.kill(srv.proc.pid, signal.SIGHUP)


def kill_one(srv: Server) -> None:
    pids = srv.workers_pids()
    if pids:
        os.kill(pids[0], signal.SIGKILL)


def replacement_ms(srv: Server, tries: int) -> float:
    times = []
    for _ in range(tries):
        before = set(srv.workers_pids())
        victim = min(before)
        start = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda before=before: len(set(srv.workers_pids()) - before) == 1
                   and len(srv.workers_pids()) == srv.workers, 30, "a replacement")
        times.append((time.monotonic() - start) * 1000)
        # forkwell backs off (0.1 s, 0.2 s, ...) while workers keep dying; a
        # replacement that has run for a second ends that.  Kills 1.5 s apart
        # measure the replacement of one killed worker, not a crash loop.
        time.sleep(1.5)
    return statistics.median(times)


def resilience(rounds: int, duration: int, workers: int, loads: list[float]) -> None:
    rows: dict[str, dict[str, list[float]]] = {}
    for _ in range(rounds):
        for name in SERVERS:
            row = rows.setdefault(name, {})
            for label, make, action, times in (
                ("HUP x3", lambda n=name: Server(n, APPS["hello"], workers), hup, 3),
                ("max_requests 1000", lambda n=name: Server(n, APPS["hello"], workers, 1000), None, 0),
                ("SIGKILL x3", lambda n=name: Server(n, APPS["hello"], workers), kill_one, 3),
            ):
                srv = make()
                try:
                    loads.append(os.getloadavg()[0])
                    res = under_load(srv, duration, action or (lambda s: None), times)
                finally:
                    srv.stop()
                row.setdefault(label, []).append(res["errors"])
                row.setdefault(label + " requests", []).append(res["requests"])
                print(f"  {name:<17} {label:<18} errors {res['errors']:.0f} of {res['requests']:.0f}",
                      file=sys.stderr)
            srv = Server(name, APPS["hello"], workers)
            try:
                row.setdefault("replace", []).append(replacement_ms(srv, 5))
            finally:
                srv.stop()
    print(f"| server ({workers} workers, keep-alive, {duration} s of wrk each) | failed during 3 HUP "
          "| failed with max_requests 1000 | failed with 3 workers SIGKILLed | replace a killed worker, ms |")
    print("|---|---:|---:|---:|---:|")
    for name, row in rows.items():
        cells = []
        for label in ("HUP x3", "max_requests 1000", "SIGKILL x3"):
            cells.append(f"{sum(row[label]):.0f} of {sum(row[label + ' requests']):,.0f}")
        print(f"| {name} | {' | '.join(cells)} | {statistics.median(row['replace']):.1f} |")


def slow_io(rounds: int, duration: int, loads: list[float]) -> None:
    """An app that waits 20 ms per request: what threads buy, and what more workers buy."""
    configs = [("forkwell", 2, "forkwell, 2 workers"), ("gunicorn sync", 2, "gunicorn sync, 2 workers"),
               ("gunicorn gthread", 2, "gunicorn gthread, 2 workers x 4 threads"),
               ("forkwell", 8, "forkwell, 8 workers"), ("gunicorn sync", 8, "gunicorn sync, 8 workers")]
    rows: dict[str, list[dict[str, float]]] = {}
    for _ in range(rounds):
        for name, workers, label in configs:
            srv = Server(name, "wsgi_bench_apps:slow", workers)
            try:
                loads.append(os.getloadavg()[0])
                res = wrk(srv.port, duration, True)
                res["rss"] = sum(rss_kib(p) for p in srv.workers_pids())
            finally:
                srv.stop()
            rows.setdefault(label, []).append(res)
            print(f"  slow-io {label:<40} {res['rps']:>7.0f} req/s p99 {res['p99']:.1f} ms",
                  file=sys.stderr)
    print("| server (app waits 20 ms, keep-alive) | req/s | p50 ms | p99 ms | errors | RSS of all workers MiB |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, runs in rows.items():
        med = {k: statistics.median(x[k] for x in runs) for k in ("rps", "p50", "p99", "rss")}
        print(f"| {label} | {med['rps']:,.0f} | {med['p50']:.1f} | {med['p99']:.1f} | "
              f"{sum(x['errors'] for x in runs):.0f} | {med['rss'] / 1024:.0f} |")


def machine() -> str:
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split()[1]
    mem = int(Path("/proc/meminfo").read_text().split()[1]) // (1 << 20)
    return (f"{os.cpu_count()} cores, {mem} GiB, Linux {platform.release()}, Python "
            f"{platform.python_version()}; forkwell {version('forkwell')} (httptools "
            f"{version('httptools')}), gunicorn {version('gunicorn')}, Flask {version('flask')}, "
            f"wrk {wrk_version}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=10, help="seconds of wrk per run")
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--skip-resilience", action="store_true")
    ap.add_argument("--skip-slow-io", action="store_true")
    args = ap.parse_args()
    loads: list[float] = []
    print(f"machine: {machine()}")
    print(f"wrk -t2 -c32 -d{args.duration}s, {args.rounds} interleaved rounds, medians")
    if not args.skip_throughput:
        results = throughput(args.rounds, args.duration, loads)
        print()
        print_throughput(results)
    if not args.skip_resilience:
        print()
        resilience(args.rounds, args.duration, 4, loads)
    if not args.skip_slow_io:
        print()
        slow_io(args.rounds, args.duration, loads)
    print()
    print(f"load average (1 min) at the start of each run: {min(loads):.1f} to {max(loads):.1f}, "
          f"median {statistics.median(loads):.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
