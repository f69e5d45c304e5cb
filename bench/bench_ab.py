"""Before/after: two forkwell source trees side by side, interleaved, in one run.

    python bench/bench_ab.py --before /path/to/old/src [--after src] [--rounds 7]

For a change of structure (issue 12: the layout, the split supervisor, one
option parser) nothing users feel may get slower.  Each measure runs the two
trees alternately (``PYTHONPATH`` selects one), ``--rounds`` times, and
prints the medians and the ratio after/before:

* ``run(["/bin/true"])`` per call, in-process (100 calls a round);
* ``forkwell timeout 10 /bin/true``, ``forkwell init -- /bin/true``, whole process;
* ``forkwell daemon start`` of ``sleep 1000`` until it returns, then ``stop``;
* ``forkwell up`` with 100 ``sleep`` programs: until all run; ``ps``; ``stop all``;
  ``start all``; SIGTERM until all are gone.

Then, on the *after* tree only, what each start-up shortcut buys (the same
command with the shortcut switched off by a wrapper, never by a switch in
forkwell itself): the pre-loop spawn before asyncio, the control commands'
``os._exit``, the TOML scanner that finds the socket without ``tomllib``,
and not importing ``argparse``.  Both trees are byte-compiled first: this
machine sets ``PYTHONDONTWRITEBYTECODE=1``, which would time the compiler.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_supervisor import Starting, alive, programs_of, wait_for

PY = sys.executable
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)

RUN_PER_CALL = """
import time, forkwell
for _ in range(5):
    forkwell.run(["/bin/true"])
t = time.perf_counter()
for _ in range(100):
    forkwell.run(["/bin/true"])
