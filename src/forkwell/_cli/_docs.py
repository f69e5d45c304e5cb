"""``docs/cli.md``, the CLI reference, made from the commands' declarations.

    PYTHONPATH=src python -m forkwell._cli._docs > docs/cli.md

The same declarations give the parser and ``--help``, so the page says what
the commands do; ``tests/test_cli.py`` fails when the page is stale.
"""

from __future__ import annotations

import sys

from . import COMMANDS, _convert, _ctl, _daemon, _export, _init, _probe, _serve, _timeout, _up
from ._help import facts, fill, operand_rows, option_rows, usage
from ._options import Command

REGENERATE = "PYTHONPATH=src python -m forkwell._cli._docs > docs/cli.md"

_INTRO = f"""\
# The `forkwell` command line

<!-- Made by `{REGENERATE}` from the declarations in src/forkwell/_cli/; do not edit. -->

Every command is declared once (its options, operands, defaults, help and exit
statuses); its parser, its `--help` and this page are made from that
declaration.  Every command takes `-h`/`--help` and `--version`.

Options follow GNU getopt: short ones bundle (`-pv`, `-k5`), long ones take
`--name=value` or `--name value` and may be abbreviated while unambiguous
(`--pre` for `--preserve-status`), and `--` ends the options.  `timeout`,
`init` and `daemon` take options only before the command they run (what
follows belongs to it); the other commands also take options after their
operands.  A usage error is one line on stderr, `PROG: MESSAGE (see 'PROG
--help')`, with exit status 2 (`timeout`: 125, with GNU's `Try 'forkwell
timeout --help' for more information.` on a second line).

| command | what it does |
|---|---|
"""


# One idea, one name across commands (peers' names where users have habits);
# older spellings are Option aliases, which each --help names once.
_VOCABULARY = (
    ("the grace between the stop signal and SIGKILL",
     "`--grace` (`init`, `daemon stop`; `grace=` of `forkwell.run()`); GNU's "
     "`-k`/`--kill-after` in `timeout`; gunicorn's `--graceful-timeout` in `serve`; in the "
     "config, `stop_timeout` (one program) and `shutdown_timeout` (the whole fleet)"),
    ("how long `down` waits for the supervisor to exit", "`down --wait` (also `--timeout`)"),
    ("a log file", "`--log-file` (`serve`, `daemon start`; also `--log`)"),
    ("the working directory",
     "`--directory` (`daemon start`; also `--workdir`), as the config's `directory`"),
)  # fmt: skip
_VOCABULARY_INTRO = """\
One idea has one name across commands; where a peer's name is a habit, it is
kept, and an older spelling is still taken (each `--help` says "also ..."):

"""


def declared() -> dict[str, Command]:
    """Every command's declaration, in the order of ``forkwell --help``."""
    found: dict[str, Command] = {}
    for module in (_timeout, _daemon, _init, _serve, _up, _ctl, _convert, _probe, _export):
        found.update(module.DECLARED)
    return {name: found[name] for name in COMMANDS}


def render() -> str:
    """The whole page."""
    commands = declared()
    rows = [f"| [`{name}`](#forkwell-{name}) | {_cell(summary)} |"
            for name, (_, summary) in COMMANDS.items()]  # fmt: skip
    sections = [_command(commands[name], COMMANDS[name][1]) for name in commands]
    head = _INTRO.replace("| command |", _VOCABULARY_INTRO + _table("idea", list(_VOCABULARY),
                                                                  "spelled") + "\n\n| command |")
    return head + "\n".join(rows) + "\n\n" + "\n\n".join(sections) + "\n"


def _command(command: Command, summary: str, level: str = "##") -> str:
    known = facts(command)
    prog = f"forkwell {command.name}"
    head = [f"{level} {prog}", f"*{summary[:1].upper()}{summary[1:]}.*"]
    if command.actions:  # each action's section has the notes that concern it
        parts = [_command(action, action.summary, "###") for action in command.actions]
        return "\n\n".join([*head, _paragraphs(command.description, known),
                            *_examples(command), *parts])  # fmt: skip
    blocks = [
        *head,
        f"```\n{usage(command, prog)}\n```",
        _paragraphs(command.description, known),
        _table("operand", operand_rows(command, known)),
        _table("option", [(row[0].strip(), row[1]) for row in option_rows(command.options, known)]),
        _paragraphs(command.notes, known),
        _table("exit status", list(command.exits)),
        *_examples(command),
    ]
    return "\n\n".join(block for block in blocks if block)


def _table(title: str, rows: list[tuple[str, str]], second: str = "") -> str:
    """A two-column table; ``second``: the second column's title (then the first is text)."""
    if not rows:
        return ""
    lines = [f"| {title} | {second or 'meaning'} |", "|---|---|"]
    cell = "{}" if second else "`{}`"
    lines += [f"| {cell.format(name)} | {_cell(text)} |" for name, text in rows]
    return "\n".join(lines)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _paragraphs(text: str, known: dict[str, str]) -> str:
    """Flowing lines as they are (Markdown joins them); indented ones, a small table, as code."""
    out: list[str] = []
    code: list[str] = []
    for line in [*fill(text, known).split("\n"), ""]:
        if line.startswith(" "):
            code.append(line.removeprefix("  "))
            continue
        if code:
            out += ["", "```", *code, "```", ""]
            code = []
        out.append(line)
    return "\n".join(out).strip("\n").replace("\n\n\n", "\n\n")


def _examples(command: Command) -> list[str]:
    if not command.examples:
        return []
    return ["Examples:", "```\n" + "\n".join(command.examples) + "\n```"]


def main() -> int:
    sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
