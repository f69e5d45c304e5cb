"""Side by side with the originals: the real honcho and the real supervisor (the test extra).

* The same Procfile and .env run under ``honcho start`` and under ``forkwell
  up``: every process dumps its environment; each gets the same PORT,
  HONCHO_PROCESS_NAME and environment from both (PS is foreman's, which
  honcho does not set; FORKWELL_* are forkwell's own).
* The same supervisord.conf read by ``supervisor.options.ServerOptions`` and
  by forkwell: the same process names, expanded commands, numprocs,
  environment and the settings forkwell maps.
"""

from __future__ import annotations

import configparser
import getpass
import os
import shlex
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from helpers import PY, wait_until

from forkwell._supervisor._formats._load import load

FIXTURES = Path(__file__).parent / "fixtures" / "formats"
honcho = pytest.importorskip("honcho", reason="pip install -e '.[test]' (honcho)")
supervisor_options = pytest.importorskip("supervisor.options",
                                         reason="pip install -e '.[test]' (supervisor)")  # fmt: skip

# What differs by design: forkwell's own variables, and what a shell sets for itself.
NOT_COMPARED = {"PS", "PWD", "OLDPWD", "SHLVL", "_"}


def _dump_env_procfile(d: Path) -> None:
    """The honcho fixture's Procfile, each entry also dumping its environment (NUL-separated)."""
    lines = []
    for line in (FIXTURES / "procfile-honcho" / "Procfile").read_text().splitlines():
        name, colon, command = line.partition(":")
        if colon and name.replace("-", "").replace("_", "").isalnum():
            command = f"env -0 > {d}/out/$HONCHO_PROCESS_NAME.tmp && mv {d}/out/$HONCHO_PROCESS_NAME.tmp {d}/out/$HONCHO_PROCESS_NAME; exec sleep 1000"
        lines.append(f"{name}{colon}{command}" if colon else line)
    (d / "Procfile").write_text("\n".join(lines) + "\n")


