"""The web endpoint with 1,000 instances: latency under wrk, CPU with a live page open, RSS.

    python bench/bench_web.py [--instances 1000] [--seconds 10] [--cpu-seconds 20] [--no-peer]

Against one ``forkwell up`` running ``--instances`` copies of ``sleep 1000``:

* ``/metrics``, ``/api/v1/programs`` and ``/`` under ``wrk -t 2 -c 10 --latency``
  for ``--seconds`` each: median and p99 latency, requests per second;
* the supervisor's CPU (utime + stime from /proc), three windows of ``--cpu-seconds``, while
  10 more programs crash-loop (each exits 1 after 0.5 s and is restarted):
  without ``http``, with ``http`` and no client, and with one headless
  Chromium (Debian's, driven by Selenium) showing the live status page;
* the supervisor's RSS once every instance runs, without and with ``http``
  (and after the wrk runs, which is the high-water mark that matters).

The peer, side by side: supervisord with the same 1,000 programs and its
``inet_http_server``: the XML-RPC ``supervisor.getAllProcessInfo`` (what its
web page and supervisorctl read) and its status page ``/`` under the same wrk,
and its RSS.  Needs wrk (bench/debian-packages.txt), supervisor
(bench/requirements.txt), selenium and Debian's chromium + chromium-driver
(the test extra, tests/debian-packages.txt).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_supervisor import pause, programs_of, status_field, wait_for

TICK = os.sysconf("SC_CLK_TCK")
CRASHERS = 10
_BANNER = re.compile(r"http: serving (\S+?): ")
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    data = Path(f"/proc/{pid}/stat").read_bytes()
    fields = data[data.rfind(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_mib(pid: int) -> float:
    return status_field(pid, "VmRSS") / 1024


class Up:
    """``forkwell up`` with ``n`` sleepers, optionally ``http`` and the crash loopers."""

    def __init__(self, workdir: Path, n: int, *, http: bool, crashers: int = 0) -> None:
        self.dir = workdir / f"forkwell-{'http' if http else 'plain'}-{crashers}"
        self.dir.mkdir(parents=True)  # one folder per supervisor: each its own state file
        self.n = n + crashers
        self.url = ""
        http_line = f'http = "127.0.0.1:{free_port()}"\n' if http else ""
        crash = (
            f'\n[programs.crash]\ncommand = ["sh", "-c", "sleep 0.5; exit 1"]\n'
            f"numprocs = {crashers}\nmin_uptime = 0\n"
            if crashers
            else ""
        )
        (self.dir / "forkwell.toml").write_text(
            f"[supervisor]\nshutdown_timeout = 60\n{http_line}\n"
            f'[programs.p]\ncommand = ["sleep", "1000"]\nnumprocs = {n}\n'
            "log_max_bytes = '1MB'\nlog_backups = 1\n" + crash
        )
        self.log = self.dir / ".forkwell" / "logs" / "forkwell.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "forkwell", "up", "-c", "forkwell.toml", "--quiet"],
            cwd=self.dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for(self._started, 120, "forkwell up to finish autostart", step=0.05)
        if http:
            found = _BANNER.search(self.log.read_text())
            assert found, "no http banner"
            self.url = found.group(1).rstrip("/")

    def _started(self) -> bool:
        if self.proc.poll() is not None:
            raise SystemExit(f"bench: forkwell up exited {self.proc.returncode}")
        return self.log.exists() and "autostart done" in self.log.read_text()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(120)


class Supervisord:
    """supervisord with the same sleepers and its inet_http_server (its web page, XML-RPC)."""

    def __init__(self, workdir: Path, n: int) -> None:
        self.dir = workdir / "supervisord"
        self.dir.mkdir(parents=True)
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        cfg = self.dir / "supervisord.conf"
        cfg.write_text(
            f"""[supervisord]
nodaemon=true
logfile={self.dir}/supervisord.log
pidfile={self.dir}/supervisord.pid
childlogdir={self.dir}
minfds={8 * n + 256}

