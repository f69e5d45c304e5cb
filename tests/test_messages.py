"""What a new user reads: exit statuses that tell the truth, messages that point the right way.

Each message is checked word for word (timings aside): wording is what this file is for.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers import IS_ROOT, PY, public_sources, running, wait_until

import forkwell

pytestmark = pytest.mark.timeout(60)


def fw(*args: str, cwd: Path | None = None, timeout: float = 40) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "FORKWELL_SOCKET"}
    return subprocess.run([PY, "-m", "forkwell", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, env=env)  # fmt: skip


def config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "forkwell.toml"
    path.write_text("[supervisor]\nshutdown_timeout = 10\n\n" + textwrap.dedent(text))
    return path


FATAL = re.compile(r"(\S+):0 is FATAL: exited with status 78 after [0-9.]+s "
                   r"\(min_uptime 1s\) \(1 failed starts?\)")  # fmt: skip


# -- exit statuses -------------------------------------------------------------------


def test_exit_after_exits_3_naming_what_was_fatal(tmp_path: Path) -> None:
    cfg = config(tmp_path, """
        [programs.ok]
        command = "sleep 100"
        [programs.broken]
        command = "sh -c 'exit 78'"
        start_retries = 1
        [programs.manual]
        command = "sh -c 'exit 78'"
        autostart = false
        """)  # fmt: skip
    r = fw("up", "-c", str(cfg), "--quiet", "--exit-after", "3")
    assert r.returncode == 3, r
    assert r.stderr == ("forkwell up: --exit-after: 1 autostart instance was FATAL when the "
                        "time was up: broken:0\n")  # fmt: skip


def test_exit_after_exits_0_when_all_is_well(tmp_path: Path) -> None:
    cfg = config(tmp_path, '[programs.ok]\ncommand = "sleep 100"\n[programs.job]\n'
                 'command = "true"\nmin_uptime = 0\n')  # fmt: skip
    r = fw("up", "-c", str(cfg), "--quiet", "--exit-after", "0.5")
    assert (r.returncode, r.stderr) == (0, "")


# -- forkwell up --detach --------------------------------------------------------------


def test_detach_lists_every_failed_instance_in_its_own_words(tmp_path: Path) -> None:
    cfg = config(tmp_path, "".join(
        f"[programs.b{i}]\ncommand = \"sh -c 'exit 78'\"\nstart_retries = 1\n" for i in range(7)))
    r = fw("up", "-c", str(cfg), "--detach")
    assert (r.returncode, r.stdout) == (1, ""), r
    lines = r.stderr.splitlines()
    assert all(line.startswith("forkwell up: ") for line in lines), r.stderr
    assert "Error" not in r.stderr and "daemon failed" not in r.stderr
    failed = [FATAL.fullmatch(line.removeprefix("forkwell up: ")) for line in lines[:5]]
    assert all(failed), lines
    assert sorted(m.group(1) for m in failed if m) <= [f"b{i}" for i in range(7)]
    log = tmp_path / ".forkwell" / "logs" / "forkwell.log"
    assert lines[5:] == [
        f"forkwell up: and 2 more; all of them: grep -F ' is FATAL' {log} | tail -n 7",
        "forkwell up: 7 autostart instances were not started; nothing is left running",
    ]
    listed = subprocess.run(f"grep -F ' is FATAL' {log} | tail -n 7", shell=True, text=True,
                            capture_output=True).stdout  # fmt: skip
    assert sorted(re.findall(r"(b\d):0 is FATAL", listed)) == [f"b{i}" for i in range(7)]
    assert not (tmp_path / ".forkwell" / "state.json").exists()


def test_detach_refuses_a_second_supervisor_before_forking(tmp_path: Path) -> None:
    cfg = config(tmp_path, '[programs.svc]\ncommand = "sleep 1000"\n')
    first = fw("up", "-c", str(cfg), "--detach")
    assert first.returncode == 0, first
    daemon = json.loads((tmp_path / ".forkwell" / "state.json").read_text())["pid"]
    try:
        second = fw("up", "-c", str(cfg), "--detach")
        assert (second.returncode, second.stdout) == (1, "")
        assert second.stderr == (f"forkwell up: another forkwell up is running for {cfg} (pid "
                                 f"{daemon}); stop it with 'forkwell down' first\n")  # fmt: skip
    finally:
        assert fw("down", "-c", str(cfg)).returncode == 0
    assert not running(daemon)


@pytest.fixture
def unwritable(tmp_path: Path) -> tuple[Path, list[str]]:
    """A directory `forkwell up` cannot create .forkwell in, and how to run it there."""
    if not IS_ROOT:
        tmp_path.chmod(0o555)
        return tmp_path, []
    # Root writes anywhere: run as nobody, in a directory nobody may read but not write.
    public = Path(tempfile.mkdtemp(prefix="forkwell-msg-"))
    public.chmod(0o755)
    return public, ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]


def test_an_unwritable_state_directory_is_named_with_how_to_choose_another(
    unwritable: tuple[Path, list[str]],
) -> None:
    where, prefix = unwritable
    try:
        cfg = where / "forkwell.toml"
        cfg.write_text('[programs.svc]\ncommand = "sleep 1000"\n')
        cfg.chmod(0o644)
        env = {**os.environ, "PYTHONPATH": str(public_sources())}
        r = subprocess.run([*prefix, PY, "-m", "forkwell", "up", "-c", str(cfg)], env=env,
                           capture_output=True, text=True, timeout=30)  # fmt: skip
        assert r.returncode == 1, r
        assert r.stderr == (f"forkwell up: cannot create {where}/.forkwell, the supervisor's "
                            "state directory: Permission denied (it holds its log_dir, state_file "
                            f"and socket; choose another place with [supervisor] log_dir, "
                            f"state_file and socket in {cfg})\n")  # fmt: skip
    finally:
        where.chmod(0o755)
        if prefix:
            shutil.rmtree(where)


# -- check and up warn about what cannot work -----------------------------------------


def test_check_and_up_warn_about_a_command_not_on_path(tmp_path: Path) -> None:
    (tmp_path / "app").write_text("#!/bin/sh\n")  # not executable
    cfg = config(tmp_path, """
        [programs.web]
        command = "no-such-command-here --port 80"
        environment = { PATH = "/usr/bin:/bin" }
        start_retries = 1
        [programs.rel]
        command = "./app"
        start_retries = 1
        [programs.ok]
        command = "sleep 100"
        """)  # fmt: skip
    label = str(cfg)
    warnings = [
        f"warning: {label}: programs.web.command: 'no-such-command-here' is not found on PATH "
        "(/usr/bin:/bin)",
        f"warning: {label}: programs.rel.command: {tmp_path}/app is not an executable file",
    ]
    r = fw("check", "-c", label)
    assert r.returncode == 0
    assert r.stderr.splitlines() == [f"forkwell check: {w}" for w in warnings]
    up = fw("up", "-c", label, "--quiet", "--exit-after", "0.5")
    assert up.stderr.splitlines()[:2] == [f"forkwell up: {w}" for w in warnings]


def test_an_empty_config_is_warned_about(tmp_path: Path) -> None:
    cfg = tmp_path / "empty.toml"
    cfg.write_text("# nothing yet\n")
    r = fw("check", "-c", str(cfg))
    assert r.returncode == 0
    assert r.stderr == (f"forkwell check: warning: {cfg}: no programs: nothing would run (add a "
                        "[programs.NAME] table)\n")  # fmt: skip


# -- config wording ------------------------------------------------------------------


def errors_of(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "f.toml"
    path.write_text(textwrap.dedent(text))
    with pytest.raises(forkwell.ConfigError) as info:
        forkwell.load_config(path)
    return [e.removeprefix(f"{path}: ") for e in info.value.errors]


def test_an_array_names_the_element_that_is_wrong(tmp_path: Path) -> None:
    assert errors_of(tmp_path, """
        [programs.web]
        command = ["sleep", 100]
        depends_on = ["db", { x = 1 }]
        [programs.db]
        command = ["true", false]
        """) == [
        'programs.web.command: expected a command string or a non-empty array of strings; '
        'element 1 is an integer: quote it, "100"',
        'programs.web.depends_on: expected an array of program names like ["db"] or '
        '{ name = "db", restart = true }; element 1 is a table without name = "PROGRAM"',
        "programs.db.command: expected a command string or a non-empty array of strings; "
        "element 1 is a boolean",
    ]


def test_one_instance_is_said_as_one(tmp_path: Path) -> None:
    from forkwell._supervisor._fleet import Fleet

    cfg = tmp_path / "f.toml"
    cfg.write_text('[programs.web]\ncommand = "true"\n[programs.w]\ncommand = "true"\n'
                   'numprocs = 3\n[programs.z]\ncommand = "true"\nnumprocs = 0\n')  # fmt: skip
    # Naming instances needs no supervisor: a host that only takes notes.
    host = SimpleNamespace(note=lambda line: None)
    fleet = Fleet(host, forkwell.load_config(cfg), lambda: None)  # type: ignore[arg-type]
    said = []
    for name in ("web:1", "w:5", "z:0"):
        with pytest.raises(forkwell.UnknownProgramError) as info:
            fleet.resolve([name])
        said.append(info.value.args[0])
    assert said == [
        "unknown instance 'web:1': web has one instance, web:0",
        "unknown instance 'w:5': w has instances w:0..w:2",
        "unknown instance 'z:0': z has no instances (numprocs 0)",
    ]


def test_a_stopped_detached_supervisor_leaves_no_pid(tmp_path: Path) -> None:
    """--detach's original exits with the daemon's answer; the daemon's SIGTERM stops all."""
    cfg = config(tmp_path, '[programs.svc]\ncommand = "sleep 1000"\n')
    r = fw("up", "-c", str(cfg), "--detach")
    daemon = json.loads((tmp_path / ".forkwell" / "state.json").read_text())["pid"]
    assert r.stdout == f"forkwell up: supervisor running (pid {daemon}), 1 instance up\n"
    os.kill(daemon, signal.SIGTERM)
    wait_until(lambda: not running(daemon), 20, "the daemon to stop")