def _run_until_dumped(argv: list[str], d: Path, expected: int) -> dict[str, dict[str, str]]:
    out = d / "out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    log = d / "peer.log"
    env = {k: v for k, v in os.environ.items() if k != "PORT"}
    with log.open("w") as sink:
        proc = subprocess.Popen(argv, cwd=d, env=env, stdout=sink, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip

    def settled() -> bool:
        dumped = [p for p in out.iterdir() if not p.name.endswith(".tmp")]
        # honcho crashes on a SIGTERM that comes before it has logged every
        # start (KeyError 'pid' in Manager._killall) and leaves its children
        # running: wait for its "started (pid=" lines too.  forkwell is --quiet.
        started = "honcho" not in argv or log.read_text().count(" started (pid=") == expected
        return len(dumped) == expected and started

    try:
        wait_until(settled, 20, f"{expected} environment dumps from {argv[2]}")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        finally:
            if proc.poll() is None:  # pragma: no cover - only if a peer hangs
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    dumps = {}
    for path in out.iterdir():
        pairs = [item.partition("=") for item in path.read_text().split("\0") if item]
        dumps[path.name] = {k: v for k, _, v in pairs if k not in NOT_COMPARED
                            and not k.startswith("FORKWELL_")}  # fmt: skip
    return dumps


@pytest.mark.timeout(90)
@pytest.mark.parametrize(("formation", "port"), [((), None), (("web=2", "clock=0"), "6000")])
def test_honcho_and_forkwell_give_each_process_the_same_environment(
    tmp_path: Path, formation: tuple[str, ...], port: str | None
) -> None:
    shutil.copy(FIXTURES / "procfile-honcho" / ".env", tmp_path / ".env")
    _dump_env_procfile(tmp_path)
    honcho_args = [PY, "-m", "honcho", "start"]
    forkwell_args = [PY, "-m", "forkwell", "up", "-c", "Procfile", "--quiet"]
    if formation:
        honcho_args += ["-c", ",".join(formation)]
        forkwell_args += ["--concurrency", ",".join(formation)]
    if port:
        honcho_args += ["-p", port]
        forkwell_args += ["-p", port]
    expected = 4  # web, worker, clock, release-task; or web=2 and clock=0
    theirs = _run_until_dumped(honcho_args, tmp_path, expected)
    ours = _run_until_dumped(forkwell_args, tmp_path, expected)
    assert sorted(ours) == sorted(theirs)
    for name in theirs:
        assert ours[name] == theirs[name], name
    assert ours["web.1"]["PORT"] == (port or "5000")
    assert ours["release-task.1"]["PORT"] == str(int(port or 5000) + 300)
    assert ours["worker.1"]["GREETING"] == "hello world"


def _supervisor_processes(conf: Path) -> tuple[dict[str, object], int | None]:
    """supervisord's processes by supervisorctl name, and its own umask (they inherit it)."""
    options = supervisor_options.ServerOptions()
    options.configfile = str(conf)
    options.here = str(conf.parent)
    section = options.read_config(str(conf))
    found = {}
    for group in section.process_group_configs:
        if type(group).__name__ != "ProcessGroupConfig":
            continue  # event listener pools: forkwell does not run them (it says so)
        # Within a group supervisord starts every process in the same tick and
        # stops them by priority (ProcessGroup.stop_all sorts them): that order.
        for p in sorted(group.process_configs, key=lambda p: p.priority):
            name = p.name if p.name == group.name else f"{group.name}:{p.name}"
            found[name] = (group.name, p)
    # supervisord sets its umask to 022 when none is given; forkwell then leaves it alone.
    told = configparser.RawConfigParser(strict=False)
    told.read(conf)
    return found, section.umask if told.has_option("supervisord", "umask") else None


@pytest.mark.parametrize("name", ["supervisord-sample", "supervisord-include",
                                  "supervisord-groups"])  # fmt: skip
def test_supervisor_options_and_forkwell_compute_the_same_processes(
    tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FIXTURE_USER", getpass.getuser())
    d = tmp_path / name
    shutil.copytree(FIXTURES / name, d)
    for sub in ("logs", "run"):
        (d / sub).mkdir(exist_ok=True)
    conf = d / "supervisord.conf"
    theirs, daemon_umask = _supervisor_processes(conf)
    ours = {p.instance_names()[0]: p for p in load(conf).config.programs.values()}
    assert list(ours) == list(theirs)  # the same names, numprocs, in the same order
    for spec, (group, p) in theirs.items():
        mine = ours[spec]
        assert mine.command == tuple(shlex.split(p.command)), spec
        own = {k: v for k, v in mine.environment.items() if not k.startswith("SUPERVISOR_")}
        assert own == p.environment, spec
        assert mine.environment["SUPERVISOR_PROCESS_NAME"] == p.name
        assert mine.environment["SUPERVISOR_GROUP_NAME"] == group
        assert mine.process_group == group
        assert mine.priority == p.priority
        assert mine.autostart == p.autostart
        assert mine.stop_signal == p.stopsignal
        assert mine.stop_timeout == p.stopwaitsecs
        assert mine.min_uptime == p.startsecs
        assert mine.start_retries == p.startretries + 1
        assert mine.success_exit_codes == frozenset(p.exitcodes)
        assert mine.redirect_stderr == p.redirect_stderr
        assert mine.umask == (daemon_umask if p.umask is None else p.umask)
        if p.directory is not None:
            assert mine.directory == Path(p.directory).resolve()
        assert mine.user == (None if p.uid is None else getpass.getuser())
        if p.stdout_logfile_maxbytes:
            assert mine.log_max_bytes == p.stdout_logfile_maxbytes
        assert mine.log_backups == p.stdout_logfile_backups


def _alive(pid: int) -> bool:
    """Running (a zombie has ended: only its exit status is left)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("ending", "theirs_status", "ours_status"), [
    ("exit 3", 3, 3),
    # Killed by a signal: honcho exits with sys.exit(-15), which the kernel
    # truncates to 241; forkwell says 128+15, as a shell does.
    ("kill -TERM $$", 241, 143),
])  # fmt: skip
def test_the_first_exit_stops_all_in_honcho_and_forkwell(
    tmp_path: Path, ending: str, theirs_status: int, ours_status: int
) -> None:
    """One entry ends once the other is up (a FIFO handshake): both runners stop the other's
    whole tree (its grandchild included) and exit with the status of the one that ended."""
    (tmp_path / "Procfile").write_text(
        "web: sleep 1000 & echo $! > web.grandchild; echo $$ > web.pid; "
        "echo up > ready.fifo; wait\n"
        f"fail: read line < ready.fifo; echo ending; {ending}\n"
    )
    runners = {"honcho": [PY, "-m", "honcho", "start"],
               "forkwell": [PY, "-m", "forkwell", "up", "-c", "Procfile"]}  # fmt: skip
    status = {}
    for who, argv in runners.items():
        for name in ("ready.fifo", "web.pid", "web.grandchild"):
            (tmp_path / name).unlink(missing_ok=True)
        os.mkfifo(tmp_path / "ready.fifo")
        proc = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=30,
                              stdin=subprocess.DEVNULL)  # fmt: skip
        status[who] = proc.returncode
        pids = [int((tmp_path / n).read_text()) for n in ("web.pid", "web.grandchild")]
        assert not [p for p in pids if _alive(p)], f"{who} left web's tree running"
        assert "ending" in proc.stdout, (who, proc.stdout, proc.stderr)
    assert status == {"honcho": theirs_status, "forkwell": ours_status}
