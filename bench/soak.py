"""Soak: a fleet of crash-looping programs for N minutes, with control calls mixed in.

    python bench/soak.py [--minutes 1] [--programs 100] [--json FILE]

Each program runs for 1-2 seconds and exits 1, so the supervisor restarts
all of them, over and over.  Meanwhile, every few seconds: ``ps``, ``ps
--json``, ``logs -n 5``, a ``reload`` (of an unchanged file) and a
``restart`` of one program.  The supervisor's RSS, its open fds and its CPU
time are read from ``/proc`` once the fleet is up (after a warm-up) and at
the end; then ``forkwell down``, and a scan for anything left: processes
still carrying the fleet's cookie, and zombies.  pm2's daemon is known to grow
to gigabytes over weeks (pm2 issues 6113, 5145); this states forkwell's slope.

Exit status: 0 when nothing was left behind, the pipes, files and sockets did
not grow and the pidfds stayed bounded (at most 3 per program); 1 otherwise (the RSS slope is reported, not judged: it is noisy on a short run).
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PY = sys.executable
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)

PROGRAM = "sleep 1.$((RANDOM % 9)); exit 1"


def forkwell(*args: str, config: Path, ok: tuple[int, ...] = (0, 3)) -> str:
    r = subprocess.run([PY, "-m", "forkwell", *args, "-c", str(config)],
                       capture_output=True, text=True, timeout=120)
    if r.returncode not in ok:
        raise SystemExit(f"soak: forkwell {' '.join(args)} exited {r.returncode}: {r.stderr}")
    return r.stdout


def sample(pid: int) -> dict[str, float]:
    """The smallest fd count and RSS of ten readings over a second, and the CPU time.

    A crash-looping fleet always has some instances between exit and restart,
    whose pidfds and pinned tree members come and go: one reading is noise.
    """
    readings = []
    for _ in range(10):
        readings.append(_read(pid))
        pause(0.1)
    return {"rss_kib": min(r["rss_kib"] for r in readings),
            "fds": min(r["fds"] for r in readings),
            "other_fds": min(r["other_fds"] for r in readings),
            "pidfds": max(r["pidfds"] for r in readings), "cpu_s": readings[-1]["cpu_s"]}


def _read(pid: int) -> dict[str, float]:
    status = Path(f"/proc/{pid}/status").read_text()
    rss = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    links = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            links.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:  # closed while we looked
            pass
    pidfds = sum(link == "anon_inode:[pidfd]" for link in links)
    return {"rss_kib": rss, "fds": len(links), "pidfds": pidfds,
            "other_fds": len(links) - pidfds, "cpu_s": cpu}


def restarts(config: Path) -> int:
    doc = json.loads(forkwell("ps", "--json", config=config))
    return sum(row["restarts"] for row in doc["instances"])


def leftovers(token: str) -> tuple[list[int], list[int]]:
    """Processes still carrying the fleet's cookie, and zombies anywhere below PID 1."""
    carriers, zombies = [], []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            state = Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()[0]
            env = Path(f"/proc/{name}/environ").read_bytes()
        except OSError:
            continue
        if state == "Z":
            zombies.append(int(name))
        elif token.encode() in env:
            carriers.append(int(name))
    return carriers, zombies


def pause(seconds: float) -> None:
    select.select([], [], [], seconds)


def late_slope(series: list[int]) -> int | None:
    """KiB per hour over the second half of a once-a-minute series (None if too short)."""
    if len(series) < 5:
        return None
    half = len(series) // 2
    return round((series[-1] - series[half]) / (len(series) - 1 - half) * 60)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=1.0)
    ap.add_argument("--programs", type=int, default=100)
    ap.add_argument("--warmup", type=float, default=10.0, help="seconds before the first sample")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    zombies_before = set(leftovers("\0")[1])
    with tempfile.TemporaryDirectory(prefix="forkwell-soak-") as tmp:
        config = Path(tmp) / "forkwell.toml"
        config.write_text(
            "[supervisor]\nshutdown_timeout = 30\n"
            f"[programs.crash]\ncommand = {json.dumps(['bash', '-c', PROGRAM])}\n"
            f"numprocs = {args.programs}\nmin_uptime = \"0.5s\"\nrestart = \"always\"\n"
            "log_max_bytes = \"64KB\"\nlog_backups = 1\n"
        )
        up = subprocess.Popen([PY, "-m", "forkwell", "up", "-c", str(config), "--quiet"],
                              cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        state = Path(tmp) / ".forkwell" / "state.json"
        deadline = time.monotonic() + 30
        while not (Path(tmp) / ".forkwell" / "forkwell.sock").exists():
            if time.monotonic() > deadline or up.poll() is not None:
                raise SystemExit("soak: the supervisor did not come up")
            pause(0.05)
        token = json.loads(state.read_text())["token"]
        pause(args.warmup)
        first, first_restarts, began = sample(up.pid), restarts(config), time.monotonic()
        end = began + args.minutes * 60
        calls = 0
        # RSS once a minute: a slope that flattens is warm-up (arenas, caches), one
        # that keeps its pace is a leak; the start and end figures alone cannot tell.
        series, next_sample = [first["rss_kib"]], began + 60
        while time.monotonic() < end:
            if time.monotonic() >= next_sample:
                series.append(sample(up.pid)["rss_kib"])
                next_sample += 60
            forkwell("ps", config=config)
            forkwell("logs", "crash:0", "-n", "5", config=config)
            if calls % 5 == 0:
                forkwell("reload", config=config)
            if calls % 7 == 0:
                forkwell("restart", f"crash:{calls % args.programs}", config=config)
            calls += 1
            pause(2.0)
        last, last_restarts = sample(up.pid), restarts(config)
        took = time.monotonic() - began
        forkwell("down", config=config, ok=(0,))
        up.wait(60)
        carriers, zombies = leftovers(token)
        zombies = [z for z in zombies if z not in zombies_before]
    done = last_restarts - first_restarts
    figures = {
        "minutes": round(took / 60, 2),
        "programs": args.programs,
        "restarts": done,
        "control_calls": calls,
        "rss_kib_start": first["rss_kib"], "rss_kib_end": last["rss_kib"],
        "rss_kib_per_hour": round((last["rss_kib"] - first["rss_kib"]) / took * 3600),
        # The second half's pace alone, from the per-minute series.
        "rss_kib_per_hour_late": late_slope(series),
        "rss_kib_by_minute": series,
        "fds_start": first["fds"], "fds_end": last["fds"],
        # Pipes, files, sockets: fixed per instance, so any growth is a leak.
        "other_fds_start": first["other_fds"], "other_fds_end": last["other_fds"],
        # pidfds come and go with processes (and trees being ended): bounded.
        "pidfds_max_end": last["pidfds"],
        "cpu_ms_per_restart": round((last["cpu_s"] - first["cpu_s"]) * 1000 / max(done, 1), 3),
        "left_running": carriers, "new_zombies": zombies,
    }
    for key, value in figures.items():
        print(f"{key:20} {value}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    # A crash-looping fleet's pidfds: each running instance's own, plus the
    # members pinned while a tree is ended; a leak of one per restart would
    # pass thousands within the first minute.
    bounded = last["pidfds"] <= 3 * args.programs
    good = not carriers and not zombies and last["other_fds"] <= first["other_fds"] and bounded
    return 0 if good else 1


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.exit(main())
