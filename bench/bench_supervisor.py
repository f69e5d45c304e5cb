"""Supervisor benchmark: forkwell up vs supervisord, side by side, the same programs.

    python bench/bench_supervisor.py [--programs 100] [--rounds 7] [--idle 10] [--big 1000]

For each supervisor, ``--programs`` copies of ``sleep 1000``:

* start: from launching the supervisor until every program process runs
  (seen in /proc as a ``sleep`` child of the supervisor);
* restart: from ``kill -9`` of one program until its replacement runs
  (median of 20, a different program each time);
* stop all: from SIGTERM to the supervisor until every program is gone;
* RSS of the supervisor with every program running;
* voluntary context switches of the supervisor over ``--idle`` idle seconds.

Then ``--big`` programs under forkwell alone: they start, run and stop cleanly.
Prints a table of medians and ratios; needs ``supervisor`` (bench/requirements.txt).
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
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path


def pause(seconds: float) -> None:
    select.select([], [], [], seconds)


def stat(pid: int) -> tuple[str, int, str] | None:
    """(comm, ppid, state) of a process, None if gone."""
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    comm = data[data.find(b"(") + 1 : data.rfind(b")")].decode()
    rest = data[data.rfind(b")") + 2 :].split()
    return comm, int(rest[1]), rest[0].decode()


def programs_of(parent: int) -> set[int]:
    """Live ``sleep`` children of ``parent`` (its /proc children lists: cheap to poll)."""
    out = set()
    try:
        tids = os.listdir(f"/proc/{parent}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            kids = Path(f"/proc/{parent}/task/{tid}/children").read_text().split()
        except OSError:
            continue
        for kid in kids:
            st = stat(int(kid))
            if st and st[0] == "sleep" and st[2] not in ("Z", "X"):
                out.add(int(kid))
    return out


class Starting:
    """Counts a supervisor's running programs cheaply enough to poll every 0.5 ms.

    The children lists are read at each poll, but a child's stat file only
    until it shows ``sleep`` (it exec'd); re-reading 100 stat files per poll
    would load the 2 cores the supervisors themselves need, and the slower
    supervisor (more polls) would suffer more.
    """

    def __init__(self, parent: int) -> None:
        self.parent = parent
        self.seen: set[int] = set()

    def count(self) -> int:
        kids: set[int] = set()
        try:
            tids = os.listdir(f"/proc/{self.parent}/task")
        except OSError:
            return 0
        for tid in tids:
            try:
                kids.update(map(int, Path(f"/proc/{self.parent}/task/{tid}/children").read_text().split()))
            except OSError:
                continue
        for kid in kids - self.seen:
            st = stat(kid)
            if st and st[0] == "sleep" and st[2] not in ("Z", "X"):
                self.seen.add(kid)
        return len(self.seen & kids)


def _all_running(watch: Starting, n: int) -> bool:
    return watch.count() >= n


def programs_of_slow(parent: int) -> set[int]:
    """Live ``sleep`` children of ``parent``."""
    out = set()
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = stat(int(name))
            if st and st[0] == "sleep" and st[1] == parent and st[2] not in ("Z", "X"):
                out.add(int(name))
    return out


def wait_for(pred: Callable[[], bool], timeout: float, what: str, step: float = 0.0005) -> float:
    """Poll ``pred``; return the time.monotonic() it became true."""
    deadline = time.monotonic() + timeout
    while True:
        if pred():
            return time.monotonic()
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: timed out waiting for {what}")
        pause(step)


def alive(pid: int) -> bool:
    st = stat(pid)
    return st is not None and st[2] not in ("Z", "X")


def status_field(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


class Peer:
    name = ""

    def __init__(self, workdir: Path, n: int) -> None:
        self.dir = workdir / self.name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.n = n
        self.proc: subprocess.Popen[bytes] | None = None

    def argv(self) -> list[str]:
        raise NotImplementedError

    def launch(self) -> float:
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            self.argv(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self.dir
        )
        return t0

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def helpers(self) -> dict[str, float]:
        """Memory of the peer's helper processes, if it has any."""
        return {}

    def stop(self) -> float:
        """SIGTERM; seconds until every program is gone (the supervisor then exits)."""
        before = programs_of(self.pid)
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        done = wait_for(
            lambda: not any(alive(p) for p in before),
            120, "programs to stop",
        )  # fmt: skip
        self.proc.wait(60)  # type: ignore[union-attr]
        return done - t0


class Forkwell(Peer):
    name = "forkwell"

    def argv(self) -> list[str]:
        cfg = self.dir / "forkwell.toml"
        cfg.write_text(
            "[supervisor]\nshutdown_timeout = 60\n"
            f'[programs.p]\ncommand = ["sleep", "1000"]\nnumprocs = {self.n}\n'
            "log_max_bytes = '1MB'\nlog_backups = 1\n"
        )
        return [sys.executable, "-m", "forkwell", "up", "-c", str(cfg), "--quiet"]


    def helpers(self) -> dict[str, float]:
        import json

        state = json.loads((self.dir / ".forkwell" / "state.json").read_text())
        dog = state["watchdog"]
        return {"watchdog_rss": status_field(dog, "VmRSS") / 1024,
                "watchdog_pss": pss_kib(dog) / 1024,
                "pss": pss_kib(self.pid) / 1024}  # fmt: skip


def pss_kib(pid: int) -> int:
    """Proportional set size: shared pages (the watchdog's, with the supervisor) counted once."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    raise KeyError("Pss")


class Supervisord(Peer):
    name = "supervisord"

    def argv(self) -> list[str]:
        cfg = self.dir / "supervisord.conf"
        cfg.write_text(
            f"""[supervisord]
nodaemon=true
logfile={self.dir}/supervisord.log
pidfile={self.dir}/supervisord.pid
childlogdir={self.dir}
minfds=4096

[program:p]
command=sleep 1000
numprocs={self.n}
process_name=%(program_name)s_%(process_num)03d
autorestart=true
stdout_logfile={self.dir}/%(program_name)s_%(process_num)03d.log
stderr_logfile={self.dir}/%(program_name)s_%(process_num)03d.err
"""
        )
        return [sys.executable, "-m", "supervisor.supervisord", "-c", str(cfg)]


def measure(peer: Peer, rounds: int, idle: float, restarts: int) -> dict[str, float]:
    starts, stops, rss, ctx = [], [], [], []
    extra: dict[str, float] = {}
    latencies: list[float] = []
    for r in range(rounds):
        t0 = peer.launch()
        t1 = wait_for(partial(_all_running, Starting(peer.pid), peer.n), 120, "all programs")
        starts.append(t1 - t0)
        if r == 0:
            # Let start-up settle (forkwell's min_uptime check, supervisord's startsecs).
            pause(2.0)
            rss.append(status_field(peer.pid, "VmRSS") / 1024)
            extra.update(peer.helpers())
            c0 = status_field(peer.pid, "voluntary_ctxt_switches")
            pause(idle)
            ctx.append(status_field(peer.pid, "voluntary_ctxt_switches") - c0)
            victims = sorted(programs_of(peer.pid))[:restarts]
            for victim in victims:
                before = programs_of(peer.pid)
                k0 = time.monotonic()
                os.kill(victim, signal.SIGKILL)
                k1 = wait_for(
                    lambda b=before, v=victim: len((programs_of(peer.pid) - b) - {v}) >= 1,  # type: ignore[misc]
                    30, "a replacement",
                )  # fmt: skip
                latencies.append(k1 - k0)
        stops.append(peer.stop())
    return {
        "start": statistics.median(starts),
        "restart": statistics.median(latencies),
        "stop": statistics.median(stops),
        "rss": rss[0],
        "ctx": ctx[0],
        **extra,
    }


def big(workdir: Path, n: int) -> dict[str, float]:
    peer = Forkwell(workdir / "big", n)
    t0 = peer.launch()
    watch = Starting(peer.pid)
    t1 = wait_for(lambda: watch.count() >= n, 300, f"{n} programs", step=0.01)
    pids = programs_of(peer.pid)
    pause(2.0)
    alive = len(programs_of(peer.pid))
    rss = status_field(peer.pid, "VmRSS") / 1024
    fds = len(os.listdir(f"/proc/{peer.pid}/fd"))
    stop = peer.stop()
    left = sum(1 for p in pids if stat(p) is not None)
    return {"start": t1 - t0, "alive": alive, "stop": stop, "left": left, "rss": rss, "fds": fds,
            "rc": peer.proc.returncode}  # type: ignore[union-attr]  # fmt: skip


FIREHOSE = """
import sys
out = sys.stdout.buffer
for i in range({blocks}):
    out.write(i.to_bytes(8, "big") * 8192)
out.flush()
"""


def firehose(workdir: Path, megabytes: int) -> dict[str, float]:
    """One program writes ``megabytes`` MiB as fast as it can through 10 MiB log files."""
    import json

    peer = Forkwell(workdir / "firehose", 1)
    blocks = megabytes * 16  # 64 KiB each
    cfg = peer.dir / "forkwell.toml"
    command = json.dumps([sys.executable, "-c", FIREHOSE.format(blocks=blocks)])
    cfg.write_text(
        f"[programs.fire]\ncommand = {command}\n"
        "restart = 'never'\nlog_max_bytes = '10MB'\nlog_backups = 100\n"
    )
    logs = peer.dir / ".forkwell" / "logs"
    total = blocks * 65536

    def logged() -> int:
        try:
            return sum(p.stat().st_size for p in logs.glob("fire.0.stdout.log*"))
        except FileNotFoundError:  # renamed by a rotation meanwhile
            return 0

    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "forkwell", "up", "-c", str(cfg), "--quiet"], cwd=peer.dir
    )
    t1 = wait_for(lambda: logged() >= total, 300, "the firehose", step=0.01)
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)
    parts = sorted(logs.glob("fire.0.stdout.log.*"), key=lambda p: int(p.suffix[1:]), reverse=True)
    ok = True
    i = 0
    pending = b""
    for part in [*parts, logs / "fire.0.stdout.log"]:
        pending += part.read_bytes()
        while len(pending) >= 65536:
            ok = ok and pending[:65536] == i.to_bytes(8, "big") * 8192
            pending = pending[65536:]
            i += 1
    ok = ok and i == blocks and not pending
    return {"seconds": t1 - t0, "files": len(parts) + 1, "ok": float(ok)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--programs", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--idle", type=float, default=10.0)
    ap.add_argument("--restarts", type=int, default=20)
    ap.add_argument("--big", type=int, default=1000)
    ap.add_argument("--firehose", type=int, default=100, help="MiB written through the logs")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-supervisor-"))
    try:
        results = {}
        for cls in (Forkwell, Supervisord):
            peer = cls(work, args.programs)
            print(f"measuring {peer.name} ...", file=sys.stderr, flush=True)
            results[peer.name] = measure(peer, args.rounds, args.idle, args.restarts)
        f, s = results["forkwell"], results["supervisord"]
        print(f"\n{platform.node()}: {os.cpu_count()} cpus, Linux {platform.release()}, "
              f"Python {platform.python_version()}; {args.programs} x `sleep 1000`, "
              f"median of {args.rounds} rounds ({args.restarts} restarts)\n")  # fmt: skip
        print(f"{'':<34}{'forkwell':>12}{'supervisord':>14}{'ratio':>10}")
        rows = [
            ("time until all run (s)", "start", "{:.3f}"),
            ("kill -9 -> replacement (ms)", "restart", "{:.1f}"),
            ("stop all (s)", "stop", "{:.3f}"),
            ("supervisor RSS (MiB)", "rss", "{:.1f}"),
            (f"voluntary ctx switches, {args.idle:g}s idle", "ctx", "{:.0f}"),
        ]
        for label, key, fmt in rows:
            fv, sv = f[key], s[key]
            if key == "restart":
                fv, sv = fv * 1000, sv * 1000
            ratio = f"{sv / fv:.1f}x" if fv else ("-" if not sv else "inf")
            print(f"{label:<34}{fmt.format(fv):>12}{fmt.format(sv):>14}{ratio:>10}")
        print(f"\nforkwell's watchdog process: RSS {f['watchdog_rss']:.1f} MiB, PSS "
              f"{f['watchdog_pss']:.1f} MiB (most pages shared with the supervisor, whose "
              f"PSS is {f['pss']:.1f} MiB); supervisor + watchdog PSS "
              f"{f['pss'] + f['watchdog_pss']:.1f} MiB")  # fmt: skip
        if args.big:
            print(f"\nmeasuring forkwell with {args.big} programs ...", file=sys.stderr, flush=True)
            b = big(work, args.big)
            print(f"\nforkwell, {args.big} programs: all running after {b['start']:.2f}s "
                  f"({b['alive']:.0f} alive 2s later), RSS {b['rss']:.1f} MiB, {b['fds']:.0f} fds; "
                  f"stop all {b['stop']:.2f}s, {b['left']:.0f} left, exit status {b['rc']:.0f}")  # fmt: skip
        if args.firehose:
            print(f"\nmeasuring a {args.firehose} MiB firehose ...", file=sys.stderr, flush=True)
            h = firehose(work, args.firehose)
            print(f"\nforkwell, one program writing {args.firehose} MiB as fast as it can: "
                  f"logged in {h['seconds']:.2f}s ({args.firehose / h['seconds']:.0f} MiB/s) "
                  f"across {h['files']:.0f} rotated files; reassembled byte for byte: "
                  f"{'identical' if h['ok'] else 'DIFFERENT'}")  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
