"""`forkwell scale` across `reload`: a count set at run time stays until the file's changes.

kubectl apply's rule: a reload applies what changed in the file since it was
last read; a numprocs the file still says what it said is not a change, so the
run-time count stays (and reload names it).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from helpers import PY, wait_until
from test_supervisor_harness import all_gone, cmd, config, drive

from forkwell import Supervisor


def test_a_run_time_scale_survives_a_reload_until_the_file_changes_numprocs(
    tmp_path: Path,
) -> None:
    path = tmp_path / "forkwell.toml"
    cfg = config(tmp_path, f"""
        [programs.worker]
        command = {cmd("sleep", "1000")}
        numprocs = 2
        [programs.web]
        command = {cmd("sleep", "1000")}
        """)  # fmt: skip

    async def body(sup: Supervisor) -> None:
        await sup.scale("worker", 3)
        pids = {i.name: i.pid for i in sup.instances()}
        # An unrelated change: the run-time count stays, nothing of worker restarts.
        path.write_text(path.read_text().replace('[programs.web]\n', '[programs.web]\n'
                                                 'environment = { X = "1" }\n'))  # fmt: skip
        report = await sup.reload()
        assert (report.changed, report.scaled, report.kept) == (["web"], [], ["worker"])
        after = {i.name: i.pid for i in sup.instances()}
        assert [n for n in after if n.startswith("worker")] == ["worker:0", "worker:1", "worker:2"]
        assert all(after[n] == pids[n] for n in after if n.startswith("worker"))
        # A change of worker itself (not its count) restarts it at its run-time count.
        path.write_text(path.read_text().replace("numprocs = 2", "numprocs = 2\nstop_timeout = 3"))
        report = await sup.reload()
        assert (report.changed, report.kept) == (["worker"], ["worker"])
        assert len([i for i in sup.instances() if i.program == "worker"]) == 3
        # The file's own count changes: the file wins.
        gone = [i.pid for i in sup.instances() if i.program == "worker"]
        path.write_text(path.read_text().replace("numprocs = 2", "numprocs = 1"))
        report = await sup.reload()
        assert (report.scaled, report.kept) == (["worker"], [])
        assert [i.name for i in sup.instances() if i.program == "worker"] == ["worker:0"]
        assert all_gone([p for p in gone[1:] if p])
        # And a reload with nothing changed keeps nothing: the count is the file's again.
        report = await sup.reload()
        assert (report.unchanged, report.kept) == (["worker", "web"], [])

    drive(cfg, body)


def test_reload_says_which_run_time_counts_it_kept(tmp_path: Path) -> None:
    cfg = tmp_path / "forkwell.toml"
    cfg.write_text(f"[programs.worker]\ncommand = {cmd('sleep', '1000')}\nnumprocs = 1\n")
    up = subprocess.Popen([PY, "-m", "forkwell", "up", "-c", str(cfg), "--quiet"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip

    def ctl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([PY, "-m", "forkwell", *args, "-c", str(cfg)], capture_output=True,
                              text=True, timeout=30)  # fmt: skip

    try:
        wait_until(lambda: ctl("ps").returncode == 0, 20, "the fleet to be up")
        assert ctl("scale", "worker=3").returncode == 0
        r = ctl("reload")
        assert (r.returncode, r.stdout) == (0, "kept their 'forkwell scale' count (the file's "
                                            "numprocs did not change): worker\n"
                                            "unchanged: 1 program\nnothing to do\n")  # fmt: skip
        assert ctl("ps").stdout.count("worker:") == 3
    finally:
        assert ctl("down").returncode == 0
        up.wait(30)
