"""The `forkwell` dispatcher: help, version, unknown commands, every subcommand's --help."""

from __future__ import annotations

import re
import subprocess

import pytest
from helpers import PY

import forkwell
from forkwell._cli import COMMANDS


def fw(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PY, "-m", "forkwell", *args], capture_output=True, text=True, timeout=30)


def test_help_lists_every_command() -> None:
    r = fw("--help")
    assert r.returncode == 0
    for name in COMMANDS:
        assert f"  {name} " in r.stdout


def test_no_arguments_prints_help_and_exits_2() -> None:
    r = fw()
    assert r.returncode == 2
    assert r.stdout.startswith("usage: forkwell")


def test_version() -> None:
    r = fw("--version")
    assert r.stdout.strip() == f"forkwell {forkwell.__version__}"


def test_unknown_command_is_one_line_exit_2() -> None:
    r = fw("frobnicate")
    assert r.returncode == 2
    assert r.stderr.strip() == "forkwell: unknown command 'frobnicate' (see 'forkwell --help')"


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_subcommand_has_help(name: str) -> None:
    r = fw(name, "--help")
    assert r.returncode == 0, r.stderr
    assert "usage:" in r.stdout.lower()
    assert "Traceback" not in r.stderr


def test_help_imports_no_feature_module() -> None:
    """`forkwell --help` stays lean: only the dispatcher is imported."""
    code = (
        "import sys; from forkwell._cli import main; main(['--help']);"
        "print(sorted(m for m in sys.modules if m.startswith('forkwell')), file=sys.stderr)"
    )
    r = subprocess.run([PY, "-c", code], capture_output=True, text=True, timeout=30)
    assert r.stderr.strip() == "['forkwell', 'forkwell._cli']"


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_takes_version(name: str) -> None:
    r = fw(name, "--version")
    assert (r.returncode, r.stdout, r.stderr) == (0, f"forkwell {forkwell.__version__}\n", "")


def test_every_command_is_declared_in_the_module_that_runs_it() -> None:
    from importlib import import_module

    for name, (module, _) in COMMANDS.items():
        declared = import_module(module, "forkwell._cli").DECLARED
        assert declared[name].name == name, name


def test_every_help_has_one_layout_with_aligned_options() -> None:
    from forkwell._cli._docs import declared
    from forkwell._cli._help import render

    for name, command in declared().items():
        text = render(command, f"forkwell {name}")
        assert text.startswith(f"usage: forkwell {name} "), name
        assert "\nexit status:\n" in text and "  -h, --help " in text, name
        for section in text.split("\n\n"):
            if not section.split("\n", 1)[0].endswith("options:"):
                continue
            # The help column starts at the same place on every row (or on the next line).
            rows = [re.match(r"(  -\S|      --\S).*?  +(\S)", ln) for ln in section.split("\n")]
            starts = {row.start(2) for row in rows if row}
            assert len(starts) == 1, (name, section)


def test_docs_cli_md_is_made_from_the_declarations() -> None:
    from pathlib import Path

    from forkwell._cli._docs import REGENERATE, render

    page = Path(__file__).parent.parent / "docs" / "cli.md"
    assert page.read_text() == render(), f"docs/cli.md is stale: regenerate it with `{REGENERATE}`"


