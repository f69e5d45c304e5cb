"""Benchmark daemon start-up: forkwell against start-stop-daemon and python-daemon, side by side.

    python bench/bench_daemon.py [--runs N]

Prints two tables of medians (peers interleaved in the same run; the machine is
shared and noisy; ratios are forkwell / peer):

1. Time to ready of ``sleep 1000`` as a daemon (then stopped, not timed):
   * "returns" is when the starting command returns to its caller;
   * "running" is when the daemon is observed running ``sleep`` (polled in
     /proc), which is what "ready" means.  forkwell returns only then; the
     peers return earlier and leave the caller to guess.
   A Python program daemonizing itself (forkwell.daemonize vs DaemonContext) is
   measured too.
2. RLIMIT_NOFILE at its hard maximum: forkwell daemon start at 1,024 and at the
   maximum, and the classic close-every-fd recipe's per-fd cost, extrapolated
   to 1,048,576 (the limit in many containers).

Runs under a subreaper so the daemons (re-parented here) are reaped.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import resource
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

PY = sys.executable
SSD = shutil.which("start-stop-daemon") or "/usr/sbin/start-stop-daemon"
SLEEP = shutil.which("sleep") or "/usr/bin/sleep"

PYTHON_DAEMON_CMD = r"""
import os, sys, daemon
pidfile = sys.argv[1]
with daemon.DaemonContext(umask=0o022):
    with open(pidfile, "w") as f:
        f.write(f"{os.getpid()}\n")
    os.execv(sys.argv[2], [sys.argv[2], "1000"])
"""

PYTHON_DAEMON_SELF = r"""
import os, signal, sys, daemon
pidfile = sys.argv[1]
with daemon.DaemonContext(umask=0o022):
    with open(pidfile, "w") as f:
        f.write(f"{os.getpid()}\n")
    signal.pause()
"""

FORKWELL_SELF = r"""
import signal, sys, forkwell
forkwell.daemonize(sys.argv[1])
signal.pause()
"""

CLOSE_LOOP = r"""
import os, resource, sys, time
limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
start = time.perf_counter()
for fd in range(3, limit):
    try:
        os.close(fd)
    except OSError:
        pass
print(time.perf_counter() - start, limit)
"""


def wait_pidfile_running(pidfile: Path, exe_name: str, timeout: float = 10.0) -> int:
    """Poll until ``pidfile`` names a live process whose comm is ``exe_name``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            pid = int(pidfile.read_text().strip() or 0)
            if pid and Path(f"/proc/{pid}/comm").read_text().strip() == exe_name:
                return pid
        except (OSError, ValueError):
            pass
        select.select([], [], [], 0.0002)
    raise RuntimeError(f"{pidfile} never named a running {exe_name}")


def kill_and_wait(pid: int) -> None:
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        signal.pidfd_send_signal(fd, signal.SIGKILL)
        select.select([fd], [], [], 10)
    finally:
        os.close(fd)
    reap()


def reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def measure(start: Callable[[Path], None], pidfile: Path, comm: str) -> tuple[float, float]:
    """(seconds until the starter returned, seconds until the daemon ran ``comm``)."""
    pidfile.unlink(missing_ok=True)
    t0 = time.perf_counter()
    start(pidfile)
    t1 = time.perf_counter()
    pid = wait_pidfile_running(pidfile, comm)
    t2 = time.perf_counter()
    kill_and_wait(pid)
    pidfile.unlink(missing_ok=True)
    return t1 - t0, t2 - t0


def run(argv: list[str], preexec: Callable[[], None] | None = None) -> None:
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, preexec_fn=preexec)


def set_nofile(soft: int) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))

    return apply


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.1f}"


