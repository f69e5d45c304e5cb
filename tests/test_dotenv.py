"""Environment files: the dotenv dialect, the config's order of precedence, reloads."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from helpers import PY
from test_supervisor_harness import config, drive, info, log_text, py, until

from forkwell import ConfigError, Supervisor, load_config
from forkwell._supervisor._dotenv import parse_dotenv

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A=1\nB=two\n", {"A": "1", "B": "two"}),
        ("# a comment\n\n   \nA=1\n  # indented comment\n", {"A": "1"}),
        ("export A=1\nexport\tB=2\n", {"A": "1", "B": "2"}),
        ("A = spaced  \n", {"A": "spaced"}),
        ("A=value # a comment\nB=no#comment\n", {"A": "value", "B": "no#comment"}),
        ("A=\nB=''\nC=\"\"\n", {"A": "", "B": "", "C": ""}),
        ("A='hello $USER \\n'\n", {"A": "hello $USER \\n"}),  # single quotes: literal
        ('A="one\\ntwo\\t\\"q\\" \\\\ \\$HOME"\n', {"A": 'one\ntwo\t"q" \\ $HOME'}),
        ('A="x" # comment after the quote\n', {"A": "x"}),
        ('PEM="-----BEGIN-----\nabc\n-----END-----"\nB=1\n', {"PEM": "-----BEGIN-----\nabc\n-----END-----", "B": "1"}),
        ("A=$HOME/x\n", {"A": "$HOME/x"}),  # nothing expanded
        ("A=1\nA=2\n", {"A": "2"}),  # the later one wins
        ("java.key=v\n_u=1\n", {"java.key": "v", "_u": "1"}),
        ("A=1\r\nB=2\r\n", {"A": "1", "B": "2"}),  # a file from Windows
    ],
)
def test_the_dialect(text: str, expected: dict[str, str]) -> None:
    assert parse_dotenv(text, "x.env") == expected


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("A=1\nthis is not an assignment\n", "x.env:2: expected KEY=VALUE, got 'this is not an assignment'"),
        ("1A=x\n", "x.env:1: expected KEY=VALUE, got '1A=x'"),
        ("A=1\nB=\"open\nstill open\n", "x.env:2: unterminated \"-quoted value (no closing \")"),
        ("A='x' trailing\n", "x.env:1: unexpected 'trailing' after the closing '"),
    ],
)
def test_malformed_lines_are_one_line_errors_naming_file_and_line(text: str, error: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_dotenv(text, "x.env")
    assert exc.value.errors == [error]


FORMATS = Path(__file__).parent / "fixtures" / "formats"


@pytest.mark.parametrize(("fixture", "expected"), [
    ("procfile-foreman", {"APP_ENV": "production", "QUOTED": 'a "quoted" word',
                          "MULTI": "line one\nline two", "LITERAL": "no $expansion\\n here",
                          "PORT": "7000"}),
    ("procfile-honcho", {"GREETING": "hello world", "SINGLE": "single quoted $HOME",
                         "ESCAPED": "one\ntwo", "PLAIN": "plain_value",
                         "DATABASE_URL": "postgres://localhost/app"}),
])  # fmt: skip
def test_the_procfile_fixtures_in_foreman_and_honcho_dialects(fixture: str,
                                                               expected: dict[str, str]) -> None:  # fmt: skip
    """The .env files a Procfile brings (read by this one parser, as [supervisor] env_file)."""
    path = FORMATS / fixture / ".env"
    assert parse_dotenv(path.read_text(), str(path)) == expected


def test_the_dialect_agrees_with_a_posix_shell_on_what_both_read(tmp_path: Path) -> None:
    """For what is also valid shell, `. file` in /bin/sh gives the same values."""
    text = (
        "export A=plain\nB='single $X quoted'\nC=\"double quoted\"\n# comment\n"
        'D="line one\nline two"\nE=\n'
    )
    env_file = tmp_path / "x.env"
    env_file.write_text(text)
    names = ["A", "B", "C", "D", "E"]
    script = f". {env_file}; " + "; ".join(f'printf "%s\\0" "${n}"' for n in names)
    out = subprocess.run(["/bin/sh", "-c", script], capture_output=True, check=True, env={})
    shell = dict(zip(names, out.stdout.decode().split("\0")[:-1], strict=True))
    assert parse_dotenv(text, str(env_file)) == shell


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_precedence_supervisor_files_program_files_then_environment(tmp_path: Path) -> None:
    _write(tmp_path / "all.env", "A=all\nB=all\nC=all\nD=all\n")
    _write(tmp_path / "one.env", "B=one\nC=one\nD=one\n")
    _write(tmp_path / "two.env", "C=two\nD=two\n")
    path = _write(
        tmp_path / "forkwell.toml",
        """
        [supervisor]
        env_file = "all.env"
        [programs.app]
        command = "true"
        env_file = ["one.env", "two.env"]
        environment = { D = "table" }
        [programs.other]
        command = "true"
        """.replace("\n        ", "\n"),
    )
    cfg = load_config(path)
    env = cfg.programs["app"].environment
    assert {k: env[k] for k in "ABCD"} == {"A": "all", "B": "one", "C": "two", "D": "table"}
    assert cfg.programs["other"].environment == {"A": "all", "B": "all", "C": "all", "D": "all"}


def test_a_missing_file_is_a_config_error_naming_it_unless_optional(tmp_path: Path) -> None:
    toml = '[programs.app]\ncommand = "true"\nenv_file = "nope.env"\n'
    path = _write(tmp_path / "forkwell.toml", toml)
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert exc.value.errors == [
        f"{path}: programs.app.env_file: {tmp_path / 'nope.env'}: no such file "
        "(set env_file_optional = true if it may be missing)"
    ]
    _write(path, toml + "env_file_optional = true\n")
    assert load_config(path).programs["app"].environment == {}


def test_a_malformed_file_fails_forkwell_check_with_exit_2(tmp_path: Path) -> None:
    _write(tmp_path / "bad.env", "OK=1\nnot valid\n")
    path = _write(tmp_path / "forkwell.toml", '[programs.app]\ncommand = "true"\nenv_file = "bad.env"\n')
    r = subprocess.run([PY, "-m", "forkwell", "check", "-c", str(path)], capture_output=True, text=True)
    assert r.returncode == 2
    assert f"programs.app.env_file: {tmp_path / 'bad.env'}:2: expected KEY=VALUE, got 'not valid'" in r.stderr
    assert "Traceback" not in r.stderr


def test_programs_get_the_variables_and_a_reload_restarts_only_whose_changed(
    tmp_path: Path,
) -> None:
    _write(tmp_path / "a.env", 'GREETING="hello a"\n')
    _write(tmp_path / "b.env", "GREETING='hello b'\n")
    show = py("import os, sys, time; print(os.environ['GREETING'], flush=True); time.sleep(600)")
    text = f"""
        [programs.a]
        command = {show}
        env_file = "a.env"
        [programs.b]
        command = {show}
        env_file = "b.env"
        """
    cfg = config(tmp_path, text)

    async def body(sup: Supervisor) -> None:
        await until(lambda: log_text(sup, "a:0") and log_text(sup, "b:0"), 10, "greetings")
        assert log_text(sup, "a:0") == "hello a\n" and log_text(sup, "b:0") == "hello b\n"
        pids = {i.name: i.pid for i in sup.instances()}
        _write(tmp_path / "a.env", 'GREETING="hello again"\n')
        report = await sup.reload()
        assert report.changed == ["a"] and report.unchanged == ["b"]
        await until(lambda: "hello again" in log_text(sup, "a:0"), 10, "a's new greeting")
        assert info(sup, "a:0").pid != pids["a:0"]
        assert info(sup, "b:0").pid == pids["b:0"]
        report = await sup.reload()  # nothing changed: nothing restarts
        assert report.changed == []

    drive(cfg, body)