[inet_http_server]
port=127.0.0.1:{port}

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[program:p]
command=sleep 1000
numprocs={n}
process_name=%(program_name)s_%(process_num)04d
autorestart=true
stdout_logfile={self.dir}/%(program_name)s_%(process_num)04d.log
stderr_logfile={self.dir}/%(program_name)s_%(process_num)04d.err
"""
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "supervisor.supervisord", "-c", str(cfg)],
            cwd=self.dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for(lambda: len(programs_of(self.proc.pid)) >= n, 600, "supervisord's programs",
                 step=0.2)  # fmt: skip
        # Its programs count as started after startsecs (1 s): wait for RUNNING, as ps would.
        pause(2)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(300)


def wrk(url: str, seconds: int, script: Path | None = None) -> dict[str, float]:
    """wrk -t 2 -c 10 --latency: median and p99 in ms, requests/s, errors.

    wrk's default 2 s timeout would drop the slow answers from the figures
    (it counts them as errors, not latencies): 30 s, and timeouts reported.
    """
    argv = ["wrk", "-t", "2", "-c", "10", "-d", f"{seconds}s", "--timeout", "30s", "--latency",
            url]  # fmt: skip
    if script is not None:
        argv[1:1] = ["-s", str(script)]
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=seconds + 60)
    text = out.stdout

    def latency(pct: str) -> float:
        found = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
        assert found, text
        return float(found.group(1)) * _UNITS[found.group(2)]

    done = re.search(r"(\d+) requests in", text)
    if done and int(done.group(1)) == 0:  # not one answer within the run
        return {"p50": float("inf"), "p99": float("inf"), "rps": 0.0, "non2xx": 0.0}
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    assert rps, text
    failed = (float(bad.group(1)) if bad else 0.0) + (
        sum(float(g) for g in errors.groups()) if errors else 0.0)  # fmt: skip
    return {"p50": latency("50"), "p99": latency("99"), "rps": float(rps.group(1)),
            "non2xx": failed}  # fmt: skip


XMLRPC = """wrk.method = "POST"
wrk.headers["Content-Type"] = "text/xml"
wrk.body = "<?xml version='1.0'?><methodCall><methodName>supervisor.getAllProcessInfo</methodName><params></params></methodCall>"
"""


def exits(up: Up) -> int:
    """Crashes so far, as the supervisor's log counts them."""
    return up.log.read_text().count("RUNNING -> EXITED")


def browser_page(url: str):  # type: ignore[no-untyped-def]
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,900"):  # fmt: skip
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))
    driver.get(url + "/")
    wait_for(lambda: driver.find_element("id", "live").text == "live", 60, "the page to go live",
             step=0.1)  # fmt: skip
    return driver


def part_latency(workdir: Path, n: int, seconds: int, peer: bool) -> list[str]:
    rows = []
    up = Up(workdir, n, http=True)
    try:
        rss_before = rss_mib(up.pid)
        for path in ("/metrics", "/api/v1/programs", "/"):
            r = wrk(up.url + path, seconds)
            rows.append(f"| forkwell `GET {path}` | {r['p50']:.1f} | {r['p99']:.1f} | "
                        f"{r['rps']:.0f} | {r['non2xx']:.0f} |")  # fmt: skip
        rss_after = rss_mib(up.pid)
    finally:
        up.stop()
    plain = Up(workdir, n, http=False)
    try:
        rss_plain = rss_mib(plain.pid)
    finally:
        plain.stop()
    rows.append("")
    rows.append(f"forkwell RSS, {n} running: {rss_plain:.1f} MiB without http, "
                f"{rss_before:.1f} MiB with http (idle), {rss_after:.1f} MiB after the wrk runs")  # fmt: skip
    if peer:
        sd = Supervisord(workdir, n)
        try:
            rss_sd = rss_mib(sd.pid)
            script = workdir / "xmlrpc.lua"
            script.write_text(XMLRPC)
            r = wrk(sd.url + "/RPC2", max(seconds, 30), script)  # slow: get some answers
            rows.insert(3, f"| supervisord XML-RPC `getAllProcessInfo` | {r['p50']:.1f} | "
                           f"{r['p99']:.1f} | {r['rps']:.1f} | {r['non2xx']:.0f} |")  # fmt: skip
            r = wrk(sd.url + "/", max(seconds, 30))
            rows.insert(4, f"| supervisord `GET /` (its status page) | {r['p50']:.1f} | "
                           f"{r['p99']:.1f} | {r['rps']:.1f} | {r['non2xx']:.0f} |")  # fmt: skip
            rows.append(f"supervisord RSS, {n} running, inet_http_server on: {rss_sd:.1f} MiB "
                        f"(after the wrk runs: {rss_mib(sd.pid):.1f} MiB)")  # fmt: skip
        finally:
            sd.stop()
    return ["| request, 1,000 instances | median ms | p99 ms | req/s | errors |",
            "|---|---:|---:|---:|---:|", *rows]  # fmt: skip


