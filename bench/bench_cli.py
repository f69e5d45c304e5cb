"""CLI start-up benchmark: the same commands run from two source trees, interleaved.

    python bench/bench_cli.py [--before /work/main/src] [--after src] [--runs 30]

Whole-process wall time of the commands whose start-up people and health
checks pay for: ``ps`` against a socket that is not there (exits 1, after
parsing and trying to connect), ``timeout`` and ``init`` around ``/bin/true``,
and ``up --help`` (``up``'s parse and print, without a fleet).  Each tree is
put first on ``PYTHONPATH`` in turn; runs alternate between the trees so that
the machine's load falls on both alike.  Both trees are byte-compiled first:
with ``PYTHONDONTWRITEBYTECODE`` set every run would otherwise time the
compiler.  Prints the median of each, before and after: wall time, and the
CPU time (user + system) of the process and its children, which the load of
a shared machine disturbs less.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

PY = sys.executable
HERE = Path(__file__).resolve().parent

COMMANDS: dict[str, tuple[list[str], int]] = {
    "ps --socket /nonexistent": (["ps", "--socket", "/nonexistent"], 1),
    "timeout 10 /bin/true": (["timeout", "10", "/bin/true"], 0),
    "init -- /bin/true": (["init", "--", "/bin/true"], 0),
    "up --help": (["up", "--help"], 0),
}


def timed(src: str, args: list[str], expected: int) -> tuple[float, float]:
    """(wall, CPU) seconds of one run."""
    env = dict(os.environ, PYTHONPATH=src)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    began = time.perf_counter()
    proc = subprocess.Popen([PY, "-m", "forkwell", *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - began
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != expected:
        raise SystemExit(f"bench: {src}: forkwell {' '.join(args)} exited {proc.returncode}, "
                         f"expected {expected}")  # fmt: skip
    # wait4 reports the process and the children it waited for (timeout's, init's /bin/true).
    return elapsed, usage.ru_utime + usage.ru_stime


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--before", default="/work/main/src", help="the reference tree's src")
    p.add_argument("--after", default=str(HERE.parent / "src"), help="the changed tree's src")
    p.add_argument("--runs", type=int, default=30)
    args = p.parse_args()
    trees = {"before": args.before, "after": args.after}
    for src in trees.values():
        subprocess.run([PY, "-m", "compileall", "-q", src], check=True)
    times: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for i in range(args.runs):
        order = list(trees.items()) if i % 2 == 0 else list(reversed(trees.items()))
        for name, (argv, expected) in COMMANDS.items():
            for label, src in order:
                times.setdefault((name, label), []).append(timed(src, argv, expected))
    print(f"{PY}, {args.runs} interleaved runs; medians in ms")
    print(f"before: {args.before}\nafter:  {args.after}")
    print(f"{'':<28}{'wall':>27}{'CPU':>27}")
    print(f"{'command':<28}" + f"{'before':>9}{'after':>9}{'change':>9}" * 2)
    for name in COMMANDS:
        line = f"{name:<28}"
        for column in (0, 1):
            before = statistics.median(t[column] for t in times[name, "before"]) * 1000
            after = statistics.median(t[column] for t in times[name, "after"]) * 1000
            line += f"{before:>9.1f}{after:>9.1f}{after - before:>+9.1f}"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
