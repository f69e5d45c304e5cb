"""The one parser of every ``forkwell`` command, driven by its declaration (:mod:`._options`).

It follows GNU getopt: short options bundle (``-pv``, ``-k5``), long ones take
``--name=value`` or ``--name value`` and may be abbreviated while unambiguous,
and ``--`` ends the options.  A command either permutes (options may follow
operands: the control commands, ``serve``, ``up``) or stops at its first
operand, which and everything after it belongs to the command it runs
(``forkwell init -v -- sh -c x -v``: ``timeout``, ``init``, ``daemon``).  Not
argparse, nor getopt: they cost start-up time (gettext, locale, regexes
compiled per run), and argparse cannot stop at an operand.

Errors are one line, ``PROG: MESSAGE (see 'PROG --help')``, with the command's
documented exit status (:func:`parse_or_report`).
"""

from __future__ import annotations

import sys
from types import SimpleNamespace
from typing import Any

from ._options import HELP, VERSION, Command, Kind, Operand, Option, UsageError


class HelpRequested(Exception):
    """``-h``/``--help`` was given: print the help instead of running."""


class VersionRequested(Exception):
    """``--version`` was given: print the version instead of running."""


# The messages of the parser, GNU getopt's words.  A command may word some of
# them its own way (Command.words), as scripts and tests know them.
WORDS = {
    "unknown": "unrecognized option {option!r}",
    "unknown_short": "invalid option -- {char!r}",
    "ambiguous": "ambiguous option {option!r}: could be {matches}",
    "needs_value": "option {option!r} requires an argument",
    "needs_value_short": "option requires an argument -- {char!r}",
    "no_value": "option {option!r} doesn't allow an argument",
    "required": "needs {option} {metavar}",
    "repeated": "option {option} given more than once",
    "missing": "missing operand {metavar}",
    "extra": "extra operand {operand!r}",
    "unknown_action": "unknown action {action!r} ({actions})",
}


def parse(command: Command, argv: list[str]) -> SimpleNamespace:
    """``argv`` read by ``command``: an attribute per option and operand.

    Raises :class:`UsageError`, or :class:`HelpRequested` at ``-h``/``--help``.
    """
    scan = _Scan(command)
    scan.scan(argv)
    return scan.result()


