"""The supervisor config: every kind of mistake is reported with file, key path and expectation."""

from __future__ import annotations

import signal
import textwrap
from pathlib import Path

import pytest

import forkwell
from forkwell import ConfigError, load_config


def write(tmp_path: Path, text: str, name: str = "forkwell.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def errors_of(tmp_path: Path, text: str) -> list[str]:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == "\n".join(info.value.errors)
    return info.value.errors


def one_error(tmp_path: Path, text: str) -> str:
    errors = errors_of(tmp_path, text)
    assert len(errors) == 1, errors
    assert errors[0].startswith(f"{tmp_path / 'forkwell.toml'}: ")
    return errors[0]


def test_defaults_and_normalisation(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [programs.web]
        command = "python -m http.server 'port 8000'"
        """,
    )
    cfg = load_config(path)
    assert cfg.path == path.absolute()
    assert cfg.supervisor.socket == tmp_path / ".forkwell" / "forkwell.sock"
    assert cfg.supervisor.log_dir == tmp_path / ".forkwell" / "logs"
    assert cfg.supervisor.shutdown_timeout == 30.0
    web = cfg.programs["web"]
    assert web.command == ("python", "-m", "http.server", "port 8000")
    assert web.directory == tmp_path
    assert (web.numprocs, web.autostart, web.restart) == (1, True, "on-failure")
    assert web.success_exit_codes == frozenset({0})
    assert web.ready.kind == "exec" and web.ready_timeout == 30.0
    assert (web.min_uptime, web.start_retries, web.backoff_max) == (1.0, 5, 30.0)
    assert (web.stop_signal, web.stop_timeout) == (signal.SIGTERM, 10.0)
    assert web.log_max_bytes == 50 << 20 and web.log_backups == 5


def test_every_key_parsed(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [supervisor]
        socket = "/run/fw.sock"
        log_dir = "logs"
        state_file = "state.json"
        shutdown_timeout = "1m"

        [programs.db]
        command = ["postgres", "-D", "data"]

        [programs.web]
        command = "serve"
        directory = "srv"
        environment = { PORT = "8000" }
        user = "root"
        group = "root"
        umask = "027"
        numprocs = 3
        autostart = false
        restart = "always"
        success_exit_codes = [0, 2]
        ready = "tcp:127.0.0.1:8000"
        ready_timeout = "2.5s"
        depends_on = ["db"]
        min_uptime = 0.5
        start_retries = 2
        backoff_max = 4
        stop_signal = "SIGINT"
        stop_timeout = 3
        redirect_stderr = true
        log_max_bytes = "512KiB"
        log_backups = 0
        """,
    )
    cfg = load_config(path)
    assert cfg.supervisor.socket == Path("/run/fw.sock")
    assert cfg.supervisor.log_dir == tmp_path / "logs"
    assert cfg.supervisor.shutdown_timeout == 60.0
    web = cfg.programs["web"]
    assert web.directory == tmp_path / "srv" and web.environment == {"PORT": "8000"}
    assert (web.user, web.group, web.umask) == ("root", "root", 0o027)
    assert web.instance_names() == ["web:0", "web:1", "web:2"]
    assert str(web.ready) == "tcp:127.0.0.1:8000" and web.ready_timeout == 2.5
    assert web.depends_on == ("db",) and web.stop_signal == signal.SIGINT
    assert web.log_max_bytes == 512 * 1024 and web.log_backups == 0
    assert list(cfg.programs) == ["db", "web"]
    assert cfg.start_order() == ["db", "web"] and cfg.dependents("db") == ["web"]


def test_unknown_key(tmp_path: Path) -> None:
    err = one_error(tmp_path, '[programs.web]\ncommand = "x"\nrestrat = "always"\n')
    assert "programs.web.restrat: unknown key (did you mean 'restart'?)" in err


def test_unknown_table(tmp_path: Path) -> None:
    err = one_error(tmp_path, '[program.web]\ncommand = "x"\n')
    assert "program: unknown table (did you mean 'programs'?)" in err


def test_wrong_type(tmp_path: Path) -> None:
    err = one_error(tmp_path, '[programs.web]\ncommand = "x"\nnumprocs = "2"\n')
    assert err.endswith("programs.web.numprocs: expected an integer >= 0, got '2'")


def test_essential_is_a_boolean_or_on_failure(tmp_path: Path) -> None:
    err = one_error(tmp_path, '[programs.web]\ncommand = "x"\nessential = "always"\n')
    assert err.endswith("programs.web.essential: expected true, false or 'on-failure', "
                        "got 'always'")  # fmt: skip
    (tmp_path / "ok.toml").write_text('[programs.web]\ncommand = "x"\nessential = "on-failure"\n')
    assert load_config(tmp_path / "ok.toml").programs["web"].essential == "on-failure"


def test_wrong_type_in_environment_names_the_variable(tmp_path: Path) -> None:
    err = one_error(tmp_path, '[programs.web]\ncommand = "x"\nenvironment = { PORT = 8000 }\n')
    assert "programs.web.environment: expected a string value for 'PORT'" in err


def test_bad_signal(tmp_path: Path) -> None:
    err = one_error(tmp_path, '[programs.web]\ncommand = "x"\nstop_signal = "TREM"\n')
    assert "programs.web.stop_signal: expected a signal name or number" in err
    assert err.endswith("got 'TREM'")


def test_bad_readiness(tmp_path: Path) -> None:
    err = one_error(tmp_path, '[programs.web]\ncommand = "x"\nready = "tcp:x"\n')
    assert (
        "programs.web.ready: expected 'exec', 'notify', 'tcp:HOST:PORT', 'delay:SECONDS', "
        "'cmd:COMMAND', an http:// or https:// URL, or 'log:REGEX', got 'tcp:x'"
    ) in err


def test_bad_duration_and_size(tmp_path: Path) -> None:
    errors = errors_of(
        tmp_path,
        '[programs.web]\ncommand = "x"\nstop_timeout = "soon"\nlog_max_bytes = "big"\n',
    )
    assert any("programs.web.stop_timeout: expected seconds" in e for e in errors)
    assert any("programs.web.log_max_bytes: expected a size in bytes" in e for e in errors)


def test_missing_command(tmp_path: Path) -> None:
    err = one_error(tmp_path, "[programs.web]\nnumprocs = 1\n")
    assert "programs.web.command: required key missing" in err


def test_unknown_dependency(tmp_path: Path) -> None:
    text = '[programs.web]\ncommand = "x"\ndepends_on = ["dbb"]\n[programs.db]\ncommand = "y"\n'
    err = one_error(tmp_path, text)
    assert "programs.web.depends_on: unknown program 'dbb' (did you mean 'db'?)" in err


def test_dependency_cycle(tmp_path: Path) -> None:
    err = one_error(
        tmp_path,
        """
        [programs.a]
        command = "x"
        depends_on = ["b"]
        [programs.b]
        command = "x"
        depends_on = ["c"]
        [programs.c]
        command = "x"
        depends_on = ["a"]
        """,
    )
    assert "programs.a.depends_on: dependency cycle a -> b -> c -> a" in err


def test_self_dependency(tmp_path: Path) -> None:
    err = one_error(tmp_path, '[programs.a]\ncommand = "x"\ndepends_on = ["a"]\n')
    assert "programs.a.depends_on: a program cannot depend on itself" in err


def test_unknown_user(tmp_path: Path) -> None:
    err = one_error(tmp_path, '[programs.a]\ncommand = "x"\nuser = "no-such-user-here"\n')
    assert "programs.a.user: expected an existing user, got 'no-such-user-here'" in err


def test_bad_program_name(tmp_path: Path) -> None:
    err = one_error(tmp_path, '[programs."web.1"]\ncommand = "x"\n')
    assert "programs.web.1: invalid program name 'web.1'" in err


def test_invalid_toml_names_line(tmp_path: Path) -> None:
    err = one_error(tmp_path, '[programs.web]\ncommand = "x\n')
    assert "invalid TOML" in err and "line 2" in err


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "nope.toml")