print((time.perf_counter() - t) / 100)
"""


class Tree:
    def __init__(self, label: str, src: Path) -> None:
        self.label = label
        self.src = src.resolve()
        subprocess.run([PY, "-m", "compileall", "-q", str(self.src)], check=True,
                       stdout=subprocess.DEVNULL)

    def env(self) -> dict[str, str]:
        return {**os.environ, "PYTHONPATH": str(self.src)}

    def cmd(self, *args: str) -> list[str]:
        return [PY, "-m", "forkwell", *args]


def timed(tree: Tree, argv: list[str], ok: tuple[int, ...] = (0,)) -> float:
    began = time.perf_counter()
    r = subprocess.run(argv, env=tree.env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    took = time.perf_counter() - began
    if r.returncode not in ok:
        raise SystemExit(f"bench: {argv} exited {r.returncode}: {r.stderr.decode()[-500:]}")
    return took


class Fleet:
    """A ``forkwell up`` of ``n`` sleep programs from one tree."""

    def __init__(self, tree: Tree, workdir: Path, n: int, wrapper: str | None = None) -> None:
        self.tree = tree
        self.dir = workdir / f"{tree.label}-{os.urandom(3).hex()}"
        self.dir.mkdir()
        self.config = self.dir / "forkwell.toml"
        self.config.write_text(
            "[supervisor]\nshutdown_timeout = 60\n"
            f'[programs.p]\ncommand = ["sleep", "1000"]\nnumprocs = {n}\n'
            'min_uptime = "0s"\nlog_max_bytes = "1MB"\nlog_backups = 1\n'
        )
        self.n = n
        argv = tree.cmd("up", "-c", str(self.config), "--quiet")
        if wrapper is not None:
            argv = [PY, "-c", wrapper, *argv[3:]]
        self.began = time.monotonic()
        self.proc = subprocess.Popen(argv, env=tree.env(), cwd=self.dir,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        watch = Starting(self.proc.pid)
        self.started = wait_for(lambda: watch.count() >= n, 60, "the fleet") - self.began
        sock = self.dir / ".forkwell" / "forkwell.sock"
        wait_for(sock.exists, 30, "the control socket")

    def ctl(self, *args: str) -> list[str]:
        return self.tree.cmd(*args, "-c", str(self.config))

    def stop(self) -> float:
        before = programs_of(self.proc.pid)
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        done = wait_for(lambda: not any(alive(p) for p in before), 120, "the fleet to stop")
        self.proc.wait(60)
        shutil.rmtree(self.dir, ignore_errors=True)
        return done - t0


def measure_fleet(tree: Tree, workdir: Path, n: int) -> dict[str, float]:
    fleet = Fleet(tree, workdir, n)
    try:
        out = {f"up: {n} programs running": fleet.started}
        out["ps"] = statistics.median(timed(tree, fleet.ctl("ps"), ok=(0, 3)) for _ in range(5))
        out["stop all"] = timed(tree, fleet.ctl("stop", "all"))
        out["start all"] = timed(tree, fleet.ctl("start", "all"))
    finally:
        out["SIGTERM: all gone"] = fleet.stop()
    return out


def measure_daemon(tree: Tree, workdir: Path) -> dict[str, float]:
    pidfile = workdir / f"d-{tree.label}.pid"
    start = timed(tree, tree.cmd("daemon", "start", "--pidfile", str(pidfile), "--", "sleep", "1000"))
    stop = timed(tree, tree.cmd("daemon", "stop", "--pidfile", str(pidfile)))
    return {"daemon start": start, "daemon stop": stop}


def measure_round(tree: Tree, workdir: Path, n: int) -> dict[str, float]:
    r = subprocess.run([PY, "-c", RUN_PER_CALL], env=tree.env(), capture_output=True,
                       text=True, check=True)
    out = {"run(['/bin/true']) per call": float(r.stdout)}
    out["timeout 10 /bin/true"] = timed(tree, tree.cmd("timeout", "10", "/bin/true"))
    out["init -- /bin/true"] = timed(tree, tree.cmd("init", "--", "/bin/true"))
    out.update(measure_daemon(tree, workdir))
    out.update(measure_fleet(tree, workdir, n))
    return out


# -- what the shortcuts buy (after tree only) --------------------------------

NO_PRELOOP = (
    "import sys, forkwell\n"
    "forkwell.Supervisor.prestart = lambda self: 0\n"
    "from forkwell._cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)
# main(argv) with an explicit argv skips the early os._exit: the interpreter tears down.
WITH_TEARDOWN = "import sys\nfrom forkwell._cli import main\nsys.exit(main(sys.argv[1:]))\n"
WITH_TOMLLIB = (
    "import sys, importlib\n"
    "for name in ('forkwell._supervisor._control._discovery', 'forkwell._supervisor._control._server'):\n"
    "    try:\n        m = importlib.import_module(name)\n    except ImportError:\n        continue\n"
    "    if hasattr(m, 'scan_socket_setting'):\n"
    "        def unsure(text, m=m):\n            raise m._Unsure\n"
    "        m.scan_socket_setting = unsure\n        break\n"
    "from forkwell._cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)
WITH_ARGPARSE = "import argparse, sys\nfrom forkwell._cli import main\nsys.exit(main(sys.argv[1:]))\n"


def shortcuts(tree: Tree, workdir: Path, n: int, rounds: int) -> list[tuple[str, float, float]]:
    rows = []
    with_pre, without_pre = [], []
    for _ in range(rounds):
        for wrapper, into in ((None, with_pre), (NO_PRELOOP, without_pre)):
            fleet = Fleet(tree, workdir, n, wrapper)
            into.append(fleet.started)
            fleet.stop()
    rows.append((f"up: {n} running, pre-loop spawn before asyncio (off: prestart disabled)",
                 statistics.median(with_pre), statistics.median(without_pre)))
    fleet = Fleet(tree, workdir, n)
    try:
        ps = fleet.ctl("ps")
        for label, wrapper in (
            ("ps: os._exit after answering (off: interpreter teardown)", WITH_TEARDOWN),
            ("ps: socket found by the TOML scanner (off: tomllib)", WITH_TOMLLIB),
            ("ps: no argparse (off: argparse imported)", WITH_ARGPARSE),
        ):
            on, off = [], []
            for _ in range(rounds * 3):
                on.append(timed(tree, ps, ok=(0, 3)))
                off.append(timed(tree, [PY, "-c", wrapper, *ps[3:]], ok=(0, 3)))
            rows.append((label, statistics.median(on), statistics.median(off)))
    finally:
        fleet.stop()
    return rows


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.3f} s"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", type=Path, required=True, help="the old tree's src/")
    ap.add_argument("--after", type=Path, default=Path(__file__).parent.parent / "src")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--programs", type=int, default=100)
    args = ap.parse_args()
    before, after = Tree("before", args.before), Tree("after", args.after)
    results: dict[str, dict[str, list[float]]] = {"before": {}, "after": {}}
    with tempfile.TemporaryDirectory(prefix="forkwell-ab-") as tmp:
        work = Path(tmp)
        for i in range(args.rounds):
            order = (before, after) if i % 2 == 0 else (after, before)
            for tree in order:
                for key, value in measure_round(tree, work, args.programs).items():
                    results[tree.label].setdefault(key, []).append(value)
            print(f"round {i + 1}/{args.rounds} done", file=sys.stderr)
        rows = shortcuts(after, work, args.programs, max(3, args.rounds // 2))
    load = os.getloadavg()[0]
    print(f"\n{platform_line()}, load {load:.1f}; medians of {args.rounds} interleaved rounds\n")
    print("| measure | before | after | after/before |\n| --- | ---: | ---: | ---: |")
    for key, values in results["before"].items():
        b, a = statistics.median(values), statistics.median(results["after"][key])
        print(f"| {key} | {ms(b)} | {ms(a)} | {a / b:.2f}x |")
    print("\n| shortcut (after tree) | with it | without it | what it buys |\n| --- | ---: | ---: | ---: |")
    for label, on, off in rows:
        print(f"| {label} | {ms(on)} | {ms(off)} | {ms(off - on)} ({off / on:.2f}x) |")


def platform_line() -> str:
    import platform

    return f"{os.cpu_count()} cores, Linux {platform.release()}, Python {platform.python_version()}"


if __name__ == "__main__":
    main()
