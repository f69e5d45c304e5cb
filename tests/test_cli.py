"""The `forkwell` dispatcher: help, version, unknown commands, every subcommand's --help."""

from __future__ import annotations

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
