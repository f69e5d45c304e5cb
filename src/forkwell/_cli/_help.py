"""``--help`` from a command's declaration, in one layout for every command.

usage, description, operands, options (``  -c, --config FILE   help``), notes,
``exit status:``, ``examples:``.  Imported only when help is printed (and by
:mod:`._docs`), so a command that runs pays nothing for it.
"""

from __future__ import annotations

from ._options import HELP, VERSION, Command, Default, Option

WIDTH = 80
_MAX_LEFT = 28  # an option's spelling longer than this puts its help on the next line


def render(command: Command, prog: str) -> str:
    """The help text of ``command`` run as ``prog``, without a final newline."""
    if command.actions:
        return _group(command, prog)
    known = facts(command)
    blocks = [
        usage(command, prog),
        _paragraphs(command.description, known),
        _section("operands:", operand_rows(command, known)),
        _section("options:", option_rows(command.all_options, known)),
        _paragraphs(command.notes, known),
        _section("exit status:", list(command.exits)),
        _examples(command.examples),
    ]
    return "\n\n".join(block for block in blocks if block)


def _group(group: Command, prog: str) -> str:
    """A group's help: every action's usage and options (each once), then every exit table."""
    known = facts(group)
    pad = len(prog) + 1 + max(len(short_name(action)) for action in group.actions)
    usages = [usage(a, f"{prog} {short_name(a)}", pad=pad) for a in group.actions]
    blocks = [
        "\n".join([usages[0], *("       " + u.removeprefix("usage: ") for u in usages[1:])]),
        _paragraphs(group.description, known),
        _section("actions:", [(short_name(action), action.summary) for action in group.actions]),
    ]
    sections: dict[str, tuple[Option, ...]] = {}
    for action in group.actions:  # each option once, under the first action that takes it
        shown = {opt.long for options in sections.values() for opt in options}
        sections[f"{short_name(action)} options:"] = tuple(
            opt for opt in action.options if opt.long not in shown
        )
    sections["every action's options:"] = (HELP, VERSION)
    left = min(max(len(spelling(opt)) for options in sections.values() for opt in options),
               _MAX_LEFT)  # fmt: skip
    for title, options in sections.items():  # one column for all: they read as one table
        blocks.append(_section(title, option_rows(options, known), left=left))
    blocks.append(_paragraphs(group.notes, known))
    blocks += [_group_exits(group), _examples(group.examples)]
    return "\n\n".join(block for block in blocks if block)


def _group_exits(group: Command) -> str:
    statuses = [status for action in group.actions for status, _ in action.exits]
    if not statuses:
        return ""
    lines = ["exit status:"]
    left = max(map(len, statuses))
    for action in group.actions:
        lines += [f"  {short_name(action)}", *_table(list(action.exits), indent=4, left=left)]
    return "\n".join(lines)


def short_name(action: Command) -> str:
    return action.name.rsplit(" ", 1)[-1]


def usage(command: Command, prog: str, *, pad: int = 0) -> str:
    """The usage line: given, or made from the required options and the operands."""
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


def facts(command: Command) -> dict[str, str]:
    """The library's values the texts of ``command`` (and of its actions) name."""
    known = {name: load() for name, load in (command.facts or {}).items()}
    for action in command.actions:
        known.update(facts(action))
    return known


def fill(text: str, known: dict[str, str], default: str = "") -> str:
    """``text`` with the facts (and ``{default}``) put in."""
    return text.format(default=default, **known) if "{" in text else text


def _paragraphs(text: str, known: dict[str, str]) -> str:
    return "\n".join(wrap(fill(text, known), WIDTH))


def spelling(opt: Option) -> str:
    """``-c, --config FILE``; a long-only option indented as if it had a short one."""
    text = ", ".join(opt.names) + ("" if opt.metavar is None else f" {opt.metavar}")
    return text if opt.names[0][:2] != "--" else "    " + text


def option_rows(options: tuple[Option, ...], known: dict[str, str]) -> list[tuple[str, str]]:
    return [(spelling(opt), _also(opt, fill(opt.help, known, show_default(opt))))
            for opt in options]  # fmt: skip


def _also(opt: Option, text: str) -> str:
    """``text`` naming the old spellings still taken, once: ``(default 10s; also --timeout)``."""
    if not opt.aliases:
        return text
    also = "also " + ", ".join(opt.aliases)
    head, paren, last = text.rpartition(" (")
    if paren and last.startswith("default ") and last.endswith(")") and "(" not in last:
        return f"{head} ({last[:-1]}; {also})"
    return f"{text} ({also})"


def operand_rows(command: Command, known: dict[str, str]) -> list[tuple[str, str]]:
    return [(o.metavar, fill(o.help, known)) for o in command.operands if o.help]


def show_default(opt: Option) -> str:
    """The option's default as its help shows it (the library's, read from the library)."""
    value = opt.default.load() if isinstance(opt.default, Default) else opt.default
    if opt.kind is None:
        return "none" if value is None else str(value)
    return opt.kind.none if value is None else opt.kind.show(value)


def _section(title: str, rows: list[tuple[str, str]], *, left: int = 0) -> str:
    return "\n".join([title, *_table(rows, left=left)]) if rows else ""


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
            out += _greedy(_join(flowing), width)
            flowing = []
        out.append(line.rstrip())
    return out[:-1]


def _join(lines: list[str]) -> str:
    """Lines of one paragraph as one: two spaces after a full stop, as the texts are written."""
    text = lines[0]
    for line in lines[1:]:
        text += ("  " if text.endswith(".") and line[:1].isupper() else " ") + line
    return text


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
