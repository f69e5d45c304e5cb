"""forkwell up -c Procfile beside honcho start, on the same Procfile.

For N entries, each ``echo up; <keep running>``, measured from launch:

* tools: ``forkwell up -c Procfile``, ``forkwell up -c forkwell.toml`` (the
  same fleet, converted: the reader's own cost apart) and ``honcho start``;
* ready: until every entry has printed its line (the whole fleet is up);
* stop: from SIGTERM until the manager has exited;
* left: processes of the fleet still alive after the manager exited, when
  each entry also forks a grandchild that leaves the process group
  (``setsid sleep``: what a daemonizing program does; foreman's issues 708
  and 779).  They are then killed by this harness.

    python3 bench/bench_formats.py [--entries 10] [--rounds 7]

Medians over interleaved rounds.  honcho comes from the test extra.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _procfile(d: Path, entries: int, escape: bool) -> None:
    # 'sleep 1000.0' marks the escapee: _escapees() finds it by its exact command line
    keep = "setsid sleep 1000.0 & exec sleep 1000" if escape else "exec sleep 1000"
    lines = [f"p{i}: echo up; {keep}" for i in range(entries)]
    (d / "Procfile").write_text("\n".join(lines) + "\n")


TOOLS = ("forkwell", "forkwell.toml", "honcho")


def _argv(tool: str) -> list[str]:
    if tool == "honcho":
        return [sys.executable, "-m", "honcho", "start"]
    # "forkwell.toml": the same fleet through `forkwell convert`, the Procfile reader's cost apart
    return [sys.executable, "-m", "forkwell", "up", "-c",
            "forkwell.toml" if tool == "forkwell.toml" else "Procfile"]


def _escapees() -> list[int]:
    """Pids of the grandchildren that left their group (``sleep 1000.0``)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if cmd == b"sleep\x001000.0\x00":
                found.append(int(entry))
    return found


STOP_LIMIT = 15.0  # a manager still running this long after SIGTERM "did not exit"


def one(tool: str, d: Path, entries: int) -> tuple[float, float, int]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    env.pop("PORT", None)
    t0 = time.perf_counter()
    proc = subprocess.Popen(_argv(tool), cwd=d, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True)  # fmt: skip
    assert proc.stdout is not None
    seen = 0
    started = 0
    for line in proc.stdout:
        if line.rstrip().endswith("| up"):
            seen += 1
        if tool == "honcho" and " started (pid=" in line:
            started += 1  # honcho crashes on a SIGTERM before it logged every start
        if seen == entries and (tool != "honcho" or started == entries):
            break
    ready = time.perf_counter() - t0
    t1 = time.perf_counter()
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_LIMIT)  # not communicate(): an escapee may hold the pipe open
        stop = time.perf_counter() - t1
    except subprocess.TimeoutExpired:  # honcho reads its children's pipes until EOF
        stop = float("inf")
    left = _escapees()
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    proc.wait(timeout=60)  # the escapees gone, the pipes close
    proc.stdout.close()
    return ready, stop, len(left)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--entries", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    assert not _escapees(), "stray 'sleep 1000.0' processes: kill them first"
    results: dict[tuple[str, bool], list[tuple[float, float, int]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for escape in (False, True):
            d = Path(tmp) / ("escape" if escape else "plain")
            d.mkdir()
            _procfile(d, args.entries, escape)
            subprocess.run([sys.executable, "-m", "forkwell", "convert", "Procfile"], cwd=d,
                           check=True, capture_output=True,
                           env={**os.environ, "PYTHONPATH": str(ROOT / "src")})  # fmt: skip
            for _ in range(args.rounds):
                for tool in TOOLS:
                    results.setdefault((tool, escape), []).append(one(tool, d, args.entries))
    print(f"{args.entries} entries, medians of {args.rounds} rounds, load "
          f"{os.getloadavg()[0]:.1f}")  # fmt: skip
    print("| Procfile | tool | ready | stop | escaped grandchildren left |")
    print("| --- | --- | ---: | ---: | ---: |")
    for (tool, escape), runs in results.items():
        ready = statistics.median(r[0] for r in runs) * 1000
        stop = statistics.median(r[1] for r in runs) * 1000
        stop_text = f"did not exit within {STOP_LIMIT:.0f} s" if stop == float("inf") \
            else f"{stop:.0f} ms"
        left = statistics.median(r[2] for r in runs)
        kind = "with setsid grandchildren" if escape else "plain"
        print(f"| {kind} | {tool} | {ready:.0f} ms | {stop_text} | {left:.0f} of {args.entries} |")


if __name__ == "__main__":
    main()