def test_every_problem_is_listed_at_once(tmp_path: Path) -> None:
    errors = errors_of(
        tmp_path,
        """
        [supervisor]
        shutdown_timeout = -1
        [programs.web]
        command = "x"
        stop_signal = "TREM"
        depends_on = ["nope"]
        [programs.worker]
        autostart = "yes"
        """,
    )
    keys = [e.split(": ")[1] for e in errors]
    assert keys == [
        "supervisor.shutdown_timeout",
        "programs.web.stop_signal",
        "programs.worker.autostart",
        "programs.worker.command",
        "programs.web.depends_on",
    ]


def test_config_error_is_a_value_error() -> None:
    assert issubclass(forkwell.ConfigError, ValueError)
    assert issubclass(forkwell.UnknownProgramError, KeyError)
    assert str(forkwell.UnknownProgramError("unknown program 'x'")) == "unknown program 'x'"


def test_reference_docs_list_every_key() -> None:
    """docs/supervisor.md's tables must not go stale: every key is described there."""
    from forkwell._supervisor._config import PROGRAM_KEYS, SUPERVISOR_KEYS

    docs = (Path(__file__).parent.parent / "docs" / "supervisor.md").read_text()
    missing = [k.name for k in (*SUPERVISOR_KEYS, *PROGRAM_KEYS) if f"| `{k.name}` |" not in docs]
    assert not missing, f"document these keys in docs/supervisor.md: {missing}"
