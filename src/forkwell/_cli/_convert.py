"""``forkwell convert``: write the forkwell.toml equivalent of a Procfile, supervisord.conf or
process-compose.yaml (parse and print only; the writer is the library's)."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from ._options import FORMAT, PROCFILE_OPTIONS, Command, Operand, Option
from ._parser import parse_or_report as _parse_or_report

CONVERT = Command(
    "convert",
    description="""\
Read FILE as 'forkwell up' reads it (its format from its name, or --format)
and write the forkwell.toml that runs exactly the same fleet: each key
commented where it maps with a difference, and what has no forkwell meaning
listed at the top.  Converting and then running the TOML behaves as running
FILE does.""",
    operands=(Operand("FILE", "a Procfile, supervisord.conf, process-compose.yaml (or a "
                              "forkwell.toml)", dest="file"),),
    options=(
        Option(("-o", "--output"), "PATH",
               "where to write it; '-' is stdout (default {default})", default="forkwell.toml"),
        Option(("-f", "--force"), None, "overwrite PATH if it exists"),
        FORMAT,
        *PROCFILE_OPTIONS,
    ),
    exits=(
        ("0", "written"),
        ("1", "PATH exists (without --force), or cannot be written"),
        ("2", "bad usage, or FILE is not a valid config (every problem is listed; nothing "
              "written)"),
    ),
    examples=(
        "forkwell convert Procfile -m web=2            # writes ./forkwell.toml",
        "forkwell convert /etc/supervisord.conf -o - | less",
    ),
)  # fmt: skip
DECLARED = {"convert": CONVERT}

if TYPE_CHECKING:
    from pathlib import Path


def main(argv: list[str], *, prog: str, command: str) -> int:
    ns = _parse_or_report(CONVERT, argv, prog)
    if isinstance(ns, int):
        return ns
    from pathlib import Path

    from .._exceptions import ConfigError
    from .._supervisor._formats._convert import render
    from .._supervisor._formats._load import read, validate
    from . import _fleetfile

    to_stdout = ns.output == "-"
    output = None if to_stdout else Path(ns.output)
    if output is not None and output.exists() and not ns.force:
        print(f"{prog}: {ns.output} exists; choose another -o, or --force", file=sys.stderr)
        return 1
    try:
        kind, imported = read(ns.file, ns.format, _fleetfile.procfile_options(ns))
        if imported is not None:
            validate(imported, Path(ns.file), ns.file)
    except ConfigError as exc:
        return _fleetfile.report(prog, exc.errors)
    if imported is None:
        return _fleetfile.report(prog, [f"{ns.file} is forkwell.toml already: nothing to do"])
    text = render(imported, Path(ns.file), kind, output)
    if output is None:
        sys.stdout.write(text)
        return 0
    return _write(prog, output, text, len(imported.data["programs"]))


def _write(prog: str, output: Path, text: str, programs: int) -> int:
    try:
        output.write_text(text)
    except OSError as exc:
        print(f"{prog}: cannot write {output}: {exc.strerror}", file=sys.stderr)
        return 1
    shown = os.fspath(output)
    print(f"{prog}: wrote {shown} ({programs} programs); run it with "
          f"'forkwell up -c {shown}'", file=sys.stderr)
    return 0