def part_cpu(workdir: Path, n: int, seconds: float, windows: int = 3) -> list[str]:
    """The three set-ups run side by side, measured over the same windows: the machine's
    load (shared, noisy) falls on all three alike; the median of ``windows`` is kept."""
    plain = Up(workdir, n, http=False, crashers=CRASHERS)
    quiet = Up(workdir / "quiet", n, http=True, crashers=CRASHERS)
    watched = Up(workdir / "watched", n, http=True, crashers=CRASHERS)
    ups = {"without http": plain, "http on, no client": quiet,
           "http on, one live page open": watched}  # fmt: skip
    try:
        driver = browser_page(watched.url)
        try:
            pause(2)
            samples: dict[str, list[float]] = {name: [] for name in ups}
            crashes = dict.fromkeys(ups, 0)
            for _ in range(windows):
                before = {name: (cpu_seconds(up.pid), time.monotonic(), exits(up))
                          for name, up in ups.items()}  # fmt: skip
                pause(seconds)
                for name, up in ups.items():
                    c0, t0, e0 = before[name]
                    samples[name].append((cpu_seconds(up.pid) - c0) / (time.monotonic() - t0))
                    crashes[name] += exits(up) - e0
            restarts = driver.find_element(
                "css selector", 'tr[data-name="crash:0"] td[data-f="restarts"]').text  # fmt: skip
        finally:
            driver.quit()
    finally:
        for up in ups.values():
            up.stop()
    rows = [f"| 10 programs crash-looping, {n} running (3 supervisors side by side) "
            f"| supervisor CPU, median of {windows} x {seconds:.0f} s | each window | crashes |",
            "|---|---:|---|---:|---:|"]  # fmt: skip
    rows[0] += " CPU ms per crash |"
    for name, values in samples.items():
        each = " ".join(f"{100 * v:.1f}" for v in values)
        per = 1000 * sum(values) * seconds / max(1, crashes[name])
        rows.append(f"| {name} | {100 * statistics.median(values):.1f} % | {each} | "
                    f"{crashes[name]} | {per:.1f} |")  # fmt: skip
    rows.append("")
    rows.append(f"(crash:0's restarts cell on the live page read {restarts} at the end)")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--cpu-seconds", type=float, default=10.0)
    parser.add_argument("--no-peer", action="store_true", help="skip supervisord")
    args = parser.parse_args()
    for tool in ("wrk", "chromium", "chromedriver"):
        if shutil.which(tool) is None:
            raise SystemExit(f"bench: {tool} is not installed (bash bench/setup.sh)")
    print(f"# {platform.node()}: {os.cpu_count()} cores, {platform.release()}, "
          f"Python {platform.python_version()}, load {os.getloadavg()[0]:.2f}")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench-web-") as tmp:
        workdir = Path(tmp)
        print("\n".join(part_latency(workdir, args.instances, args.seconds, not args.no_peer)))
        print()
        print("\n".join(part_cpu(workdir, args.instances, args.cpu_seconds)))
    print(f"# load at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
