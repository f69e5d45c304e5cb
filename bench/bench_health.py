"""Health benchmark: what liveness probes cost the supervisor, and ``ps`` of 1,000 instances.

    python bench/bench_health.py [--programs 100] [--seconds 30] [--big 1000] [--runs 30]
                                 [--skip-probes] [--skip-ps]

Probes (``--programs`` copies of ``sleep 3600``, each with a liveness probe
every second, ``liveness_period = 1``), for ``--seconds`` once all are up:

* ``http``: ``liveness = "http://127.0.0.1:PORT/pN"``, answered by a minimal
  HTTP server in this process (the same for every side, not measured);
* ``cmd``: ``liveness = "cmd:echo >> COUNT"`` (a ``/bin/sh`` per probe, one
  byte appended to a file to count them);
* ``none``: the same programs without probes (what the fleet costs alone).

Measured: the supervisor's own CPU time (user + system, from /proc) and that
of the probe processes it reaped (``cmd``: the shells), per minute, and the
probes really made per second.  The floor beside them: a shell loop doing
the same probes one after the other (``curl -s -o /dev/null URL`` for http,
``sh -c 'echo >> COUNT'`` for cmd), timed the same way, self and children; its CPU is
scaled to the same number of probes as forkwell made, since a sequential loop
may not keep up with 100 a second on a loaded machine.

Then ``forkwell ps`` (and ``--json``) of ``--big`` instances against
``python -c pass``, as in bench_ctl.py.  Prints medians and ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from bench_ctl import PY, Forkwell, forkwell_script, median_ms, wait_for

TICK = os.sysconf("SC_CLK_TCK")


def cpu(pid: int) -> tuple[float, float]:
    """(self, waited-for children) CPU seconds of ``pid``."""
    data = Path(f"/proc/{pid}/stat").read_bytes()
    f = data[data.rfind(b")") + 2 :].split()
    return (int(f[11]) + int(f[12])) / TICK, (int(f[13]) + int(f[14])) / TICK


class Server:
    """An HTTP server on the loop of a thread: 200 and Connection: close, requests counted."""

    ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"

    def __init__(self) -> None:
        self.requests = 0
        self.port = 0
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self._thread.start()
        ready.wait()

    def _run(self, ready: threading.Event) -> None:
        async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            try:
                await r.readuntil(b"\r\n\r\n")
                self.requests += 1
                w.write(self.ANSWER)
                await w.drain()
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                w.close()

        async def main() -> None:
            server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)
            self.port = server.sockets[0].getsockname()[1]
            ready.set()
            await asyncio.Event().wait()

        self._loop.run_until_complete(main())


def fleet_config(directory: Path, n: int, probe: str, port: int, count: Path) -> None:
    lines = []
    for i in range(n):
        lines.append(f'[programs.p{i}]\ncommand = ["sleep", "3600"]\nmin_uptime = "0s"\n')
        if probe == "http":
            lines.append(f'liveness = "http://127.0.0.1:{port}/p{i}"\nliveness_period = 1\n')
        elif probe == "cmd":
            lines.append(f'liveness = "cmd:echo >> {count}"\nliveness_period = 1\n')
        lines.append("\n")
    (directory / "forkwell.toml").write_text("".join(lines))


def measure_forkwell(base: Path, n: int, probe: str, seconds: float, server: Server) -> dict[str, float]:
    directory = base / f"fw-{probe}"
    directory.mkdir()
    count = directory / "probes.count"
    fleet_config(directory, n, probe, server.port, count)
    script = forkwell_script()
    out = (directory / "up.out").open("wb")
    proc = subprocess.Popen([PY, script, "up", "-c", str(directory / "forkwell.toml"), "--quiet"],
                            stdout=out, stderr=subprocess.STDOUT, cwd=directory)  # fmt: skip
    ps = [PY, script, "ps", "-c", str(directory / "forkwell.toml")]
    try:
        wait_for(lambda: subprocess.run(ps, capture_output=True).returncode == 0, 120, "up")
        time.sleep(3)  # let the probes' phases spread over the period
        made0 = _made(probe, server, count)
        s0, c0 = cpu(proc.pid)
        t0 = time.monotonic()
        time.sleep(seconds)
        s1, c1 = cpu(proc.pid)
        elapsed = time.monotonic() - t0
        made = _made(probe, server, count) - made0
    finally:
        subprocess.run([PY, script, "down", "-c", str(directory / "forkwell.toml")],
                       stdout=subprocess.DEVNULL, timeout=120)  # fmt: skip
        proc.wait(60)
        out.close()
    return {"self": (s1 - s0) * 60 / elapsed, "children": (c1 - c0) * 60 / elapsed,
            "rate": made / elapsed}  # fmt: skip


def _made(probe: str, server: Server, count: Path) -> int:
    """Probes made so far: requests served (http), bytes appended (cmd)."""
    if probe == "http":
        return server.requests
    return count.stat().st_size if count.exists() else 0


def measure_floor(base: Path, n: int, probe: str, seconds: float, server: Server) -> dict[str, float]:
    """A shell loop doing the probes one after the other, as fast as it goes, for ``seconds``."""
    if probe == "http":
        if shutil.which("curl") is None:
            raise SystemExit("bench: curl not installed (bench/debian-packages.txt)")
        one = f'curl -s -o /dev/null "http://127.0.0.1:{server.port}/p$i"'
    else:
        one = f"sh -c 'echo >> {base / 'floor-cmd.probes'}'"
    count = base / f"floor-{probe}.count"
    # Builtins only ($SECONDS, arithmetic for): the loop's own cost is the shell's.
    script = (f'k=0; while (( SECONDS < {int(seconds)} )); do for ((i = 0; i < {n}; i++)); do '
              f'{one}; k=$((k+1)); done; done; echo $k > {count}')  # fmt: skip
    began = time.monotonic()
    loop = subprocess.Popen(["/bin/bash", "-c", script])
    # The loop's CPU and its children's, read from its parent's rusage once it is reaped.
    before = os.times()
    loop.wait()
    after = os.times()
    elapsed = time.monotonic() - began
    done = int(count.read_text())
    used = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    return {"cpu": used, "probes": done, "elapsed": elapsed}


def _print_probes(rows: list[tuple[str, ...]], seconds: float) -> None:
    print(f"\nCPU seconds per minute ({seconds:g} s measured, scaled to a minute); a floor "
          "loop's CPU is scaled to forkwell's probe count\n")  # fmt: skip
    head = ("", "supervisor", "probe procs", "total", "probes/s")
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(5)]
    for r in [head, *rows]:
        print("  ".join(str(c).rjust(w) if i else str(c).ljust(w)
                        for i, (c, w) in enumerate(zip(r, widths, strict=True))))  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--programs", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--big", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--skip-ps", action="store_true")
    ap.add_argument("--skip-probes", action="store_true")
    args = ap.parse_args()
    n = args.programs
    import compileall

    import forkwell

    compileall.compile_dir(os.path.dirname(forkwell.__file__), quiet=1)
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, "
          f"Linux {platform.release()}, Python {platform.python_version()}, "
          f"load {os.getloadavg()[0]:.2f}")  # fmt: skip
    server = Server()
    rows: list[tuple[str, ...]] = []
    with tempfile.TemporaryDirectory(prefix="bench-health-") as tmp:
        base = Path(tmp)
        kinds = () if args.skip_probes else ("none", "http", "cmd")
        fw = {p: measure_forkwell(base, n, p, args.seconds, server) for p in kinds}
        floor = {p: measure_floor(base, n, p, args.seconds, server) for p in kinds[1:]}
        for p in kinds:
            r = fw[p]
            rows.append((f"forkwell up, {n} programs, liveness: {p}", f"{r['self']:.2f}",
                         f"{r['children']:.2f}", f"{r['self'] + r['children']:.2f}",
                         f"{r['rate']:.1f}"))  # fmt: skip
        for p in kinds[1:]:
            f = floor[p]
            # Scaled to the probes forkwell made in the same time: the same work.
            per_minute = f["cpu"] / f["probes"] * fw[p]["rate"] * 60
            rows.append((f"floor: a sequential {'curl' if p == 'http' else 'sh'} loop ({p})", "-",
                         f"{per_minute:.2f}", f"{per_minute:.2f}",
                         f"{f['probes'] / f['elapsed']:.1f}"))  # fmt: skip
        if rows:
            _print_probes(rows, args.seconds)
        if not args.skip_ps:
            (base / "big").mkdir()
            big = Forkwell(base / "big", args.big, 10)
            try:
                floor_ms = median_ms([PY, "-c", "pass"], args.runs)
                ps_ms = median_ms(big.cmd("ps"), args.runs)
                json_ms = median_ms(big.cmd("ps", "--json"), args.runs)
            finally:
                big.close()
    if not args.skip_ps:
        print(f"\nps, {args.big} instances (medians of {args.runs}):")
        print(f"python -c pass          {floor_ms:6.1f} ms")
        print(f"forkwell ps             {ps_ms:6.1f} ms  {ps_ms / floor_ms:.2f}x")
        print(f"forkwell ps --json      {json_ms:6.1f} ms  {json_ms / floor_ms:.2f}x")


if __name__ == "__main__":
    main()
