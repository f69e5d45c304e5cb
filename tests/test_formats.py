"""Procfile, supervisord.conf and process-compose.yaml: how forkwell reads each, its
errors, the default file search, and `forkwell convert` round trips for every fixture."""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import subprocess
import textwrap
from pathlib import Path

import helpers
import pytest
from helpers import PY

from forkwell import ConfigError, load_config
from forkwell._supervisor._formats._convert import render
from forkwell._supervisor._formats._detect import detect, find_default
from forkwell._supervisor._formats._load import load, read
from forkwell._supervisor._formats._procfile import ProcfileOptions

FIXTURES = Path(__file__).parent / "fixtures" / "formats"
FIXTURE_FILES = sorted(
    p.relative_to(FIXTURES) for p in FIXTURES.glob("*/*") if p.name[0] != "." and p.is_file()
    and p.name != "README.md" and p.parent.name not in ("conf.d", "more")
)


def fixture(tmp_path: Path, name: str) -> Path:
    """A copy of fixture directory ``name`` (the supervisord ones need their log dirs)."""
    dest = tmp_path / name
    shutil.copytree(FIXTURES / name, dest)
    for sub in ("logs", "run"):
        (dest / sub).mkdir(exist_ok=True)
    return dest


@pytest.fixture(autouse=True)
def fixture_user(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIXTURE_USER", getpass.getuser())


def fw(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PY, "-m", "forkwell", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=30, env={**os.environ, **(env or {})})  # fmt: skip


# -- which file, which format ------------------------------------------------------------


@pytest.mark.parametrize(("name", "fmt"), [
    ("Procfile", "procfile"), ("Procfile.dev", "procfile"), ("app.procfile", "procfile"),
    ("supervisord.conf", "supervisord"), ("x.conf", "supervisord"), ("x.ini", "supervisord"),
    ("process-compose.yaml", "process-compose"), ("process-compose.yml", "process-compose"),
    ("fleet.yaml", "process-compose"), ("forkwell.toml", "toml"), ("anything", "toml"),
    ("Procfile.toml", "toml"),
])  # fmt: skip
def test_the_format_comes_from_the_file_name(name: str, fmt: str) -> None:
    assert detect(f"some/dir/{name}") == fmt
    assert detect(name, "supervisord") == "supervisord"


def test_the_search_order_without_c(tmp_path: Path) -> None:
    assert find_default(str(tmp_path)) is None
    for name in ("supervisord.conf", "process-compose.yaml", "Procfile", "forkwell.toml"):
        (tmp_path / name).write_text("")
        assert find_default(str(tmp_path)) == name
    (tmp_path / "forkwell.toml").unlink()
    (tmp_path / "Procfile").write_text("web: sleep 1\n")
    r = fw("check", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stderr.splitlines()[0] == "forkwell check: using ./Procfile (no -c given)"
    assert r.stdout.startswith("Procfile: ok (procfile; 1 program, 1 instance;")


def test_format_forces_a_reader(tmp_path: Path) -> None:
    (tmp_path / "fleet.txt").write_text("web: sleep 1\n")
    assert fw("check", "-c", "fleet.txt", "--format", "procfile", cwd=tmp_path).returncode == 0
    r = fw("check", "-c", "fleet.txt", "--format", "yaml", cwd=tmp_path)
    assert r.returncode == 2
    assert "--format: invalid format 'yaml' (choose from procfile, supervisord, " in r.stderr


# -- Procfile --------------------------------------------------------------------------


def test_procfile_entries_as_honcho_and_foreman_read_them(tmp_path: Path) -> None:
    d = fixture(tmp_path, "procfile-honcho")
    config = load(d / "Procfile").config
    assert list(config.programs) == ["web", "worker", "clock", "release-task"]
    web = config.programs["web"]
    assert web.command == ("/bin/sh", "-c", 'echo "web on $PORT"; exec sleep 1000')
    assert config.programs["clock"].command[2] == "exec sleep 1000"
    assert web.instance_names() == ["web.1"]
    assert [p.port for p in config.programs.values()] == [5000, 5100, 5200, 5300]
    assert web.environment["GREETING"] == "hello world"
    assert web.environment["ESCAPED"] == "one\ntwo"
    assert web.name_variables == ("PS", "HONCHO_PROCESS_NAME")
    assert (web.restart, web.min_uptime, web.stop_timeout) == ("never", 0.0, 5.0)
    # foreman's and honcho's rule: the first to exit stops all, and gives its status
    assert config.supervisor.exit_when == "any-exit"
    # .env is the supervisor's env_file (read again on reload), missing is no error
    assert config.supervisor.env_file == ((d / ".env").absolute(),)
    (d / ".env").unlink()
    assert load(d / "Procfile").config.supervisor.env_file == ()


def test_procfile_formation_port_and_options(tmp_path: Path) -> None:
    d = fixture(tmp_path, "procfile-honcho")
    opts = ProcfileOptions(formation=("all=2", "web=3,clock=0"), port=8000, timeout=2,
                           restart=True)  # fmt: skip
    config = load(d / "Procfile", procfile=opts).config
    counts = {name: p.numprocs for name, p in config.programs.items()}
    assert counts == {"web": 3, "worker": 2, "clock": 0, "release-task": 2}
    assert [p.port for p in config.programs.values()] == [8000, 8100, 8200, 8300]
    assert config.programs["worker"].instance_names() == ["worker.1", "worker.2"]
    web = config.programs["web"]
    assert (web.restart, web.min_uptime, web.stop_timeout) == ("on-failure", 1.0, 2.0)
    assert config.supervisor.exit_when == "never"  # --restart: forkwell's supervision


def test_procfile_port_base_from_dotenv_then_environment(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    d = fixture(tmp_path, "procfile-foreman")
    monkeypatch.setenv("PORT", "9000")
    config = load(d / "Procfile").config
    assert [p.port for p in config.programs.values()] == [7000, 7100]  # .env's PORT first
    (d / ".env").write_text("A=1\n")
    assert load(d / "Procfile").config.programs["web"].port == 9000
    monkeypatch.delenv("PORT")
    assert load(d / "Procfile").config.programs["web"].port == 5000


def test_procfile_env_files_chosen_with_e(tmp_path: Path) -> None:
    d = fixture(tmp_path, "procfile-foreman")
    (d / "one.env").write_text("A=1\nB=1\n")
    (d / "two.env").write_text("B=2\n")
    opts = ProcfileOptions(env_files=(f"{d}/one.env,{d}/two.env",))
    env = load(d / "Procfile", procfile=opts).config.programs["web"].environment
    assert (env["A"], env["B"]) == ("1", "2")
    assert "APP_ENV" not in env  # .env is not read when -e names others
    (d / "bad.env").write_text("A=1\nnot a line\n")
    with pytest.raises(ConfigError) as bad:
        load(d / "Procfile", procfile=ProcfileOptions(env_files=(f"{d}/bad.env",)))
    assert bad.value.errors == [f"{d}/bad.env:2: expected KEY=VALUE, got 'not a line'"]


@pytest.mark.timeout(60)
def test_reload_reads_the_procfile_env_again(tmp_path: Path) -> None:
    """.env is [supervisor] env_file: `forkwell reload` reads it again and restarts what changed."""
    (tmp_path / "Procfile").write_text('web: echo "v=$V"; exec sleep 1000\n')
    (tmp_path / ".env").write_text("V=one\n")
    log = tmp_path / "up.log"
    with log.open("w") as sink:
        up = subprocess.Popen([PY, "-m", "forkwell", "up", "-c", "Procfile"], cwd=tmp_path,
                              stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)  # fmt: skip
    try:
        helpers.wait_until(lambda: "| v=one" in log.read_text(), 20, "web.1 printing v=one")
        (tmp_path / ".env").write_text("V=two\n")
        done = fw("reload", "-c", "Procfile", cwd=tmp_path)
        assert done.returncode == 0, done.stdout + done.stderr
        helpers.wait_until(lambda: "| v=two" in log.read_text(), 20, "web.1 printing v=two")
    finally:
        up.send_signal(signal.SIGTERM)
        assert up.wait(timeout=30) == 0, log.read_text()


# -- supervisord.conf -------------------------------------------------------------------


def test_supervisord_sample_every_section(tmp_path: Path) -> None:
    d = fixture(tmp_path, "supervisord-sample")
    loaded = load(d / "supervisord.conf")
    config = loaded.config
    assert config.supervisor.socket == d / "run" / "supervisor.sock"
    assert config.supervisor.log_dir == d / "logs"
    assert list(config.programs) == ["numbered_01", "numbered_02", "numbered_03", "cat",
                                     "oneshot"]  # fmt: skip
    names = [n for p in config.programs.values() for n in p.instance_names()]
    assert names == ["numbered:numbered_01", "numbered:numbered_02", "numbered:numbered_03",
                     "cat", "oneshot"]  # fmt: skip
    n2 = config.programs["numbered_02"]
    assert n2.command == ("sh", "-c", "echo numbered 2 of 3; exec sleep 1000")
    assert n2.environment["NUM"] == "2" and n2.environment["SHARED"] == "mine"
    assert n2.environment["HOST"] == os.uname().nodename
    assert (n2.restart, n2.stop_signal, n2.stop_timeout, n2.priority) == ("always", 2, 3.0, 5)
    cat = config.programs["cat"]
    assert (cat.umask, cat.stop_signal, cat.redirect_stderr, cat.start_retries) == (
        0o22, 3, True, 4)
    assert (cat.log_max_bytes, cat.log_backups) == (1 << 20, 10)
    assert cat.environment["A"] == "1" and cat.environment["SAMPLE_GLOBAL"] == "from supervisord"
    oneshot = config.programs["oneshot"]
    assert (oneshot.restart, oneshot.min_uptime, oneshot.success_exit_codes) == (
        "never", 0.0, frozenset({0, 2}))
    assert ("[inet_http_server]: ignored (forkwell's control socket is a Unix socket; its web "
            "page and API are [supervisor] http, e.g. forkwell up --http 127.0.0.1:9001)"
            in loaded.ignored)  # fmt: skip
    # supervisord has no liveness check, no env file, no essential program: nothing is set
    assert {(p.liveness, p.env_file, p.essential) for p in config.programs.values()} == {
        (None, (), False)}
    assert config.supervisor.exit_when == "never"
    assert "[program:cat] stdout_capture_maxbytes: ignored (no forkwell equivalent)" \
        in loaded.ignored
    assert len(loaded.ignored) == len(set(loaded.ignored))


def test_supervisord_includes_here_and_percent(tmp_path: Path) -> None:
    d = fixture(tmp_path, "supervisord-include")
    config = load(d / "supervisord.conf").config
    assert list(config.programs) == ["extra", "a", "b"]  # priority 1 first, then a, b sorted
    assert config.programs["b"].command == ("echo", "b", "in", str(d / "conf.d"))
    assert config.programs["b"].directory == d / "conf.d"
    assert config.programs["a"].command == ("printenv", "A_VALUE")  # a continuation line
    assert config.programs["extra"].command == ("echo", "100%", "done")


def test_supervisord_groups_and_environment_quoting(tmp_path: Path) -> None:
    d = fixture(tmp_path, "supervisord-groups")
    config = load(d / "supervisord.conf").config
    names = [n for p in config.programs.values() for n in p.instance_names()]
    assert names == ["web:api-0", "web:api-1", "web:front", "solo"]
    assert config.programs["front"].command[2].startswith("echo web/front;")
    api = config.programs["api-1"]
    assert api.process_group == "web"
    assert api.environment["QUOTED"] == "a=b,c"
    assert api.environment["URL"] == "http://localhost:8000/x"
    assert api.environment["SINGLE"] == "single quoted"
    assert api.environment["SPACES"] == "a b" and api.environment["COMMA"] == "x,y"
    assert api.environment["SUPERVISOR_GROUP_NAME"] == "web"
    assert config.programs["solo"].user == getpass.getuser()
    # [supervisord] umask is supervisord's own, which every program inherits
    assert {p.umask for p in config.programs.values()} == {0o027}
    assert not [i for i in load(d / "supervisord.conf").ignored if "nodaemon" in i or "umask" in i]


# -- process-compose.yaml ------------------------------------------------------------------


def test_compose_every_key_forkwell_reads(tmp_path: Path) -> None:
    d = fixture(tmp_path, "compose-full")
    loaded = load(d / "process-compose.yaml")
    programs = loaded.config.programs
    db, migrate, web, tool = (programs[n] for n in ("db", "migrate", "web", "tool"))
    assert db.command == ("bash", "-c", "echo db ready; exec sleep 1000")
    assert db.directory == Path("/tmp").resolve()
    assert db.environment == {"GLOBAL_VAR": "global", "BUILD_ID": "build-42", "DB_PORT": "5433"}
    assert (db.ready.kind, db.ready.command, db.ready_timeout) == ("cmd", "test -d /tmp", 5.0)
    assert (db.stop_signal, db.stop_timeout) == (2, 4.0)
    assert migrate.depends_on == ("db",) and migrate.restart == "never"
    assert migrate.essential == "on-failure"  # restart: exit_on_failure
    # liveness_probe: exec, and its timing as forkwell's liveness_* keys
    assert (db.liveness.kind, db.liveness.command) == ("cmd", "test -d /tmp")
    assert (db.liveness_delay, db.liveness_period, db.liveness_timeout,
            db.liveness_failures) == (2.0, 5.0, 3.0, 4)  # fmt: skip
    # http_get: the URL process-compose builds (host 127.0.0.1, scheme http, path / by default)
    assert str(web.ready) == "http://127.0.0.1:8080/ready"
    assert web.ready_timeout == 30.0  # 0 + 10 s * 3, process-compose's defaults
    assert str(web.liveness) == "https://localhost:8443/health"
    assert web.liveness_period == 10.0  # period_seconds below 1: process-compose's default
    assert web.env_file == ((d / ".web.env").absolute(),)
    assert web.environment["WEB_MODE"] == "from env_file"
    server, tests = programs["server"], programs["tests"]
    assert str(server.ready) == r"log:accept\ connections\ \(v1\.2\)"
    assert tests.depends_on == ("server",) and tests.essential is True  # exit_on_end
    assert (web.numprocs, web.restart, web.backoff_max, web.start_retries) == (2, "always",
                                                                               2.0, 4)
    assert web.depends_on == ("migrate",)
    assert tool.autostart is False
    assert "processes.tool.namespace: ignored (no forkwell equivalent)" in loaded.ignored
    assert any(i.startswith("processes.db.shutdown.command: not run") for i in loaded.ignored)


def test_compose_without_pyyaml_says_what_to_install(tmp_path: Path) -> None:
    d = fixture(tmp_path, "compose-full")
    code = ("import sys; sys.modules['yaml'] = None\n"
            "from forkwell._cli import main; sys.exit(main(['check', '-c', 'process-compose.yaml']))")  # fmt: skip
    r = subprocess.run([PY, "-c", code], capture_output=True, text=True, cwd=d, timeout=30)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1] == (
        "  process-compose.yaml: reading a process-compose.yaml needs PyYAML: "
        "pip install 'forkwell[yaml]'")


# -- every error: one line naming the file and where, exit 2, nothing started ---------------

ERRORS = [
    ("Procfile", "web: a\nworker: b\nweb: c\n", "Procfile: line 3: duplicate entry 'web' (first on line 1)"),
    ("Procfile", "# nothing\n\n", "Procfile: no entries (expected lines like 'web: python app.py')"),
    ("Procfile", "all: sleep 1\n", "Procfile: line 1 (all): invalid program name 'all'"),
    ("supervisord.conf", "[program:a]\ncommand=x %(nope)s\n",
     "supervisord.conf: [program:a] command: format string 'x %(nope)s' contains names ('nope') which cannot be expanded; available names: "),
    ("supervisord.conf", "[program:a]\ncommand=x %(here)\n",
     "supervisord.conf: [program:a] command: format string 'x %(here)' is badly formatted: incomplete format"),
    ("supervisord.conf", "[program:a]\ncommand=x\nstopsignal=TREM\n",
     "supervisord.conf: [program:a] stopsignal: expected a signal name or number"),
    ("supervisord.conf", "[program:a]\ncommand=x\nstartsecs=soon\n",
     "supervisord.conf: [program:a] startsecs: not an integer: 'soon'"),
    ("supervisord.conf", "[program:a]\ncommand=x\nnumprocs=2\n",
     "supervisord.conf: [program:a] process_name: %(process_num) must be present within process_name when numprocs > 1"),
    ("supervisord.conf", "[program:a]\nnumprocs=1\n",
     "supervisord.conf: [program:a] command: program section program:a does not specify a command"),
    ("supervisord.conf", "[program:a]\ncommand=x\nenvironment=A=1,B\n",
     "supervisord.conf: [program:a] environment: unexpected end of key/value pairs"),
    ("supervisord.conf", "[program:a]\ncommand=x\n[group:g]\nprograms=a,b\n",
     "supervisord.conf: [group:g] programs: names unknown program b"),
    ("supervisord.conf", "[program:a]\ncommand=x\nautorestart=sometimes\n",
     "supervisord.conf: [program:a] autorestart: invalid 'autorestart' value 'sometimes'"),
    ("supervisord.conf", "[fcgi-program:a]\ncommand=x\n",
     "supervisord.conf: [fcgi-program:a]: forkwell does not open FastCGI sockets"),
    ("supervisord.conf", "command=x\n", "supervisord.conf: line 1: expected a [section] header first"),
    ("supervisord.conf", "[program:a]\ncommand=x\n  \n=y\n", "supervisord.conf: line 4: cannot parse '=y'"),
    ("supervisord.conf", "[supervisord]\n", "supervisord.conf: no [program:x] section"),
    ("supervisord.conf", "[supervisord]\numask=9z\n[program:a]\ncommand=x\n",
     "supervisord.conf: [supervisord] umask: 9z can not be converted to an octal type"),
    ("process-compose.yaml", "processes:\n  web:\n    command: [1\n", "process-compose.yaml: invalid YAML: line 4, column 1:"),
    ("process-compose.yaml", "version: 1\n", "process-compose.yaml: processes: required"),
    ("process-compose.yaml", "processes:\n  web:\n    working_dir: /\n",
     "process-compose.yaml: processes.web.command: required"),
    ("process-compose.yaml", "processes:\n  web:\n    command: x\n    replicas: -1\n",
     "process-compose.yaml: processes.web.replicas: expected an integer >= 0, got -1"),
    ("process-compose.yaml", "processes:\n  web:\n    command: x\n    shutdown:\n      signal: 99\n",
     "process-compose.yaml: processes.web.shutdown.signal: expected a signal name or number"),
    ("process-compose.yaml", "processes:\n  web:\n    command: x\n    depends_on:\n      db: {}\n",
     "process-compose.yaml: processes.web.depends_on: unknown program 'db'"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "text", "line"), ERRORS)
def test_every_error_is_one_line_naming_file_and_key(tmp_path: Path, name: str, text: str,
                                                     line: str) -> None:  # fmt: skip
    (tmp_path / name).write_text(text)
    r = fw("up", "-c", name, cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    errors = [e for e in r.stderr.splitlines() if not e.startswith("forkwell up: using")]
    assert any(e.startswith(f"forkwell up: {line}") for e in errors), r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""
    assert not (tmp_path / ".forkwell").exists()  # nothing was started, not even the state file


def test_a_missing_env_file_and_a_bad_formation(tmp_path: Path) -> None:
    (tmp_path / "Procfile").write_text("web: sleep 1\n")
    r = fw("up", "-e", "nope.env", "--concurrency", "wbe=2", cwd=tmp_path)
    assert r.returncode == 2
    assert "forkwell up: Procfile: --env nope.env: no such file" in r.stderr
    assert "forkwell up: Procfile: --formation: no entry 'wbe' in the Procfile (entries: web)" \
        in r.stderr


# -- convert ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [str(p) for p in FIXTURE_FILES])
@pytest.mark.parametrize("where", ["beside", "elsewhere"])
def test_convert_then_load_gives_the_same_config(tmp_path: Path, name: str, where: str) -> None:
    source = fixture(tmp_path, str(Path(name).parent)) / Path(name).name
    original = load(source).config
    out_dir = source.parent if where == "beside" else tmp_path / "elsewhere" / "deep"
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / "converted.toml"
    kind, imported = read(source)
    assert imported is not None
    out.write_text(render(imported, source, kind, out))
    converted = load_config(out)
    assert converted.programs == original.programs
    assert converted.supervisor == original.supervisor
    assert converted.start_order() == original.start_order()
    for ignored in imported.ignored:
        assert f"#   {ignored}" in out.read_text()


def test_convert_command_writes_comments_and_refuses_to_overwrite(tmp_path: Path) -> None:
    d = fixture(tmp_path, "supervisord-sample")
    r = fw("convert", "supervisord.conf", cwd=d)
    assert r.returncode == 0, r.stderr
    text = (d / "forkwell.toml").read_text()
    assert "min_uptime = 1  # supervisord's startsecs: exiting sooner is a failed start" in text
    assert "# Not carried over (no forkwell meaning):" in text
    again = fw("convert", "supervisord.conf", cwd=d)
    assert again.returncode == 1
    assert again.stderr.strip() == "forkwell convert: forkwell.toml exists; choose another -o, or --force"
    assert fw("convert", "supervisord.conf", "--force", cwd=d).returncode == 0
    check = fw("check", "-c", "forkwell.toml", cwd=d)
    assert check.returncode == 0 and "5 programs, 5 instances" in check.stdout
    bad = fw("convert", "forkwell.toml", "-o", "-", cwd=d)
    assert bad.returncode == 2 and "is forkwell.toml already" in bad.stderr


def test_convert_of_a_procfile_keeps_the_command_line_options(tmp_path: Path) -> None:
    d = fixture(tmp_path, "procfile-honcho")
    r = fw("convert", "Procfile", "-m", "web=2", "-p", "6000", "-o", "-", cwd=d)
    assert r.returncode == 0, r.stderr
    out = d / "fleet.toml"
    out.write_text(r.stdout)
    config = load_config(out)
    assert config.programs["web"].instance_names() == ["web.1", "web.2"]
    assert config.programs["worker"].port == 6100


def test_control_commands_find_the_socket_of_every_format(tmp_path: Path) -> None:
    from forkwell._supervisor._control._discovery import find_socket

    d = fixture(tmp_path, "supervisord-sample")
    found = find_socket(None, str(d / "supervisord.conf"), env={})
    assert found == str(d / "run" / "supervisor.sock")
    p = fixture(tmp_path, "procfile-honcho")
    assert find_socket(None, str(p / "Procfile"), env={}) == str(p / ".forkwell" / "forkwell.sock")
    (p / "Procfile").write_text("broken")  # a broken file still finds the default
    assert find_socket(None, str(p / "Procfile"), env={}) == str(p / ".forkwell" / "forkwell.sock")


def test_the_readme_procfile_tour(tmp_path: Path) -> None:
    """`forkwell up -c Procfile` as the README shows it: web.1, worker.1, PORT."""
    (tmp_path / "Procfile").write_text(textwrap.dedent("""\
        web: echo "web listening on $PORT"; exec sleep 1000
        worker: echo "worker $PS"; exec sleep 1000
    """))
    up = subprocess.Popen([PY, "-m", "forkwell", "up", "-c", "Procfile", "--exit-after", "3"],
                          cwd=tmp_path, stdout=subprocess.PIPE, text=True)  # fmt: skip
    out, _ = up.communicate(timeout=30)
    assert up.returncode == 0
    lines = out.splitlines()
    assert any(line.endswith(" web.1    | web listening on 5000") for line in lines), out
    assert any(line.endswith(" worker.1 | worker worker.1") for line in lines), out


def test_a_program_that_exits_before_autostart_is_not_started_again(tmp_path: Path) -> None:
    """prestart() spawns exec-ready programs before the loop; one that has exited by the time
    autostart runs was handled by its restart policy (a Procfile's: never), not run twice."""
    (tmp_path / "forkwell.toml").write_text(textwrap.dedent("""\
        [programs.web]
        command = "sleep 1000"
        [programs.once]
        command = ["sh", "-c", "echo ran; exit 3"]
        restart = "never"
        min_uptime = 0
    """))
    up = fw("up", "--exit-after", "1.5", cwd=tmp_path)
    assert up.returncode == 0, up.stderr
    assert up.stdout.count("| ran") == 1, up.stdout
    assert "once:0 RUNNING -> EXITED (exited with status 3" in up.stdout


def test_docs_formats_names_every_key_the_readers_know() -> None:
    """docs/formats.md has a row for every key a reader maps, notes or ignores by name."""
    from forkwell._cli._options import PROCFILE_OPTIONS
    from forkwell._supervisor._formats import _compose, _supervisord

    doc = (Path(__file__).parent.parent / "docs" / "formats.md").read_text()
    keys = {*_supervisord.PROGRAM_KEYS, *_supervisord.UNMAPPED_PROGRAM_KEYS,
            *_supervisord.SUPERVISORD_KEYS, *_compose.TOP_KEYS, *_compose.PROCESS_KEYS,
            *_compose._CONDITIONS, *_compose._RESTART}  # fmt: skip
    missing = sorted(k for k in keys if f"`{k}" not in doc and f"{k}`" not in doc)
    assert not missing, f"docs/formats.md does not name {missing}"
    sections = [f"[{s}" for s in (*_supervisord.IGNORED_SECTIONS, "eventlistener",
                                  "fcgi-program", "include", "group")]  # fmt: skip
    assert not [s for s in sections if s not in doc]
    flags = [flag for option in PROCFILE_OPTIONS for flag in option.names]
    assert not [f for f in flags if f"`{f}" not in doc and f"/{f}`" not in doc]


# -- process-compose's health keys, run for real -------------------------------------------


def _up_until_exit(d: Path, name: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PY, "-m", "forkwell", "up", "-c", name], cwd=d, capture_output=True,
                          text=True, timeout=30, stdin=subprocess.DEVNULL)  # fmt: skip


@pytest.mark.timeout(60)
def test_compose_exit_on_end_after_a_log_ready_dependency(tmp_path: Path) -> None:
    """tests waits for server's ready_log_line (process_log_ready), then its end (exit_on_end)
    stops server and gives forkwell up its status, as process-compose does."""
    pytest.importorskip("yaml", reason="pip install 'forkwell[yaml]'")
    (tmp_path / "process-compose.yaml").write_text(textwrap.dedent("""\
        processes:
          server:
            command: "echo booting; echo 'ready to accept connections'; exec sleep 1000"
            ready_log_line: "ready to accept connections"
          tests:
            command: "echo running tests; exit 4"
            depends_on:
              server:
                condition: process_log_ready
            availability:
              exit_on_end: true
    """))
    up = _up_until_exit(tmp_path, "process-compose.yaml")
    assert up.returncode == 4, up.stdout + up.stderr
    out = up.stdout
    assert out.index("server:0 STARTING -> RUNNING") < out.index("| running tests")
    assert "essential tests:0 exited and is not restarted: stopping everything" in out
    assert "server:0 STOPPING -> STOPPED" in out


@pytest.mark.timeout(60)
@pytest.mark.parametrize("status", [0, 5])
def test_compose_exit_on_failure_ends_the_run_only_on_a_failure(tmp_path: Path,
                                                                 status: int) -> None:  # fmt: skip
    pytest.importorskip("yaml", reason="pip install 'forkwell[yaml]'")
    (tmp_path / "process-compose.yaml").write_text(textwrap.dedent(f"""\
        processes:
          check:
            command: "echo checking; exit {status}"
            availability:
              restart: exit_on_failure
          app:
            command: "echo app up; exec sleep 1000"
            depends_on:
              check:
                condition: process_completed_successfully
    """))
    if status:
        up = _up_until_exit(tmp_path, "process-compose.yaml")
        assert up.returncode == status, up.stdout + up.stderr
        assert f"check:0 exited and is not restarted: stopping everything, then exiting with " \
               f"status {status}" in up.stdout
        return
    log = tmp_path / "up.log"
    with log.open("w") as sink:
        proc = subprocess.Popen([PY, "-m", "forkwell", "up", "-c", "process-compose.yaml"],
                                cwd=tmp_path, stdout=sink, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)  # fmt: skip
    try:  # a successful check lets the others run on
        helpers.wait_until(lambda: "| app up" in log.read_text(), 20, "app to start")
        assert proc.poll() is None, log.read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, log.read_text()
    assert "stopping everything" not in log.read_text()
    assert log.read_text().count("| checking") == 1  # a job done well is not run again for app


@pytest.mark.timeout(60)
def test_compose_http_probes_ready_and_liveness(tmp_path: Path) -> None:
    """readiness_probe.http_get makes it ready at the first 200; a liveness_probe.http_get
    that gets a 404 restarts it after failure_threshold failures."""
    pytest.importorskip("yaml", reason="pip install 'forkwell[yaml]'")
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (tmp_path / "process-compose.yaml").write_text(textwrap.dedent(f"""\
        processes:
          web:
            command: "exec {PY} -m http.server {port} --bind 127.0.0.1"
            readiness_probe:
              http_get:
                port: {port}
                path: /
            liveness_probe:
              http_get:
                port: {port}
                path: /no-such-page
              period_seconds: 1
              failure_threshold: 2
            availability:
              restart: always  # with "no" (the default) a failed liveness probe only stops it
    """))
    log = tmp_path / "up.log"
    with log.open("w") as sink:
        proc = subprocess.Popen([PY, "-m", "forkwell", "up", "-c", "process-compose.yaml"],
                                cwd=tmp_path, stdout=sink, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)  # fmt: skip
    try:
        helpers.wait_until(lambda: log.read_text().count("web:0 STARTING -> RUNNING") >= 2, 30,
                           "web to be ready, fail its liveness probe and be ready again")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, log.read_text()
    text = log.read_text()
    assert f"http://127.0.0.1:{port}/no-such-page returned 404 (2 times in a row)" in text, text
    assert f"ready (http://127.0.0.1:{port}/ answered) after" in text, text