class _Scan:
    """One pass over a command line: options as they come, operands kept for the end."""

    def __init__(self, command: Command) -> None:
        self.command = command
        self.words = {**WORDS, **(command.words or {})}
        self.by_name = {name: opt for opt in command.all_options for name in opt.spellings}
        self.values: dict[str, Any] = {}
        self.operands: list[str] = []

    def error(self, word: str, **fields: object) -> UsageError:
        return UsageError(self.words[word].format(**fields))

    def scan(self, argv: list[str]) -> None:
        i = 0
        while i < len(argv):
            arg = argv[i]
            i += 1
            if arg == "--":
                self.operands += argv[i:]
                return
            if arg.startswith("--"):
                i = self._long(arg, argv, i)
            elif arg.startswith("-") and arg != "-":
                i = self._shorts(arg, argv, i)
            elif self.command.permute:
                self.operands.append(arg)
            else:
                self.operands += argv[i - 1 :]
                return

    def _long(self, arg: str, argv: list[str], i: int) -> int:
        name, eq, value = arg.partition("=")
        opt = self._lookup(name)
        if opt.metavar is None:
            if eq:
                raise self.error("no_value", option=opt.long)
            self._take(opt, None)
            return i
        if not eq:
            if i >= len(argv):
                raise self.error("needs_value", option=opt.long)
            value = argv[i]
            i += 1
        self._take(opt, value)
        return i

    def _lookup(self, name: str) -> Option:
        """The option ``name`` spells, or abbreviates without ambiguity."""
        opt = self.by_name.get(name)
        if opt is not None:
            return opt
        matches = {o.long: o for n, o in self.by_name.items() if n.startswith(name)}
        if len(matches) == 1:
            return next(iter(matches.values()))
        if matches:
            raise self.error("ambiguous", option=name, matches=" or ".join(matches))
        raise self.error("unknown", option=name)

    def _shorts(self, arg: str, argv: list[str], i: int) -> int:
        """``-pv``: flags bundled; ``-k5``, ``-k 5``: a value, the rest of the word or the next."""
        for j in range(1, len(arg)):
            opt = self.by_name.get("-" + arg[j])
            if opt is None:
                raise self.error("unknown_short", option="-" + arg[j], char=arg[j])
            if opt.metavar is None:
                self._take(opt, None)
                continue
            value = arg[j + 1 :]
            if not value:
                if i >= len(argv):
                    raise self.error("needs_value_short", option=opt.long, char=arg[j])
                value = argv[i]
                i += 1
            self._take(opt, value)
            break
        return i

    def _take(self, opt: Option, text: str | None) -> None:
        if opt is HELP:
            raise HelpRequested
        if opt is VERSION:
            raise VersionRequested
        value = True if text is None else convert(opt.kind, text, opt.long)
        if opt.repeat:
            self.values.setdefault(opt.key, []).append(value)
            return
        if self.command.once and opt.key in self.values:
            raise self.error("repeated", option=opt.long)
        self.values[opt.key] = value

    def result(self) -> SimpleNamespace:
        ns = SimpleNamespace()
        for opt in self.command.options:
            if opt.key in self.values:
                setattr(ns, opt.key, self.values[opt.key])
            elif opt.required:
                raise self.error("required", option=opt.long, metavar=opt.metavar)
            else:
                setattr(ns, opt.key, opt.initial())
        rest = self.operands
        last = ""
        for operand in self.command.operands:
            if operand.nargs in ("*", "+"):
                if not rest and operand.nargs == "+":
                    raise self._missing(operand, last)
                setattr(ns, operand.key, [convert(operand.kind, text) for text in rest])
                rest = []
            elif rest:
                last, rest = rest[0], rest[1:]
                setattr(ns, operand.key, convert(operand.kind, last))
            elif operand.nargs == "1":
                raise self._missing(operand, last)
            else:
                setattr(ns, operand.key, None)
        if rest:
            raise self.error("extra", operand=rest[0], operands=" ".join(rest))
        return ns

    def _missing(self, operand: Operand, last: str) -> UsageError:
        text = operand.missing or self.words["missing"]
        return UsageError(text.format(metavar=operand.metavar, last=last))


def convert(kind: Kind | None, text: str, option: str = "") -> Any:
    """``text`` read as ``kind``; a bad value is a UsageError (prefixed with the option's name)."""
    if kind is None:
        return text
    try:
        return kind.parse(text)
    except ValueError as exc:
        raise UsageError(f"{option}: {exc}" if option else str(exc)) from None


# -- running a command's parse --------------------------------------------------


def parse_or_report(command: Command, argv: list[str], prog: str) -> SimpleNamespace | int:
    """The parsed command line; or, once the help or the one-line error is printed, the exit status.

    A group's first operand picks its action (``daemon start``): the
    namespace's ``action`` says which.
    """
    if command.actions:
        return _parse_action(command, argv, prog)
    try:
        return parse(command, argv)
    except HelpRequested:
        print_help(command, prog)
        return 0
    except VersionRequested:
        print_version()
        return 0
    except UsageError as exc:
        return report_usage(command, prog, str(exc))


def _parse_action(group: Command, argv: list[str], prog: str) -> SimpleNamespace | int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print_help(group, prog)
        return 0 if argv else group.usage_exit
    if argv[0] == "--version":
        print_version()
        return 0
    actions = {action.name.rsplit(" ", 1)[-1]: action for action in group.actions}
    action = actions.get(argv[0])
    if action is None:
        words = {**WORDS, **(group.words or {})}
        message = words["unknown_action"].format(action=argv[0], actions=", ".join(actions))
        return report_usage(group, prog, message)
    ns = parse_or_report(action, argv[1:], f"{prog} {argv[0]}")
    if not isinstance(ns, int):
        ns.action = argv[0]
    return ns


def report_usage(command: Command, prog: str, message: str) -> int:
    """Print a usage error the command's way, on one line (GNU's hint on a second); its status."""
    print(f"{prog}: {message}{command.hint.format(prog=prog)}", file=sys.stderr)
    return command.usage_exit


def print_version() -> None:
    from .. import __version__

    print(f"forkwell {__version__}")


def print_help(command: Command, prog: str) -> None:
    from ._help import render

    print(render(command, prog))