def table(title: str, rows: list[tuple[str, float, float]], ref: str) -> None:
    print(f"\n{title}")
    print(f"{'case':<52} {'returns ms':>10} {'running ms':>10} {'forkwell/peer':>13}")
    base = {name: running for name, _, running in rows}[ref]
    for name, returns, running in rows:
        ratio = "" if name == ref else f"{base / running:13.2f}"
        print(f"{name:<52} {ms(returns):>10} {ms(running):>10} {ratio:>13}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=15)
    args = ap.parse_args()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER: daemons re-parent to us
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    high = hard if hard != resource.RLIM_INFINITY else 1 << 20

    tmp = Path(tempfile.mkdtemp(prefix="bench-daemon-"))
    pidfile = tmp / "d.pid"
    scripts = {}
    for name, code in (("pd_cmd", PYTHON_DAEMON_CMD), ("pd_self", PYTHON_DAEMON_SELF),
                       ("fw_self", FORKWELL_SELF)):  # fmt: skip
        scripts[name] = tmp / f"{name}.py"
        scripts[name].write_text(code)
    fw = [PY, "-m", "forkwell", "daemon", "start"]

    cases: dict[str, tuple[Callable[[Path], None], str]] = {
        "forkwell daemon start -- sleep 1000": (
            lambda p: run([*fw, "--pidfile", str(p), "--", SLEEP, "1000"]), "sleep"),
        "start-stop-daemon --start --background --make-pidfile": (
            lambda p: run([SSD, "--start", "--quiet", "--background", "--make-pidfile",
                           "--pidfile", str(p), "--exec", SLEEP, "--", "1000"]), "sleep"),
        "python-daemon DaemonContext + exec sleep": (
            lambda p: run([PY, str(scripts["pd_cmd"]), str(p), SLEEP]), "sleep"),
        "forkwell.daemonize() (Python program)": (
            lambda p: run([PY, str(scripts["fw_self"]), str(p)]), "python3"),
        "python-daemon DaemonContext (Python program)": (
            lambda p: run([PY, str(scripts["pd_self"]), str(p)]), "python3"),
        f"forkwell daemon start, RLIMIT_NOFILE={high}": (
            lambda p: run([*fw, "--pidfile", str(p), "--", SLEEP, "1000"], set_nofile(high)),
            "sleep"),
        "forkwell daemon start, RLIMIT_NOFILE=1024": (
            lambda p: run([*fw, "--pidfile", str(p), "--", SLEEP, "1000"], set_nofile(1024)),
            "sleep"),
        f"python-daemon + exec sleep, RLIMIT_NOFILE={high}": (
            lambda p: run([PY, str(scripts["pd_cmd"]), str(p), SLEEP], set_nofile(high)),
            "sleep"),
    }  # fmt: skip
    # The Python program's comm is the interpreter's basename.
    comm_py = Path(PY).name[:15]
    samples: dict[str, list[tuple[float, float]]] = {k: [] for k in cases}
    for start, comm in cases.values():  # warm-up: page cache, bytecode
        measure(start, pidfile, comm_py if comm == "python3" else comm)
    for _ in range(args.runs):
        for name, (start, comm) in cases.items():
            samples[name].append(measure(start, pidfile, comm_py if comm == "python3" else comm))
    med = {
        k: (statistics.median(s[0] for s in v), statistics.median(s[1] for s in v))
        for k, v in samples.items()
    }
    print(f"machine: {os.cpu_count()} cores, Linux {os.uname().release}, Python {sys.version.split()[0]}")
    print(f"runs: {args.runs} per case, interleaved; medians")
    names = list(cases)
    table("Time to ready: a command as a daemon", [(n, *med[n]) for n in names[:3]], names[0])
    table("Time to ready: a Python program daemonizing itself", [(n, *med[n]) for n in names[3:5]], names[3])
    table(f"RLIMIT_NOFILE at the hard maximum ({high})", [(n, *med[n]) for n in names[5:]], names[5])

    loop = []
    for _ in range(max(args.runs // 3, 3)):
        out = subprocess.run([PY, "-c", CLOSE_LOOP], capture_output=True, text=True, check=True,
                             preexec_fn=set_nofile(high)).stdout.split()  # fmt: skip
        loop.append(float(out[0]) / (int(out[1]) - 3))
    per_fd = statistics.median(loop)
    print("\nClassic close loop (for fd in range(3, RLIMIT_NOFILE): os.close(fd)):")
    print(f"  per fd {per_fd * 1e9:.0f} ns; at {high}: {per_fd * high * 1000:.1f} ms; "
          f"extrapolated to 1,048,576: {per_fd * 1048576 * 1000:.0f} ms "
          f"(forkwell: close_range, constant: {ms(med[names[5]][1] - med[names[6]][1]).strip()} ms "
          "difference between the two limits)")  # fmt: skip
    shutil.rmtree(tmp, ignore_errors=True)
    reap()


if __name__ == "__main__":
    main()
