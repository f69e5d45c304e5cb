#!/usr/bin/env python3
"""forkwell init vs tini vs dumb-init, side by side in one run.

Measures, each as a median over interleaved repeats:

1. start-up: whole-process wall time of ``INIT -- /bin/true``, against the
   floor a Python init cannot beat: ``python -c "import subprocess;
   subprocess.run(['/bin/true'])"`` (target: forkwell init <= 1.5x that);
2. reaping a burst: each init runs as PID 1 of a fresh PID namespace; its
   command creates 10,000 orphans (blocked reading a pipe; each one's parent
   has exited, so init adopted it), then the pipe's last writer closes and
   all 10,000 exit at once.  Timed until init has no child left but the
   command, by polling ``/proc/PID/task/PID/children``; init's own CPU time
   is read from ``/proc/PID/stat``.  Two ways: *drain* stops init
   (SIGSTOP) until all 10,000 are zombies, then times from its SIGCONT (pure
   reaping throughput); *live* times from the release (exits and reaping
   overlap; the kernel's exit work dominates).  Target: throughput >= tini's;
3. idle: voluntary context switches of each init over one idle second;
4. in-process: 1,000 forks reaped by ``os.fork`` + ``waitpid``, by
   ``forkwell.fork()`` and by ``Reaper.fork()`` + ``reap()``.

Needs root (PID namespaces) and the peers from bench/setup.sh.
Usage: python bench/bench_init.py [--repeat N] [--orphans N] [--quick]
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
import time
from pathlib import Path

NS = ["unshare", "--pid", "--fork", "--mount-proc"]
TICK = os.sysconf("SC_CLK_TCK")


def forkwell_cmd() -> list[str]:
    exe = shutil.which("forkwell")
    return [exe, "init"] if exe else [sys.executable, "-m", "forkwell", "init"]


def inits() -> dict[str, list[str]]:
    found = {"forkwell init": [*forkwell_cmd(), "--"]}
    if shutil.which("tini"):
        found["tini"] = ["tini", "-s", "--"]
    if shutil.which("dumb-init"):
        found["dumb-init"] = ["dumb-init", "--"]
    missing = {"tini", "dumb-init"} - set(found)
    if missing:
        print(f"warning: not installed (run bench/setup.sh): {', '.join(sorted(missing))}")
    return found


def wall(cmd: list[str]) -> float:
    start = time.perf_counter()
    pid = os.posix_spawn(cmd[0] if "/" in cmd[0] else shutil.which(cmd[0]) or cmd[0],
                         cmd, os.environ)
    _, status = os.waitpid(pid, 0)
    took = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{cmd} failed with status {status}")
    return took


def bench_startup(repeat: int) -> None:
    cmds = {name: [*argv, "/bin/true"] for name, argv in inits().items()}
    cmds["python + subprocess.run (floor)"] = [
        sys.executable, "-c", "import subprocess; subprocess.run(['/bin/true'])"
    ]
    cmds["/bin/true alone"] = ["/bin/true"]
    times: dict[str, list[float]] = {name: [] for name in cmds}
    for cmd in cmds.values():
        wall(cmd)  # warm the page cache
    for _ in range(repeat):
        for name, cmd in cmds.items():  # interleaved: load changes hit all alike
            times[name].append(wall(cmd))
    floor = statistics.median(times["python + subprocess.run (floor)"])
    print(f"\n## start-up: INIT -- /bin/true, wall time (median of {repeat})\n")
    print(f"| {'command':<34} | {'median ms':>9} | {'vs floor':>8} |")
    print(f"|{'-' * 36}|{'-' * 11}|{'-' * 10}|")
    for name, values in times.items():
        med = statistics.median(values)
        print(f"| {name:<34} | {med * 1000:9.1f} | {med / floor:7.2f}x |")


def children(pid: int) -> list[int]:
    try:
        return Path(f"/proc/{pid}/task/{pid}/children").read_text().split()  # type: ignore[return-value]
    except OSError:
        return []


def cpu_seconds(pid: int) -> float:
    """Time ``pid`` has spent on a CPU: ns-precise from schedstat, else in ticks."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        pass
    data = Path(f"/proc/{pid}/stat").read_bytes()
    fields = data[data.rfind(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / TICK


# The command: 10,000 double-forked subshells, each blocked on fd N (the pipe's
# read end); then it tells us and waits on stdin, so it outlives the burst.
GENERATOR = (
    "i=0; while [ $i -lt {n} ]; do ( (read x <&{fd}) & ); i=$((i+1)); done; "
    "exec {fd}<&-; echo ready; exec cat"
)


def state(pid: int) -> bytes:
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return b"gone"
    return data[data.rfind(b")") + 2 :][:1]


def burst_once(argv: list[str], n: int, drain: bool) -> tuple[float, float]:
    """One burst; with ``drain``, init is stopped until all n are zombies.

    Live: time from the orphans' release to the last one reaped (their exits
    and init's reaping overlap).  Drain: n zombies wait for init, which is then
    continued: pure reaping throughput, without the kernel's exit work.
    """
    r, w = os.pipe()
    if r > 9:
        raise SystemExit("the pipe's fd must be a single digit for sh's <&N")
    proc = subprocess.Popen(
        [*NS, *argv, "sh", "-c", GENERATOR.format(n=n, fd=r)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        pass_fds=(r,), text=True,
    )
    os.close(r)
    assert proc.stdout is not None and proc.stdin is not None
    if proc.stdout.readline().strip() != "ready":
        raise SystemExit(f"{argv[0]}: the generator failed")
    unshare_kids: list[str] = []
    deadline = time.monotonic() + 30
    while not unshare_kids and time.monotonic() < deadline:
        unshare_kids = children(proc.pid)
    init = int(unshare_kids[0])
    kids = children(init)
    if len(kids) != n + 1:
        raise SystemExit(f"{argv[0]}: expected {n + 1} children, got {len(kids)}")
    if drain:
        os.kill(init, signal.SIGSTOP)  # forced on PID 1 from an ancestor namespace
        while state(init) != b"T":
            select.select([], [], [], 0.001)
        os.close(w)
        while sum(state(int(k)) == b"Z" for k in kids) < n:
            select.select([], [], [], 0.01)
    cpu_before = cpu_seconds(init)
    start = time.perf_counter()
    if drain:
        os.kill(init, signal.SIGCONT)
    else:
        os.close(w)  # all n orphans see EOF at once
    while len(children(init)) > 1:
        select.select([], [], [], 0.001)
    took = time.perf_counter() - start
    cpu = cpu_seconds(init) - cpu_before
    proc.stdin.close()
    proc.wait(30)
    proc.stdout.close()
    return took, cpu


def bench_burst(repeat: int, n: int, drain: bool) -> None:
    results: dict[str, tuple[list[float], list[float]]] = {
        name: ([], []) for name in inits()
    }
    order = list(inits().items())
    for i in range(repeat):
        # Rotated: each init goes first, second and third equally often, so
        # what one run leaves to the kernel (freeing 10,000 processes) does
        # not always land on the same next one.
        for name, argv in order[i % len(order):] + order[: i % len(order)]:
            took, cpu = burst_once(argv, n, drain)
            results[name][0].append(took)
            results[name][1].append(cpu)
    tini = statistics.median(results["tini"][0]) if "tini" in results else None
    tini_cpu = statistics.median(results["tini"][1]) if "tini" in results else None
    what = ("draining {:,} zombies (init stopped until all had exited)" if drain
            else "a live burst of {:,} orphans exiting at once").format(n)
    print(f"\n## reaping {what}, as PID 1 (median of {repeat})\n")
    # Wall time on a shared machine includes waiting for a CPU; init's own CPU
    # time (schedstat) is the load-independent measure of reaping work.
    print(f"| {'init':<14} | {'all reaped ms':>13} | {'min ms':>6} | {'orphans/s':>9} |"
          f" {'vs tini':>7} | {'init CPU ms':>11} | {'orphans/CPU-s':>13} | {'vs tini':>7} |")
    print(f"|{'-' * 16}|{'-' * 15}|{'-' * 8}|{'-' * 11}|{'-' * 9}|{'-' * 13}|{'-' * 15}|"
          f"{'-' * 9}|")
    for name, (took, cpu) in results.items():
        med = statistics.median(took)
        cpu_med = statistics.median(cpu)
        ratio = f"{tini / med:6.2f}x" if tini else f"{'n/a':>7}"
        cpu_ratio = f"{tini_cpu / cpu_med:6.2f}x" if tini_cpu else f"{'n/a':>7}"
        print(f"| {name:<14} | {med * 1000:13.0f} | {min(took) * 1000:6.0f} | {n / med:9.0f} |"
              f" {ratio} | {cpu_med * 1000:11.1f} | {n / cpu_med:13.0f} | {cpu_ratio} |")


IDLE = "import signal\nprint('ready', flush=True)\nsignal.pause()"


def voluntary(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("voluntary_ctxt_switches:"):
            return int(line.split()[1])
    return -1


def bench_idle(seconds: float) -> None:
    print(f"\n## idle: voluntary context switches of init over {seconds:g} s\n")
    print(f"| {'init':<14} | {'wake-ups':>8} |")
    print(f"|{'-' * 16}|{'-' * 10}|")
    for name, argv in inits().items():
        proc = subprocess.Popen([*argv, sys.executable, "-c", IDLE], stdout=subprocess.PIPE,
                                text=True)
        assert proc.stdout is not None
        proc.stdout.readline()
        before = voluntary(proc.pid)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            select.select([], [], [], deadline - time.monotonic())
        after = voluntary(proc.pid)
        proc.terminate()
        proc.wait(10)
        proc.stdout.close()
        print(f"| {name:<14} | {after - before:8d} |")


INPROC = r"""
import os, select, sys, time
import forkwell
n, how = int(sys.argv[1]), sys.argv[2]
reaper = forkwell.Reaper()
done = []
start = time.perf_counter()
for _ in range(n):
    if how == "os.fork + waitpid":
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
    elif how == "forkwell.fork()":
        pid = forkwell.fork(on_exit=done.append)
        if pid == 0:
            os._exit(0)
    else:
        pid = reaper.fork()
        if pid == 0:
            os._exit(0)
        reaper.reap()
if how == "forkwell.fork()":
    while len(done) < n:
        select.select([], [], [], 0.001)
elif how == "Reaper.fork + reap":
    for _ in reaper.exits():
        pass
print(time.perf_counter() - start)
"""


def bench_inprocess(repeat: int, n: int = 1000) -> None:
    hows = ["os.fork + waitpid", "forkwell.fork()", "Reaper.fork + reap"]
    times: dict[str, list[float]] = {h: [] for h in hows}
    for _ in range(repeat):
        for how in hows:
            out = subprocess.run([sys.executable, "-c", INPROC, str(n), how],
                                 capture_output=True, text=True, check=True)
            times[how].append(float(out.stdout))
    base = statistics.median(times[hows[0]])
    print(f"\n## in-process: {n:,} forks of a small Python process, each child reaped"
          f" (median of {repeat})\n")
    print(f"| {'how':<22} | {'per fork us':>11} | {'vs os.fork':>10} |")
    print(f"|{'-' * 24}|{'-' * 13}|{'-' * 12}|")
    for how, values in times.items():
        med = statistics.median(values)
        print(f"| {how:<22} | {med / n * 1e6:11.0f} | {med / base:9.2f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=30, help="start-up repeats (30)")
    parser.add_argument("--burst-repeat", type=int, default=5, help="burst repeats (5)")
    parser.add_argument("--orphans", type=int, default=10_000, help="burst size (10000)")
    parser.add_argument("--quick", action="store_true", help="few repeats, 1,000 orphans")
    parser.add_argument("--only", choices=["startup", "burst", "idle", "inprocess"],
                        help="one part only")
    args = parser.parse_args()
    if args.quick:
        args.repeat, args.burst_repeat, args.orphans = 5, 1, 1000
    print(f"# forkwell init vs peers: {platform.node()}, {os.cpu_count()} cores, "
          f"Linux {platform.release()}, Python {platform.python_version()}")
    # As pip installs it: byte-compiled (PYTHONDONTWRITEBYTECODE would otherwise
    # make every start-up recompile forkwell's modules).
    import compileall

    import forkwell

    compileall.compile_dir(os.path.dirname(forkwell.__file__), quiet=1)
    if args.only in (None, "startup"):
        bench_startup(args.repeat)
    if args.only in (None, "burst"):
        if os.geteuid() != 0:
            print("\n(burst skipped: PID namespaces need root)")
        else:
            bench_burst(args.burst_repeat, args.orphans, drain=True)
            bench_burst(args.burst_repeat, args.orphans, drain=False)
    if args.only in (None, "idle"):
        bench_idle(1.0)
    if args.only in (None, "inprocess"):
        bench_inprocess(max(3, args.burst_repeat))


if __name__ == "__main__":
    main()