def test_the_cli_defaults_are_the_librarys() -> None:
    """What the help shows and what the parser gives when an option is left out."""
    import inspect

    from forkwell._cli import _daemon, _help, _init, _options, _serve, _timeout
    from forkwell._cli._parser import parse
    from forkwell._daemon._service import start_daemon, stop_daemon
    from forkwell._init import Init
    from forkwell._servers._forking import ForkingServer
    from forkwell._servers._prefork import PreforkServer
    from forkwell._supervisor._config import DEFAULT_FILE
    from forkwell._supervisor._control._discovery import DEFAULT_CONFIG
    from forkwell._timeout import LEFTOVER_GRACE, run_timeout

    def default(func: object, name: str) -> object:
        return inspect.signature(func).parameters[name].default  # type: ignore[arg-type]

    assert parse(_timeout.TIMEOUT, ["5", "true"]).signal == default(run_timeout, "stop_signal")
    assert f"({LEFTOVER_GRACE:g} s\nwithout it)" in _help.render(_timeout.TIMEOUT, "t")
    assert parse(_init.INIT, ["true"]).grace == default(Init, "grace") == 5.0
    stop = parse(_daemon.STOP, ["--pidfile", "p"])
    assert (stop.signal, stop.grace) == (default(stop_daemon, "stop_signal"), 10.0)
    assert stop.grace == default(stop_daemon, "timeout")
    start = parse(_daemon.START, ["--pidfile", "p", "true"])
    assert start.directory == default(start_daemon, "workdir")
    for key in ("umask", "ready", "ready_timeout"):
        assert getattr(start, key) == default(start_daemon, key), key
    assert start.ready_timeout == 60.0
    # serve passes only what was given: the servers apply their own defaults,
    # which its help shows.
    serve = parse(_serve.SERVE, ["m:h"])
    assert serve.timeout is serve.graceful_timeout is serve.max_children is None
    known = _help.facts(_serve.SERVE)
    assert default(PreforkServer, "graceful_timeout") == 30.0 == default(ForkingServer, "graceful_timeout")
    assert known["graceful"] == "30s" and known["timeout"] == "30s"
    assert default(PreforkServer, "timeout") == 30.0
    assert known["max_children"] == str(default(ForkingServer, "max_children"))
    assert known["boot_failures"] == str(default(PreforkServer, "max_boot_failures"))
    assert known["bind"] == default(ForkingServer, "bind") == default(PreforkServer, "bind")
    # -c's default is the supervisor's, written in the help (reading it would cost tomllib).
    assert DEFAULT_FILE == DEFAULT_CONFIG
    from forkwell._supervisor._formats._detect import SEARCH_ORDER

    assert SEARCH_ORDER[0] == DEFAULT_FILE
    assert "(default: the first of " + ", ".join(f"./{n}" for n in SEARCH_ORDER) + ")" \
        in _options.CONFIG.help


def _every_help() -> list[tuple[str, str]]:
    """(program, --help text) for the dispatcher, every command and every action of a group."""
    from forkwell._cli import overview
    from forkwell._cli._docs import declared
    from forkwell._cli._help import render

    texts = [("forkwell", overview())]
    for name, command in declared().items():
        texts.append((f"forkwell {name}", render(command, f"forkwell {name}")))
        for action in command.actions:
            prog = f"forkwell {action.name}"
            texts.append((prog, render(action, prog)))
    return texts


def test_every_help_has_examples_and_exit_statuses() -> None:
    for prog, text in _every_help():
        assert "\nexamples:\n  " in text, prog
        assert "\nexit status:\n  " in text, prog
        examples = text.split("\nexamples:\n", 1)[1]
        assert any(f"{ln} ".startswith(f"  {prog} ") for ln in examples.split("\n")), prog


def test_an_old_spelling_is_taken_and_named_once_in_the_help() -> None:
    from forkwell._cli import _ctl, _daemon
    from forkwell._cli._help import render
    from forkwell._cli._parser import parse

    stop = parse(_daemon.STOP, ["--pidfile", "p", "--timeout", "3"])
    assert stop.grace == parse(_daemon.STOP, ["--pidfile", "p", "--grace=3"]).grace == 3.0
    start = parse(_daemon.START, ["--pidfile", "p", "--log", "l", "--workdir", "/tmp", "true"])
    assert (start.log_file, start.directory) == ("l", "/tmp")
    assert parse(_ctl.DECLARED["down"], ["--timeout", "1m"]).wait == 60.0
    text = render(_daemon.STOP, "forkwell daemon stop")
    assert "--grace DUR     how long to wait before SIGKILL (default 10s; also\n" in text
    assert text.count("--timeout") == 1  # the alias is not a row of its own
    down = render(_ctl.DECLARED["down"], "forkwell down")
    assert "(default 60s; also --timeout)" in down and down.count("--timeout") == 1


def test_the_vocabulary_table_names_real_spellings() -> None:
    """docs/cli.md's table of names cannot drift from the declarations."""
    from forkwell._cli._docs import _VOCABULARY, declared

    spellings = set()
    for command in declared().values():
        for part in (command, *command.actions):
            spellings.update(s for opt in part.options for s in opt.spellings)
    named = re.findall(r"`(--?[a-z][a-z-]*)`", " ".join(text for _, text in _VOCABULARY))
    named += re.findall(r"also `(--[a-z-]+)`", " ".join(text for _, text in _VOCABULARY))
    assert "--grace" in named and "--kill-after" in named
    assert set(named) <= spellings, set(named) - spellings
