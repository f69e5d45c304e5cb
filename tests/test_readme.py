"""The README's two commands are what CI runs, so they work on a fresh machine."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parent.parent


def readme_commands() -> list[str]:
    """The command lines of the README's first shell block ("the two commands")."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```sh\n(.*?)```", text, re.S)
    assert block, "README.md has no ```sh block"
    return [ln for ln in block.group(1).splitlines() if ln.strip() and not ln.startswith("#")]


def test_ci_runs_the_readme_commands_verbatim() -> None:
    commands = readme_commands()
    assert len(commands) == 2, commands
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    main_job, tests = commands
    assert tests in ci, f"{tests!r} is not a line of .ci/run"
    # The main job is `pip install -e . && forkwell up ...`; CI has installed already.
    assert main_job.split("&& ", 1)[1] in ci


def test_every_debian_package_the_tests_use_is_installed_by_setup() -> None:
    listed = (ROOT / "tests" / "debian-packages.txt").read_text().split("\n")
    names = [ln.strip() for ln in listed if ln.strip() and not ln.startswith("#")]
    assert names == sorted(set(names), key=names.index), "a package is listed twice"
    assert "debian-packages.txt" in (ROOT / "tests" / "setup.sh").read_text()
