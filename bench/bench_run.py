"""Benchmark forkwell.run() and forkwell timeout against their peers, side by side.

    python bench/bench_run.py [--quick]

Prints one table.  Every figure is a median; peers are measured interleaved in
the same run (the machine is shared and noisy), and ratios are forkwell / peer.
Runs under a subreaper so orphans of the peers (subprocess leaves them) are
reaped here, not left as zombies.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import statistics
import subprocess
import sys
import time

import forkwell

PY = sys.executable


def per_call(fn: object, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()  # type: ignore[operator]
    return (time.perf_counter() - start) / n


def interleaved(cases: dict[str, object], rounds: int, n: int) -> dict[str, float]:
    """Median over ``rounds`` of the mean per-call time of each case, cases interleaved."""
    samples: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(rounds):
        for name, fn in cases.items():
            samples[name].append(per_call(fn, n))
    return {k: statistics.median(v) for k, v in samples.items()}


def wall(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=False)
    return time.perf_counter() - start


def reap_orphans() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer rounds (a smoke run)")
    opts = ap.parse_args()
    rounds = 5 if opts.quick else 15
    libc = ctypes.CDLL(None)
    libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER

    rows: list[tuple[str, str, str, str]] = []

    # 1. per-call cost of run(/bin/true)
    r = interleaved(
        {
            "forkwell.run": lambda: forkwell.run(["/bin/true"]),
            "subprocess.run": lambda: subprocess.run(["/bin/true"], check=False),
        },
        rounds,
        100,
    )
    rows.append(("run(['/bin/true']) per call", f"{r['forkwell.run'] * 1e3:.3f} ms",
                 f"subprocess.run {r['subprocess.run'] * 1e3:.3f} ms",
                 f"{r['forkwell.run'] / r['subprocess.run']:.2f}x (target <= 1.15x)"))

    # 2. whole-process wall time of the CLI
    script = shutil.which("forkwell") or ""
    cli_cases: dict[str, list[str]] = {
        "forkwell timeout (script)": [script, "timeout", "10", "/bin/true"],
        "python -m forkwell timeout": [PY, "-m", "forkwell", "timeout", "10", "/bin/true"],
        "python subprocess.call": [PY, "-c", "import subprocess,sys; sys.exit(subprocess.call(['/bin/true']))"],
        "GNU timeout": ["timeout", "10", "/bin/true"],
    }
    if not script:
        del cli_cases["forkwell timeout (script)"]
    samples: dict[str, list[float]] = {k: [] for k in cli_cases}
    for _ in range(rounds * 2):
        for name, argv in cli_cases.items():
            samples[name].append(wall(argv))
    med = {k: statistics.median(v) for k, v in samples.items()}
    base = med["python subprocess.call"]
    for name in cli_cases:
        if name == "python subprocess.call":
            continue
        target = " (target <= 1.5x)" if name.startswith(("forkwell", "python -m")) else ""
        rows.append((f"{name} 10 /bin/true, wall", f"{med[name] * 1e3:.1f} ms",
                     f"python subprocess.call {base * 1e3:.1f} ms",
                     f"{med[name] / base:.2f}x{target}"))

    # 3. deadline precision
    overs = []
    for _ in range(rounds * 2):
        start = time.perf_counter()
        forkwell.run(["sleep", "10"], timeout=0.2)
        overs.append(time.perf_counter() - start - 0.2)
    sub_overs = []
    for _ in range(rounds * 2):
        start = time.perf_counter()
        try:
            subprocess.run(["sleep", "10"], timeout=0.2, check=False)
        except subprocess.TimeoutExpired:
            pass
        sub_overs.append(time.perf_counter() - start - 0.2)
    rows.append(("run(sleep 10, timeout=0.2) overshoot", f"{statistics.median(overs) * 1e3:.2f} ms",
                 f"subprocess.run {statistics.median(sub_overs) * 1e3:.2f} ms",
                 "target median <= 20 ms"))

    # 4. tree kill: deadline -> all 50 background sleepers gone
    fifty = "for i in $(seq 50); do sleep 30 & done; echo ready; wait"
    kills = []
    for _ in range(rounds):
        res = forkwell.run(["sh", "-c", fifty], timeout=1.0, capture_output=True)
        assert res.stdout == b"ready\n" and res.timed_out
        kills.append(res.duration - 1.0)  # run() returns only once all 51 are gone
    gnu = []
    for _ in range(rounds):
        start = time.perf_counter()
        subprocess.run(["timeout", "1", "sh", "-c", fifty], capture_output=True, check=False)
        gnu.append(time.perf_counter() - start - 1.0)
        reap_orphans()
    rows.append(("deadline -> 50 descendants gone", f"{statistics.median(kills) * 1e3:.1f} ms",
                 f"GNU timeout (group kill) {statistics.median(gnu) * 1e3:.1f} ms",
                 "target median <= 50 ms"))
    reap_orphans()

    width = [max(len(r[i]) for r in rows) for i in range(4)]
    header = ("measure", "forkwell", "peer (same run)", "ratio / target")
    width = [max(w, len(h)) for w, h in zip(width, header, strict=True)]
    print(" | ".join(h.ljust(w) for h, w in zip(header, width, strict=True)))
    print("-|-".join("-" * w for w in width))
    for row in rows:
        print(" | ".join(c.ljust(w) for c, w in zip(row, width, strict=True)))
    print(f"\n{os.cpu_count()} cores, Linux {os.uname().release}, Python {sys.version.split()[0]}, "
          f"rounds={rounds}, load {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
