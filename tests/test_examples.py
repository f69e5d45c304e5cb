"""Every example in the README and docs/ marked runnable runs, as written.

A fenced block right after a ``<!-- runnable -->`` line is run: ``python``
with this interpreter; a block of ``$ COMMAND`` lines (``console``, ``sh``) one
command at a time with bash, each command's output (stdout and stderr, as a
terminal shows them) compared with the lines under it; any other ``sh`` block
as one ``bash -e`` script.  In the expected output a comment after two spaces
(``124   # and ...``) is the docs talking, not output, and a number of three
digits or more (a pid), or one with a fraction (``3.2s``), stands for any.
Each runs in a fresh directory holding a copy of ``examples/``, with a
``forkwell`` on PATH that is this checkout's.  Examples that need a fixed port
or a machine's paths are not marked; their commands are tested elsewhere.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import NamedTuple

import pytest
from helpers import PY

ROOT = Path(__file__).parent.parent
MARK = "<!-- runnable -->"
FENCE = re.compile(r"```(\w*)\n(.*?)```", re.S)


class Example(NamedTuple):
    where: str  # file:line, for the test id and the failure message
    lang: str
    text: str


def examples(text: str, name: str) -> list[Example]:
    """The runnable examples of one markdown file."""
    found = []
    for m in re.finditer(re.escape(MARK) + r"\n", text):
        fence = FENCE.match(text, m.end())
        line = text.count("\n", 0, m.start()) + 1
        assert fence, f"{name}:{line}: {MARK} is not followed by a fenced block"
        found.append(Example(f"{name}:{line + 1}", fence.group(1), fence.group(2)))
    return found


def all_examples() -> list[Example]:
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    return [ex for f in files for ex in examples(f.read_text(), str(f.relative_to(ROOT)))]


def sessions(text: str) -> list[tuple[str, list[str]]]:
    """``$ COMMAND`` lines (with ``\\`` continuations) and the output lines under each."""
    out: list[tuple[str, list[str]]] = []
    lines = iter(text.splitlines())
    for ln in lines:
        if ln.startswith("$ "):
            command = ln[2:]
            while command.endswith("\\"):
                command = command[:-1] + next(lines).strip()
            out.append((command, []))
        else:
            assert out, f"output before any command: {ln!r}"
            out[-1][1].append(ln)
    return out


def expected(line: str) -> re.Pattern[str]:
    """One expected output line as a pattern: comments dropped, pids and times are any."""
    line = re.sub(r"\s{2,}#.*$", "", line).rstrip()
    parts = re.split(r"(\d+\.\d+|\d{3,})", line)
    return re.compile(
        "".join(r"\d+(?:\.\d+)?" if i % 2 else re.escape(p) for i, p in enumerate(parts))
    )


@pytest.fixture
def place(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A fresh directory with examples/, and an environment whose forkwell is this checkout's."""
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    bin_dir = tmp_path / ".bin"
    bin_dir.mkdir()
    shim = bin_dir / "forkwell"
    shim.write_text(f'#!/bin/sh\nexec {PY} -m forkwell "$@"\n')
    shim.chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}")
    src = str(ROOT / "src")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)
    return tmp_path, env


def run_example(ex: Example, cwd: Path, env: dict[str, str]) -> None:
    def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, cwd=cwd, env=env, text=True, timeout=60,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip

    if ex.lang == "python":
        r = run([PY, "-c", ex.text])
        assert r.returncode == 0, f"{ex.where}: exit status {r.returncode}\n{r.stdout}"
    elif any(ln.startswith("$ ") for ln in ex.text.splitlines()):
        for command, want in sessions(ex.text):
            got = run(["bash", "-c", command]).stdout.splitlines()
            assert len(got) == len(want) and all(
                expected(w).fullmatch(g) for w, g in zip(want, got, strict=True)
            ), f"{ex.where}: $ {command}\nexpected:\n" + "\n".join(want) + "\ngot:\n" + "\n".join(
                got
            )
    else:
        assert ex.lang == "sh", f"{ex.where}: cannot run a {ex.lang!r} block"
        r = run(["bash", "-e", "-c", ex.text])
        assert r.returncode == 0, f"{ex.where}: exit status {r.returncode}\n{r.stdout}"


EXAMPLES = all_examples()


def test_the_docs_have_runnable_examples() -> None:
    # The README's tour and the reaper's page at least: a marker lost in an
    # edit must not turn this file into a test of nothing.
    where = {ex.where.split(":")[0] for ex in EXAMPLES}
    assert {"README.md", "docs/init.md", "docs/run.md"} <= where, where
    assert len(EXAMPLES) >= 6


@pytest.mark.timeout(120)
@pytest.mark.parametrize("ex", EXAMPLES, ids=[ex.where for ex in EXAMPLES])
def test_example_runs_as_written(ex: Example, place: tuple[Path, dict[str, str]]) -> None:
    run_example(ex, *place)


def test_a_wrong_example_fails(place: tuple[Path, dict[str, str]]) -> None:
    # The checker itself: a wrong status, a wrong line, a failing script.
    for lang, text in (
        ("console", "$ sh -c 'exit 3'; echo $?\n4\n"),
        ("console", "$ echo started\nstopped   # a comment\n"),
        ("python", "raise SystemExit(1)\n"),
        ("sh", "false\ntrue\n"),
    ):
        with pytest.raises(AssertionError):
            run_example(Example("t", lang, text), *place)
    ok = "$ echo pid 77 up 0.5s; echo $?\npid 4242 up 3.2s\n0  # a comment\n"
    run_example(Example("t", "console", ok), *place)
