"""``--help`` from a command's declaration, in one layout for every command.

usage, description, operands, options (``  -c, --config FILE   help``), notes,
``exit status:``, ``examples:``.  Imported only when help is printed (and by
:mod:`._docs`), so a command that runs pays nothing for it.
"""

from __future__ import annotations

from ._options import Command, Default, Option

WIDTH = 80
_MAX_LEFT = 28  # an option's spelling longer than this puts its help on the next line


def render(command: Command, prog: str) -> str:
    """The help text of ``command`` run as ``prog``, without a final newline."""
    if command.actions:
        return _group(command, prog)
    facts = _facts(command)
    blocks = [
        _usage(command, prog),
        _paragraphs(command.description, facts),
        _section("operands:", [(o.metavar, _fill(o.help, facts)) for o in command.operands
                               if o.help]),  # fmt: skip
        _section("options:", _option_rows(command.all_options, facts)),
        _paragraphs(command.notes, facts),
        _section("exit status:", list(command.exits)),
        _examples(command.examples),
    ]
    return "\n\n".join(block for block in blocks if block)


def _group(group: Command, prog: str) -> str:
    """A group's help: every action's usage and options (each once), then every exit table."""
    facts = _facts(group)
    for action in group.actions:
        facts.update(_facts(action))
    pad = len(prog) + 1 + max(len(_short(action)) for action in group.actions)
    usages = [_usage(a, f"{prog} {_short(a)}", pad=pad) for a in group.actions]
    blocks = [
        "\n".join([usages[0], *("       " + u.removeprefix("usage: ") for u in usages[1:])]),
        _paragraphs(group.description, facts),
        _section("actions:", [(_short(action), action.summary) for action in group.actions]),
    ]
    shown: set[str] = set()
    for action in group.actions:
        new = [opt for opt in action.options if opt.long not in shown]
        shown.update(opt.long for opt in new)
        blocks.append(_section(f"{_short(action)} options:", _option_rows(tuple(new), facts)))
    blocks.append(_paragraphs(group.notes, facts))
    exits = ["exit status:"]
    left = max(len(status) for action in group.actions for status, _ in action.exits)
    for action in group.actions:
        exits += [f"  {_short(action)}", *_table(list(action.exits), indent=4, left=left)]
    blocks += ["\n".join(exits), _examples(group.examples)]
    return "\n\n".join(block for block in blocks if block)


def _short(action: Command) -> str:
    return action.name.rsplit(" ", 1)[-1]


def _usage(command: Command, prog: str, *, pad: int = 0) -> str:
    usage = command.usage
    if not usage:
        words = [f"{o.long} {o.metavar}" for o in command.options if o.required]
        words.append("[OPTIONS]")
        if command.operands and not command.permute:
            words.append("[--]")
        words += [_operand_usage(o.metavar, o.nargs) for o in command.operands]
        usage = " ".join(words)
    return f"usage: {prog.ljust(pad)} {usage}"


def _operand_usage(metavar: str, nargs: str) -> str:
    return {"1": metavar, "?": f"[{metavar}]", "*": f"[{metavar}]...", "+": f"{metavar}..."}[nargs]


def _facts(command: Command) -> dict[str, str]:
    return {name: load() for name, load in (command.facts or {}).items()}


def _fill(text: str, facts: dict[str, str], default: str = "") -> str:
    return text.format(default=default, **facts) if "{" in text else text


def _paragraphs(text: str, facts: dict[str, str]) -> str:
    return "\n".join(wrap(_fill(text, facts), WIDTH))


def _option_rows(options: tuple[Option, ...], facts: dict[str, str]) -> list[tuple[str, str]]:
    rows = []
    for opt in options:
        shorts = [n for n in opt.names if not n.startswith("--")]
        spelling = ", ".join(opt.names) if shorts else "    " + ", ".join(opt.names)
        if opt.metavar is not None:
            spelling += f" {opt.metavar}"
        rows.append((spelling, _fill(opt.help, facts, show_default(opt))))
    return rows


def show_default(opt: Option) -> str:
    """The option's default as its help shows it (the library's, read from the library)."""
    value = opt.default.load() if isinstance(opt.default, Default) else opt.default
    if opt.kind is None:
        return "none" if value is None else str(value)
    return opt.kind.none if value is None else opt.kind.show(value)


def _section(title: str, rows: list[tuple[str, str]]) -> str:
    return "\n".join([title, *_table(rows)]) if rows else ""


def _table(rows: list[tuple[str, str]], *, indent: int = 2, left: int = 0) -> list[str]:
    """Two columns: the left as it is, the right wrapped at WIDTH and aligned."""
    left = left or min(max(len(name) for name, _ in rows), _MAX_LEFT)
    column = indent + left + 2
    out = []
    for name, text in rows:
        lines = wrap(text, WIDTH - column)
        head = " " * indent + name
        if len(name) > left or not lines:
            out.append(head)
        else:
            out.append((head.ljust(column) + lines.pop(0)).rstrip())
        out += [(" " * column + line).rstrip() for line in lines]
    return out


def wrap(text: str, width: int) -> list[str]:
    """Lines of at most ``width``: each paragraph's lines flowed together, greedily.

    A blank line separates paragraphs; a line that starts with a space (an
    example, a small table) is kept as it is.
    """
    out: list[str] = []
    flowing: list[str] = []
    for line in [*text.split("\n"), ""]:
        if line and not line.startswith(" "):
            flowing.append(line)
            continue
        if flowing:
            out += _greedy(" ".join(flowing), width)
            flowing = []
        out.append(line.rstrip())
    return out[:-1]


def _greedy(text: str, width: int) -> list[str]:
    lines = []
    current = ""
    for word in text.split(" "):  # not split(): two spaces after a full stop stay two
        if current.strip() and len(current) + 1 + len(word) > width:
            lines.append(current.rstrip())
            current = word
        else:
            current = f"{current} {word}" if current else word
    return [*lines, current.rstrip()]


def _examples(examples: tuple[str, ...]) -> str:
    return "\n".join(["examples:", *("  " + line for line in examples)]) if examples else ""
